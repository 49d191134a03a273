"""The report's numbers, computed from :class:`~fsd_daemon.report.data.ReportData`, as
:data:`DEFINITIONS` says (the page prints it)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from fsd_daemon.recognition import verl
from fsd_daemon.report.data import GpuKey, ReplicaKey, ReportData

DEFINITIONS = """\
* A rollout step of a job is a maximal run of grid times at which the job's replicas run at
  least one request in total: a step ends when running requests fall to zero. A step cut by the
  start or the end of the range, or during which a replica has no samples, is not measured.
* A replica's finish time in a step is the first grid time after its last busy one; the
  step's median finish is the median over the replicas that ran requests in the step.
* Tail: how long the slowest replica kept the step waiting after the median replica finished.
  Tail share: the share of the step's GPU time (replicas x step length) that lies in the tail.
  Waiting share: the share of the step's GPU time that replicas spent done and waiting for the
  slowest one.
* Rightsizing assumes the requests could be spread evenly over the replicas and that a replica
  works as fast with a larger share: then the same throughput needs as many replicas as were
  busy at once on average (rounded up), and the long tail is what that number cannot remove.
* Busy, awake-idle, asleep: per rollout GPU, its busy fraction from fsd-gpu-exporter, unless
  its vLLM engine reports a sleep state: then asleep (lent to the trainer), which is not idle.
  Without the exporter, replicas are counted instead (busy = running requests).
* Idle GPU-hours by role and job: the awake idle fraction integrated over the range; GPUs
  nobody holds are role "none". GPUs held but never busy: held by a job, busy less than 1% of
  the time they were held.
"""

# A GPU held in the range but busy less than this share of the time it was held: "never used".
NEVER_USED_BUSY_RATIO = 0.01


@dataclass(frozen=True)
class Step:
    job: str
    index: int
    start: float
    end: float  # the slowest replica's finish
    median_finish: float
    finishes: dict[str, float]  # replica -> finish time

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def tail_seconds(self) -> float:
        return self.end - self.median_finish

    @property
    def tail_share(self) -> float:
        return self.tail_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def waiting_share(self) -> float:
        if self.seconds <= 0 or not self.finishes:
            return 0.0
        waited = sum(self.end - f for f in self.finishes.values())
        return waited / (len(self.finishes) * self.seconds)

    @property
    def slowest(self) -> str:
        return max(self.finishes, key=lambda r: self.finishes[r])


@dataclass(frozen=True)
class Rightsizing:
    job: str
    replicas: int
    mean_busy_replicas: float
    needed_replicas: int
    tokens_per_second: float


@dataclass
class StateSeries:
    """Rollout GPUs (or replicas) per state at each grid time: asleep, awake and busy, awake
    and idle (busy and idle may be fractions of a GPU)."""

    unit: str  # "GPUs" or "replicas"
    asleep: np.ndarray
    busy: np.ndarray
    idle: np.ndarray

    def fractions(self) -> tuple[float, float, float]:
        total = float(np.nansum(self.asleep) + np.nansum(self.busy) + np.nansum(self.idle))
        if total <= 0:
            return (0.0, 0.0, 0.0)
        return (
            float(np.nansum(self.asleep)) / total,
            float(np.nansum(self.busy)) / total,
            float(np.nansum(self.idle)) / total,
        )


@dataclass
class Analysis:
    steps: list[Step] = field(default_factory=list)
    never_busy_replicas: list[ReplicaKey] = field(default_factory=list)
    rightsizing: list[Rightsizing] = field(default_factory=list)
    states: StateSeries | None = None
    idle_gpu_hours: dict[tuple[str, str], float] = field(default_factory=dict)  # (role, job)
    never_used_gpus: list[tuple[GpuKey, str]] = field(default_factory=list)  # (gpu, owner)


def _replicas_of(data: ReportData, job: str) -> list[str]:
    return sorted((r for j, r in data.running if j == job), key=_replica_order)


def _replica_order(replica: str) -> tuple[int, str]:
    return (int(replica), "") if replica.isdigit() and len(replica) < 10 else (1 << 30, replica)


def find_steps(data: ReportData, job: str) -> list[Step]:
    replicas = _replicas_of(data, job)
    if not replicas:
        return []
    matrix = np.vstack([data.running[(job, r)] for r in replicas])
    busy = np.nan_to_num(matrix, nan=0.0) > 0
    any_busy = busy.any(axis=0)
    # Every replica of the job has a sample here (a replica not scraped yet, or a failed
    # scrape, would make a step look shorter or emptier than it was).
    all_seen = ~np.isnan(matrix).any(axis=0)
    steps: list[Step] = []
    n = len(data.grid)
    i = 0
    while i < n:
        if not any_busy[i]:
            i += 1
            continue
        j = i
        while j < n and any_busy[j]:
            j += 1
        # [i, j) is busy. Cut by the range's edges, or with a replica unseen from the sample
        # before to the sample after: not a whole step.
        if i > 0 and j < n and all_seen[i - 1 : j + 1].all():
            finishes = {}
            for row, replica in enumerate(replicas):
                where = np.flatnonzero(busy[row, i:j])
                if where.size:
                    finishes[replica] = float(data.grid[i + where[-1] + 1])
            start = float(data.grid[i])
            steps.append(
                Step(
                    job=job,
                    index=len(steps),
                    start=start,
                    end=max(finishes.values()),
                    median_finish=float(statistics.median(finishes.values())),
                    finishes=finishes,
                )
            )
        i = j
    return steps


def replica_states(data: ReportData) -> StateSeries:
    """Rollout replicas per state, from the engines (running requests, sleep state)."""
    shape = data.grid.shape
    asleep, busy, idle = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for key, running in data.running.items():
        present = ~np.isnan(running)
        sleeping = present & (np.nan_to_num(data.asleep.get(key, np.zeros(shape))) > 0)
        working = present & ~sleeping & (np.nan_to_num(running) > 0)
        asleep += sleeping
        busy += working
        idle += present & ~sleeping & ~working
    return StateSeries("replicas", asleep, busy, idle)


def _owner_spans(owners: np.ndarray, present: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Each owner tag of a GPU with the grid times it holds the GPU (and has a sample)."""
    return [(tag, present & (owners == tag)) for tag in set(owners[present].tolist())]


