"""Simulated rollout servers: Ray actors that look like verl's, for the demo and the tests.

The classes carry verl's class names (``vLLMHttpServer``, ``SGLangHttpServer``), are created
under verl's actor names by :mod:`fsd_daemon.sim.job`, answer ``get_server_address()`` like
verl (an assertion error until the HTTP server is up, then ``(ip, port)``), and serve a real
``/metrics`` on a port picked at run time, with the series and labels of the upstream versions
listed in ``docs/upstream.md``:

- vLLM (vllm/v1/metrics/loggers.py, PrometheusStatLogger): every series carries
  ``model_name`` and ``engine``; ``vllm:engine_sleep_state`` has one series per ``sleep_state``
  (awake, weights_offloaded, discard_all).
- SGLang (python/sglang/srt/metrics/collector.py): the tokenizer manager's series (tokens,
  requests, latency histograms) carry ``model_name`` only; the scheduler's carry
  ``model_name``, ``engine_type``, ``tp_rank``, ``pp_rank`` and ``moe_ep_rank``
  (managers/scheduler_metrics_mixin.py).

The load model is an RL rollout step: every ``step_seconds`` each replica gets a batch of
requests whose generation lengths follow a heavy-tailed distribution, so some replicas finish
early and sit idle while others work through the long tail (truncations at ``max_tokens``,
preemptions when the KV cache is full). Options follow verl's defaults and modes:

- ``metrics_off``: verl's defaults (``disable_log_stats: True``, ``prometheus.enable: False``):
  vLLM serves ``/metrics`` without any ``vllm:`` series, SGLang has no ``/metrics`` (404).
- ``sleep_level``: colocated (hybrid) training: steps are aligned to the wall clock across
  replicas; after the rollout part of a step the engine sleeps (verl's level 2, discard_all, or
  level 1, weights_offloaded, with LoRA adapters or MTP) while the trainer has the GPUs, and
  wakes up for the next step. Requests still running then are aborted.
- ``idle``: the replica gets no requests at all.
"""

from __future__ import annotations

import http.server
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
_ITL_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5)
# vLLM's build_1_2_5_buckets(max_model_len) for the per-request token histograms.
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# vLLM's three sleep states (awake = 1 when not sleeping; the level's state = 1 when asleep).
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
_STATE_OF_LEVEL = {1: "weights_offloaded", 2: "discard_all"}


@dataclass(frozen=True)
class LoadModel:
    step_seconds: float = 20.0
    batch_per_replica: int = 16
    max_running: int = 8
    tokens_per_second_per_request: float = 40.0
    # Generation lengths: lognormal, so a few requests are many times longer than the median;
    # those reaching max_tokens finish with finished_reason="length".
    median_tokens: float = 120.0
    sigma: float = 1.0
    max_tokens: int = 1024
    prompt_tokens: int = 256
    # KV cache size in tokens: when the running requests outgrow it, the newest is preempted
    # (vLLM) or retracted (SGLang) and recomputed later.
    kv_capacity_tokens: int = 8 * (256 + 600)
    # With sleep between steps: the part of a step the engine is awake for rollout.
    rollout_fraction: float = 0.6
    # Batches at multiples of step_seconds on the wall clock, so that replicas in different
    # processes get theirs at the same moment (fsd_daemon.sim.scenario).
    align_steps: bool = False


@dataclass(frozen=True)
class ServerOptions:
    """How one simulated server deviates from a plain busy replica (see the module doc)."""

    metrics_off: bool = False
    sleep_level: int = 0  # 0: never sleeps; 1 or 2: sleeps between steps at that level
    idle: bool = False


class _Request:
    __slots__ = ("arrived", "first_token", "generated", "length", "started")

    def __init__(self, length: int, now: float) -> None:
        self.length = length
        self.arrived = now
        self.started: float | None = None
        self.first_token: float | None = None
        self.generated = 0.0


