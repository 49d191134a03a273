"""The assembled exporter in-process: scrapes never wait for the driver.

A backend call that blocks forever (a hung driver) stalls the sampler thread only: scrapes
keep answering at once with the last snapshot, and /healthz says the sampler is stalled.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import orjson

from fsd_daemon.config import Config, ExporterSection
from fsd_daemon.gpu.backend import MemoryInfo
from fsd_daemon.gpu.exporter import Exporter
from fsd_daemon.gpu.simulated import SimulatedNvml
from tests.gpu.helpers import one, parse


class HangingNvml(SimulatedNvml):
    """memory() blocks until released once ``hang`` is set, like a wedged driver call."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.hang = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def memory(self, index: int) -> MemoryInfo:
        if self.hang.is_set():
            self.entered.set()
            self.release.wait()
        return super().memory(index)


def get(port: int, path: str) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read(), time.perf_counter() - started
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.perf_counter() - started


def test_hung_nvml_call_does_not_block_scrapes_and_healthz_reports_it() -> None:
    backend = HangingNvml(2)
    skew = [0.0]
    config = Config(exporter=ExporterSection(sample_interval_seconds=0.05))
    exporter = Exporter(
        backend,
        config,
        node="n",
        backend_name="simulated",
        listen=("127.0.0.1", 0),
        clock=lambda: time.monotonic() + skew[0],
    ).start()
    try:
        deadline = time.monotonic() + 30
        while not exporter.sampler.snapshot.gpus and time.monotonic() < deadline:
            time.sleep(0.02)
        status, _, _ = get(exporter.port, "/healthz")
        assert status == 200
        backend.hang.set()
        assert backend.entered.wait(30), "the sampler never reached the hanging call"
        frozen = exporter.sampler.snapshot
        latencies = []
        for _ in range(20):
            status, body, seconds = get(exporter.port, "/metrics")
            assert status == 200
            latencies.append(seconds)
        series = parse(body.decode())
        # Stale data, still served: the last complete snapshot before the hang.
        assert one(series, "fsd_gpu_busy_seconds_total", gpu="0") == frozen.gpus[0].busy_seconds
        assert one(series, "fsd_gpu_nvml_up") == 1.0
        assert max(latencies) < 1.0, latencies  # generous: two shared cores
        skew[0] = 60.0  # a minute later, still inside the call
        status, body, _ = get(exporter.port, "/healthz")
        details = orjson.loads(body)
        assert status == 503 and details["status"] == "degraded", details
        assert details["sampler_tick_age_seconds"] >= 60
    finally:
        backend.release.set()
        exporter.stop()


def test_healthz_and_404() -> None:
    config = Config(exporter=ExporterSection(sample_interval_seconds=0.1))
    exporter = Exporter(
        SimulatedNvml(1), config, node="n", backend_name="simulated", listen=("127.0.0.1", 0)
    ).start()
    try:
        deadline = time.monotonic() + 30
        while exporter.sampler.snapshot.last_sample_timestamp_seconds is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, body, _ = get(exporter.port, "/healthz")
        details = orjson.loads(body)
        assert status == 200 and details["nvml_up"] is True and details["gpus"] == 1
        assert get(exporter.port, "/nope")[0] == 404
    finally:
        exporter.stop()
