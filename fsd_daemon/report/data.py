"""What the report asks Prometheus, as arrays on one time grid.

Every series is put on the grid ``start, start + step, ...``; a time without a sample is NaN
(a replica that did not exist yet, or a scrape that failed). Queries use the raw engine and
exporter series, not the recording rules, so a report works where the rules are not loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fsd_daemon.mixin import names
from fsd_daemon.recognition import engines, verl
from fsd_daemon.report.prom import Prometheus, PrometheusError, Series

# (ray_job_id, replica) and (instance, gpu).
ReplicaKey = tuple[str, str]
GpuKey = tuple[str, str]

# Rates are taken over this many scrape intervals (the exporter's, read from Prometheus): a
# rate needs two samples in its window, and a longer window smears the step's edges.
RATE_WINDOW_SCRAPES = 4
DEFAULT_SCRAPE_INTERVAL = 15.0


@dataclass
class ReportData:
    start: float
    end: float
    step: float
    grid: np.ndarray
    running: dict[ReplicaKey, np.ndarray] = field(default_factory=dict)
    engines: dict[ReplicaKey, str] = field(default_factory=dict)
    # 1.0 while the engine reports a sleep state other than awake; only engines with the gauge.
    asleep: dict[ReplicaKey, np.ndarray] = field(default_factory=dict)
    tokens_per_second: dict[str, np.ndarray] = field(default_factory=dict)
    gpu_busy: dict[GpuKey, np.ndarray] = field(default_factory=dict)
    # Per GPU and time: "role|ray_job_id|replica|state" of its owner, "" while it has none.
    gpu_owner: dict[GpuKey, np.ndarray] = field(default_factory=dict)
    # The window of the GPU busy-time rate (a PromQL duration), "" without an exporter.
    gpu_rate_window: str = ""
    # Parts whose data is missing, each one line saying what and why.
    missing: list[str] = field(default_factory=list)

    @property
    def jobs(self) -> list[str]:
        return sorted({job for job, _ in self.running})


def _selector(job: str | None, extra: str = "", cluster: str | None = None) -> str:
    matchers = [f'{names.ROLE}="{names.ROLE_ROLLOUT}"']
    if cluster:
        matchers.append(f'{names.CLUSTER}="{cluster}"')
    if job:
        matchers.append(f'{names.RAY_JOB_ID}="{job}"')
    if extra:
        matchers.append(extra)
    return "{" + ", ".join(matchers) + "}"


def _on_grid(grid: np.ndarray, start: float, step: float, series: Series) -> np.ndarray:
    values = np.full(grid.shape, np.nan)
    index = np.rint((series.times - start) / step).astype(np.int64)
    inside = (index >= 0) & (index < len(grid))
    values[index[inside]] = series.values[inside]
    return values


def fetch(
    prometheus: Prometheus,
    start: float,
    end: float,
    step: float,
    job: str | None = None,
    cluster: str | None = None,
    exact_step: bool = False,
) -> ReportData:
    """Ask Prometheus for everything the report draws (of one cluster's series, with
    ``cluster``: a store holds many). Raises PrometheusUnreachable when there is no
    Prometheus; a part without data is listed in ``missing`` instead.

    Unless ``exact_step``, the grid is never finer than the data: the shortest scrape interval
    of the series drawn (rollout servers', GPU exporters'), where it is known. A finer grid
    repeats each sample (an hour at 1 s over 15 s scrapes asks Prometheus for 15 times the
    points the data has, and a day of 1,000 GPUs runs out of time and memory)."""
    targets = _scrape_intervals_by_job(prometheus)
    interval = _gpu_scrape_interval(targets, prometheus, start, end)
    floor = _grid_floor(targets, interval)
    if not exact_step and floor is not None:
        # Whole seconds: an interval read from the samples is an estimate (14.6 for 15).
        step = max(step, float(max(1, round(floor))))
    grid = np.arange(start, end + step / 2, step)
    data = ReportData(start=start, end=end, step=step, grid=grid)
    by = f"{names.RAY_JOB_ID}, {names.REPLICA}, {names.ENGINE}"
    sel = _selector(job, cluster=cluster)

    def rng(expr: str) -> list[Series]:
        return prometheus.query_range(expr, start, end, step)

    # Per engine (fsd_daemon/recognition/engines.py): ranks that report the same batch count once.
    running = rng(
        " or ".join(
            f"sum by ({by}) ({engines.ranks_reduced(engine, name + sel)})"
            for engine, name in engines.answering(engines.Reads.REQUESTS_RUNNING)
        )
    )
    for s in running:
        key = (s.labels.get(names.RAY_JOB_ID, ""), s.labels.get(names.REPLICA, ""))
        data.running[key] = _on_grid(grid, start, step, s)
        data.engines[key] = s.labels.get(names.ENGINE, "")
    if not running:
        data.missing.append(
            "long tail and rightsizing: no rollout engine series (vllm:num_requests_running, "
            'sglang:num_running_reqs) with role="rollout" in the range; are the rollout '
            "targets scraped and do the engines export stats (fsd-daemon doctor says why not)?"
        )
    asleep_sel = _selector(job, f'{names.SLEEP_STATE}!="{names.SLEEP_AWAKE}"', cluster)
    awake_sel = _selector(job, f'{names.SLEEP_STATE}="{names.SLEEP_AWAKE}"', cluster)
    # A replica is asleep while any non-awake state is set; engines report 1 for the current
    # state. "or 0 * awake" gives the replicas that report only awake a series of zeros.
    asleep = rng(
        f"max by ({names.RAY_JOB_ID}, {names.REPLICA}) ({names.VLLM_SLEEP_STATE}"
        f"{asleep_sel} > bool 0) or max by ({names.RAY_JOB_ID}, {names.REPLICA}) "
        f"(0 * {names.VLLM_SLEEP_STATE}{awake_sel})"
    )
    for s in asleep:
        key = (s.labels.get(names.RAY_JOB_ID, ""), s.labels.get(names.REPLICA, ""))
        data.asleep[key] = _on_grid(grid, start, step, s)
    tokens = rng(
        " or ".join(
            f"sum by ({names.RAY_JOB_ID}) "
            f"({engines.ranks_reduced(engine, f'rate({name}{sel}[1m])')})"
            for engine, name in engines.answering(engines.Reads.GENERATION_TOKENS)
        )
    )
    for s in tokens:
        data.tokens_per_second[s.labels.get(names.RAY_JOB_ID, "")] = _on_grid(grid, start, step, s)
    # Rates are taken over RATE_WINDOW_SCRAPES of the exporters' interval.
    gpu_interval = interval or DEFAULT_SCRAPE_INTERVAL
    data.gpu_rate_window = f"{max(2.0, RATE_WINDOW_SCRAPES * gpu_interval):.0f}s"
    _fetch_gpus(rng, data, job, data.gpu_rate_window, cluster)
    return data


def _scrape_intervals_by_job(prometheus: Prometheus) -> dict[str, float]:
    """The longest scrape interval of each job's active targets (``/api/v1/targets``); empty
    for a store that scrapes nothing itself (remote write into VictoriaMetrics, Thanos,
    Mimir)."""
    longest: dict[str, float] = {}
    for labels, interval in prometheus.scrape_intervals():
        seconds = duration_seconds(interval)
        job = labels.get("job", "")
        if seconds:
            longest[job] = max(seconds, longest.get(job, 0.0))
    return longest


def _gpu_scrape_interval(
    targets: dict[str, float], prometheus: Prometheus, start: float, end: float
) -> float | None:
    """Seconds between the GPU exporters' samples: the targets API's, else read from the
    samples; None when neither tells (no exporter in the range)."""
    if names.JOB_GPU in targets:
        return targets[names.JOB_GPU]
    return _interval_from_samples(prometheus, start, end) or None


def _grid_floor(targets: dict[str, float], gpu_interval: float | None) -> float | None:
    """The finest grid the data can fill: the shortest interval at which the series drawn
    (rollout servers', GPU exporters') are scraped. None where it is not known (no targets and
    no GPU samples to count): then the asked step stands, since a default would coarsen a
    rollout-only run's grid below its steps."""
    known = [targets[j] for j in (names.JOB_ROLLOUT, names.JOB_GPU) if j in targets]
    if known:
        return min(known)
    return gpu_interval