class _VllmMetrics:
    """vLLM V1's families (vllm/v1/metrics/loggers.py), labels model_name and engine."""

    def __init__(self, model: str, registry: CollectorRegistry) -> None:
        r, keys = registry, ["model_name", "engine"]
        labels = {"model_name": model, "engine": "0"}
        self.labels = labels

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, keys, registry=r).labels(**labels)

        def counter(name: str, doc: str) -> Any:
            return Counter(name, doc, keys, registry=r).labels(**labels)

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Any:
            return Histogram(name, doc, keys, buckets=buckets, registry=r).labels(**labels)

        self.running = gauge("vllm:num_requests_running", "Requests in execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Requests waiting to be processed.")
        self.kv = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prompt = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation = counter("vllm:generation_tokens", "Number of generation tokens.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemptions.")
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*keys, "finished_reason"],
            registry=r,
        )
        self.finished = {
            reason: success.labels(**labels, finished_reason=reason)
            for reason in ("stop", "length", "abort")
        }
        self.generation_per_request = hist(
            "vllm:request_generation_tokens", "Generation tokens per request.", _TOKEN_BUCKETS
        )
        self.max_tokens_param = hist(
            "vllm:request_params_max_tokens", "The max_tokens request parameter.", _TOKEN_BUCKETS
        )
        self.ttft = hist(
            "vllm:time_to_first_token_seconds", "Time to first token.", _LATENCY_BUCKETS
        )
        self.itl = hist("vllm:inter_token_latency_seconds", "Inter-token latency.", _ITL_BUCKETS)
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds", "E2E request latency.", _LATENCY_BUCKETS
        )
        self.queue = hist("vllm:request_queue_time_seconds", "Time in WAITING.", _LATENCY_BUCKETS)
        sleep = Gauge(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is "
            "awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep "
            "level 2.",
            [*keys, "sleep_state"],
            registry=r,
        )
        self._sleep = {s: sleep.labels(**labels, sleep_state=s) for s in SLEEP_STATES}
        self.record_sleep_level(0)

    def record_sleep_level(self, level: int) -> None:
        asleep_state = _STATE_OF_LEVEL.get(level)
        self._sleep["awake"].set(0 if asleep_state else 1)
        for level_state in _STATE_OF_LEVEL.values():
            self._sleep[level_state].set(1 if level_state == asleep_state else 0)


class _SglangMetrics:
    """SGLang's families (0.5.10: sglang/srt/observability/metrics_collector.py; older trees:
    python/sglang/srt/metrics/collector.py): the tokenizer manager's carry model_name only,
    the scheduler's carry the scheduler labels too."""

    def __init__(self, model: str, registry: CollectorRegistry) -> None:
        r = registry
        tokenizer = {"model_name": model}
        scheduler = {
            "model_name": model,
            "engine_type": "unified",
            "tp_rank": "0",
            "pp_rank": "0",
            "moe_ep_rank": "0",
        }
        self.labels = scheduler

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, list(scheduler), registry=r).labels(**scheduler)

        def counter(name: str, doc: str, labels: dict[str, str]) -> Any:
            return Counter(name, doc, list(labels), registry=r).labels(**labels)

        def hist(name: str, doc: str, labels: dict[str, str], buckets: tuple[float, ...]) -> Any:
            return Histogram(name, doc, list(labels), buckets=buckets, registry=r).labels(**labels)

        # Scheduler side.
        self.running = gauge("sglang:num_running_reqs", "The number of running requests.")
        self.waiting = gauge("sglang:num_queue_reqs", "Requests in the waiting queue.")
        self.kv = gauge("sglang:token_usage", "The token usage.")
        self.throughput = gauge("sglang:gen_throughput", "The generation throughput (token/s).")
        self.paused = gauge("sglang:num_paused_reqs", "Requests paused by async weight sync.")
        self.preemptions = counter(
            "sglang:num_retracted_requests", "Total number of retracted requests.", scheduler
        )
        self.queue = hist(
            "sglang:queue_time_seconds", "Queueing time in seconds.", scheduler, _LATENCY_BUCKETS
        )
        # Tokenizer side.
        self.prompt = counter("sglang:prompt_tokens", "Number of prefill tokens.", tokenizer)
        self.generation = counter("sglang:generation_tokens", "Generation tokens.", tokenizer)
        requests = counter("sglang:num_requests", "Number of requests processed.", tokenizer)
        self.finished = {reason: requests for reason in ("stop", "length", "abort")}
        # TokenizerMetricsCollector.num_aborted_requests_total, counted by abort_request()
        # (SGLang 0.5.10 sglang/srt/observability/metrics_collector.py, tokenizer_manager.py).
        self.aborted = counter(
            "sglang:num_aborted_requests", "Number of requests aborted.", tokenizer
        )
        self.ttft = hist("sglang:time_to_first_token_seconds", "TTFT.", tokenizer, _LATENCY_BUCKETS)
        self.itl = hist("sglang:inter_token_latency_seconds", "ITL.", tokenizer, _ITL_BUCKETS)
        self.e2e = hist(
            "sglang:e2e_request_latency_seconds", "E2E latency.", tokenizer, _LATENCY_BUCKETS
        )


