"""The full exposition: a reference file compared byte for byte and checked by promtool.

The reference scene (fake NVML, fake clock): GPU 0 healthy with driver samples and two owner
processes of one rollout replica; GPU 1 without samples (utilization-rate fallback) or power
reading, reserved by a second replica and used by a process outside Ray; GPU 2 lost.
Regenerate after an intended change with ``FSD_UPDATE_REFERENCE=1 pytest tests/gpu``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pynvml
import pytest

from fsd_daemon.gpu.collector import GPU_LABELS, OWNER_LABELS
from fsd_daemon.gpu.nvml import NvmlBackend
from fsd_daemon.gpu.ownership import Owner, Ownership
from fsd_daemon.gpu.sampler import Sampler
from tests.gpu.fakenvml import FakeNvml
from tests.gpu.helpers import FakeClock, names, parse, promtool_check, render

REFERENCE = Path(__file__).with_name("reference_exposition.txt")
REPO = Path(__file__).resolve().parents[2]

FIXED_NAMES = {
    "fsd_gpu_busy_seconds_total",
    "fsd_gpu_utilization_ratio",
    "fsd_gpu_memory_used_bytes",
    "fsd_gpu_memory_total_bytes",
    "fsd_gpu_power_watts",
    "fsd_gpu_energy_joules_total",
    "fsd_gpu_temperature_celsius",
    "fsd_gpu_sm_clock_hertz",
    "fsd_gpu_gpm_sm_activity_ratio",
    "fsd_gpu_gpm_sm_occupancy_ratio",
    "fsd_gpu_gpm_tensor_activity_ratio",
    "fsd_gpu_busy_source_info",
    "fsd_gpu_owner_info",
    "fsd_gpu_lost",
    "fsd_gpu_nvml_up",
    "fsd_gpu_nvml_errors_total",
    "fsd_gpu_sample_duration_seconds",
    "fsd_gpu_last_sample_timestamp_seconds",
    "fsd_gpu_exporter_build_info",
}


def reference_scene(monkeypatch: pytest.MonkeyPatch) -> str:
    fake = FakeNvml(gpus=3).install(monkeypatch)
    clock = FakeClock(1_700_000_000.0)
    period = 166_667
    fake.gpus[0].samples = [(1_000_000 + k * period, 0) for k in range(3)]
    fake.fail("nvmlDeviceGetSamples", pynvml.NVML_ERROR_NOT_SUPPORTED, gpu=1)
    fake.fail("nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_NOT_SUPPORTED, gpu=1)
    fake.gpus[1].gpm_supported = False
    fake.gpus[1].utilization = 0
    sampler = Sampler(
        NvmlBackend(clock=clock), interval=1.0, clock=clock, wall_clock=clock, timer=clock
    )
    sampler.sample_once()
    last = fake.gpus[0].samples[-1][0]
    fake.gpus[0].samples += [(last + k * period, 60) for k in range(1, 7)]
    fake.lose(2)
    clock.advance(1.0)
    sampler.sample_once()
    ownership = Ownership(
        owners=(
            Owner(
                0, "active", 4242, "rollout", "0", "vLLMHttpServer", "vllm_server_0_0", "01000000"
            ),
            Owner(
                0, "active", 4243, "rollout", "0", "vLLMHttpServer", "vllm_server_0_0", "01000000"
            ),
            Owner(1, "active", 777, "other"),
            Owner(
                1, "reserved", 5151, "rollout", "1", "vLLMHttpServer", "vllm_server_1_0", "01000000"
            ),
        ),
        refreshed_at=clock.now,
        duration_seconds=0.0125,
        name_lookup_failures=0,
    )
    return render(sampler, lambda: ownership, node="node-1")


def test_exposition_matches_the_reference_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name, label, HELP and TYPE line, byte for byte, and every value. Values compare as
    numbers: prometheus_client writes 1e10 as ``1.073741824e+010`` before 0.26 and
    ``1.073741824e+10`` since, both valid exposition (the dependency floor is tested too)."""
    text = reference_scene(monkeypatch)
    if os.environ.get("FSD_UPDATE_REFERENCE"):
        REFERENCE.write_text(text)
    assert _numbers_normalised(text) == _numbers_normalised(REFERENCE.read_text())


def _numbers_normalised(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            line = f"{series} {float(value)!r}"
        lines.append(line)
    return lines


@pytest.mark.prometheus
def test_reference_file_passes_promtool_check_metrics(promtool: str) -> None:
    """promtool's linter: names, units, _total on counters, HELP everywhere."""
    promtool_check(promtool, REFERENCE.read_text())


def test_reference_has_every_fixed_name_with_help() -> None:
    text = REFERENCE.read_text()
    present = names(parse(text))
    assert present >= FIXED_NAMES, FIXED_NAMES - present
    families = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    helped = set(re.findall(r"^# HELP (\S+) \S", text, re.M))
    assert families == helped
    assert all(n.startswith("fsd_gpu_") for n in present)


def test_every_exporter_metric_the_shipped_configs_use_is_produced() -> None:
    """Rules and dashboards are written against these names: none may be missing."""
    used: set[str] = set()
    for path in [
        *REPO.glob("fsd_daemon/assets/prometheus/rules/*.yml"),
        *REPO.glob("fsd_daemon/assets/grafana/**/*.json"),
    ]:
        # Recording-rule names (level:metric:operations) contain fsd_gpu_ too; skip them.
        used |= set(re.findall(r"(?<![\w:])fsd_gpu_\w+(?![\w:])", path.read_text()))
    present = names(parse(REFERENCE.read_text()))
    assert used <= present, used - present


def test_labels_are_the_agreed_ones() -> None:
    assert GPU_LABELS == ("gpu", "uuid", "gpu_model", "node")
    assert set(OWNER_LABELS) == {
        "gpu", "uuid", "node", "role", "replica", "actor_class", "actor_name", "ray_job_id",
        "pid", "state", "teacher", "rollout_mode",
    }  # fmt: skip


def test_owners_of_absent_gpus_and_nvml_down_render_no_owner_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With NVML down there are no GPUs, so no owner series either (nothing to join)."""
    fake = FakeNvml(gpus=1).install(monkeypatch)
    fake.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    clock = FakeClock()
    sampler = Sampler(NvmlBackend(), clock=clock, wall_clock=clock, timer=clock)
    sampler.sample_once()
    owned = Ownership(owners=(Owner(0, "active", 1, "rollout"),), refreshed_at=clock.now)
    series = parse(render(sampler, lambda: owned))
    assert "fsd_gpu_owner_info" not in names(series)
    assert series[("fsd_gpu_nvml_up", frozenset())] == 0.0
