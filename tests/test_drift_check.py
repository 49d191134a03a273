"""bench/drift_check.py's comparison logic, on small fixture trees (nothing is downloaded).

Each fixture is a few lines written the way the upstream file writes them (SGLang 0.5.23
``sglang/srt/observability/metrics_collector.py``, vLLM ``vllm/v1/metrics/loggers.py``, verl
``verl/workers/rollout/vllm_rollout/vllm_async_server.py`` and ``replica.py``, Ray
``ray/util/state/common.py`` and ``ray/_private/metrics_agent.py``), then changed the way a
release could change it; the check must say exactly what changed.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from fsd_daemon.recognition import engines

REPO = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("drift_check", REPO / "bench" / "drift_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["drift_check"] = module
    spec.loader.exec_module(module)
    return module


drift = _load()

SGLANG_COLLECTOR = "sglang/srt/observability/metrics_collector.py"


def sglang_tree(tmp_path: Path, *, streaming: str = '["is_streaming"]', idle: bool = True) -> Path:
    """SGLang 0.5.23's collector as far as the table reads it; ``streaming`` is the extra label
    list of the tokenizer's split families, ``idle`` whether scheduler_idle exists."""
    idle_def = (
        """
        self.scheduler_idle_seconds_total = Counter(
            name="sglang:scheduler_idle_seconds_total",
            documentation="idle",
            labelnames=labels.keys(),
        )"""
        if idle
        else ""
    )
    gauges = "\n".join(
        f"""
        self.g{i} = Gauge(name="{name}", documentation="d", labelnames=labels.keys())"""
        for i, name in enumerate(
            (
                "sglang:num_running_reqs",
                "sglang:num_queue_reqs",
                "sglang:token_usage",
                "sglang:cache_hit_rate",
                "sglang:num_paused_reqs",
                "sglang:spec_accept_rate",
                "sglang:spec_accept_length",
            )
        )
    )
    source = f"""
def init_new(parallel):
    labels = {{
        "model_name": "m",
        "engine_type": "unified",
        "tp_rank": parallel.tp_rank,
        "pp_rank": parallel.pp_rank,
        "moe_ep_rank": parallel.moe_ep_rank,
    }}
    if parallel.dp_rank is not None:
        labels["dp_rank"] = parallel.dp_rank


def tokenizer_metric_labels():
    labels = {{"model_name": "m", "engine_type": "unified"}}
    return labels


class SchedulerMetricsCollector:
    def __init__(self, labels):{gauges}
        self.r = Counter(
            name="sglang:num_retracted_requests_total", documentation="d", labelnames=labels.keys()
        )
        self.q = Histogram(
            name="sglang:queue_time_seconds", documentation="d", labelnames=labels.keys()
        ){idle_def}


class TokenizerMetricsCollector:
    def __init__(self, labels):
        self.p = Counter(
            name="sglang:prompt_tokens_total",
            documentation="d",
            labelnames=list(labels.keys()) + {streaming},
        )
        self.g = Counter(
            name="sglang:generation_tokens_total",
            documentation="d",
            labelnames=list(labels.keys()) + {streaming},
        )
        self.n = Counter(
            name="sglang:num_requests_total",
            documentation="d",
            labelnames=list(labels.keys()) + {streaming},
        )
        self.a = Counter(
            name="sglang:num_aborted_requests_total", documentation="d", labelnames=labels.keys()
        )
        self.t = Histogram(
            name="sglang:time_to_first_token_seconds",
            documentation="d",
            labelnames=[*labels.keys(), *{streaming}],
        )
        self.i = Histogram(
            name="sglang:inter_token_latency_seconds", documentation="d", labelnames=labels.keys()
        )
        self.e = Histogram(
            name="sglang:e2e_request_latency_seconds",
            documentation="d",
            labelnames=list(labels.keys()) + {streaming},
        )
"""
    path = tmp_path / SGLANG_COLLECTOR
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return tmp_path


def diffs(findings: list) -> dict[str, str]:
    return {f.item: f.detail for f in findings if not f.ok}


def test_sglang_tree_as_released_has_no_difference(tmp_path: Path) -> None:
    tree = drift.Tree.from_dir(sglang_tree(tmp_path))
    findings = drift.check_engine(tree, engines.SGLANG, "0.5.23")
    assert diffs(findings) == {}
    assert len(findings) == 3 + len(engines.SGLANG.shape("0.5.23").series)