class SimulatedEngine:
    """Runs the load model in a thread and keeps the metric families up to date."""

    def __init__(
        self,
        engine: str,
        model: str,
        load: LoadModel,
        seed: int,
        options: ServerOptions | None = None,
    ) -> None:
        self.engine = engine
        self.load = load
        self.options = options or ServerOptions()
        # The engine's series live here whether or not they are served (verl's defaults
        # still run the engine; they only leave its stats out of /metrics).
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics: _VllmMetrics | _SglangMetrics = (
            _VllmMetrics(model, self.registry)
            if engine == "vllm"
            else _SglangMetrics(model, self.registry)
        )
        self._rng = random.Random(seed)
        self._waiting: list[_Request] = []
        self._running: list[_Request] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-engine", daemon=True)
        self.asleep = False
        self._next_batch: float | None = None
        self._batched_step: float | None = None  # start of the step whose batch arrived

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, tick: float = 0.1) -> None:
        last = time.time()
        while not self._stop.wait(tick):
            now = time.time()
            self.step(now, now - last)
            last = now

    def step(self, now: float, dt: float) -> None:
        """Advance the model to wall-clock time ``now`` (``dt`` seconds after the last step)."""
        load, m = self.load, self.metrics
        if self.options.sleep_level:
            self._follow_training_schedule(now)
        elif self._next_batch is None:
            self._next_batch = (
                math.ceil(now / load.step_seconds) * load.step_seconds
                if load.align_steps
                else now + self._rng.uniform(0, 1.0)
            )
        if self._next_batch is not None and now >= self._next_batch:
            self._next_batch = (
                None if self.options.sleep_level else self._next_batch + load.step_seconds
            )
            if not self.options.idle:
                self._new_batch(now)
        produced = 0.0 if self.asleep else self._generate(now, dt)
        m.generation.inc(produced)
        if isinstance(m, _SglangMetrics):
            m.throughput.set(produced / dt if dt > 0 else 0.0)
            m.paused.set(len(self._waiting) if self.asleep else 0)
        m.running.set(len(self._running))
        m.waiting.set(len(self._waiting))
        m.kv.set(min(1.0, self._kv_tokens() / load.kv_capacity_tokens))

    def _follow_training_schedule(self, now: float) -> None:
        """Steps aligned to the wall clock, so every replica of every job sleeps together, as
        verl's colocated trainer puts all rollout replicas to sleep after the rollout."""
        load = self.load
        step_start = math.floor(now / load.step_seconds) * load.step_seconds
        in_rollout = now < step_start + load.rollout_fraction * load.step_seconds
        if in_rollout:
            if self.asleep:
                self._set_sleep(False)  # wake_up: weights synced, the step's rollout begins
            if self._batched_step != step_start:
                self._batched_step = step_start
                self._next_batch = now
        elif not self.asleep:
            for req in self._running + self._waiting:
                self._finish(req, now, "abort")
            self._running.clear()
            self._waiting.clear()
            self._set_sleep(True)

    def _set_sleep(self, asleep: bool) -> None:
        self.asleep = asleep
        if isinstance(self.metrics, _VllmMetrics):
            self.metrics.record_sleep_level(self.options.sleep_level if asleep else 0)

    def _new_batch(self, now: float) -> None:
        load = self.load
        for _ in range(load.batch_per_replica):
            sampled = self._rng.lognormvariate(0, load.sigma) * load.median_tokens
            self._waiting.append(_Request(max(1, int(min(load.max_tokens, sampled))), now))
            if isinstance(self.metrics, _VllmMetrics):
                self.metrics.max_tokens_param.observe(load.max_tokens)

    def _generate(self, now: float, dt: float) -> float:
        load, m = self.load, self.metrics
        while self._waiting and len(self._running) < load.max_running:
            if self._running and self._kv_tokens() + load.prompt_tokens > load.kv_capacity_tokens:
                break  # no room in the KV cache: the scheduler admits nothing more
            req = self._waiting.pop(0)
            if req.started is None:
                m.queue.observe(now - req.arrived)
            req.started = now
            m.prompt.inc(load.prompt_tokens)
            self._running.append(req)
        produced = 0.0
        for req in list(self._running):
            step_tokens = min(load.tokens_per_second_per_request * dt, req.length - req.generated)
            req.generated += step_tokens
            produced += step_tokens
            if req.first_token is None and req.generated >= 1:
                req.first_token = now
                m.ttft.observe(now - req.arrived)
            if step_tokens > 0:
                m.itl.observe(
                    1.0 / load.tokens_per_second_per_request * self._rng.uniform(0.8, 1.3)
                )
            if req.generated >= req.length:
                self._running.remove(req)
                self._finish(req, now, "length" if req.length >= load.max_tokens else "stop")
        # A full KV cache preempts the newest request; it is recomputed when rescheduled.
        while len(self._running) > 1 and self._kv_tokens() > load.kv_capacity_tokens:
            victim = self._running.pop()
            victim.generated = 0.0
            self._waiting.insert(0, victim)
            m.preemptions.inc()
        return produced

    def _finish(self, req: _Request, now: float, reason: str) -> None:
        m = self.metrics
        m.finished[reason].inc()
        if reason == "abort" and isinstance(m, _SglangMetrics):
            m.aborted.inc()
        m.e2e.observe(now - req.arrived)
        if isinstance(m, _VllmMetrics):
            m.generation_per_request.observe(req.generated)

    def _kv_tokens(self) -> float:
        return sum(self.load.prompt_tokens + r.generated for r in self._running)


