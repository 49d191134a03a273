"""The sampler: one background thread reads the backend on its own schedule into snapshots.

Scrapes never touch the backend: they render :attr:`Sampler.snapshot`, an immutable object
replaced whole at the end of each tick (a single reference assignment, atomic in CPython), so a
hung or slow driver call delays the next snapshot, never a scrape.

Failure policy (node_exporter's: a failing source reports itself, the process stays up):

- library missing, no driver, no GPU: ``nvml_up`` false, one log line, init retried every
  ``retry_interval`` seconds;
- a call that is not supported on a GPU: that value is left out, and not asked again until the
  next init;
- a lost GPU: reported as lost, its other values left out, the other GPUs go on;
- any other failed call: counted by driver function, that value left out this tick.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fsd_daemon.gpu.backend import (
    CallFailed,
    DriverInfo,
    GpmMetrics,
    GpuBackend,
    GpuIdentity,
    GpuLost,
    GpuProcess,
    LibraryMissing,
    MemoryInfo,
    NotSupported,
)
from fsd_daemon.gpu.busy import RateIntegrator, SampleIntegrator
from fsd_daemon.plumbing.periodic import PeriodicWorker

log = logging.getLogger(__name__)
T = TypeVar("T")

METHOD_SAMPLES = "samples"
METHOD_UTILIZATION_RATES = "utilization_rates"


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU in one snapshot. ``None`` means "not available": the metric is left out."""

    identity: GpuIdentity
    lost: bool = False
    busy_seconds: float | None = None
    busy_method: str | None = None
    utilization_ratio: float | None = None
    memory: MemoryInfo | None = None
    power_watts: float | None = None
    energy_joules: float | None = None
    temperature_celsius: float | None = None
    sm_clock_hertz: float | None = None
    gpm: GpmMetrics | None = None
    # None: unknown this tick (the call failed), which is not the same as "nobody".
    processes: tuple[GpuProcess, ...] | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    nvml_up: bool
    driver: DriverInfo | None = None
    gpus: tuple[GpuReading, ...] = ()
    errors: tuple[tuple[str, int], ...] = ()  # (driver function, failures since start), sorted
    sample_duration_seconds: float | None = None
    last_sample_timestamp_seconds: float | None = None  # wall clock of the last good tick


@dataclass
class _GpuState:
    identity: GpuIdentity
    samples: SampleIntegrator
    rates: RateIntegrator
    method: str = METHOD_SAMPLES  # or METHOD_UTILIZATION_RATES, for good (until re-init)
    unsupported: set[str] = field(default_factory=set)
    gpm: GpmMetrics | None = None  # GPM values are kept between the ticks that refresh them
    lost: bool = False


