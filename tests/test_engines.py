"""The engine table (fsd_daemon/recognition/engines.py) against the rules that read it and the
upstream facts.

The table is what the rules, dashboards and simulation read; these tests tie it to both ends:
every engine series a shipped rule or panel reads is declared in the table for the newest
checked release (or, like SGLang's scheduler_idle_seconds_total, says since when), and the
per-release facts read in the released wheels hold (SGLang 0.5.23
``sglang/srt/observability/metrics_collector.py``: tokenizer series carry engine_type and
is_streaming; SGLang 0.5.10: model_name only; vLLM 0.33.0 and 0.34.0
``vllm/v1/metrics/loggers.py``: model_name and engine).
"""

from __future__ import annotations

import re

import pytest

from fsd_daemon.mixin import names
from fsd_daemon.recognition import engines
from tests import promql


def _declared(engine: engines.Engine) -> set[str]:
    """Every name the engine's shapes declare, histograms by their _bucket/_sum/_count too."""
    out = set()
    for shape in engine.shapes:
        for series in shape.series:
            out.add(series.name)
            if series.kind == engines.HISTOGRAM:
                out |= {f"{series.name}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
    return out


@pytest.mark.parametrize("engine", engines.ENGINES, ids=lambda e: e.label)
def test_every_engine_series_the_project_reads_is_in_the_table(engine: engines.Engine) -> None:
    """No rule, alert or panel reads a series of an engine that the table does not declare."""
    read = {
        name
        for e in promql.all_expressions()
        for name in re.findall(rf"{re.escape(engine.prefix)}[a-z_]+", e.expr)
    }
    assert read
    assert read <= _declared(engine), sorted(read - _declared(engine))


@pytest.mark.parametrize("engine", engines.ENGINES, ids=lambda e: e.label)
def test_what_the_rules_read_exists_in_the_newest_release(engine: engines.Engine) -> None:
    """Each question an engine answers names a series of its newest checked release."""
    newest = engine.newest.by_name()
    for question, name in engine.reads.items():
        assert name in newest, (question, name)
        assert name.startswith(engine.prefix)


def test_prefixes_and_engine_labels_agree_with_names() -> None:
    """names.ENGINE_PREFIXES (doctor, probe) is the table's prefix per engine label."""
    assert {e.label: e.prefix for e in engines.ENGINES} == names.ENGINE_PREFIXES
    assert set(engines.BY_LABEL) <= set(names.ENGINES)


def test_sglang_release_shapes_as_upstream_defines_them() -> None:
    sglang = engines.SGLANG
    old, new = sglang.shape("0.5.10"), sglang.shape("0.5.23")
    tokens_old = old.by_name()[names.SGLANG_GENERATION_TOKENS]
    tokens_new = new.by_name()[names.SGLANG_GENERATION_TOKENS]
    assert set(old.labels_of(tokens_old)) == {"model_name"}
    assert set(new.labels_of(tokens_new)) == {"model_name", "engine_type", "is_streaming"}
    itl = new.by_name()[names.SGLANG_ITL]
    assert set(new.labels_of(itl)) == {"model_name", "engine_type"}
    running = new.by_name()[names.SGLANG_REQUESTS_RUNNING]
    assert set(new.labels_of(running)) == {
        "model_name",
        "engine_type",
        "tp_rank",
        "pp_rank",
        "moe_ep_rank",
    }
    assert names.SGLANG_SCHEDULER_IDLE in new.by_name()
    assert names.SGLANG_SCHEDULER_IDLE not in old.by_name()
    # Ranks are reduced by max; dp_rank and is_streaming are not ranks: they are summed.
    assert set(sglang.rank_labels) == {"tp_rank", "pp_rank", "moe_ep_rank"}
    assert sglang.disaggregation_label == "engine_type"


def test_vllm_releases_share_one_shape() -> None:
    vllm = engines.VLLM
    assert vllm.shape("0.33.0") is vllm.shape("0.34.0")
    running = vllm.newest.by_name()[names.VLLM_REQUESTS_RUNNING]
    assert set(vllm.newest.labels_of(running)) == {"model_name", "engine"}
    assert vllm.rank_labels == ()
    spec = vllm.newest.by_name()[names.VLLM_SPEC_DRAFT_TOKENS]
    assert spec.only_when == names.SPECULATIVE_CONFIG


def test_unknown_version_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"known: 0\.5\.10, 0\.5\.23"):
        engines.SGLANG.shape("0.6.0")


@pytest.mark.parametrize(
    ("engine", "version"),
    [(e, v) for e in engines.ENGINES for shape in e.shapes for v in shape.versions],
    ids=lambda x: x.label if isinstance(x, engines.Engine) else x,
)
def test_simulated_server_serves_the_release_shape(engine: engines.Engine, version: str) -> None:
    """The simulated server of each release exports every series of the table's shape, each
    with exactly the shape's label names (speculative decoding on, so vLLM's spec_decode_*
    counters exist)."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from fsd_daemon.sim.rollout_server import LoadModel, ServerOptions, SimulatedEngine

    sim = SimulatedEngine(
        engine.label,
        "m",
        LoadModel(step_seconds=1.0),
        seed=1,
        options=ServerOptions(versions={engine.label: version}, speculative_tokens=2),
    )
    for tick in range(200):
        sim.step(1000.0 + tick * 0.1, 0.1)
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(sim.registry).decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                exported.setdefault(family.name, set()).update(set(sample.labels) - {"le"})
    shape = engine.shape(version)
    for series in shape.series:
        family = series.name.removesuffix("_total")
        assert family in exported, (version, series.name)
        assert exported[family] == set(shape.labels_of(series)), (version, series.name)