def _metrics_registry(engine: SimulatedEngine, has_route: bool) -> CollectorRegistry | None:
    """What /metrics serves: the engine's series; with metrics off, vLLM's process series only
    (vLLM always serves /metrics) and nothing for SGLang (no route)."""
    if not has_route:
        return None
    if not engine.options.metrics_off:
        return engine.registry
    if engine.engine != "vllm":
        return None
    bare = CollectorRegistry(auto_describe=True)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        bare.register(collector)
    return bare


class _MetricsHandler(http.server.BaseHTTPRequestHandler):
    registry: CollectorRegistry | None = None  # set per server by serve_metrics

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/health":
            self._answer(200, b"", "text/plain")
        elif self.path.split("?", 1)[0] == "/metrics" and self.registry is not None:
            self._answer(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        else:
            self._answer(404, b'{"detail":"Not Found"}', "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def serve_metrics(
    engine: SimulatedEngine, host: str = "127.0.0.1", *, has_route: bool = True
) -> http.server.HTTPServer:
    """Serve ``/metrics`` (unless ``has_route`` is false) and ``/health`` for ``engine`` on
    ``host`` at a free port."""
    registry = _metrics_registry(engine, has_route)
    handler = type("Handler", (_MetricsHandler,), {"registry": registry})
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sim-http", daemon=True).start()
    return server


class _SimulatedServerBase:
    """The body shared by the simulated server classes (verl's are distinct classes too)."""

    ENGINE = "vllm"
    HAS_METRICS_ROUTE = True

    def __init__(
        self,
        model: str = "Qwen/Qwen2.5-0.5B-Instruct",
        seed: int = 0,
        launch_delay: float = 0.0,
        load: dict[str, Any] | None = None,
        legacy_address: bool = False,
        hang_address: bool = False,
        options: dict[str, Any] | None = None,
        cuda_visible_devices: str = "",
    ) -> None:
        if cuda_visible_devices:
            import os

            # verl main's vLLMHttpServer.__init__ (vllm_async_server.py): the GPUs of its
            # replica's workers, set in its own environment, inherited by the engine processes
            # it starts; the environment this actor was started with does not name them.
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
        self._engine_procs: list[Any] = []
        self._hang_address = hang_address
        self._engine = SimulatedEngine(
            self.ENGINE, model, LoadModel(**(load or {})), seed, ServerOptions(**(options or {}))
        )
        self._port: int | None = None
        self._host = "127.0.0.1"
        self._legacy_address = legacy_address
        # verl creates the actor, then launches HTTP: until then get_server_address() fails.
        self._launch = threading.Timer(launch_delay, self._launch_server)
        self._launch.daemon = True
        self._launch.start()

    def _launch_server(self) -> None:
        import ray

        # Serve on, and answer with, the node's own address: a server on another node must be
        # reachable from the head (127.0.0.1 on a one-machine cluster started with that IP).
        self._host = ray.util.get_node_ip_address()
        server = serve_metrics(self._engine, self._host, has_route=self.HAS_METRICS_ROUTE)
        self._port = int(server.server_address[1])
        self._engine.start()

    def get_server_address(self) -> Any:
        if self._hang_address:
            # A server stuck in start-up (a hung engine): the call never returns. Such an actor
            # is created with max_concurrency > 1 so its other methods still answer.
            threading.Event().wait()
        assert self._port is not None, "http server is not launched, port is None"
        if self._legacy_address:
            return f"{self._host}:{self._port}"  # verl <= 0.5 returned "ip:port"
        return (self._host, self._port)

    def pid(self) -> int:
        import os

        return os.getpid()

    def spawn_worker(self) -> int:
        """Start a child process standing for the engine's GPU worker; returns its pid."""
        import subprocess
        import sys

        # The child ends by itself once its parent (this actor) is gone: no orphan outlives
        # the test or the demo that started it.
        watch_parent = (
            "import os, time\nparent = os.getppid()\nwhile os.getppid() == parent: time.sleep(0.5)"
        )
        proc = subprocess.Popen([sys.executable, "-c", watch_parent])
        self._worker = proc
        return int(proc.pid)

    def start_engine(self, memory_bytes: int) -> list[int]:
        """Start the engine's GPU worker processes, one per GPU of this actor's
        ``CUDA_VISIBLE_DEVICES``, as children (vLLM's mp executor, verl main); each holds
        ``memory_bytes`` on its GPU (0: still loading, none yet). Returns their pids."""
        import os
        import subprocess
        import sys

        from fsd_daemon.sim import SIMULATED_GPU_MEMORY_ENV

        watch_parent = (
            "import os, time\nparent = os.getppid()\nwhile os.getppid() == parent: time.sleep(0.5)"
        )
        for gpu in filter(None, os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")):
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
            if memory_bytes:
                env[SIMULATED_GPU_MEMORY_ENV] = str(memory_bytes)
            self._engine_procs.append(
                subprocess.Popen([sys.executable, "-c", watch_parent], env=env)
            )
        return [int(p.pid) for p in self._engine_procs]


class vLLMHttpServer(_SimulatedServerBase):
    ENGINE = "vllm"


class SGLangHttpServer(_SimulatedServerBase):
    ENGINE = "sglang"


class AsyncvLLMServer(_SimulatedServerBase):
    """verl <= 0.5: its FastAPI app serves /v1/chat/completions only, no /metrics
    (verl v0.5.0 verl/workers/rollout/async_server.py)."""

    ENGINE = "vllm"
    HAS_METRICS_ROUTE = False
