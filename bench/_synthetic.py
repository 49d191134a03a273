"""A synthetic 1,000-GPU cluster for the Prometheus-side benchmarks (rules_scale, backfill_day).

125 GPU nodes of 8 GPUs and 256 rollout servers in four Ray jobs:

  job 01000000  colocated vLLM (verl's hybrid engine): 64 replicas TP=4 (256 GPUs), each GPU
                also held by the trainer (WorkerDict); every engine asleep (sleep level 1)
  job 02000000  disaggregated vLLM: 96 replicas TP=2 (192 GPUs) + 128 training GPUs
  job 03000000  SGLang: 64 replicas TP=2 (128 GPUs) + 128 training GPUs
  job 04000000  SGLang: 32 replicas TP=4 (128 GPUs) + 32 training GPUs; 8 GPUs owned by nobody

Bodies are real expositions, rendered by the project's own code: the rollout servers' from the
simulated engines of :mod:`fsd_daemon.sim.rollout_server` (series, types and label names from
:mod:`fsd_daemon.recognition.engines`, histograms filled by a few minutes of the load model), the
exporters' by :class:`fsd_daemon.gpu.collector.GpuCollector` over a synthetic snapshot and
ownership (owner labels exactly as the exporter writes them). Each body is pre-rendered once
as a template; a scrape only re-multiplies its counters (so rates are not zero) by a factor that
grows with time. Every server of one kind shares one template: the series are told apart by the
target labels Prometheus attaches, as on a real cluster.

Targets are written as fsd-daemon writes them (:func:`fsd_daemon.pipeline.render.render` of the same
label sets :mod:`fsd_daemon.pipeline.reconcile` builds); every address is 127.0.0.1 on its own
port, the
``node_ip`` label is the synthetic node's address.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from fsd_daemon.gpu.backend import DriverInfo, GpmMetrics, GpuIdentity, MemoryInfo
from fsd_daemon.gpu.collector import GpuCollector
from fsd_daemon.gpu.ownership import Owner, Ownership
from fsd_daemon.gpu.sampler import GpuReading, Snapshot
from fsd_daemon.mixin import names as n
from fsd_daemon.pipeline.render import Target, render
from fsd_daemon.sim.rollout_server import LoadModel, ServerOptions, SimulatedEngine

NODES = 125
GPUS_PER_NODE = 8
CLUSTER = "bench"
MODEL = "Qwen/Qwen2.5-7B-Instruct"
# Seconds of load model run before the template is taken: fills the histograms.
WARM_SECONDS = 300.0
# Counters grow by this share of their template value per second (rates are then non-zero and
# differ between server kinds).
GROWTH_PER_SECOND = 1.0 / 600.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class JobPlan:
    job_id: str
    engine: str
    replicas: int
    tp: int
    train_gpus: int
    colocated: bool = False
    asleep: bool = False


JOBS = (
    JobPlan("01000000", n.ENGINE_VLLM, 64, 4, 0, colocated=True, asleep=True),
    JobPlan("02000000", n.ENGINE_VLLM, 96, 2, 128),
    JobPlan("03000000", n.ENGINE_SGLANG, 64, 2, 128),
    JobPlan("04000000", n.ENGINE_SGLANG, 32, 4, 32),
)
_ACTOR_CLASS = {n.ENGINE_VLLM: "vLLMHttpServer", n.ENGINE_SGLANG: "SGLangHttpServer"}


@dataclass
class Server:
    job: JobPlan
    replica: int
    node: int
    gpus: tuple[tuple[int, int], ...]  # (node, gpu index)
    port: int = 0

    @property
    def actor_name(self) -> str:
        # verl's RolloutReplica server name: {engine}_server_{replica}_{node_rank}
        return f"{self.job.engine}_server_{self.replica}_0"

    @property
    def kind(self) -> str:
        return f"{self.job.engine}-{'asleep' if self.job.asleep else 'awake'}"


@dataclass
class Node:
    index: int
    owners: list[Owner] = field(default_factory=list)
    port: int = 0

    @property
    def ip(self) -> str:
        return f"10.0.{self.index // 250}.{self.index % 250 + 1}"

    @property
    def name(self) -> str:
        return f"gpu-node-{self.index:03d}"

    @property
    def node_id(self) -> str:
        return f"{self.index:056x}"


@dataclass
class Cluster:
    nodes: list[Node]
    servers: list[Server]


def plan() -> Cluster:
    """Place every job's GPUs node by node, in job order (a replica never spans two nodes)."""
    nodes = [Node(i) for i in range(NODES)]
    free = iter((node, gpu) for node in range(NODES) for gpu in range(GPUS_PER_NODE))
    servers: list[Server] = []
    pid = 10_000
    for job in JOBS:
        for replica in range(job.replicas):
            gpus = tuple(next(free) for _ in range(job.tp))
            server = Server(job, replica, gpus[0][0], gpus)
            servers.append(server)
            for node, gpu in gpus:
                pid += 1
                owner = Owner(
                    gpu,
                    "active",
                    pid,
                    n.ROLE_ROLLOUT,
                    str(replica),
                    _ACTOR_CLASS[job.engine],
                    server.actor_name,
                    job.job_id,
                )
                nodes[node].owners.append(owner)
                if job.colocated:
                    pid += 1
                    nodes[node].owners.append(
                        Owner(gpu, "active", pid, "train", "", "WorkerDict", "", job.job_id)
                    )
        for _ in range(job.train_gpus):
            node, gpu = next(free)
            pid += 1
            nodes[node].owners.append(
                Owner(gpu, "active", pid, "train", "", "TrainingWorker", "", job.job_id)
            )
    return Cluster(nodes, servers)


