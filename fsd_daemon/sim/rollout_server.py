"""Simulated rollout servers: Ray actors that look like verl's, for the demo and the tests.

The classes carry verl's class names (``vLLMHttpServer``, ``SGLangHttpServer``), are created
under verl's actor names by :mod:`fsd_daemon.sim.job`, answer ``get_server_address()`` like
verl (an assertion error until the HTTP server is up, then ``(ip, port)``), and serve a real
``/metrics`` on a port picked at run time, with the series of one engine release exactly as
:mod:`fsd_daemon.recognition.engines` lists them (names, types, label names per side; the entries
cite
the upstream files), selected by ``ServerOptions.version``:

- vLLM 0.33.0 / 0.34.0 (``vllm/v1/metrics/loggers.py``, PrometheusStatLogger): every series
  carries ``model_name`` and ``engine``; ``vllm:engine_sleep_state`` one series per
  ``sleep_state``; the ``spec_decode_*`` counters only with speculative decoding on
  (``speculative_tokens``, ``vllm/v1/spec_decode/metrics.py``).
- SGLang 0.5.10 / 0.5.23 (``sglang/srt/observability/metrics_collector.py``): scheduler series
  carry ``model_name``, ``engine_type``, ``tp_rank``, ``pp_rank``, ``moe_ep_rank``; tokenizer
  series carry ``model_name`` (0.5.10) or ``model_name`` and ``engine_type``, plus
  ``is_streaming`` on the token and request counters, TTFT and e2e latency (0.5.23, where a
  quarter of the simulated requests stream).

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
from collections.abc import Mapping
from dataclasses import dataclass, field
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

from fsd_daemon.mixin import names as n
from fsd_daemon.recognition import engines, verl

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
_ITL_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5)
# vLLM's build_1_2_5_buckets(max_model_len) for the per-request token histograms.
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# vLLM's three sleep states (awake = 1 when not sleeping; the level's state = 1 when asleep).
SLEEP_STATES = (n.SLEEP_AWAKE, n.SLEEP_WEIGHTS_OFFLOADED, n.SLEEP_DISCARD_ALL)
_STATE_OF_LEVEL = {1: n.SLEEP_WEIGHTS_OFFLOADED, 2: n.SLEEP_DISCARD_ALL}
# Share of requests sent with stream=True (SGLang >= 0.5.23 counts them under is_streaming).
_STREAMING_SHARE = 0.25
# Share of a prompt found in the prefix cache: GRPO sends each prompt n times.
_CACHED_PROMPT_SHARE = (0.5, 0.9)
# Speculative decoding: the chance that each draft token is accepted.
_DRAFT_ACCEPTANCE = 0.6


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
    # Prefill speed: a request's first token comes prompt_tokens / this seconds after it is
    # scheduled (vLLM's request_prefill_time_seconds; the rest is decode time).
    prefill_tokens_per_second: float = 2000.0
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
    # Per engine label, the release whose series shape /metrics serves
    # (fsd_daemon/recognition/engines.py),
    # e.g. {"sglang": "0.5.10"}; an engine not named (or "") serves the newest checked release.
    versions: Mapping[str, str] = field(default_factory=dict)
    # Draft tokens per step with speculative decoding (verl: MTP); 0 = off.
    speculative_tokens: int = 0


class _Request:
    __slots__ = ("arrived", "first_token", "generated", "length", "started", "streaming")

    def __init__(self, length: int, now: float, streaming: bool) -> None:
        self.length = length
        self.arrived = now
        self.started: float | None = None
        self.first_token: float | None = None
        self.generated = 0.0
        self.streaming = streaming

    @property
    def stream_label(self) -> dict[str, str]:
        return {n.SGLANG_IS_STREAMING: "true" if self.streaming else "false"}


# Histogram buckets by series; every other histogram gets the latency buckets.
_BUCKETS = {
    n.VLLM_ITL: _ITL_BUCKETS,
    n.SGLANG_ITL: _ITL_BUCKETS,
    n.VLLM_GENERATION_TOKENS_HISTOGRAM: _TOKEN_BUCKETS,
    n.VLLM_MAX_TOKENS_HISTOGRAM: _TOKEN_BUCKETS,
}


class EngineFamilies:
    """One engine release's series, created exactly as :mod:`fsd_daemon.recognition.engines` lists
    them
    (names, types, label names), with the values of the labels every series of a side carries:
    vLLM ``model_name`` and ``engine``; SGLang's scheduler ``model_name``, ``engine_type``,
    ``tp_rank``, ``pp_rank``, ``moe_ep_rank``, and its tokenizer ``model_name`` (0.5.10) or
    ``model_name`` and ``engine_type`` (0.5.23). Series exported only under a setting
    (``Series.only_when``) exist only when ``settings`` has it."""

    def __init__(
        self,
        engine: engines.Engine,
        version: str,
        model: str,
        registry: CollectorRegistry,
        settings: frozenset[str] = frozenset(),
    ) -> None:
        self.engine = engine
        self.shape = engine.shape(version) if version else engine.newest
        self._values = {
            n.MODEL_NAME: model,
            n.VLLM_ENGINE_INDEX: "0",
            n.SGLANG_ENGINE_TYPE: n.SGLANG_ENGINE_UNIFIED,
            n.SGLANG_TP_RANK: "0",
            n.SGLANG_PP_RANK: "0",
            n.SGLANG_MOE_EP_RANK: "0",
        }
        self._metrics: dict[str, Any] = {}
        for series in self.shape.series:
            if series.only_when and series.only_when not in settings:
                continue
            labels = self.shape.labels_of(series)
            doc = f"{series.name} as {engine.label} {self.shape.versions[-1]} exports it."
            if series.kind == engines.COUNTER:
                # prometheus_client appends _total itself.
                name = series.name.removesuffix("_total")
                metric: Any = Counter(name, doc, labels, registry=registry)
            elif series.kind == engines.GAUGE:
                metric = Gauge(series.name, doc, labels, registry=registry)
            else:
                buckets = _BUCKETS.get(series.name, _LATENCY_BUCKETS)
                metric = Histogram(series.name, doc, labels, buckets=buckets, registry=registry)
            self._metrics[series.name] = metric
            if not series.extra_labels:
                # As vLLM's create_metric_per_engine does at start-up: the series exists at 0.
                metric.labels(**{k: self._values[k] for k in self.shape.base_labels[series.side]})
        # Series a version has no extra label for simply drop it (is_streaming before 0.5.23).
        self._extra = {s.name: set(s.extra_labels) for s in self.shape.series}
        self._sides = {s.name: s.side for s in self.shape.series}

    def answers(self, question: engines.Reads) -> bool:
        return self.engine.reads.get(question) in self._metrics

    def child(self, question: engines.Reads, **extra: str) -> Any:
        """The labelled child of the series answering ``question``; ``extra`` labels this
        release does not have are left out."""
        name = self.engine.reads[question]
        base = {k: self._values[k] for k in self.shape.base_labels[self._sides[name]]}
        kept = {k: v for k, v in extra.items() if k in self._extra[name]}
        return self._metrics[name].labels(**base, **kept)

    def set(self, question: engines.Reads, value: float, **extra: str) -> None:
        if self.answers(question):
            self.child(question, **extra).set(value)

    def inc(self, question: engines.Reads, value: float = 1.0, **extra: str) -> None:
        if self.answers(question) and value > 0:
            self.child(question, **extra).inc(value)

    def observe(self, question: engines.Reads, value: float, **extra: str) -> None:
        if self.answers(question):
            self.child(question, **extra).observe(value)

    def record_sleep_level(self, level: int) -> None:
        """vLLM's engine_sleep_state: awake = 1 when not sleeping, the level's state = 1."""
        if n.VLLM_SLEEP_STATE not in self._metrics:
            return
        asleep_state = _STATE_OF_LEVEL.get(level)
        sleep = self._metrics[n.VLLM_SLEEP_STATE]
        base = {k: self._values[k] for k in self.shape.base_labels[engines.ENGINE_SIDE]}
        sleep.labels(**base, **{n.SLEEP_STATE: n.SLEEP_AWAKE}).set(0 if asleep_state else 1)
        for level_state in _STATE_OF_LEVEL.values():
            sleep.labels(**base, **{n.SLEEP_STATE: level_state}).set(
                1 if level_state == asleep_state else 0
            )


Q = engines.Reads


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
        settings = frozenset({n.SPECULATIVE_CONFIG} if self.options.speculative_tokens else ())
        self.metrics = EngineFamilies(
            engines.BY_LABEL[engine],
            self.options.versions.get(engine, ""),
            model,
            self.registry,
            settings,
        )
        self.metrics.record_sleep_level(0)
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
        if not self.asleep:
            self._generate(now, dt)
        m.set(Q.REQUESTS_PAUSED, len(self._waiting) if self.asleep else 0)
        m.set(Q.REQUESTS_RUNNING, len(self._running))
        m.set(Q.REQUESTS_WAITING, len(self._waiting))
        m.set(Q.KV_CACHE_USAGE, min(1.0, self._kv_tokens() / load.kv_capacity_tokens))
        if not self._running and not self._waiting:
            # SGLang's scheduler idle time: nothing runnable or queued (asleep included).
            m.inc(Q.IDLE_SECONDS, dt)

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
                self._finish(req, now, n.FINISHED_ABORT)
            self._running.clear()
            self._waiting.clear()
            self._set_sleep(True)

    def _set_sleep(self, asleep: bool) -> None:
        self.asleep = asleep
        self.metrics.record_sleep_level(self.options.sleep_level if asleep else 0)

    def _new_batch(self, now: float) -> None:
        load = self.load
        for _ in range(load.batch_per_replica):
            sampled = self._rng.lognormvariate(0, load.sigma) * load.median_tokens
            streaming = self._rng.random() < _STREAMING_SHARE
            self._waiting.append(
                _Request(max(1, int(min(load.max_tokens, sampled))), now, streaming)
            )
            self.metrics.observe(Q.MAX_TOKENS, load.max_tokens)

    def _admit(self, req: _Request, now: float) -> None:
        load, m = self.load, self.metrics
        if req.started is None:
            m.observe(Q.QUEUE_TIME, now - req.arrived)
        req.started = now
        cached = round(load.prompt_tokens * self._rng.uniform(*_CACHED_PROMPT_SHARE))
        m.inc(Q.PROMPT_TOKENS, load.prompt_tokens, **req.stream_label)
        m.inc(Q.PREFIX_CACHE_QUERIES, load.prompt_tokens)
        m.inc(Q.PREFIX_CACHE_HITS, cached)
        m.set(Q.PREFIX_CACHE_HIT_RATE, cached / load.prompt_tokens)
        self._running.append(req)

    def _generate(self, now: float, dt: float) -> None:
        load, m = self.load, self.metrics
        while self._waiting and len(self._running) < load.max_running:
            if self._running and self._kv_tokens() + load.prompt_tokens > load.kv_capacity_tokens:
                break  # no room in the KV cache: the scheduler admits nothing more
            self._admit(self._waiting.pop(0), now)
        produced = 0.0
        prefill_seconds = load.prompt_tokens / load.prefill_tokens_per_second
        for req in list(self._running):
            if req.started is not None and now < req.started + prefill_seconds:
                continue  # still in prefill: no token yet
            step_tokens = min(load.tokens_per_second_per_request * dt, req.length - req.generated)
            req.generated += step_tokens
            produced += step_tokens
            m.inc(Q.GENERATION_TOKENS, step_tokens, **req.stream_label)
            if req.first_token is None and req.generated >= 1:
                req.first_token = now
                m.observe(Q.TTFT, now - req.arrived, **req.stream_label)
            if step_tokens > 0:
                m.observe(
                    Q.ITL, 1.0 / load.tokens_per_second_per_request * self._rng.uniform(0.8, 1.3)
                )
            if req.generated >= req.length:
                self._running.remove(req)
                reason = n.FINISHED_LENGTH if req.length >= load.max_tokens else n.FINISHED_STOP
                self._finish(req, now, reason)
        self._speculate(produced)
        # A full KV cache preempts the newest request; it is recomputed when rescheduled.
        while len(self._running) > 1 and self._kv_tokens() > load.kv_capacity_tokens:
            victim = self._running.pop()
            victim.generated = 0.0
            self._waiting.insert(0, victim)
            m.inc(Q.PREEMPTIONS)

    def _speculate(self, produced: float) -> None:
        """With k draft tokens per step, each accepted with probability p, a step yields
        1 + k p tokens on average: the counters (vLLM) or gauges (SGLang) of that."""
        k, m = self.options.speculative_tokens, self.metrics
        if not k or produced <= 0:
            m.set(Q.SPEC_ACCEPT_RATE, 0)
            m.set(Q.SPEC_ACCEPT_LENGTH, 0)
            return
        accept_length = 1 + k * _DRAFT_ACCEPTANCE
        drafts = produced / accept_length
        m.inc(Q.SPEC_DRAFTS, drafts)
        m.inc(Q.SPEC_DRAFT_TOKENS, drafts * k)
        m.inc(Q.SPEC_ACCEPTED_TOKENS, drafts * k * _DRAFT_ACCEPTANCE)
        m.set(Q.SPEC_ACCEPT_RATE, _DRAFT_ACCEPTANCE)
        m.set(Q.SPEC_ACCEPT_LENGTH, accept_length)

    def _finish(self, req: _Request, now: float, reason: str) -> None:
        m = self.metrics
        m.inc(Q.REQUESTS_FINISHED, 1.0, **{n.FINISHED_REASON: reason, **req.stream_label})
        if reason == n.FINISHED_ABORT:
            m.inc(Q.REQUESTS_ABORTED)
        m.observe(Q.E2E_LATENCY, now - req.arrived, **req.stream_label)
        m.observe(Q.RESPONSE_LENGTH, req.generated)
        if req.started is not None and req.first_token is not None:
            m.observe(Q.PREFILL_TIME, req.first_token - req.started)
            m.observe(Q.DECODE_TIME, now - req.first_token)

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


def actor_name(
    server_cls: type, replica: int, node: int = 0, role: str = "", suffix: str = ""
) -> str:
    """The actor name verl gives a server of this class (fsd_daemon/recognition/verl.py
    SERVER_FORMS)."""
    return verl.SERVER_FORMS_BY_CLASS[server_cls.__name__].actor_name(replica, node, role, suffix)
