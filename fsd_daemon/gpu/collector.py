"""Renders the latest snapshots for prometheus_client. Never calls the backend or /proc.

A render costs one pass over two immutable objects (the sampler's :class:`Snapshot` and the
tracker's :class:`Ownership`), so it takes well under a millisecond per GPU and cannot hang on
the driver; the exporter renders once per new snapshot and scrapes serve the cached bytes
(``fsd_daemon.plumbing.metricscache``). Series of GPUs that are gone, and of owners that are gone,
are
not rendered: they vanish from the next scrape.

Names are fixed (recording rules and dashboards are written against them): one prefix
``fsd_gpu_``, base units, ``_total`` on counters, HELP on every family.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fsd_daemon.gpu.ownership import Ownership
from fsd_daemon.gpu.sampler import GpuReading, Snapshot
from fsd_daemon.mixin import names

GPU_LABELS = ("gpu", "uuid", "gpu_model", "node")
OWNER_LABELS = (
    "gpu",
    "uuid",
    "node",
    "role",
    names.REPLICA,
    "actor_class",
    names.ACTOR_NAME,
    names.RAY_JOB_ID,
    "pid",
    "state",
    names.TEACHER,
    names.ROLLOUT_MODE,
)

# (name, help, value from a reading); gauges unless the name ends in _total.
_PER_GPU: tuple[tuple[str, str, Callable[[GpuReading], float | None]], ...] = (
    (
        "fsd_gpu_busy_seconds_total",
        "Seconds in which a kernel ran on the GPU, integrated from the driver's utilization "
        "samples; rate() is the busy fraction (0-1) over any window.",
        lambda r: r.busy_seconds,
    ),
    (
        "fsd_gpu_utilization_ratio",
        "Fraction of the driver's last sample period (1/6 s to 1 s) in which a kernel ran "
        "(0-1). A point reading: use rate(fsd_gpu_busy_seconds_total) for time averages.",
        lambda r: r.utilization_ratio,
    ),
    (
        "fsd_gpu_memory_used_bytes",
        "GPU memory in use, bytes.",
        lambda r: None if r.memory is None else r.memory.used_bytes,
    ),
    (
        "fsd_gpu_memory_total_bytes",
        "GPU memory installed, bytes.",
        lambda r: None if r.memory is None else r.memory.total_bytes,
    ),
    ("fsd_gpu_power_watts", "Power draw, watts.", lambda r: r.power_watts),
    (
        "fsd_gpu_energy_joules_total",
        "Energy used since the driver was loaded, joules.",
        lambda r: r.energy_joules,
    ),
    (
        "fsd_gpu_temperature_celsius",
        "GPU core temperature, degrees Celsius.",
        lambda r: r.temperature_celsius,
    ),
    ("fsd_gpu_sm_clock_hertz", "SM clock, hertz.", lambda r: r.sm_clock_hertz),
    (
        "fsd_gpu_gpm_sm_activity_ratio",
        "GPM (Hopper and newer): fraction of time the SMs were active (0-1), over the last "
        "GPM interval.",
        lambda r: None if r.gpm is None else r.gpm.sm_activity,
    ),
    (
        "fsd_gpu_gpm_sm_occupancy_ratio",
        "GPM (Hopper and newer): achieved SM occupancy, warps resident over the maximum (0-1).",
        lambda r: None if r.gpm is None else r.gpm.sm_occupancy,
    ),
    (
        "fsd_gpu_gpm_tensor_activity_ratio",
        "GPM (Hopper and newer): fraction of time any tensor core pipe was active (0-1).",
        lambda r: None if r.gpm is None else r.gpm.tensor_activity,
    ),
)


class GpuCollector(Collector):
    """A custom collector over ``snapshot()`` and ``ownership()`` (cheap attribute reads)."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        ownership: Callable[[], Ownership],
        *,
        node: str,
        version: str,
        backend: str,
        python_version: str | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._ownership = ownership
        self.node = node
        self._build = {
            "version": version,
            "backend": backend,
            "python_version": python_version or platform.python_version(),
        }

    def describe(self) -> list[Metric]:
        return []  # the families depend on the snapshot; registering must not collect

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        owned = self._ownership()
        for family in (
            *self._per_gpu(snap),
            *self._ownership_families(snap, owned),
            *self._health(snap, owned),
        ):
            # A value that is not available is left out, family and all (no HELP without data).
            if family.samples:
                yield family

    # -- families -----------------------------------------------------------------------------

    def _per_gpu(self, snap: Snapshot) -> Iterator[Metric]:
        readings = [r for r in snap.gpus if not r.lost]
        for name, doc, value_of in _PER_GPU:
            family = _family(name, doc, GPU_LABELS)
            for r in readings:
                value = value_of(r)
                if value is not None:
                    family.add_metric(self._gpu_labels(r), float(value))
            yield family
        source = GaugeMetricFamily(
            "fsd_gpu_busy_source_info",
            "How fsd_gpu_busy_seconds_total is measured on this GPU (method: samples = the "
            "driver's utilization samples, exact; utilization_rates = periodic readings, "
            "approximate). Always 1.",
            labels=("gpu", "uuid", "node", "method"),
        )
        for r in readings:
            if r.busy_method is not None:
                source.add_metric([*self._id_labels(r), r.busy_method], 1.0)
        yield source
        lost = GaugeMetricFamily(
            "fsd_gpu_lost",
            "1 if the GPU stopped answering (fallen off the bus, needs a reset), else 0.",
            labels=("gpu", "uuid", "node"),
        )
        for r in snap.gpus:
            lost.add_metric(self._id_labels(r), 1.0 if r.lost else 0.0)
        yield lost

    def _ownership_families(self, snap: Snapshot, owned: Ownership) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "fsd_gpu_owner_info",
            "A process that holds memory on the GPU (state=active) or a rollout actor given the "
            "GPU that does not use it yet (state=reserved: named in its CUDA_VISIBLE_DEVICES, or "
            "held only by the replica's verl worker group, its engine not running there), with "
            "its Ray actor, role, replica, teacher key and verl rollout mode. Always 1; gone "
            "when the owner is gone.",
            labels=OWNER_LABELS,
        )
        uuids = {r.identity.index: r.identity.uuid for r in snap.gpus}
        for o in owned.owners:
            if o.gpu not in uuids:
                continue  # the GPU is not in this snapshot (driver down, GPU removed)
            family.add_metric(
                [
                    str(o.gpu),
                    uuids[o.gpu],
                    self.node,
                    o.role,
                    o.replica,
                    o.actor_class,
                    o.actor_name,
                    o.ray_job_id,
                    str(o.pid),
                    o.state,
                    o.teacher,
                    o.mode,
                ],
                1.0,
            )
        yield family

    def _health(self, snap: Snapshot, owned: Ownership) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "fsd_gpu_nvml_up",
            "1 if NVML is initialised and answering, else 0.",
            value=float(snap.nvml_up),
        )
        errors = CounterMetricFamily(
            "fsd_gpu_nvml_errors",
            "Failed NVML calls since the exporter started, by NVML function (calls that are not "
            "supported on a GPU are not errors and are not counted).",
            labels=("function",),
        )
        for function, count in snap.errors:
            errors.add_metric([function], float(count))
        yield errors
        yield _optional_gauge(
            "fsd_gpu_sample_duration_seconds",
            "How long the last complete NVML sampling pass took, seconds.",
            snap.sample_duration_seconds,
        )
        yield _optional_gauge(
            "fsd_gpu_last_sample_timestamp_seconds",
            "Unix time of the last complete NVML sampling pass. Stale while the driver hangs.",
            snap.last_sample_timestamp_seconds,
        )
        yield _optional_gauge(
            "fsd_gpu_ownership_last_refresh_timestamp_seconds",
            "Unix time of the last scan of which processes hold each GPU.",
            owned.refreshed_at,
        )
        yield _optional_gauge(
            "fsd_gpu_ownership_refresh_duration_seconds",
            "How long the last ownership scan (processes, parents, environments) took, seconds.",
            owned.duration_seconds,
        )
        yield CounterMetricFamily(
            "fsd_gpu_ray_name_lookup_errors",
            "Failed lookups of Ray actor names (the state API was unreachable or slow); owners "
            "are still reported, without actor_name and replica, until a lookup succeeds.",
            value=float(owned.name_lookup_failures),
        )
        driver = GaugeMetricFamily(
            "fsd_gpu_driver_info",
            "The loaded NVIDIA driver and NVML versions. Always 1; absent while NVML is down.",
            labels=("driver_version", "nvml_version"),
        )
        if snap.nvml_up and snap.driver is not None:
            driver.add_metric([snap.driver.driver_version, snap.driver.nvml_version], 1.0)
        yield driver
        build = GaugeMetricFamily(
            "fsd_gpu_exporter_build_info",
            "fsd-gpu-exporter's version, GPU backend (nvml or simulated) and Python. Always 1.",
            labels=tuple(self._build),
        )
        build.add_metric(list(self._build.values()), 1.0)
        yield build

    # -- labels -------------------------------------------------------------------------------

    def _gpu_labels(self, r: GpuReading) -> list[str]:
        i = r.identity
        return [str(i.index), i.uuid, i.model, self.node]

    def _id_labels(self, r: GpuReading) -> list[str]:
        return [str(r.identity.index), r.identity.uuid, self.node]


def _family(name: str, doc: str, labels: tuple[str, ...]) -> Any:
    if name.endswith("_total"):
        return CounterMetricFamily(name[: -len("_total")], doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


def _optional_gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    """A gauge with no sample (HELP and TYPE only) until there is a value to show."""
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], value)
    return family
