"""The real NVML backend with the real pynvml module; only pynvml's calls are replaced.

Scenarios: no driver at start (LibraryNotFound), a call not supported on a GPU, a lost GPU,
a call that fails now and then, the driver going away while running, GPM, and the driver's
utilization samples integrated into the busy counter.
"""

from __future__ import annotations

import logging

import pynvml
import pytest

from fsd_daemon.gpu.backend import LibraryMissing
from fsd_daemon.gpu.nvml import NvmlBackend
from fsd_daemon.gpu.sampler import METHOD_SAMPLES, METHOD_UTILIZATION_RATES, Sampler
from tests.gpu.fakenvml import FakeNvml
from tests.gpu.helpers import FakeClock, names, one, parse, render, select


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    return FakeNvml(gpus=2).install(monkeypatch)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_sampler(clock: FakeClock, retry: float = 30.0) -> Sampler:
    return Sampler(
        NvmlBackend(clock=clock),
        interval=1.0,
        retry_interval=retry,
        clock=clock,
        wall_clock=clock,
        timer=clock,
    )


def test_the_real_module_is_used_and_only_calls_are_replaced(fake: FakeNvml) -> None:
    """The seam is pynvml's functions: its error classes and structures are the real ones."""
    assert pynvml.nvmlInit == fake.nvmlInit
    err = pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
    assert isinstance(err, pynvml.NVMLError_GpuIsLost)
    assert pynvml.__name__ == "pynvml" and hasattr(pynvml, "c_nvmlSample_t")


def test_no_driver_on_this_machine_is_library_missing() -> None:
    """Unpatched, on a machine without a GPU driver, init fails as LibraryMissing."""
    backend = NvmlBackend()
    try:
        backend.init()
    except LibraryMissing as exc:
        assert exc.function == "nvmlInit"
    else:  # pragma: no cover - a machine with a driver
        backend.shutdown()
        pytest.skip("this machine has an NVIDIA driver")


