"""The simulated servers follow upstream, served over real HTTP on 127.0.0.1.

Upstream sources (details in docs/upstream.md):
- SGLang python/sglang/srt/managers/tokenizer_manager.py (TokenizerMetricsCollector labels:
  model_name only), python/sglang/srt/managers/scheduler_metrics_mixin.py (scheduler labels:
  model_name, engine_type, tp_rank, pp_rank, moe_ep_rank), python/sglang/srt/metrics/
  collector.py (the series and which collector owns them).
- vLLM vllm/v1/metrics/loggers.py (PrometheusStatLogger: labels model_name, engine;
  vllm:engine_sleep_state with sleep_state awake / weights_offloaded / discard_all).
- verl verl/workers/rollout/vllm_rollout/vllm_async_server.py (_resolve_sleep_level: 2 unless
  LoRA adapters or MTP, then 1); verl/trainer/config rollout.disable_log_stats /
  rollout.prometheus.enable defaults (vLLM /metrics without vllm: series, SGLang no /metrics).
"""

from __future__ import annotations

import http.server
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fsd_daemon.sim.harness import LocalRayCluster
from fsd_daemon.sim.job import parse_args, server_options
from fsd_daemon.sim.launch import start_job
from fsd_daemon.sim.rollout_server import (
    SLEEP_STATES,
    LoadModel,
    ServerOptions,
    SimulatedEngine,
    serve_metrics,
)

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
# Label names as the released wheels define them (read in each, not taken from the table the
# simulation itself reads): SGLang's scheduler labels (0.5.10 observability/
# scheduler_metrics_mixin.py, 0.5.23 SchedulerMetricsCollector.init_new), the tokenizer's
# (0.5.10 managers/tokenizer_manager.py: model_name; 0.5.23 tokenizer_metric_labels(): model_name
# and engine_type, and is_streaming added on the families below).
SCHEDULER_LABELS = {"model_name", "engine_type", "tp_rank", "pp_rank", "moe_ep_rank"}
TOKENIZER_LABELS = {"0.5.10": {"model_name"}, "0.5.23": {"model_name", "engine_type"}}
STREAMING_SPLIT = {
    "0.5.10": set(),
    "0.5.23": {
        "sglang:prompt_tokens",
        "sglang:generation_tokens",
        "sglang:num_requests",
        "sglang:time_to_first_token_seconds",
        "sglang:e2e_request_latency_seconds",
    },
}
TOKENIZER_SERIES = {
    "sglang:prompt_tokens",
    "sglang:generation_tokens",
    "sglang:num_requests",
    "sglang:num_aborted_requests",
    "sglang:time_to_first_token_seconds",
    "sglang:inter_token_latency_seconds",
    "sglang:e2e_request_latency_seconds",
}
SCHEDULER_SERIES = {
    "sglang:num_running_reqs",
    "sglang:num_queue_reqs",
    "sglang:token_usage",
    "sglang:cache_hit_rate",
    "sglang:num_paused_reqs",
    "sglang:num_retracted_requests",
    "sglang:queue_time_seconds",
    "sglang:spec_accept_rate",
    "sglang:spec_accept_length",
}
# New in 0.5.23 (SchedulerMetricsCollector): the engine's own idle time.
SCHEDULER_ONLY_IN = {"0.5.10": set(), "0.5.23": {"sglang:scheduler_idle_seconds"}}


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Family name -> [(labels, value)] of every sample (histograms: all their samples)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = [(dict(s.labels), s.value) for s in family.samples]
    return out


class Served:
    """Engines behind real HTTP servers on 127.0.0.1; the test steps the engines by hand."""

    def __init__(self) -> None:
        self.servers: list[http.server.HTTPServer] = []
        self.engines: list[SimulatedEngine] = []

    def start(self, engine: SimulatedEngine) -> str:
        server = serve_metrics(engine)
        self.servers.append(server)
        self.engines.append(engine)
        return f"http://127.0.0.1:{server.server_address[1]}"

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    try:
        yield s
    finally:
        s.close()


def run(engine: SimulatedEngine, start: float, seconds: float, tick: float = 0.1) -> float:
    now = start
    while now < start + seconds:
        now += tick
        engine.step(now, tick)
    return now