def test_a_lost_label_and_a_dropped_series_are_reported(tmp_path: Path) -> None:
    """A release without is_streaming and without scheduler_idle_seconds_total (the 0.5.10
    shape) read against the 0.5.23 table: every split family and the idle counter differ."""
    tree = drift.Tree.from_dir(sglang_tree(tmp_path, streaming="[]", idle=False))
    found = diffs(drift.check_engine(tree, engines.SGLANG, "0.5.23"))
    assert found["sglang:scheduler_idle_seconds_total"] == "not defined any more"
    assert found["sglang:generation_tokens_total"] == (
        "labels ['engine_type', 'model_name'], table ['engine_type', 'is_streaming', 'model_name']"
    )
    assert set(found) == {
        "sglang:scheduler_idle_seconds_total",
        "sglang:prompt_tokens_total",
        "sglang:generation_tokens_total",
        "sglang:num_requests_total",
        "sglang:time_to_first_token_seconds",
        "sglang:e2e_request_latency_seconds",
    }


def test_an_unknown_release_is_compared_with_the_newest_shape(tmp_path: Path) -> None:
    tree = drift.Tree.from_dir(sglang_tree(tmp_path))
    findings = drift.check_engine(tree, engines.SGLANG, "0.6.0")
    assert "compared with its newest shape (0.5.23)" in findings[0].detail
    assert diffs(findings) == {}


def test_vllm_type_change_and_indirect_names(tmp_path: Path) -> None:
    """vLLM defines its base labels as a list; a family turned from Counter to Gauge is a
    difference; names defined through a tuple are found but their labels are not checked."""
    source = """
class PrometheusStatLogger:
    def __init__(self):
        labelnames = ["model_name", "engine"]
        self.a = self._gauge_cls(name="vllm:num_requests_running", documentation="d",
                                 labelnames=labelnames)
        self.b = self._gauge_cls(name="vllm:prompt_tokens", documentation="d",
                                 labelnames=labelnames)
        reasons = labelnames + ["finished_reason"]
        self.c = self._counter_cls(name="vllm:request_success",
                                   documentation="d", labelnames=reasons)
        for name, doc in [("vllm:spec_decode_num_drafts", "d")]:
            self._counter_cls(name=name, documentation=doc, labelnames=labelnames)
"""
    path = tmp_path / "vllm/v1/metrics/loggers.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    findings = drift.check_engine(drift.Tree.from_dir(tmp_path), engines.VLLM, "0.34.0")
    by_item = {f.item: f for f in findings}
    assert by_item["engine base labels"].ok
    assert by_item["vllm:num_requests_running"].ok
    assert by_item["vllm:request_success_total"].ok  # labelnames=reasons followed
    assert not by_item["vllm:prompt_tokens_total"].ok
    assert by_item["vllm:prompt_tokens_total"].detail == "type gauge, table counter"
    assert by_item["vllm:spec_decode_num_drafts_total"].detail == (
        "defined indirectly (labels not checked)"
    )
    assert by_item["vllm:kv_cache_usage_perc"].detail == "not defined any more"


