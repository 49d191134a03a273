"""Simulated rollout servers: Ray actors that look like verl's, for the demo and the tests.

The classes carry verl's class names (``vLLMHttpServer``, ``SGLangHttpServer``), are created
under verl's actor names by :mod:`fsd_daemon.sim.job`, answer ``get_server_address()`` like
verl (an assertion error until the HTTP server is up, then ``(ip, port)``), and serve a real
``/metrics`` on a port picked at run time with the current vLLM V1 / SGLang metric names.

The load model is an RL rollout step: every ``step_seconds`` each replica gets a batch of
requests whose generation lengths follow a heavy-tailed distribution, so some replicas finish
early and sit idle while others work through the long tail.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
_ITL_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5)


@dataclass(frozen=True)
class LoadModel:
    step_seconds: float = 20.0
    batch_per_replica: int = 16
    max_running: int = 8
    tokens_per_second_per_request: float = 40.0
    # Generation lengths: lognormal, so a few requests are many times longer than the median.
    median_tokens: float = 120.0
    sigma: float = 1.0
    max_tokens: int = 2048
    prompt_tokens: int = 256


class _Request:
    __slots__ = ("arrived", "first_token", "generated", "length", "started")

    def __init__(self, length: int, now: float) -> None:
        self.length = length
        self.arrived = now
        self.started: float | None = None
        self.first_token: float | None = None
        self.generated = 0.0


class _Metrics:
    """One engine's metric families, named as the engine names them."""

    def __init__(self, engine: str, model: str, registry: CollectorRegistry) -> None:
        r = registry
        if engine == "vllm":
            labels = {"model_name": model, "engine": "0"}
            names = dict(
                running="vllm:num_requests_running",
                waiting="vllm:num_requests_waiting",
                kv="vllm:kv_cache_usage_perc",
                prompt="vllm:prompt_tokens",
                generation="vllm:generation_tokens",
                success="vllm:request_success",
                ttft="vllm:time_to_first_token_seconds",
                itl="vllm:inter_token_latency_seconds",
                e2e="vllm:e2e_request_latency_seconds",
                queue="vllm:request_queue_time_seconds",
            )
        else:
            labels = {"model_name": model, "engine_type": "unified", "tp_rank": "0", "pp_rank": "0"}
            names = dict(
                running="sglang:num_running_reqs",
                waiting="sglang:num_queue_reqs",
                kv="sglang:token_usage",
                prompt="sglang:prompt_tokens",
                generation="sglang:generation_tokens",
                success="sglang:num_requests",
                ttft="sglang:time_to_first_token_seconds",
                itl="sglang:inter_token_latency_seconds",
                e2e="sglang:e2e_request_latency_seconds",
                queue="sglang:queue_time_seconds",
            )
        keys = list(labels)
        self.labels = labels

        def gauge(key: str, doc: str) -> Any:
            return Gauge(names[key], doc, keys, registry=r).labels(**labels)

        def counter(key: str, doc: str, extra: tuple[str, ...] = ()) -> Any:
            return Counter(names[key], doc, [*keys, *extra], registry=r)

        def hist(key: str, doc: str, buckets: tuple[float, ...]) -> Any:
            return Histogram(names[key], doc, keys, buckets=buckets, registry=r).labels(**labels)

        self.running = gauge("running", "Requests running on the engine.")
        self.waiting = gauge("waiting", "Requests waiting to be scheduled.")
        self.kv = gauge("kv", "KV-cache usage, 0-1.")
        self.prompt = counter("prompt", "Prefill tokens processed.").labels(**labels)
        self.generation = counter("generation", "Generation tokens produced.").labels(**labels)
        if engine == "vllm":
            self.success = counter("success", "Finished requests.", ("finished_reason",)).labels(
                **labels, finished_reason="stop"
            )
            Gauge(
                "vllm:engine_sleep_state", "Engine sleep state.", [*keys, "sleep_state"], registry=r
            ).labels(**labels, sleep_state="awake").set(1)
        else:
            self.success = counter("success", "Finished requests.").labels(**labels)
            self.throughput = Gauge(
                "sglang:gen_throughput", "Generation throughput, tokens/s.", keys, registry=r
            ).labels(**labels)
        self.ttft = hist("ttft", "Time to first token.", _LATENCY_BUCKETS)
        self.itl = hist("itl", "Inter-token latency.", _ITL_BUCKETS)
        self.e2e = hist("e2e", "End-to-end request latency.", _LATENCY_BUCKETS)
        self.queue = hist("queue", "Time spent waiting in the queue.", _LATENCY_BUCKETS)


class SimulatedEngine:
    """Runs the load model in a thread and keeps the metric families up to date."""

    def __init__(self, engine: str, model: str, load: LoadModel, seed: int) -> None:
        self.engine = engine
        self.load = load
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = _Metrics(engine, model, self.registry)
        self._rng = random.Random(seed)
        self._waiting: list[_Request] = []
        self._running: list[_Request] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-engine", daemon=True)
        self._next_batch = time.monotonic() + self._rng.uniform(0, 1.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, tick: float = 0.1) -> None:
        last = time.monotonic()
        while not self._stop.wait(tick):
            now = time.monotonic()
            self.step(now, now - last)
            last = now

    def step(self, now: float, dt: float) -> None:
        load, m = self.load, self.metrics
        if now >= self._next_batch:
            self._next_batch = now + load.step_seconds
            for _ in range(load.batch_per_replica):
                length = int(
                    min(
                        load.max_tokens,
                        self._rng.lognormvariate(0, load.sigma) * load.median_tokens,
                    )
                )
                self._waiting.append(_Request(max(1, length), now))
        while self._waiting and len(self._running) < load.max_running:
            req = self._waiting.pop(0)
            req.started = now
            m.queue.observe(now - req.arrived)
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
                m.success.inc()
                m.e2e.observe(now - req.arrived)
        m.generation.inc(produced)
        if self.engine == "sglang":
            m.throughput.set(produced / dt if dt > 0 else 0.0)
        m.running.set(len(self._running))
        m.waiting.set(len(self._waiting))
        used = sum(load.prompt_tokens + r.generated for r in self._running)
        m.kv.set(min(1.0, used / (load.max_running * (load.prompt_tokens + load.max_tokens))))


class _SimulatedServerBase:
    """The body shared by the simulated server classes (verl's are distinct classes too)."""

    ENGINE = "vllm"

    def __init__(
        self,
        model: str = "Qwen/Qwen2.5-0.5B-Instruct",
        seed: int = 0,
        launch_delay: float = 0.0,
        load: dict[str, Any] | None = None,
        legacy_address: bool = False,
        hang_address: bool = False,
    ) -> None:
        self._hang_address = hang_address
        self._engine = SimulatedEngine(self.ENGINE, model, LoadModel(**(load or {})), seed)
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
        server, _thread = start_http_server(0, addr=self._host, registry=self._engine.registry)
        self._port = int(server.server_port)
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


class vLLMHttpServer(_SimulatedServerBase):
    ENGINE = "vllm"


class SGLangHttpServer(_SimulatedServerBase):
    ENGINE = "sglang"


class AsyncvLLMServer(_SimulatedServerBase):
    ENGINE = "vllm"