# The span whose samples are counted to estimate the scrape interval.
_MAX_COUNTED_SPAN_SECONDS = 600.0


def _interval_from_samples(prometheus: Prometheus, start: float, end: float) -> float:
    """Seconds between a GPU exporter's samples over the end of the range: the span divided
    by the most samples any busy-time series has in it (a series that started within the
    span has fewer; the fullest one has been there all along); 0 when there are none."""
    span = max(1.0, min(end - start, _MAX_COUNTED_SPAN_SECONDS))
    try:
        counts = prometheus.query(
            f"max(count_over_time({names.GPU_BUSY_SECONDS}[{span:.0f}s]))", end
        )
    except PrometheusError:
        return 0.0
    most = max((value for _, value in counts), default=0.0)
    return span / most if most >= 2 else 0.0


_PROM_DURATION_RE = re.compile(r"(\d{1,9})(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(text: str) -> float:
    """Prometheus' duration ("15s", "1m30s") in seconds; 0 when it is not one."""
    if not re.fullmatch(r"(?:\d{1,9}(?:ms|s|m|h|d|w)){1,7}", text):
        return 0.0
    return float(sum(int(n) * _UNIT_SECONDS[u] for n, u in _PROM_DURATION_RE.findall(text)))


# Which owner names a GPU that has several (lowest first); other roles after these.
_OWNER_PRIORITY = {role: i for i, role in enumerate((*verl.SERVING_ROLES, verl.ROLE_TRAIN))}


def _fetch_gpus(
    query: Callable[[str], list[Series]],
    data: ReportData,
    job: str | None,
    window: str,
    cluster: str | None = None,
) -> None:
    of_cluster = f'{{{names.CLUSTER}="{cluster}"}}' if cluster else ""
    busy = query(
        f"max by (instance, gpu) "
        f"(clamp_max(rate({names.GPU_BUSY_SECONDS}{of_cluster}[{window}]), 1))"
    )
    if not busy:
        data.missing.append(
            "GPU busy time, idle GPU-hours and unused GPUs: no fsd-gpu-exporter series "
            f"({names.GPU_BUSY_SECONDS}) in the range; is fsd-gpu-exporter running on the "
            "nodes and listed in gpu.json?"
        )
        return
    for s in busy:
        key = (s.labels.get("instance", ""), s.labels.get("gpu", ""))
        data.gpu_busy[key] = _on_grid(data.grid, data.start, data.step, s)
    owner_matchers = [
        *([f'{names.CLUSTER}="{cluster}"'] if cluster else []),
        *([f'{names.RAY_JOB_ID}="{job}"'] if job else []),
    ]
    owner_sel = "{" + ", ".join(owner_matchers) + "}" if owner_matchers else ""
    try:
        owners = query(
            f"max by (instance, gpu, role, {names.RAY_JOB_ID}, replica, state) "
            f"({names.GPU_OWNER_INFO}{owner_sel})"
        )
    except PrometheusError:
        owners = []
    for key in data.gpu_busy:
        data.gpu_owner[key] = np.full(data.grid.shape, "", dtype=object)
    # A GPU of several owners at once (verl's hybrid and colocated modes: the trainer, a
    # rollout replica, a reward replica) is named by its rollout owner first: rollout GPU time
    # (asleep, awake-busy, awake-idle) is what the report is about.
    owners = sorted(owners, key=lambda s: _OWNER_PRIORITY.get(s.labels.get(names.ROLE, ""), 9))
    for s in owners:
        key = (s.labels.get("instance", ""), s.labels.get("gpu", ""))
        if key not in data.gpu_owner:
            continue
        tag = "|".join(
            s.labels.get(label, "") for label in ("role", names.RAY_JOB_ID, names.REPLICA, "state")
        )
        present = ~np.isnan(_on_grid(data.grid, data.start, data.step, s))
        column = data.gpu_owner[key]
        # Several owners of one GPU: the first in _OWNER_PRIORITY names it.
        column[present & (column == "")] = tag
    if job:
        # Only the job's GPUs: a GPU this job never held is not part of its report.
        for key in [k for k, col in data.gpu_owner.items() if not (col != "").any()]:
            del data.gpu_owner[key]
            del data.gpu_busy[key]