def _sleeping(data: ReportData, job: str, replica: str) -> np.ndarray | None:
    sleep = data.asleep.get((job, replica))
    return None if sleep is None else np.nan_to_num(sleep) > 0


def gpu_states(data: ReportData) -> StateSeries:
    """Rollout GPUs per state, from the exporter's busy time and the owner's sleep state."""
    shape = data.grid.shape
    asleep, busy, idle = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for key, ratio in data.gpu_busy.items():
        owners = data.gpu_owner.get(key)
        if owners is None:
            continue
        for tag, held in _owner_spans(owners, ~np.isnan(ratio) & (owners != "")):
            role, job, replica, _state = tag.split("|")
            if role != verl.ROLE_ROLLOUT:
                continue
            sleeping = _sleeping(data, job, replica)
            lent = held & sleeping if sleeping is not None else np.zeros(shape, dtype=bool)
            awake = held & ~lent
            asleep += lent
            busy += np.where(awake, ratio, 0.0)
            idle += np.where(awake, 1 - ratio, 0.0)
    return StateSeries("GPUs", asleep, busy, idle)


def idle_gpu_hours(data: ReportData) -> dict[tuple[str, str], float]:
    """Awake idle GPU-hours by (role, job); unowned GPUs are role "none". A GPU whose rollout
    engine sleeps is not idle: it is lent to the trainer."""
    hours: dict[tuple[str, str], float] = {}
    for key, ratio in data.gpu_busy.items():
        owners = data.gpu_owner.get(key, np.full(data.grid.shape, "", dtype=object))
        for tag, held in _owner_spans(owners, ~np.isnan(ratio)):
            role, job, replica = tag.split("|")[:3] if tag else ("none", "", "")
            sleeping = _sleeping(data, job, replica)
            counted = held & ~sleeping if sleeping is not None else held
            if not counted.any():
                continue
            group = (role or "none", job)
            idle = float(np.sum(1 - ratio[counted])) * data.step / 3600
            hours[group] = hours.get(group, 0.0) + idle
    return hours


def never_used_gpus(data: ReportData) -> list[tuple[GpuKey, str]]:
    """GPUs held by a job in the range, busy less than 1% of the time they were held (a
    mean, not a peak: a short window sees a 1% duty cycle as bursts of more)."""
    out = []
    for key, ratio in sorted(data.gpu_busy.items()):
        owners = data.gpu_owner.get(key)
        if owners is None or not (owners != "").any() or np.all(np.isnan(ratio)):
            continue
        held = (owners != "") & ~np.isnan(ratio)
        if held.any() and float(ratio[held].mean()) < NEVER_USED_BUSY_RATIO:
            tags = sorted({t for t in owners if t})
            out.append((key, tags[0] if tags else ""))
    return out


def rightsize(data: ReportData, job: str) -> Rightsizing | None:
    replicas = _replicas_of(data, job)
    if not replicas:
        return None
    matrix = np.vstack([data.running[(job, r)] for r in replicas])
    present = ~np.isnan(matrix).all(axis=0)
    if not present.any():
        return None
    busy = (np.nan_to_num(matrix) > 0).sum(axis=0)[present]
    mean_busy = float(busy.mean())
    rate = data.tokens_per_second.get(job)
    tokens = float(np.nanmean(rate)) if rate is not None and not np.all(np.isnan(rate)) else 0.0
    return Rightsizing(
        job=job,
        replicas=len(replicas),
        mean_busy_replicas=mean_busy,
        needed_replicas=max(1, math.ceil(mean_busy - 1e-9)),
        tokens_per_second=tokens,
    )


def analyse(data: ReportData) -> Analysis:
    result = Analysis()
    for job in data.jobs:
        result.steps += find_steps(data, job)
        sizing = rightsize(data, job)
        if sizing is not None:
            result.rightsizing.append(sizing)
    for key, running in sorted(data.running.items()):
        if not (np.nan_to_num(running) > 0).any():
            result.never_busy_replicas.append(key)
    if data.gpu_busy:
        result.states = gpu_states(data)
        result.idle_gpu_hours = idle_gpu_hours(data)
        result.never_used_gpus = never_used_gpus(data)
    elif data.running:
        result.states = replica_states(data)
    return result
