"""The dashboards are built from code (fsd_daemon/mixin/dashboards.py, Grafana's Foundation
SDK); the committed JSON must be what the code builds. The SDK is a test dependency only
(Python >= 3.11): users get the JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fsd_daemon.assets import DASHBOARDS_DIR

pytest.importorskip("grafana_foundation_sdk")

from fsd_daemon.mixin import dashboards, names


def test_committed_dashboards_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m fsd_daemon.mixin.dashboards --check` passes on the committed files."""
    assert dashboards.main(["--check"]) == 0, capsys.readouterr().err
    assert sorted(dashboards.DASHBOARDS) == sorted(p.name for p in DASHBOARDS_DIR.glob("*.json"))


def test_check_fails_on_a_hand_edited_file(tmp_path: Path) -> None:
    """An edit made to the JSON and not to the code is caught, and --write undoes it."""
    for path in DASHBOARDS_DIR.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    edited = tmp_path / "gpu-idleness.json"
    doc = json.loads(edited.read_text())
    doc["panels"][1]["title"] = "edited by hand"
    edited.write_text(json.dumps(doc, indent=2))
    assert dashboards.main(["--check", "--dir", str(tmp_path)]) == 1
    assert dashboards.main(["--write", "--dir", str(tmp_path)]) == 0
    assert edited.read_text() == (DASHBOARDS_DIR / "gpu-idleness.json").read_text()


def _exprs(doc: dict[str, object]) -> dict[str, list[str]]:
    panels = doc["panels"]
    assert isinstance(panels, list)
    return {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in panels}


def test_asleep_busy_idle_panels() -> None:
    """Per replica and per job, from vLLM's sleep gauge and the running requests;
    the state panel maps 0/1/2 to asleep / awake idle / awake busy."""
    doc = dashboards.rollout_overview()
    exprs = _exprs(doc)
    state = exprs["Replica state: asleep, awake and busy, awake and idle"]
    per_job = exprs["vLLM replicas asleep, busy, idle per job"]
    for expr in [*state, *per_job]:
        assert names.VLLM_SLEEP_STATE in expr and 'sleep_state="awake"' in expr
    # Asleep from the gauge alone; busy and idle also from the running requests.
    assert len(per_job) == 3
    for expr in [*state, *per_job[1:]]:
        assert "replica:fsd_rollout_requests_running:sum" in expr
    panel = next(p for p in doc["panels"] if p["title"].startswith("Replica state"))
    mapping = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {k: v["text"] for k, v in mapping.items()} == {
        "0": "asleep",
        "1": "awake, idle",
        "2": "awake, busy",
    }


def test_long_tail_cause_panels() -> None:
    """Response-length tail against max_tokens, truncations and aborts, preemptions and
    retractions and SGLang's paused requests (through the recording rules, which reduce
    SGLang's ranks), queue time."""
    text = json.dumps(_exprs(dashboards.rollout_overview()))
    for metric in (
        names.VLLM_GENERATION_TOKENS_HISTOGRAM + "_bucket",
        names.VLLM_MAX_TOKENS_HISTOGRAM + "_bucket",
        names.REPLICA_PREEMPTIONS_RATE,
        names.VLLM_QUEUE_TIME + "_bucket",
        names.SGLANG_QUEUE_TIME + "_bucket",
        names.REPLICA_REQUESTS_PAUSED,
    ):
        assert metric in text, metric
    assert 'finished_reason=~\\"length|abort\\"' in text


def test_engine_report_panels() -> None:
    """What the engines report about themselves has panels: prefix-cache hit rate,
    speculative-decoding acceptance and tokens per step, prefill versus decode time, and the
    engine's own idle time beside its GPUs' idle time (joined on cluster, ray_job_id,
    replica). No panel reads SGLang's rank-labelled or streaming-split series directly: the
    rules reduce them (fsd_daemon/recognition/engines.py)."""
    text = json.dumps(_exprs(dashboards.rollout_overview()))
    for metric in (
        names.REPLICA_PREFIX_CACHE_HIT_RATIO,
        names.JOB_ROLE_SPEC_ACCEPTANCE_RATIO,
        names.JOB_ROLE_SPEC_ACCEPT_LENGTH,
        names.JOB_ROLE_PREFILL_TIME_MEAN,
        names.JOB_ROLE_DECODE_TIME_MEAN,
        names.ROLLOUT_REPLICA_ENGINE_IDLE_RATIO,
        names.GPU_ROLE_IDLE_RATIO,
        names.REPLICA_REQUESTS_FINISHED_RATE,
    ):
        assert metric in text, metric
    for sglang_counter in (names.SGLANG_REQUESTS, names.SGLANG_GENERATION_TOKENS):
        assert sglang_counter not in text, sglang_counter
