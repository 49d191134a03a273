"""The interface between the sampler and a GPU driver library: a few calls, plain typed values.

Two implementations: :class:`fsd_daemon.gpu.nvml.NvmlBackend` (the real driver) and
:class:`fsd_daemon.gpu.simulated.SimulatedNvml`. Every method raises only the errors below, each
carrying the driver function that failed, so the sampler can count errors by function without
knowing which library is behind it.

Units are converted at this seam (bytes, watts, joules, hertz, microseconds for sample
timestamps), so nothing above it knows the driver's milliwatts or megahertz.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# NVML documents GPM metrics between two samples at least 100 ms apart; every backend refuses
# shorter intervals the same way (see GpuBackend.gpm_metrics).
GPM_MIN_INTERVAL_SECONDS = 0.1


class BackendError(Exception):
    """One driver call failed. ``function`` is the driver's name for it (a metric label)."""

    def __init__(self, function: str, message: str) -> None:
        super().__init__(f"{function}: {message}")
        self.function = function


class LibraryMissing(BackendError):
    """The driver library cannot be used at all (not installed, not loaded, not initialised).

    The whole backend is down: the sampler reports ``fsd_gpu_nvml_up 0`` and retries init later.
    """


class NotSupported(BackendError):
    """This GPU does not offer this value. Not a failure: the one metric is left out."""


class GpuLost(BackendError):
    """The GPU fell off the bus or needs a reset. Reported for that GPU; the others go on."""


class CallFailed(BackendError):
    """Any other failure of one call (timeout, permission, unknown). Counted, then skipped."""


@dataclass(frozen=True, slots=True)
class DriverInfo:
    driver_version: str
    nvml_version: str


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    """What never changes while the driver stays loaded. ``uuid`` is "" if it could not be read."""

    index: int
    uuid: str
    model: str


@dataclass(frozen=True, slots=True)
class UtilSample:
    """One driver utilization sample: percent of the period ending at ``timestamp_us`` in
    which a kernel ran. Timestamps are the driver's wall-clock microseconds."""

    timestamp_us: int
    percent: float


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    used_bytes: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process with a compute context on a GPU. ``pid`` is in the host's pid namespace."""

    pid: int
    used_bytes: int | None  # None where the driver cannot say (WDDM, some containers)


@dataclass(frozen=True, slots=True)
class GpmMetrics:
    """Hopper+ GPU performance monitoring over the interval since the previous GPM sample (0-1)."""

    sm_activity: float
    sm_occupancy: float
    tensor_activity: float


class GpuBackend(Protocol):
    """What the sampler needs from a driver library. All calls are made from one thread."""

    def init(self) -> DriverInfo:
        """Load and initialise the library. Raises :class:`LibraryMissing` when unusable."""
        ...

    def shutdown(self) -> None:
        """Release the library; never raises. ``init`` may be called again afterwards."""
        ...

    def device_count(self) -> int: ...

    def identity(self, index: int) -> GpuIdentity: ...

    def utilization_samples(self, index: int, since_us: int) -> list[UtilSample]:
        """Driver samples newer than ``since_us`` (0: all buffered); [] when none are new."""
        ...

    def utilization_percent(self, index: int) -> float:
        """Percent of the driver's last sample period in which a kernel ran."""
        ...

    def memory(self, index: int) -> MemoryInfo: ...

    def power_watts(self, index: int) -> float: ...

    def energy_joules(self, index: int) -> float:
        """Energy since the driver was loaded (a counter)."""
        ...

    def temperature_celsius(self, index: int) -> float: ...

    def sm_clock_hertz(self, index: int) -> float: ...

    def processes(self, index: int) -> list[GpuProcess]: ...

    def gpm_metrics(self, index: int) -> GpmMetrics | None:
        """Take a GPM sample; return metrics against the previous one, or None on the first
        call or when the previous sample is under 100 ms old (too short to be meaningful)."""
        ...