def rollout_targets(cluster: Cluster) -> bytes:
    """rollout.json as fsd-daemon writes it (labels of pipeline.targets.rollout_target)."""
    targets = []
    for s in cluster.servers:
        node = cluster.nodes[s.node]
        targets.append(
            Target.of(
                f"127.0.0.1:{s.port}",
                {
                    n.ENGINE: s.job.engine,
                    n.ROLE: n.ROLE_ROLLOUT,
                    n.REPLICA: str(s.replica),
                    n.NODE_IP: node.ip,
                    n.NODE_ID: node.node_id,
                    n.RAY_JOB_ID: s.job.job_id,
                    "ray_namespace": "verl",
                    "ray_session": "session_2026-12-04_08-00-00_000000_1",
                    n.ACTOR_NAME: s.actor_name,
                    n.CLUSTER: CLUSTER,
                },
            )
        )
    return render(targets)


def gpu_targets(cluster: Cluster) -> bytes:
    """gpu.json as fsd-daemon writes it (labels of pipeline.targets.gpu_target)."""
    return render(
        Target.of(
            f"127.0.0.1:{node.port}",
            {
                n.NODE_ID: node.node_id,
                n.NODE_IP: node.ip,
                n.NODE_NAME: node.name,
                "is_head_node": "false",
                n.CLUSTER: CLUSTER,
            },
        )
        for node in cluster.nodes
    )


# -- bodies ------------------------------------------------------------------------------------

_SAMPLE = re.compile(rb"^([^ #][^ ]*(?:\{[^}]*\})?) (\S+)$")
_GROWING = (b"_total", b"_bucket", b"_count", b"_sum")


class Template:
    """An exposition whose counters grow: ``body(factor)`` multiplies every counter, histogram
    bucket, count and sum by ``factor``; gauges and ``_created`` stay."""

    def __init__(self, text: bytes) -> None:
        self._parts: list[tuple[bytes, float, bool]] = []
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if m is None:
                self._parts.append((line, 0.0, False))
                continue
            name = m.group(1).split(b"{", 1)[0]
            self._parts.append((m.group(1), float(m.group(2)), name.endswith(_GROWING)))

    def body(self, factor: float) -> bytes:
        out = []
        for head, value, grows in self._parts:
            if head.startswith(b"#"):
                out.append(head)
            else:
                v = value * factor if grows else value
                out.append(head + b" " + repr(v).encode())
        out.append(b"")
        return b"\n".join(out)

    @property
    def samples(self) -> int:
        return sum(1 for head, _, _ in self._parts if not head.startswith(b"#"))