def test_library_not_found_at_start_serves_nvml_up_0_logs_once_and_retries(
    fake: FakeNvml, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """No driver at start: nvml_up 0, one warning line, init retried every retry interval
    (not every tick), quietly; once the driver loads the GPUs appear."""
    fake.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    sampler = make_sampler(clock, retry=30.0)
    with caplog.at_level(logging.INFO, logger="fsd_daemon"):
        sampler.sample_once()
        series = parse(render(sampler))
        assert one(series, "fsd_gpu_nvml_up") == 0.0
        assert not select(series, "fsd_gpu_busy_seconds_total")
        for _ in range(10):  # ten ticks inside the retry interval: no new attempt
            clock.advance(1.0)
            sampler.sample_once()
        assert fake.calls.count("nvmlInit") == 1
        clock.advance(25.0)
        sampler.sample_once()  # a failed retry: counted as an attempt, not logged again
        assert fake.calls.count("nvmlInit") == 2
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "NVML unavailable" in warnings[0].getMessage()
        assert "nvml_up 0" in warnings[0].getMessage()

        fake.init_error = None  # the driver loads after boot
        clock.advance(30.0)
        sampler.sample_once()
    series = parse(render(sampler))
    assert one(series, "fsd_gpu_nvml_up") == 1.0
    assert len(select(series, "fsd_gpu_memory_used_bytes")) == 2
    assert one(series, "fsd_gpu_driver_info", driver_version="550.54.15") == 1.0


def test_driver_unloaded_while_running_goes_down_and_comes_back(
    fake: FakeNvml, clock: FakeClock
) -> None:
    """DRIVER_NOT_LOADED from any call takes NVML down (per-GPU series go), then re-init."""
    sampler = make_sampler(clock, retry=5.0)
    sampler.sample_once()
    fake.fail("nvmlDeviceGetUtilizationRates", pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    clock.advance(1.0)
    sampler.sample_once()
    series = parse(render(sampler))
    assert one(series, "fsd_gpu_nvml_up") == 0.0
    assert not select(series, "fsd_gpu_memory_used_bytes")
    fake.heal("nvmlDeviceGetUtilizationRates")
    clock.advance(5.0)
    sampler.sample_once()
    assert one(parse(render(sampler)), "fsd_gpu_nvml_up") == 1.0


def test_not_supported_leaves_that_metric_out_and_is_not_an_error(
    fake: FakeNvml, clock: FakeClock
) -> None:
    """NOT_SUPPORTED on one call: that one metric is absent, the rest are served, no error is
    counted, and the call is not repeated every tick."""
    fake.fail("nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_NOT_SUPPORTED)
    fake.fail("nvmlDeviceGetTotalEnergyConsumption", pynvml.NVML_ERROR_NOT_SUPPORTED, gpu=1)
    sampler = make_sampler(clock)
    for _ in range(3):
        sampler.sample_once()
        clock.advance(1.0)
    series = parse(render(sampler))
    assert "fsd_gpu_power_watts" not in names(series)
    assert set(select(series, "fsd_gpu_energy_joules_total")) == set(
        select(series, "fsd_gpu_energy_joules_total", gpu="0")
    )
    assert one(series, "fsd_gpu_energy_joules_total", gpu="0") == 1000.0
    assert len(select(series, "fsd_gpu_temperature_celsius")) == 2
    assert not select(series, "fsd_gpu_nvml_errors_total")
    assert fake.calls.count("nvmlDeviceGetPowerUsage") == 2  # once per GPU, then remembered


def test_samples_not_supported_falls_back_to_utilization_rates_and_says_so(
    fake: FakeNvml, clock: FakeClock
) -> None:
    """Without driver samples the busy counter integrates utilization readings, and
    fsd_gpu_busy_source_info{method} says which GPU uses which method."""
    fake.fail("nvmlDeviceGetSamples", pynvml.NVML_ERROR_NOT_SUPPORTED, gpu=1)
    fake.gpus[1].utilization = 25
    sampler = make_sampler(clock)
    for _ in range(11):
        sampler.sample_once()
        clock.advance(1.0)
    series = parse(render(sampler))
    assert one(series, "fsd_gpu_busy_source_info", gpu="0", method=METHOD_SAMPLES) == 1.0
    assert one(series, "fsd_gpu_busy_source_info", gpu="1", method=METHOD_UTILIZATION_RATES) == 1.0
    # Ten one-second steps at 25%.
    assert one(series, "fsd_gpu_busy_seconds_total", gpu="1") == pytest.approx(2.5)


def test_gpu_is_lost_on_one_gpu_the_others_go_on(fake: FakeNvml, clock: FakeClock) -> None:
    """GPU_IS_LOST on GPU 1: fsd_gpu_lost 1 for it, its values gone, GPU 0 unaffected; the
    error is counted by function; when it answers again it is back."""
    sampler = make_sampler(clock)
    sampler.sample_once()
    fake.lose(1)
    for _ in range(3):
        clock.advance(1.0)
        sampler.sample_once()
    series = parse(render(sampler))
    assert one(series, "fsd_gpu_lost", gpu="1") == 1.0
    assert one(series, "fsd_gpu_lost", gpu="0") == 0.0
    assert set(select(series, "fsd_gpu_memory_used_bytes")) == set(
        select(series, "fsd_gpu_memory_used_bytes", gpu="0")
    )
    assert one(series, "fsd_gpu_nvml_up") == 1.0
    assert one(series, "fsd_gpu_nvml_errors_total", function="nvmlDeviceGetUtilizationRates") == 3
    assert sampler.health()[1]["lost_gpus"] == [1]

    fake.find(1)
    clock.advance(1.0)
    sampler.sample_once()
    series = parse(render(sampler))
    assert one(series, "fsd_gpu_lost", gpu="1") == 0.0
    assert len(select(series, "fsd_gpu_memory_used_bytes")) == 2


def test_gpu_lost_before_start_is_reported_with_its_index(fake: FakeNvml, clock: FakeClock) -> None:
    """A GPU lost before the first init has no UUID yet: it is still reported as lost."""
    fake.lose(0)
    sampler = make_sampler(clock)
    sampler.sample_once()
    series = parse(render(sampler))
    assert one(series, "fsd_gpu_lost", gpu="0") == 1.0
    assert one(series, "fsd_gpu_lost", gpu="1") == 0.0


def test_other_failures_are_counted_by_function_and_skip_only_that_value(
    fake: FakeNvml, clock: FakeClock
) -> None:
    """A call failing with an ordinary error (UNKNOWN) is counted and leaves its value out for
    that tick only."""
    fake.fail("nvmlDeviceGetTemperature", pynvml.NVML_ERROR_UNKNOWN, gpu=0)
    sampler = make_sampler(clock)
    sampler.sample_once()
    series = parse(render(sampler))
    assert one(series, "fsd_gpu_nvml_errors_total", function="nvmlDeviceGetTemperature") == 1
    assert set(select(series, "fsd_gpu_temperature_celsius")) == set(
        select(series, "fsd_gpu_temperature_celsius", gpu="1")
    )
    fake.heal("nvmlDeviceGetTemperature", gpu=0)
    clock.advance(1.0)
    sampler.sample_once()
    assert len(select(parse(render(sampler)), "fsd_gpu_temperature_celsius")) == 2


def test_gpm_metrics_from_two_samples_and_absent_before_hopper(
    fake: FakeNvml, clock: FakeClock
) -> None:
    """GPM ratios appear from the second sample on; a GPU without GPM support has none."""
    fake.gpus[1].gpm_supported = False
    sampler = make_sampler(clock)
    sampler.sample_once()
    assert "fsd_gpu_gpm_sm_activity_ratio" not in names(parse(render(sampler)))
    clock.advance(1.0)
    sampler.sample_once()
    series = parse(render(sampler))
    assert one(series, "fsd_gpu_gpm_sm_activity_ratio", gpu="0") == pytest.approx(0.45)
    assert one(series, "fsd_gpu_gpm_sm_occupancy_ratio", gpu="0") == pytest.approx(0.225)
    assert one(series, "fsd_gpu_gpm_tensor_activity_ratio", gpu="0") == pytest.approx(0.30)
    assert not select(series, "fsd_gpu_gpm_sm_activity_ratio", gpu="1")


def test_units_are_converted_at_the_seam(fake: FakeNvml, clock: FakeClock) -> None:
    """Milliwatts, millijoules and megahertz become watts, joules and hertz."""
    sampler = make_sampler(clock)
    sampler.sample_once()
    series = parse(render(sampler))
    assert one(series, "fsd_gpu_power_watts", gpu="0") == 350.0
    assert one(series, "fsd_gpu_energy_joules_total", gpu="0") == 1000.0
    assert one(series, "fsd_gpu_sm_clock_hertz", gpu="0") == 1.98e9
    assert one(series, "fsd_gpu_memory_total_bytes", gpu="0") == 141 * 2**30
    assert one(series, "fsd_gpu_utilization_ratio", gpu="0") == 0.4
    assert select(series, "fsd_gpu_memory_used_bytes", gpu_model="NVIDIA H200", node="node-1")


def test_driver_samples_are_integrated_into_busy_seconds(fake: FakeNvml, clock: FakeClock) -> None:
    """Samples read "since the last timestamp" through the real backend: each period counted
    once, history from before the start not counted."""
    period = 166_667
    gpu = fake.gpus[0]
    gpu.samples = [(1_000_000 + k * period, 100) for k in range(6)]  # history: ignored
    sampler = make_sampler(clock)
    sampler.sample_once()
    assert one(parse(render(sampler)), "fsd_gpu_busy_seconds_total", gpu="0") == 0.0
    last = gpu.samples[-1][0]
    gpu.samples += [(last + k * period, 50 if k % 2 else 0) for k in range(1, 7)]
    clock.advance(1.0)
    sampler.sample_once()
    clock.advance(1.0)
    sampler.sample_once()  # nothing new: NOT_FOUND means "no newer sample", not an error
    series = parse(render(sampler))
    assert one(series, "fsd_gpu_busy_seconds_total", gpu="0") == pytest.approx(
        3 * 0.5 * period / 1e6
    )
    assert not select(series, "fsd_gpu_nvml_errors_total")
