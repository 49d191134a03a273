"""Simulated GPUs behind the same interface as the real NVML: demos, tests, benches, no GPU.

Each simulated GPU runs a scripted duty cycle (busy ``busy_s`` out of every ``period_s``), so
its true busy time over any interval is known exactly (:meth:`SimulatedNvml.true_busy_seconds`).
The driver's utilization samples are produced the way the driver does it: one sample per fixed
period (1/6 s), each the rounded percent of that period in which the script was busy, kept in a
ring buffer and returned "newer than a timestamp". Every other reading (power, energy,
temperature, clocks, GPM) is a deterministic function of the script and the clock.

Holders: :meth:`SimulatedNvml.set_holder` makes a real process appear as holding a GPU, as
``nvmlDeviceGetComputeRunningProcesses`` would report it; like the driver, a holder disappears
when its process exits.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psutil

from fsd_daemon.gpu.backend import (
    GPM_MIN_INTERVAL_SECONDS,
    CallFailed,
    DriverInfo,
    GpmMetrics,
    GpuIdentity,
    GpuProcess,
    LibraryMissing,
    MemoryInfo,
    NotSupported,
    UtilSample,
)
from fsd_daemon.gpu.ownership import read_environ
from fsd_daemon.gpu.proctable import ProcessTable
from fsd_daemon.sim import SIMULATED_GPU_CONTEXTS_ENV, SIMULATED_GPU_MEMORY_ENV

SAMPLE_PERIOD_SECONDS = 1.0 / 6.0  # what most data-center GPUs use
RING_BUFFER_SAMPLES = 120  # 20 s of history, like the driver's buffer
MEMORY_TOTAL_BYTES = 143_771 * 1024 * 1024  # an H200's 141 GB
BASE_MEMORY_BYTES = 512 * 1024 * 1024  # the driver's own context
IDLE_WATTS, BUSY_EXTRA_WATTS = 75.0, 625.0
SIMULATED_MODEL = "NVIDIA H200 (simulated)"
_UUID_NAMESPACE = uuidlib.UUID("5f3c8a4e-0b1d-4d5e-9a7c-6f2e1d0c9b8a")


@dataclass(frozen=True, slots=True)
class DutyCycle:
    """Busy during ``[phase_s + k*period_s, phase_s + k*period_s + busy_s)`` for every k."""

    period_s: float
    busy_s: float
    phase_s: float = 0.0

    def __post_init__(self) -> None:
        if not (self.period_s > 0 and 0 <= self.busy_s <= self.period_s):
            raise ValueError(f"need period_s > 0 and 0 <= busy_s <= period_s: {self}")

    @property
    def fraction(self) -> float:
        return self.busy_s / self.period_s

    def busy_until(self, t: float) -> float:
        """Busy seconds in ``[phase_s, t)`` (negative before the phase): an antiderivative."""
        x = t - self.phase_s
        cycles = math.floor(x / self.period_s)
        return cycles * self.busy_s + min(x - cycles * self.period_s, self.busy_s)

    def busy_between(self, t0: float, t1: float) -> float:
        return self.busy_until(t1) - self.busy_until(t0)


# The --simulate script: bursty patterns of known fraction, one per GPU in turn. The first is
# the example (300 ms busy every 2 s); one GPU in six stays idle ("reserved and idle").
DEFAULT_SCRIPT: tuple[DutyCycle, ...] = (
    DutyCycle(2.0, 0.3),
    DutyCycle(1.0, 0.5, 0.25),
    DutyCycle(4.0, 3.6, 1.0),
    DutyCycle(10.0, 0.05, 3.0),
    DutyCycle(0.5, 0.05, 0.1),
    DutyCycle(1.0, 0.0),
)


def simulated_uuid(index: int) -> str:
    return f"GPU-{uuidlib.uuid5(_UUID_NAMESPACE, f'simulated-gpu-{index}')}"


def _pid_alive(pid: int) -> bool:
    # The driver releases a context when the process exits: a zombie holds nothing.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


class SimulatedNvml:
    """A :class:`~fsd_daemon.gpu.backend.GpuBackend` of ``count`` scripted GPUs.

    ``clock`` is the driver's wall clock in seconds (a fake one makes everything
    deterministic). ``holders`` maps a GPU index to ``{pid: bytes}``. ``available=False``
    behaves like a machine without a driver (init raises LibraryMissing). ``gpm=False`` makes
    GPM unsupported, as before Hopper.
    """

    def __init__(
        self,
        count: int,
        *,
        script: Sequence[DutyCycle] = DEFAULT_SCRIPT,
        clock: Callable[[], float] = time.time,
        holders: Mapping[int, Mapping[int, int]] | None = None,
        available: bool = True,
        gpm: bool = True,
        pid_alive: Callable[[int], bool] = _pid_alive,
        holders_from_environment: bool = False,
    ) -> None:
        if count < 0 or not script:
            raise ValueError("count must be >= 0 and script non-empty")
        self.count = count
        self.cycles = tuple(script[i % len(script)] for i in range(count))
        self.available = available
        self._clock = clock
        self._gpm_supported = gpm
        self._pid_alive = pid_alive
        self._holders_from_environment = holders_from_environment
        self._environment_scan: tuple[float, dict[int, dict[int, int]]] = (float("-inf"), {})
        self._processes = ProcessTable()
        # (pid, start time, name) -> what its environment announces (bytes, GPUs, the directory
        # where it registers a context made later). An environment changes only at exec, which
        # changes the name too: a child read between fork and exec (the parent's environment
        # still) is read again once it runs its own program.
        self._announced: dict[tuple[int, float, str], tuple[int, list[int], str] | None] = {}
        self._lock = threading.Lock()  # holders change from other threads (demo, tests)
        self._holders: dict[int, dict[int, int]] = {
            gpu: dict(pids) for gpu, pids in (holders or {}).items()
        }
        self._gpm_prev: dict[int, float] = {}
        self._started: float | None = None

    # -- the demo/test controls ---------------------------------------------------------------

    def set_holder(self, gpu: int, pid: int, used_bytes: int) -> None:
        """Report ``pid`` as holding ``used_bytes`` on ``gpu`` until it exits or is cleared."""
        self._check_index(gpu)
        with self._lock:
            self._holders.setdefault(gpu, {})[pid] = int(used_bytes)

    def clear_holder(self, gpu: int, pid: int) -> None:
        with self._lock:
            self._holders.get(gpu, {}).pop(pid, None)

    def true_busy_seconds(self, index: int, t0: float, t1: float) -> float:
        """The script's exact busy time in ``[t0, t1)`` on the driver clock."""
        return self.cycles[index].busy_between(t0, t1)

    # -- GpuBackend -----------------------------------------------------------------------------

    def init(self) -> DriverInfo:
        if not self.available:
            raise LibraryMissing("nvmlInit", "NVML Shared Library Not Found (simulated)")
        self._started_at()  # the energy counter runs from the first init
        return DriverInfo(driver_version="simulated", nvml_version="simulated")

    def shutdown(self) -> None:
        self._gpm_prev.clear()

    def device_count(self) -> int:
        return self.count

    def identity(self, index: int) -> GpuIdentity:
        self._check_index(index)
        return GpuIdentity(index=index, uuid=simulated_uuid(index), model=SIMULATED_MODEL)

    def utilization_samples(self, index: int, since_us: int) -> list[UtilSample]:
        self._check_index(index)
        newest = math.floor(self._clock() / SAMPLE_PERIOD_SECONDS)
        first = max(
            newest - RING_BUFFER_SAMPLES + 1, math.floor(since_us / 1e6 / SAMPLE_PERIOD_SECONDS)
        )
        out = []
        for k in range(first, newest + 1):
            sample = self._sample(index, k)
            if sample.timestamp_us > since_us:
                out.append(sample)
        return out

    def utilization_percent(self, index: int) -> float:
        self._check_index(index)
        return self._sample(index, math.floor(self._clock() / SAMPLE_PERIOD_SECONDS)).percent

    def memory(self, index: int) -> MemoryInfo:
        used = BASE_MEMORY_BYTES + sum(p.used_bytes or 0 for p in self.processes(index))
        return MemoryInfo(used_bytes=used, total_bytes=MEMORY_TOTAL_BYTES)

    def power_watts(self, index: int) -> float:
        return IDLE_WATTS + BUSY_EXTRA_WATTS * self.utilization_percent(index) / 100.0

    def energy_joules(self, index: int) -> float:
        self._check_index(index)
        start, now = self._started_at(), self._clock()
        busy = self.cycles[index].busy_between(start, now)
        return IDLE_WATTS * (now - start) + BUSY_EXTRA_WATTS * busy

    def temperature_celsius(self, index: int) -> float:
        self._check_index(index)
        now = self._clock()
        recent = self.cycles[index].busy_between(now - 10.0, now) / 10.0
        return float(round(30.0 + 45.0 * recent))

    def sm_clock_hertz(self, index: int) -> float:
        busy = self.utilization_percent(index) > 0
        return 1980e6 if busy else 345e6

    def processes(self, index: int) -> list[GpuProcess]:
        self._check_index(index)
        with self._lock:
            holders = dict(self._holders.get(index, {}))
        if self._holders_from_environment:
            holders.update(self._environment_holders().get(index, {}))
        return [
            GpuProcess(pid, used) for pid, used in sorted(holders.items()) if self._pid_alive(pid)
        ]

    def gpm_metrics(self, index: int) -> GpmMetrics | None:
        self._check_index(index)
        if not self._gpm_supported:
            raise NotSupported("nvmlGpmQueryDeviceSupport", "GPM needs Hopper or newer (simulated)")
        now = self._clock()
        prev = self._gpm_prev.get(index)
        if prev is not None and now - prev < GPM_MIN_INTERVAL_SECONDS:
            return None
        self._gpm_prev[index] = now
        if prev is None:
            return None
        fraction = self.cycles[index].busy_between(prev, now) / (now - prev)
        return GpmMetrics(
            sm_activity=round(0.9 * fraction, 6),
            sm_occupancy=round(0.45 * fraction, 6),
            tensor_activity=round(0.6 * fraction, 6),
        )

    def _environment_holders(self) -> dict[int, dict[int, int]]:
        """Holders announced by simulated jobs (``fsd_daemon.sim.SIMULATED_GPU_MEMORY_ENV``),
        rescanned at most every 2 s. Of a process and its children that inherited the variable,
        only the topmost counts, so one engine is one holder."""
        now = time.monotonic()
        scanned_at, cached = self._environment_scan
        if now - scanned_at < 2.0:
            return cached
        found: dict[int, tuple[int, int, list[int]]] = {}  # pid -> (ppid, bytes, gpus)
        announced: dict[tuple[int, float, str], tuple[int, list[int], str] | None] = {}
        for pid, proc in self._processes.read().items():
            key = (pid, proc.create_time, proc.name)
            if key in self._announced:
                announced[key] = self._announced[key]
            else:
                try:
                    env = read_environ(pid)
                except (psutil.Error, OSError):
                    continue  # exited while we listed
                value = env.get(SIMULATED_GPU_MEMORY_ENV)
                gpus = [
                    int(d) for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.isdigit()
                ]
                contexts = env.get(SIMULATED_GPU_CONTEXTS_ENV, "")
                announced[key] = (int(value), gpus, contexts) if value and value.isdigit() else None
            entry = announced[key]
            if entry is not None:
                used, gpus, contexts = entry
                if not gpus and contexts:
                    gpus = _registered_context(contexts, pid)  # may come later: read each scan
                found[pid] = (proc.ppid, used, gpus)
        self._announced = announced
        holders: dict[int, dict[int, int]] = {}
        for pid, (ppid, used, gpus) in found.items():
            if ppid in found:
                continue
            for gpu in gpus:
                if 0 <= gpu < self.count:
                    holders.setdefault(gpu, {})[pid] = used
        self._environment_scan = (now, holders)
        return holders

    # -- helpers ------------------------------------------------------------------------------

    def _sample(self, index: int, k: int) -> UtilSample:
        t1 = k * SAMPLE_PERIOD_SECONDS
        busy = self.cycles[index].busy_between(t1 - SAMPLE_PERIOD_SECONDS, t1)
        # The driver reports whole percents.
        return UtilSample(
            timestamp_us=round(t1 * 1e6), percent=float(round(100.0 * busy / SAMPLE_PERIOD_SECONDS))
        )

    def _started_at(self) -> float:
        if self._started is None:
            self._started = self._clock()
        return self._started

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.count:
            # What the driver answers for a bad index (NVML_ERROR_INVALID_ARGUMENT).
            raise CallFailed("nvmlDeviceGetHandleByIndex", f"no GPU {index} (have {self.count})")


def _registered_context(directory: str, pid: int) -> list[int]:
    """The GPUs a process registered in ``directory`` (fsd_daemon.sim.register_gpu_context)."""
    try:
        with open(os.path.join(directory, str(pid))) as f:
            text = f.read(256)
    except OSError:
        return []  # not registered yet, or gone
    return [int(d) for d in text.split(",") if d.isascii() and d.isdigit() and len(d) < 4]
