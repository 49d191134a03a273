"""``fsd-daemon report`` over a range whose default grid is finer than the scrape interval,
against a real Prometheus holding history backfilled with ``promtool tsdb create-blocks-from
openmetrics`` (the way bench/backfill_day.py builds a day of a run).

Twenty minutes of 15 s samples: the default grid (range / 10,000 points, rounded up to 1 s)
would ask Prometheus for every second and get each sample 15 times over; the report's grid is
the scrape interval instead, unless ``--resolution`` asks for a finer one."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsd_daemon.demo import start_prometheus, wait_http_ok
from fsd_daemon.mixin import names
from fsd_daemon.sim.launch import stop_process
from tests.report.helpers import clean_env, free_port, fsd_daemon_cli, run_command

pytestmark = [pytest.mark.prometheus]

SCRAPE = 15
SPAN = 20 * 60
STEP_PERIOD = 300  # a rollout step every 5 minutes: 2 min running, then idle


def history(start: int) -> bytes:
    """Two replicas of one job (one finishing 60 s after the other) and their GPUs."""
    lines = []
    times = range(start, start + SPAN + 1, SCRAPE)
    for replica, runs_for in (("0", 60), ("1", 120)):
        labels = (
            f'{names.ENGINE}="vllm",instance="127.0.0.1:9{replica}",job="{names.JOB_ROLLOUT}",'
            f'{names.RAY_JOB_ID}="01000000",{names.REPLICA}="{replica}",'
            f'{names.ROLE}="{names.ROLE_ROLLOUT}"'
        )
        for t in times:
            into = (t - start) % STEP_PERIOD
            running = 4 if 0 < into <= runs_for else 0
            lines.append(f"{names.VLLM_REQUESTS_RUNNING}{{{labels}}} {running} {t}")
    for gpu in ("0", "1"):
        labels = f'gpu="{gpu}",instance="127.0.0.1:8000",job="{names.JOB_GPU}"'
        for i, t in enumerate(times):
            lines.append(f"{names.GPU_BUSY_SECONDS}{{{labels}}} {i * SCRAPE * 0.5} {t}")
    return ("\n".join(lines) + "\n# EOF\n").encode()


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> Any:
    base = tmp_path_factory.mktemp("long-range")
    start = (int(time.time()) - SPAN - 600) // SCRAPE * SCRAPE
    (base / "history.om").write_bytes(history(start))
    data = base / "data"
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing (Debian's prometheus package)"
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(base / "history.om"), data],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (base / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    proc = start_prometheus(
        prometheus_bin, base / "prometheus.yml", data, port, base / "prom.log", lifecycle=False
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(url + "/-/ready", 60, proc)
        yield base, url, start
    finally:
        stop_process(proc, timeout=10)


def report(base: Path, url: str, start: int, *extra: str) -> dict[str, Any]:
    out = base / f"report{len(extra)}"
    result = run_command(
        [
            *fsd_daemon_cli(),
            "report",
            "--prometheus",
            url,
            "--from",
            str(start),
            "--to",
            str(start + SPAN),
            "--output",
            str(out),
            *extra,
        ],
        clean_env(),
        base,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary: dict[str, Any] = orjson.loads((out / "summary.json").read_bytes())
    return summary


def test_the_default_grid_is_the_scrape_interval_not_finer(backfilled: Any) -> None:
    base, url, start = backfilled
    assert math.ceil(SPAN / 10_000) < SCRAPE  # the default grid would be finer
    summary = report(base, url, start)
    assert summary["resolution_seconds"] == SCRAPE
    # A step runs from 15 s after each 300 s mark: four whole steps in the range.
    steps = summary["steps"]
    assert len(steps) == SPAN // STEP_PERIOD, steps
    # Replica 1 runs 60 s longer; the median of two finishes is their mean: a 30 s tail.
    assert {s["tail_seconds"] for s in steps} == {30.0}


def test_an_asked_resolution_is_kept(backfilled: Any) -> None:
    base, url, start = backfilled
    summary = report(base, url, start, "--resolution", "5")
    assert summary["resolution_seconds"] == 5
