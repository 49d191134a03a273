"""``fsd_daemon.mixin.names`` matches what the programs really export.

The rules, dashboards, report and doctor read their metric names from ``names``; these tests
tie those names to the expositions they come from: the GPU exporter's reference exposition
(tests/gpu/reference_exposition.txt, itself checked against the collector), the daemon's own
registry, the probe's gauges and the simulated vLLM / SGLang servers (which follow the newest
checked releases in fsd_daemon/recognition/engines.py: vLLM 0.34's ``vllm/v1/metrics/loggers.py``
and SGLang
0.5.23's ``observability/metrics_collector.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fsd_daemon.gpu import ownership
from fsd_daemon.mixin import names
from fsd_daemon.pipeline.render import Target
from fsd_daemon.pipeline.selfmetrics import SelfMetrics
from fsd_daemon.probe import MetricsProbeCollector, ProbeResult
from fsd_daemon.recognition import verl
from fsd_daemon.sim.rollout_server import LoadModel, ServerOptions, SimulatedEngine
from tests import promql

GPU_REFERENCE = Path(__file__).parent / "gpu" / "reference_exposition.txt"


def _sample_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def _family_names(text: str) -> set[str]:
    """Every metric name a HELP line announces (also for families with no sample yet)."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}


def test_gpu_exporter_names() -> None:
    exported = _sample_names(GPU_REFERENCE.read_text(encoding="utf-8"))
    for name in (names.GPU_BUSY_SECONDS, names.GPU_OWNER_INFO, names.GPU_NVML_UP):
        assert name in exported, name
    assert names.GPU_NVML_ERRORS in _family_names(GPU_REFERENCE.read_text(encoding="utf-8"))
    assert all(n.startswith(names.GPU_PREFIX) for n in exported if n.startswith("fsd_"))


def test_gpu_exporter_label_names() -> None:
    """The exporter labels the dashboards select and show: GPU index and UUID, owner state,
    the busy-time method and the failing NVML function (fsd_daemon/gpu/collector.py)."""
    text = GPU_REFERENCE.read_text(encoding="utf-8")
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    assert {names.GPU, names.GPU_UUID, names.OWNER_STATE} <= labels[names.GPU_OWNER_INFO]
    assert {names.GPU, names.GPU_UUID, names.BUSY_SOURCE_METHOD} <= labels[
        names.GPU_BUSY_SOURCE_INFO
    ]
    assert names.NVML_FUNCTION in labels[names.GPU_NVML_ERRORS]
    assert (names.OWNER_ACTIVE, names.OWNER_RESERVED) == (
        ownership.STATE_ACTIVE,
        ownership.STATE_RESERVED,
    )


def test_daemon_self_metric_names() -> None:
    announced = _family_names(generate_latest(SelfMetrics().registry).decode())
    for name in (
        names.DAEMON_LAST_SUCCESSFUL_POLL,
        names.DAEMON_HEALTHY,
        names.DAEMON_DROPPED_TARGETS,
        names.DAEMON_POLL_ERRORS,
    ):
        assert name in announced, name


def test_probe_gauge_names_and_address_label() -> None:
    registry = CollectorRegistry()
    MetricsProbeCollector(registry).update(
        [ProbeResult(Target.of("10.0.0.1:1", {"engine": "sglang"}), "/metrics", 404, 0)]
    )
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert {names.DAEMON_METRICS_PROBE_STATUS, names.DAEMON_METRICS_PROBE_ENGINE_SERIES} <= set(
        families
    )
    [sample] = families[names.DAEMON_METRICS_PROBE_STATUS].samples
    assert sample.labels[names.PROBE_ADDRESS] == "10.0.0.1:1"


def test_probe_carries_metrics_route_for_the_legacy_exclusion() -> None:
    """FsdRolloutMetricsRouteMissing leaves verl <= 0.5 servers to their own alert by the
    probe's metrics_route label, copied from the target."""
    registry = CollectorRegistry()
    legacy = Target.of("10.0.0.1:1", {"engine": "vllm", names.METRICS_ROUTE: "absent"})
    MetricsProbeCollector(registry).update([ProbeResult(legacy, "/metrics", 404, 0)])
    [family] = [
        f
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        if f.name == names.DAEMON_METRICS_PROBE_STATUS
    ]
    [sample] = family.samples
    assert sample.labels[names.METRICS_ROUTE] == names.METRICS_ROUTE_ABSENT


