"""The GPU backend over the real NVML (pip ``nvidia-ml-py``). The only module importing pynvml.

Importing pynvml loads nothing: the shared library is opened by ``nvmlInit`` in :meth:`init`,
so this module imports cleanly on machines without a GPU. Every pynvml error is translated
here into the narrow errors of :mod:`fsd_daemon.gpu.backend`; nothing above this module sees a
pynvml type. Functions are looked up on the module at call time (``pynvml.nvmlInit``), which is
the seam the tests patch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pynvml

from fsd_daemon.gpu.backend import (
    GPM_MIN_INTERVAL_SECONDS,
    BackendError,
    CallFailed,
    DriverInfo,
    GpmMetrics,
    GpuIdentity,
    GpuLost,
    GpuProcess,
    LibraryMissing,
    MemoryInfo,
    NotSupported,
    UtilSample,
)

T = TypeVar("T")

# The whole library is unusable: report NVML down and retry init later.
_UNAVAILABLE = frozenset(
    {
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_UNINITIALIZED,
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    }
)
# This GPU is gone until someone resets it; the other GPUs go on.
_LOST = frozenset({pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_RESET_REQUIRED})
# The value does not exist here (old driver without the entry point counts as not supported).
_NOT_SUPPORTED = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})

# nvmlDeviceGetSamples returns a union; which member holds the value depends on the type tag.
_SAMPLE_VALUE_FIELD = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}
_GPM_IDS = (
    pynvml.NVML_GPM_METRIC_SM_UTIL,
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL,
)


def translate(function: str, exc: Exception) -> BackendError:
    """Map a pynvml exception to our narrow error for ``function``."""
    if isinstance(exc, pynvml.NVMLError):
        code = getattr(exc, "value", None)
        if code in _UNAVAILABLE:
            return LibraryMissing(function, str(exc))
        if code in _LOST:
            return GpuLost(function, str(exc))
        if code in _NOT_SUPPORTED:
            return NotSupported(function, str(exc))
        return CallFailed(function, str(exc))
    if isinstance(exc, pynvml.NVMLLibraryMismatchError):
        return NotSupported(function, str(exc))
    return CallFailed(function, f"{type(exc).__name__}: {exc}")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class _GpmState:
    """Two NVML-allocated sample buffers used in turn: ``prev`` holds the last sample taken."""

    buffers: tuple[Any, Any]
    prev: int = -1  # index into buffers of the last sample; -1 before the first
    prev_time: float = 0.0


class NvmlBackend:
    """:class:`~fsd_daemon.gpu.backend.GpuBackend` over pynvml. Not thread-safe: one sampler."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._handles: dict[int, Any] = {}
        self._gpm: dict[int, _GpmState] = {}
        self._initialised = False

    # -- life cycle ---------------------------------------------------------------------------

    def init(self) -> DriverInfo:
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # any failure to start means NVML is down, whatever the code
            raise LibraryMissing("nvmlInit", str(exc) or type(exc).__name__) from exc
        self._initialised = True
        self._handles.clear()
        self._gpm.clear()
        driver = self._optional_text(
            "nvmlSystemGetDriverVersion", pynvml.nvmlSystemGetDriverVersion
        )
        version = self._optional_text("nvmlSystemGetNVMLVersion", pynvml.nvmlSystemGetNVMLVersion)
        return DriverInfo(driver_version=driver, nvml_version=version)

    def shutdown(self) -> None:
        for state in self._gpm.values():
            for buffer in state.buffers:
                # Best effort: the library may already be gone.
                with contextlib.suppress(Exception):
                    pynvml.nvmlGpmSampleFree(buffer)
        self._gpm.clear()
        self._handles.clear()
        if self._initialised:
            self._initialised = False
            with contextlib.suppress(Exception):  # best effort, documented never to raise
                pynvml.nvmlShutdown()

    # -- per device ---------------------------------------------------------------------------

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount", pynvml.nvmlDeviceGetCount))

    def identity(self, index: int) -> GpuIdentity:
        handle = self._handle(index)
        uuid = _text(self._call("nvmlDeviceGetUUID", pynvml.nvmlDeviceGetUUID, handle))
        model = _text(self._call("nvmlDeviceGetName", pynvml.nvmlDeviceGetName, handle))
        return GpuIdentity(index=index, uuid=uuid, model=model)

    def utilization_samples(self, index: int, since_us: int) -> list[UtilSample]:
        handle = self._handle(index)
        try:
            value_type, samples = pynvml.nvmlDeviceGetSamples(
                handle, pynvml.NVML_GPU_UTILIZATION_SAMPLES, since_us
            )
        except pynvml.NVMLError_NotFound:
            return []  # the driver's way of saying "nothing newer than since_us"
        except Exception as exc:
            raise translate("nvmlDeviceGetSamples", exc) from exc
        field = _SAMPLE_VALUE_FIELD.get(value_type)
        if field is None:
            raise CallFailed("nvmlDeviceGetSamples", f"unknown sample value type {value_type}")
        return [
            UtilSample(timestamp_us=int(s.timeStamp), percent=float(getattr(s.sampleValue, field)))
            for s in samples
        ]

    def utilization_percent(self, index: int) -> float:
        handle = self._handle(index)
        rates = self._call(
            "nvmlDeviceGetUtilizationRates", pynvml.nvmlDeviceGetUtilizationRates, handle
        )
        return float(rates.gpu)

    def memory(self, index: int) -> MemoryInfo:
        handle = self._handle(index)
        info = self._call("nvmlDeviceGetMemoryInfo", pynvml.nvmlDeviceGetMemoryInfo, handle)
        return MemoryInfo(used_bytes=int(info.used), total_bytes=int(info.total))

    def power_watts(self, index: int) -> float:
        handle = self._handle(index)
        milliwatts = self._call("nvmlDeviceGetPowerUsage", pynvml.nvmlDeviceGetPowerUsage, handle)
        return float(milliwatts) / 1000.0

    def energy_joules(self, index: int) -> float:
        handle = self._handle(index)
        millijoules = self._call(
            "nvmlDeviceGetTotalEnergyConsumption",
            pynvml.nvmlDeviceGetTotalEnergyConsumption,
            handle,
        )
        return float(millijoules) / 1000.0

    def temperature_celsius(self, index: int) -> float:
        handle = self._handle(index)
        celsius = self._call(
            "nvmlDeviceGetTemperature",
            pynvml.nvmlDeviceGetTemperature,
            handle,
            pynvml.NVML_TEMPERATURE_GPU,
        )
        return float(celsius)

    def sm_clock_hertz(self, index: int) -> float:
        handle = self._handle(index)
        mhz = self._call(
            "nvmlDeviceGetClockInfo", pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM
        )
        return float(mhz) * 1e6

    def processes(self, index: int) -> list[GpuProcess]:
        handle = self._handle(index)
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except pynvml.NVMLLibraryMismatchError:
            # A driver older than the v3 entry point: the v2 struct carries the same two fields.
            procs = self._call(
                "nvmlDeviceGetComputeRunningProcesses",
                pynvml.nvmlDeviceGetComputeRunningProcesses_v2,
                handle,
            )
        except Exception as exc:
            raise translate("nvmlDeviceGetComputeRunningProcesses", exc) from exc
        result = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            result.append(
                GpuProcess(pid=int(p.pid), used_bytes=None if used is None else int(used))
            )
        return result

    def gpm_metrics(self, index: int) -> GpmMetrics | None:
        handle = self._handle(index)
        state = self._gpm.get(index)
        if state is None:
            support = self._call(
                "nvmlGpmQueryDeviceSupport", pynvml.nvmlGpmQueryDeviceSupport, handle
            )
            if not support.isSupportedDevice:
                raise NotSupported("nvmlGpmQueryDeviceSupport", "GPM needs Hopper or newer")
            first = self._call("nvmlGpmSampleAlloc", pynvml.nvmlGpmSampleAlloc)
            try:
                second = self._call("nvmlGpmSampleAlloc", pynvml.nvmlGpmSampleAlloc)
            except BackendError:
                pynvml.nvmlGpmSampleFree(first)
                raise
            state = _GpmState(buffers=(first, second))
            self._gpm[index] = state
        now = self._clock()
        if state.prev >= 0 and now - state.prev_time < GPM_MIN_INTERVAL_SECONDS:
            return None
        current = 1 - state.prev if state.prev >= 0 else 0
        self._call("nvmlGpmSampleGet", pynvml.nvmlGpmSampleGet, handle, state.buffers[current])
        previous, state.prev, state.prev_time = state.prev, current, now
        if previous < 0:
            return None
        request = pynvml.c_nvmlGpmMetricsGet_t()
        request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(_GPM_IDS)
        request.sample1 = state.buffers[previous]
        request.sample2 = state.buffers[current]
        for i, metric_id in enumerate(_GPM_IDS):
            request.metrics[i].metricId = metric_id
        self._call("nvmlGpmMetricsGet", pynvml.nvmlGpmMetricsGet, request)
        values = []
        for i in range(len(_GPM_IDS)):
            metric = request.metrics[i]
            if metric.nvmlReturn != pynvml.NVML_SUCCESS:
                raise translate("nvmlGpmMetricsGet", pynvml.NVMLError(metric.nvmlReturn))
            values.append(float(metric.value) / 100.0)
        return GpmMetrics(sm_activity=values[0], sm_occupancy=values[1], tensor_activity=values[2])

    # -- helpers ------------------------------------------------------------------------------

    def _handle(self, index: int) -> Any:
        handle = self._handles.get(index)
        if handle is None:
            handle = self._call(
                "nvmlDeviceGetHandleByIndex", pynvml.nvmlDeviceGetHandleByIndex, index
            )
            self._handles[index] = handle
        return handle

    def _call(self, function: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except Exception as exc:
            raise translate(function, exc) from exc

    def _optional_text(self, function: str, fn: Callable[[], Any]) -> str:
        # Versions are labels only: a driver that cannot say still serves every metric.
        try:
            return _text(fn())
        except Exception:
            return ""