def engine_template(engine: str, asleep: bool, seed: int = 1) -> Template:
    """A simulated engine's /metrics after WARM_SECONDS of its load model (stepped, no thread)."""
    options = ServerOptions(sleep_level=1 if asleep else 0)
    sim = SimulatedEngine(engine, MODEL, LoadModel(), seed, options)
    now, dt = 1_700_000_000.0, 0.25
    for _ in range(int(WARM_SECONDS / dt)):
        now += dt
        sim.step(now, dt)
    if asleep:
        sim.metrics.record_sleep_level(1)
    return Template(generate_latest(sim.registry))


def exporter_registry(node: Node, busy: Callable[[int], float], now: float) -> CollectorRegistry:
    """fsd-gpu-exporter's exposition of ``node`` at ``now``: busy seconds of GPU i = busy(i)."""
    snap = Snapshot(
        nvml_up=True,
        driver=DriverInfo("550.54.15", "12.550.54.15"),
        gpus=tuple(
            GpuReading(
                GpuIdentity(
                    i,
                    f"GPU-{node.index:04d}{i:04d}-aaaa-bbbb-cccc-{node.index:012d}",
                    "NVIDIA H200",
                ),
                busy_seconds=busy(i),
                busy_method="samples",
                utilization_ratio=0.5,
                memory=MemoryInfo(100 * 2**30, 141 * 2**30),
                power_watts=450.0,
                energy_joules=1e6,
                temperature_celsius=55.0,
                sm_clock_hertz=1.98e9,
                gpm=GpmMetrics(0.45, 0.25, 0.3),
            )
            for i in range(GPUS_PER_NODE)
        ),
        sample_duration_seconds=0.004,
        last_sample_timestamp_seconds=now,
    )
    owned = Ownership(tuple(node.owners), refreshed_at=now, duration_seconds=0.01)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        GpuCollector(lambda: snap, lambda: owned, node=node.name, version="bench", backend="nvml")
    )
    return registry


def busy_fraction(node: int, gpu: int) -> float:
    """A fixed, varied busy fraction per GPU (0.05-0.95)."""
    return 0.05 + ((node * 8 + gpu) * 37 % 91) / 100.0


class Bodies:
    """What every target serves at time ``now``."""

    def __init__(self, cluster: Cluster, start: float) -> None:
        self.cluster = cluster
        self.start = start
        kinds = {s.kind for s in cluster.servers}
        self.templates = {k: engine_template(k.split("-")[0], k.endswith("asleep")) for k in kinds}
        # One exporter template per node, busy seconds from a fixed start value.
        self.exporters = [
            Template(generate_latest(exporter_registry(node, lambda i: 1000.0, start)))
            for node in cluster.nodes
        ]

    def server(self, s: Server, now: float) -> bytes:
        # Asleep engines generate nothing: their counters stay.
        growth = 0.0 if s.job.asleep else GROWTH_PER_SECOND * (1 + s.replica % 3)
        return self.templates[s.kind].body(1.0 + growth * (now - self.start))

    def exporter(self, node: Node, now: float) -> bytes:
        """Busy seconds grow at each GPU's busy fraction (the template is taken at 1000 s)."""
        registry = exporter_registry(
            node, lambda i: 1000.0 + busy_fraction(node.index, i) * (now - self.start), now
        )
        return generate_latest(registry)


def walk(cluster: Cluster) -> Iterator[tuple[str, Server | Node]]:
    for s in cluster.servers:
        yield "rollout", s
    for node in cluster.nodes:
        yield "gpu", node


async def serve(
    cluster: Cluster, bodies: Bodies, ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """One aiohttp app per target on its own port (bound to 0 and held: no two alike), all in
    this process; ``ready`` is set once every port listens."""
    from aiohttp import web

    runners = []
    for _kind, who in walk(cluster):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        who.port = sock.getsockname()[1]

        def handler(who: Server | Node = who) -> Callable[[web.Request], object]:
            async def metrics(_request: web.Request) -> web.Response:
                now = time.time()
                body = (
                    bodies.server(who, now)
                    if isinstance(who, Server)
                    else bodies.exporter(who, now)
                )
                return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

            return metrics

        app = web.Application()
        app.router.add_get("/metrics", handler())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        runners.append(runner)
    ready.set()
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def write_targets(cluster: Cluster, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rollout.json").write_bytes(rollout_targets(cluster))
    (directory / "gpu.json").write_bytes(gpu_targets(cluster))