@pytest.mark.parametrize(
    ("engine", "wanted"),
    [
        (
            "vllm",
            [
                names.VLLM_REQUESTS_RUNNING,
                names.VLLM_REQUESTS_WAITING,
                names.VLLM_KV_CACHE_USAGE,
                names.VLLM_GENERATION_TOKENS,
                names.VLLM_PROMPT_TOKENS,
                names.VLLM_REQUEST_SUCCESS,
                names.VLLM_PREEMPTIONS,
                names.VLLM_SLEEP_STATE,
                names.bucket(names.VLLM_TTFT),
                names.bucket(names.VLLM_ITL),
                names.bucket(names.VLLM_QUEUE_TIME),
                names.bucket(names.VLLM_GENERATION_TOKENS_HISTOGRAM),
                names.bucket(names.VLLM_MAX_TOKENS_HISTOGRAM),
            ],
        ),
        (
            "sglang",
            [
                names.SGLANG_REQUESTS_RUNNING,
                names.SGLANG_REQUESTS_WAITING,
                names.SGLANG_TOKEN_USAGE,
                names.SGLANG_GENERATION_TOKENS,
                names.SGLANG_PROMPT_TOKENS,
                names.SGLANG_REQUESTS,
                names.SGLANG_ABORTED_REQUESTS,
                names.SGLANG_RETRACTED_REQUESTS,
                names.SGLANG_PAUSED_REQUESTS,
                names.bucket(names.SGLANG_TTFT),
                names.bucket(names.SGLANG_ITL),
                names.bucket(names.SGLANG_QUEUE_TIME),
            ],
        ),
    ],
)
def test_simulated_servers_export_the_engine_names_the_rules_read(
    engine: str, wanted: list[str]
) -> None:
    sim = SimulatedEngine(engine, "m", LoadModel(step_seconds=1.0), seed=1)
    for tick in range(200):  # 20 simulated seconds: requests start and finish
        sim.step(1000.0 + tick * 0.1, 0.1)
    exported = _sample_names(generate_latest(sim.registry).decode())
    missing = [name for name in wanted if name not in exported]
    assert not missing, missing
    prefix = names.ENGINE_PREFIXES[engine]
    assert all(name.startswith(prefix) for name in wanted)


@pytest.mark.parametrize("engine", sorted(names.ENGINE_PREFIXES))
def test_simulated_servers_export_every_engine_series_a_rule_reads(engine: str) -> None:
    """Every vllm:/sglang: series named in a shipped rule (histograms by their _bucket series)
    is exported by the simulated engine, so the demo's non-empty check can hold for each."""
    prefix = names.ENGINE_PREFIXES[engine]
    read = {
        name
        for e in promql.all_expressions(["record", "alert"])
        for name in re.findall(rf"{re.escape(prefix)}[a-z_]+", e.expr)
    }
    assert read, f"no rule reads {prefix} series"
    # Speculative decoding on: vLLM exports its spec_decode_* counters only then.
    sim = SimulatedEngine(
        engine,
        "m",
        LoadModel(step_seconds=1.0),
        seed=1,
        options=ServerOptions(speculative_tokens=2),
    )
    for tick in range(200):
        sim.step(1000.0 + tick * 0.1, 0.1)
    exported = _sample_names(generate_latest(sim.registry).decode())
    missing = sorted(read - exported)
    assert not missing, missing


def test_engine_label_values_are_the_recognisers() -> None:
    """The engine values the rules and doctor know are exactly those a target can carry
    (fsd_daemon/recognition/verl.py), dynamo included; each one either has a checked series
    prefix or is knowingly left without one (TRT-LLM, Dynamo: names not checked upstream)."""
    assert names.ENGINES == verl.ENGINES
    assert set(names.ENGINE_PREFIXES) < set(names.ENGINES)
    assert set(names.ENGINES) - set(names.ENGINE_PREFIXES) == {
        names.ENGINE_TRTLLM,
        names.ENGINE_DYNAMO,
    }
