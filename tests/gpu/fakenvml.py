"""A scripted NVML behind the real pynvml module: only its functions are replaced.

``FakeNvml(gpus=2).install(monkeypatch)`` patches ``pynvml.nvmlInit``, ``nvmlDeviceGet*`` and
the GPM calls with functions that answer with pynvml's own ctypes structures and raise
pynvml's own exceptions (``pynvml.NVMLError(code)`` builds the right subclass). Everything
else in pynvml (constants, structures, error classes) is the real module, as in production.

Failure scripting: ``fake.fail("nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_NOT_SUPPORTED)``
makes that call fail on every GPU, ``gpu=1`` on one only; ``fake.lose(1)`` makes every call on
GPU 1 raise GPU_IS_LOST; ``fake.init_error = code`` makes nvmlInit fail.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

import pynvml
import pytest


@dataclass
class FakeGpu:
    index: int
    uuid: str
    name: str = "NVIDIA H200"
    memory_used: int = 10 * 2**30
    memory_total: int = 141 * 2**30
    power_mw: int = 350_000
    energy_mj: int = 1_000_000
    temperature: int = 55
    sm_clock_mhz: int = 1980
    utilization: int = 40
    # (timestamp_us, percent) in the driver's ring buffer, oldest first.
    samples: list[tuple[int, int]] = field(default_factory=list)
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, used bytes)
    gpm_supported: bool = True


@dataclass(frozen=True)
class _Handle:
    index: int


class FakeNvml:
    def __init__(self, gpus: int = 2) -> None:
        self.gpus = [
            FakeGpu(index=i, uuid=f"GPU-{i:08d}-aaaa-bbbb-cccc-{i:012d}") for i in range(gpus)
        ]
        self.init_error: int | None = None
        self.initialised = False
        self.calls: list[str] = []
        self._failures: dict[tuple[str, int | None], int] = {}
        self._lost: set[int] = set()
        self._gpm_buffers: list[Any] = []
        self._gpm_times: dict[int, int] = {}
        self.gpm_clock = 0  # advanced by GpmSampleGet
        self.gpm_percent = (45.0, 22.5, 30.0)  # SM activity, occupancy, tensor (percent)

    # -- scripting ----------------------------------------------------------------------------

    def fail(self, function: str, code: int, gpu: int | None = None) -> None:
        self._failures[(function, gpu)] = code

    def heal(self, function: str, gpu: int | None = None) -> None:
        self._failures.pop((function, gpu), None)

    def lose(self, gpu: int) -> None:
        self._lost.add(gpu)

    def find(self, gpu: int) -> None:
        self._lost.discard(gpu)

    # -- installation -------------------------------------------------------------------------

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
        for name in dir(self):
            if name.startswith("nvml"):
                assert hasattr(pynvml, name), f"pynvml has no {name}: the fake is out of date"
                monkeypatch.setattr(pynvml, name, getattr(self, name))
        return self

    def _check(self, function: str, handle: _Handle | None = None) -> FakeGpu | None:
        self.calls.append(function)
        if function != "nvmlInit" and not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        gpu = None if handle is None else handle.index
        if gpu is not None and gpu in self._lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        for key in ((function, gpu), (function, None)):
            if key in self._failures:
                raise pynvml.NVMLError(self._failures[key])
        return None if gpu is None else self.gpus[gpu]

    # -- the pynvml functions -----------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check("nvmlSystemGetDriverVersion")
        return "550.54.15"

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._check("nvmlSystemGetNVMLVersion")
        return "12.550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        gpu = self._check("nvmlDeviceGetUUID", handle)
        assert gpu is not None
        return gpu.uuid

    def nvmlDeviceGetName(self, handle: _Handle) -> bytes:
        gpu = self._check("nvmlDeviceGetName", handle)
        assert gpu is not None
        return gpu.name.encode()  # older pynvml returns bytes; the backend decodes both

    def nvmlDeviceGetSamples(self, handle: _Handle, kind: int, since_us: int) -> Any:
        gpu = self._check("nvmlDeviceGetSamples", handle)
        assert gpu is not None and kind == pynvml.NVML_GPU_UTILIZATION_SAMPLES
        newer = [(t, p) for t, p in gpu.samples if t > since_us]
        if not newer:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        array = (pynvml.c_nvmlSample_t * len(newer))()
        for i, (t, p) in enumerate(newer):
            array[i].timeStamp = t
            array[i].sampleValue.uiVal = p
        return pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, array

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        gpu = self._check("nvmlDeviceGetUtilizationRates", handle)
        assert gpu is not None
        rates = pynvml.c_nvmlUtilization_t()
        rates.gpu, rates.memory = gpu.utilization, 10
        return rates

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> Any:
        gpu = self._check("nvmlDeviceGetMemoryInfo", handle)
        assert gpu is not None
        info = pynvml.c_nvmlMemory_t()
        info.total, info.used = gpu.memory_total, gpu.memory_used
        info.free = gpu.memory_total - gpu.memory_used
        return info

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        gpu = self._check("nvmlDeviceGetPowerUsage", handle)
        assert gpu is not None
        return gpu.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        gpu = self._check("nvmlDeviceGetTotalEnergyConsumption", handle)
        assert gpu is not None
        return gpu.energy_mj

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        gpu = self._check("nvmlDeviceGetTemperature", handle)
        assert gpu is not None and sensor == pynvml.NVML_TEMPERATURE_GPU
        return gpu.temperature

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock: int) -> int:
        gpu = self._check("nvmlDeviceGetClockInfo", handle)
        assert gpu is not None and clock == pynvml.NVML_CLOCK_SM
        return gpu.sm_clock_mhz

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        gpu = self._check("nvmlDeviceGetComputeRunningProcesses", handle)
        assert gpu is not None
        out = []
        for pid, used in gpu.processes:
            info = pynvml.c_nvmlProcessInfo_v3_t()
            info.pid, info.usedGpuMemory = pid, used
            out.append(info)
        return out

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: _Handle) -> list[Any]:
        return self.nvmlDeviceGetComputeRunningProcesses(handle)

    def nvmlGpmQueryDeviceSupport(self, handle: _Handle) -> Any:
        gpu = self._check("nvmlGpmQueryDeviceSupport", handle)
        assert gpu is not None
        support = pynvml.c_nvmlGpmSupport_t()
        support.isSupportedDevice = 1 if gpu.gpm_supported else 0
        return support

    def nvmlGpmSampleAlloc(self) -> Any:
        self._check("nvmlGpmSampleAlloc")
        backing = ctypes.create_string_buffer(16)
        self._gpm_buffers.append(backing)  # kept alive: the pointer below points into it
        return ctypes.cast(backing, pynvml.c_nvmlGpmSample_t)

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        self.calls.append("nvmlGpmSampleFree")

    def nvmlGpmSampleGet(self, handle: _Handle, sample: Any) -> None:
        self._check("nvmlGpmSampleGet", handle)
        self.gpm_clock += 1
        self._gpm_times[ctypes.cast(sample, ctypes.c_void_p).value or 0] = self.gpm_clock

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        self._check("nvmlGpmMetricsGet")
        t1 = self._gpm_times[ctypes.cast(request.sample1, ctypes.c_void_p).value or 0]
        t2 = self._gpm_times[ctypes.cast(request.sample2, ctypes.c_void_p).value or 0]
        assert t2 > t1, "GPM samples passed in the wrong order"
        values = dict(
            zip(
                (
                    pynvml.NVML_GPM_METRIC_SM_UTIL,
                    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
                    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL,
                ),
                self.gpm_percent,
                strict=True,
            )
        )
        for i in range(request.numMetrics):
            metric = request.metrics[i]
            metric.value = values[metric.metricId]
            metric.nvmlReturn = pynvml.NVML_SUCCESS
        return request