@pytest.mark.parametrize("version", ["0.5.10", "0.5.23"])
def test_sglang_series_carry_the_labels_of_the_collector_that_owns_them(version: str) -> None:
    """Each SGLang release's shape over real HTTP: tokenizer-side series carry model_name
    (0.5.10) or model_name and engine_type (0.5.23), and 0.5.23 splits the token and request
    counters, TTFT and e2e latency by is_streaming, with both values present once streaming and
    non-streaming requests finished; scheduler-side series carry the scheduler labels; 0.5.23
    alone exports scheduler_idle_seconds_total."""
    engine = SimulatedEngine(
        "sglang",
        MODEL,
        LoadModel(step_seconds=5),
        seed=1,
        options=ServerOptions(versions={"sglang": version}),
    )
    run(engine, 1000.0, 30)
    server = serve_metrics(engine)
    try:
        status, text = fetch(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert status == 200
    got = families(text)
    scheduler = SCHEDULER_SERIES | SCHEDULER_ONLY_IN[version]
    # prometheus_client's *_created gauges are its own, not SGLang's series.
    assert {name for name in got if not name.endswith("_created")} == TOKENIZER_SERIES | scheduler
    for name in TOKENIZER_SERIES:
        split = {"is_streaming"} if name in STREAMING_SPLIT[version] else set()
        for labels, _ in got[name]:
            assert set(labels) - {"le"} == TOKENIZER_LABELS[version] | split, (name, labels)
        if split and name != "sglang:time_to_first_token_seconds":
            assert {labels["is_streaming"] for labels, _ in got[name]} == {"true", "false"}, name
    for name in scheduler:
        for labels, _ in got[name]:
            assert set(labels) - {"le"} == SCHEDULER_LABELS, (name, labels)
    assert sum(v for labels, v in got["sglang:generation_tokens"]) > 0


@pytest.mark.parametrize("version", ["0.33.0", "0.34.0"])
@pytest.mark.parametrize("speculative_tokens", [0, 2])
def test_vllm_series_of_each_release(version: str, speculative_tokens: int) -> None:
    """vLLM 0.33.0 and 0.34.0 define the same series (vllm/v1/metrics/loggers.py): prefix-cache
    counters and prefill/decode time histograms always; the spec_decode_* counters only with a
    speculative config (vllm/v1/spec_decode/metrics.py), where accepted <= draft tokens."""
    engine = SimulatedEngine(
        "vllm",
        MODEL,
        LoadModel(step_seconds=5),
        seed=1,
        options=ServerOptions(versions={"vllm": version}, speculative_tokens=speculative_tokens),
    )
    run(engine, 1000.0, 30)
    got = families(generate_latest(engine.registry).decode())
    for name in (
        "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
    ):
        assert name in got and all(
            set(lb) - {"le"} == {"model_name", "engine"} for lb, _ in got[name]
        )
    spec = {
        "vllm:spec_decode_num_drafts",
        "vllm:spec_decode_num_draft_tokens",
        "vllm:spec_decode_num_accepted_tokens",
    }
    if not speculative_tokens:
        assert not spec & set(got)
        return
    assert spec <= set(got)
    total = {name: sum(v for lb, v in got[name]) for name in spec}
    assert (
        0
        < total["vllm:spec_decode_num_accepted_tokens"]
        < total["vllm:spec_decode_num_draft_tokens"]
    )


def test_unknown_engine_version_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown sglang version '0\.4\.0'"):
        SimulatedEngine(
            "sglang",
            MODEL,
            LoadModel(),
            seed=1,
            options=ServerOptions(versions={"sglang": "0.4.0"}),
        )


def sleep_states(url: str) -> dict[str, float]:
    status, text = fetch(f"{url}/metrics")
    assert status == 200
    samples = families(text)["vllm:engine_sleep_state"]
    for labels, _ in samples:
        assert set(labels) == {"model_name", "engine", "sleep_state"}
    return {labels["sleep_state"]: value for labels, value in samples}


@pytest.mark.parametrize(("level", "asleep_state"), [(2, "discard_all"), (1, "weights_offloaded")])
def test_vllm_sleep_state_flips_between_steps_like_colocated_verl(
    served: Served, level: int, asleep_state: str
) -> None:
    """Three sleep_state series; awake during the rollout part of a step, asleep at verl's
    level (discard_all by default) while the trainer runs, awake again at the next step.
    Requests still running when it falls asleep are aborted."""
    load = LoadModel(step_seconds=10, rollout_fraction=0.5, median_tokens=400)
    engine = SimulatedEngine("vllm", MODEL, load, seed=2, options=ServerOptions(sleep_level=level))
    url = served.start(engine)
    start = 10_000.0  # a step boundary
    assert set(sleep_states(url)) == set(SLEEP_STATES)
    now = run(engine, start, 4)
    awake = {s: 1.0 if s == "awake" else 0.0 for s in SLEEP_STATES}
    assert sleep_states(url) == awake
    now = run(engine, now, 3)  # 7 s: the trainer's part of the step
    assert sleep_states(url) == {s: 1.0 if s == asleep_state else 0.0 for s in SLEEP_STATES}
    _, text = fetch(f"{url}/metrics")
    reasons = {labels["finished_reason"]: v for labels, v in families(text)["vllm:request_success"]}
    assert reasons["abort"] > 0  # the long tail cut by the sleep
    run(engine, now, 4)  # 11 s: the next step's rollout
    assert sleep_states(url) == awake


def test_metrics_off_is_what_verl_defaults_serve(
    served: Served,
) -> None:
    """verl's defaults: vLLM serves /metrics without any vllm: series; SGLang answers 404."""
    off = ServerOptions(metrics_off=True)
    vllm_url = served.start(SimulatedEngine("vllm", MODEL, LoadModel(), 3, off))
    sglang_url = served.start(SimulatedEngine("sglang", MODEL, LoadModel(), 4, off))
    for engine in served.engines:
        run(engine, 1000.0, 3)
    status, text = fetch(f"{vllm_url}/metrics")
    assert status == 200 and "vllm:" not in text
    assert any(name.startswith(("process_", "python_")) for name in families(text))
    assert fetch(f"{sglang_url}/metrics")[0] == 404
    assert fetch(f"{sglang_url}/health")[0] == 200


def test_idle_replica_gets_no_requests_while_others_work_through_a_long_tail() -> None:
    """An idle replica serves its series at zero; a busy one shows the long tail: truncation
    at max_tokens, preemptions when the KV cache is full, per-request token histograms."""
    load = LoadModel(
        step_seconds=10, median_tokens=200, sigma=1.2, max_tokens=600, kv_capacity_tokens=3000
    )
    idle = SimulatedEngine("vllm", MODEL, load, seed=5, options=ServerOptions(idle=True))
    busy = SimulatedEngine("vllm", MODEL, load, seed=6)
    for engine in (idle, busy):
        run(engine, 1000.0, 60)
    idle_families = families(_exposition(idle))
    assert sum(v for _, v in idle_families["vllm:prompt_tokens"]) == 0
    busy_families = families(_exposition(busy))
    reasons = {labels["finished_reason"]: v for labels, v in busy_families["vllm:request_success"]}
    assert reasons["stop"] > 0 and reasons["length"] > 0
    assert sum(v for _, v in busy_families["vllm:num_preemptions"]) > 0
    counts = [
        v for labels, v in busy_families["vllm:request_generation_tokens"] if "le" not in labels
    ]
    assert counts and max(counts) > 0


def _exposition(engine: SimulatedEngine) -> str:
    server = serve_metrics(engine)
    try:
        status, text = fetch(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert status == 200
    return text


def test_job_flags_name_replicas() -> None:
    """Contract 5: --metrics-off and --idle-replicas take R[,R...]; --sleep-between-steps takes
    an optional level (2, verl's default, when bare); --vllm-version / --sglang-version take a
    release the engine table knows."""
    args = parse_args(
        ["--address", "x", "--metrics-off", "0,2", "--sleep-between-steps", "--idle-replicas", "1"]
    )
    newest = {"vllm": "", "sglang": ""}
    assert server_options(args, 0) == {
        "metrics_off": True,
        "sleep_level": 2,
        "idle": False,
        "versions": newest,
        "speculative_tokens": 0,
    }
    assert server_options(args, 1)["idle"] and not server_options(args, 1)["metrics_off"]
    args = parse_args(["--address", "x", "--sleep-between-steps", "1"])
    assert server_options(args, 0)["sleep_level"] == 1
    assert server_options(parse_args(["--address", "x"]), 0)["sleep_level"] == 0
    args = parse_args(["--address", "x", "--sglang-version", "0.5.10", "--speculative-tokens", "2"])
    assert server_options(args, 0)["versions"] == {"vllm": "", "sglang": "0.5.10"}
    assert server_options(args, 0)["speculative_tokens"] == 2
    for bad in (
        ["--metrics-off", "a"],
        ["--idle-replicas", "\u0661"],
        ["--sleep-between-steps", "3"],
        ["--sglang-version", "0.4.0"],
        ["--vllm-version", "0.5.23"],
    ):
        with pytest.raises(SystemExit) as info:
            parse_args(["--address", "x", *bad])
        assert info.value.code == 2


def test_job_flags_through_real_ray_actors(ray_cluster: LocalRayCluster) -> None:
    """A job started the way users start one: replica 1 with metrics off (vLLM: no vllm:
    series; SGLang: 404), the engines sleeping between 2-second steps."""
    job = start_job(
        ray_cluster.address,
        "--vllm", "2", "--sglang", "2", "--metrics-off", "1", "--sleep-between-steps",
        "--step-seconds", "2",
    )  # fmt: skip
    try:
        addresses = job.addresses
        status, text = fetch(f"http://{addresses['vllm_server_1_0']}/metrics")
        assert status == 200 and "vllm:" not in text
        assert fetch(f"http://{addresses['sglang_server_1_0']}/metrics")[0] == 404
        assert fetch(f"http://{addresses['sglang_server_0_0']}/metrics")[0] == 200
        seen: set[str] = set()
        url = f"http://{addresses['vllm_server_0_0']}"
        for _ in range(40):  # 4 s of polling covers two steps
            states = sleep_states(url)
            seen |= {s for s, v in states.items() if v == 1}
            if seen >= {"awake", "discard_all"}:
                break
            time.sleep(0.1)
        assert seen >= {"awake", "discard_all"}
    finally:
        job.stop()