def test_verl_names_classes_and_switches(tmp_path: Path) -> None:
    """A verl whose vLLM servers are named as verl main names them is recognised; a renamed
    server (``vllm_srv_...``) and an unknown GPU worker class are differences; the metrics keys
    and RL-Insight's switch are read from rollout.yaml and the sources."""
    server = """
class vLLMHttpServer:
    pass


class vLLMReplica:
    def _get_server_name_prefix(self):
        return "vllm_"

    async def launch_servers(self):
        prefix = self._get_server_name_prefix()
        name = f"{prefix}server_{self.replica_rank}_{node_rank}{self.name_suffix}"
        name = f"vllm_srv_{self.replica_rank}_{node_rank}"
"""
    replica = """
class CheckpointEngineWorker:
    pass


class FutureGpuWorker:
    pass


class TrainingWorker:
    pass


class vLLMAsyncRollout:
    pass


class AgentLoopWorker:
    pass


_rollout_worker_actor_cls = ray.remote(vLLMAsyncRollout)


def build():
    a = RayClassWithInitArgs(cls=ray.remote(CheckpointEngineWorker))
    b = ray.remote(TrainingWorker)
    c = RayClassWithInitArgs(cls=_rollout_worker_actor_cls, config=None)
    d = ray.remote(AgentLoopWorker)
    e = RayClassWithInitArgs(cls=ray.remote(FutureGpuWorker))
    os.environ.get("VERL_RL_INSIGHT_ENABLE")
"""
    files = {
        "verl/workers/rollout/vllm_rollout/vllm_async_server.py": server,
        "verl/workers/rollout/replica.py": replica,
        "verl/trainer/config/rollout/rollout.yaml": "disable_log_stats: True\n"
        "prometheus:\n  enable: False\n",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    findings = drift.check_verl(drift.Tree.from_dir(tmp_path), "test")
    by_item = {f.item.split(" (")[0]: f for f in findings}
    assert by_item["server class vLLMHttpServer"].ok
    good = by_item["actor name f'{prefix}server_{self.replica_rank}_{node_rank}{self.name_suffix}'"]
    assert good.ok and good.detail.startswith("vllm_server_3_0_Qwen_Qwen3-8B -> role rollout")
    bad = by_item["actor name f'vllm_srv_{self.replica_rank}_{node_rank}'"]
    assert not bad.ok
    assert by_item["GPU worker class TrainingWorker"].ok
    # In the role table (verl 0.7.1+ and 0.6-0.7.0's rollout worker groups); a class it does
    # not know is a difference.
    assert by_item["GPU worker class CheckpointEngineWorker"].ok
    # verl 0.6-0.7.0's rollout worker group, through a module-level ray.remote (not a Worker).
    assert by_item["GPU worker class vLLMAsyncRollout"].ok
    assert not by_item["GPU worker class FutureGpuWorker"].ok
    assert by_item["worker class AgentLoopWorker"].ok  # a CPU actor
    assert by_item["rollout.disable_log_stats"].detail == "default True"
    assert by_item["rollout.prometheus.enable"].detail == "default False"
    assert by_item["VERL_RL_INSIGHT_ENABLE"].ok
    # The same tree through the command (--tree: a checkout of verl main, no wheel).
    assert drift.main(["--only", "verl", "--tree", f"verl={tmp_path}"]) == 1
    assert drift.main(["--only", "verl", "--tree", "verl=/nonexistent"]) == 2


def test_ray_fields_and_service_discovery(tmp_path: Path) -> None:
    """Ray's state API fields and its service-discovery writer; a new KV address (a third
    component) and a dropped ActorState field are differences."""
    common = """
class ActorState:
    actor_id: str
    class_name: str
    state: str
    job_id: str
    name: str
    node_id: str
    pid: int


class NodeState:
    node_id: str
    node_ip: str
    node_name: str
    is_head_node: bool
    state: str
"""
    agent = """
class PrometheusServiceDiscoveryWriter:
    def __init__(self, gcs_address, temp_dir, session_dir=None):
        self.session_dir = session_dir

    def get_file_discovery_content(self):
        nodes = [build_address(n["NodeManagerAddress"], n["MetricsExportPort"]) for n in x]
        a = kv(b"AutoscalerMetricsAddress", None)
        d = kv(b"DashboardMetricsAddress", None)
        s = kv(b"ServeMetricsAddress", None)
        content = [{"labels": {"job": "ray"}, "targets": nodes}]
"""
    files = {
        "ray/util/state/common.py": common,
        "ray/_private/metrics_agent.py": agent,
        "ray/_private/ray_constants.py": (
            'PROMETHEUS_SERVICE_DISCOVERY_FILE = "prom_metrics_service_discovery.json"\n'
        ),
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    found = {f.item: f for f in drift.check_ray(drift.Tree.from_dir(tmp_path), "test")}
    assert found["state API ActorState"].detail == "missing ['ray_namespace']"
    assert found["state API NodeState"].ok
    assert found["service-discovery file name"].ok
    kv = found["service-discovery KV addresses"]
    assert not kv.ok and "ServeMetricsAddress" in kv.detail
    assert found["service-discovery node fields"].ok
    assert found["service-discovery group"].ok
    assert "session directory" in found["service-discovery file place"].detail


def test_command_reads_wheels_from_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command with --wheels uses what is there (no download): a wheel built from the
    SGLang fixture reports no difference and exits 0."""
    import zipfile

    tree = sglang_tree(tmp_path / "src")
    folder = tmp_path / "wheels" / "sglang_0.5.23"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "sglang-0.5.23-py3-none-any.whl", "w") as wheel:
        wheel.write(tree / SGLANG_COLLECTOR, SGLANG_COLLECTOR)
    rc = drift.main(
        ["--wheels", str(tmp_path / "wheels"), "--only", "sglang", "--sglang", "0.5.23"]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "# 0 difference(s)" in out