class Sampler:
    """Reads ``backend`` every ``interval`` seconds (monotonic schedule) into :attr:`snapshot`.

    :meth:`sample_once` is one tick; :meth:`start` runs ticks in a daemon thread (a
    :class:`PeriodicWorker`). Tests and
    benches call :meth:`sample_once` directly with fake clocks.
    """

    def __init__(
        self,
        backend: GpuBackend,
        *,
        interval: float = 1.0,
        retry_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        on_snapshot: Callable[[], None] | None = None,
    ) -> None:
        self.backend = backend
        # Called on the sampler's thread after each tick has replaced the snapshot.
        self._on_snapshot = on_snapshot
        self.interval = interval
        self.retry_interval = retry_interval
        self._clock = clock
        self._wall_clock = wall_clock
        self._timer = timer
        self._up = False
        self._driver: DriverInfo | None = None
        self._states: list[_GpuState] = []
        self._errors: Counter[str] = Counter()
        self._next_init = float("-inf")
        self._down_reason: str | None = None
        self._heartbeat: float | None = None
        self._last_good: float | None = None
        self._last_duration: float | None = None
        # On its own monotonic schedule: a tick that overruns skips the missed ticks rather than
        # running a burst (PeriodicWorker counts the tick's duration against the interval).
        self._worker = PeriodicWorker("gpu-sampler", self._tick, interval, clock=clock)
        self.snapshot = Snapshot(nvml_up=False)

    # -- thread -------------------------------------------------------------------------------

    def start(self) -> Sampler:
        self._worker.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if not self._worker.stop(timeout):
            # Stuck inside a driver call: leave the daemon thread and the library alone,
            # shutting the library down under a running call could crash the process.
            log.warning("gpu sampler did not stop within %.1f s (driver call hung)", timeout)
            return
        self._shutdown_backend()

    def _tick(self) -> None:
        self.sample_once()
        if self._on_snapshot is not None:
            self._on_snapshot()

    # -- one tick -----------------------------------------------------------------------------

    def sample_once(self) -> Snapshot:
        now = self._clock()
        self._heartbeat = now
        if not self._up and now >= self._next_init:
            self._try_init(now)
        if self._up:
            started = self._timer()
            try:
                readings = tuple(self._read_gpu(state) for state in self._states)
            except LibraryMissing as exc:
                self._go_down(f"NVML stopped working ({exc})")
            else:
                self._last_duration = self._timer() - started
                self._last_good = self._wall_clock()
                self.snapshot = self._snapshot(readings)
                return self.snapshot
        self.snapshot = self._snapshot(())
        return self.snapshot

    def _snapshot(self, readings: tuple[GpuReading, ...]) -> Snapshot:
        return Snapshot(
            nvml_up=self._up,
            driver=self._driver if self._up else None,
            gpus=readings,
            errors=tuple(sorted(self._errors.items())),
            sample_duration_seconds=self._last_duration,
            last_sample_timestamp_seconds=self._last_good,
        )

    def _try_init(self, now: float) -> None:
        try:
            self._driver = self.backend.init()
            count = self.backend.device_count()
        except LibraryMissing as exc:
            self._go_down(f"NVML unavailable ({exc})")
            return
        except CallFailed as exc:
            self._count(exc.function)
            self._go_down(f"NVML unavailable ({exc})")
            return
        if count == 0:
            self._go_down("NVML found no GPU")
            return
        self._states = [self._new_state(i) for i in range(count)]
        self._up = True
        self._down_reason = None
        log.info(
            "NVML up: driver %s, %d GPU(s), sampling every %.3g s",
            self._driver.driver_version or "?",
            count,
            self.interval,
        )

    def _new_state(self, index: int) -> _GpuState:
        state = _GpuState(
            identity=GpuIdentity(index=index, uuid="", model=""),
            samples=SampleIntegrator(),
            rates=RateIntegrator(max_step_seconds=3 * self.interval),
        )
        try:
            self._refresh_identity(state)
        except GpuLost as exc:
            # Reported as lost by the first tick; the identity is asked again every tick.
            self._count(exc.function)
        return state

    def _refresh_identity(self, state: _GpuState) -> None:
        try:
            state.identity = self.backend.identity(state.identity.index)
        except (CallFailed, NotSupported) as exc:
            self._count(exc.function)

    def _go_down(self, reason: str) -> None:
        was_up = self._up
        self._up = False
        self._states = []
        self._shutdown_backend()
        self._next_init = self._clock() + self.retry_interval
        # One clear line per transition; repeated failures of the retry loop stay quiet.
        if was_up or self._down_reason is None:
            log.warning(
                "%s; serving fsd_gpu_nvml_up 0 and retrying every %.3g s",
                reason,
                self.retry_interval,
            )
        else:
            log.debug("%s; retrying in %.3g s", reason, self.retry_interval)
        self._down_reason = reason

    def _shutdown_backend(self) -> None:
        try:
            self.backend.shutdown()
        except Exception:  # the protocol says never; a bad backend must not stop the loop
            log.debug("backend shutdown failed", exc_info=True)

    # -- one GPU ------------------------------------------------------------------------------

    def _read_gpu(self, state: _GpuState) -> GpuReading:
        index = state.identity.index
        b = self.backend
        try:
            if not state.identity.uuid:
                self._refresh_identity(state)  # raises GpuLost, counts the rest
            percent = self._get(state, "utilization_percent", lambda: b.utilization_percent(index))
            busy = self._busy(state, percent)
            reading = GpuReading(
                identity=state.identity,
                busy_seconds=busy,
                busy_method=state.method if busy is not None else None,
                utilization_ratio=None if percent is None else percent / 100.0,
                memory=self._get(state, "memory", lambda: b.memory(index)),
                power_watts=self._get(state, "power_watts", lambda: b.power_watts(index)),
                energy_joules=self._get(state, "energy_joules", lambda: b.energy_joules(index)),
                temperature_celsius=self._get(
                    state, "temperature_celsius", lambda: b.temperature_celsius(index)
                ),
                sm_clock_hertz=self._get(state, "sm_clock_hertz", lambda: b.sm_clock_hertz(index)),
                gpm=self._gpm(state),
                processes=self._processes(state),
            )
        except GpuLost as exc:
            self._count(exc.function)
            if not state.lost:
                log.error("GPU %d (%s) is lost: %s", index, state.identity.uuid or "?", exc)
            state.lost = True
            return GpuReading(identity=state.identity, lost=True)
        if state.lost:
            log.warning("GPU %d (%s) answers again", index, state.identity.uuid)
            state.lost = False
        return reading

    def _busy(self, state: _GpuState, percent: float | None) -> float | None:
        index = state.identity.index
        if state.method == METHOD_SAMPLES:
            try:
                samples = self.backend.utilization_samples(index, state.samples.since_us)
            except NotSupported:
                log.info(
                    "GPU %d keeps no utilization samples; integrating utilization rates", index
                )
                state.method = METHOD_UTILIZATION_RATES
            except CallFailed as exc:
                # Nothing is lost: the next call asks for everything after the last timestamp.
                self._count(exc.function)
                return state.samples.busy_seconds
            else:
                state.samples.feed(samples)
                return state.samples.busy_seconds
        if percent is None:
            return None
        state.rates.feed(percent, self._clock())
        return state.rates.busy_seconds

    def _gpm(self, state: _GpuState) -> GpmMetrics | None:
        # A GPM answer covers the time since the previous GPM sample; between answers (the
        # backend refuses intervals under 100 ms) the last one stands, after a failure none.
        state.gpm = self._get(state, "gpm_metrics", lambda: self._gpm_call(state))
        return state.gpm

    def _gpm_call(self, state: _GpuState) -> GpmMetrics | None:
        return self.backend.gpm_metrics(state.identity.index) or state.gpm

    def _processes(self, state: _GpuState) -> tuple[GpuProcess, ...] | None:
        procs = self._get(state, "processes", lambda: self.backend.processes(state.identity.index))
        return None if procs is None else tuple(procs)

    def _get(self, state: _GpuState, key: str, call: Callable[[], T]) -> T | None:
        """One optional value: None when not supported (remembered) or when the call failed."""
        if key in state.unsupported:
            return None
        try:
            return call()
        except NotSupported:
            state.unsupported.add(key)
            return None
        except CallFailed as exc:
            self._count(exc.function)
            log.debug("GPU %d: %s", state.identity.index, exc)
            return None

    def _count(self, function: str) -> None:
        self._errors[function] += 1

    # -- health -------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while ticks keep coming, NVML up or not: a machine without a driver is a
        valid state to serve, a sampler stuck in a driver call is not."""
        snap = self.snapshot
        now = self._clock()
        age = None if self._heartbeat is None else now - self._heartbeat
        stalled = age is None or age > max(10.0, 5 * self.interval)
        return (
            not stalled,
            {
                "nvml_up": snap.nvml_up,
                "gpus": len(snap.gpus),
                "lost_gpus": [g.identity.index for g in snap.gpus if g.lost],
                "sampler_tick_age_seconds": None if age is None else round(age, 3),
            },
        )
