"""The report's arithmetic on hand-made grids (no Prometheus): steps, tails, states."""

from __future__ import annotations

import numpy as np

from fsd_daemon.report.analysis import (
    analyse,
    find_steps,
    gpu_states,
    never_used_gpus,
    replica_states,
)
from fsd_daemon.report.data import ReportData, _fetch_gpus
from fsd_daemon.report.prom import Series

NAN = float("nan")


def data_with(running: dict[str, list[float]], start: float = 1000.0) -> ReportData:
    n = len(next(iter(running.values())))
    data = ReportData(start=start, end=start + n - 1, step=1.0, grid=start + np.arange(n))
    for replica, values in running.items():
        data.running[("job", replica)] = np.array(values, dtype=float)
        data.engines[("job", replica)] = "vllm"
    return data


def test_steps_tail_and_shares() -> None:
    """Replicas finishing 2, 4 and 8 s into a step: median 4, tail 4; a step cut by the
    range's end is not measured; the replica that never runs is not part of a step."""
    data = data_with(
        {
            "0": [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0],
            "1": [0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1],
            "2": [0, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0],
            "3": [0] * 14,
        }
    )
    (step,) = find_steps(data, "job")
    assert step.start == 1001 and step.seconds == 8
    assert step.finishes == {"0": 1003, "1": 1005, "2": 1009}
    assert step.tail_seconds == 4 and step.slowest == "2"
    assert step.tail_share == 0.5
    assert step.waiting_share == (6 + 4 + 0) / (3 * 8)
    result = analyse(data)
    assert result.never_busy_replicas == [("job", "3")]
    (sizing,) = result.rightsizing
    # 18 busy replica-samples in 14 samples: 1.3 replicas busy on average, so 2 needed.
    assert sizing.replicas == 4 and sizing.needed_replicas == 2


def test_a_replica_without_samples_makes_the_step_unmeasured() -> None:
    """A replica not scraped during a step (NaN) would make it look shorter: not measured."""
    data = data_with({"0": [0, 1, 1, 1, 0, 0], "1": [0, 1, NAN, NAN, 0, 0]})
    assert find_steps(data, "job") == []
    data = data_with({"0": [0, 1, 1, 1, 0, 0], "1": [NAN, 1, 0, 0, 0, 0]})
    assert find_steps(data, "job") == []  # unseen just before the step


def test_asleep_is_not_idle() -> None:
    """A sleeping replica counts as asleep, neither busy nor idle."""
    data = data_with({"0": [0, 1, 0, 0], "1": [0, 0, 0, 0]})
    data.asleep[("job", "1")] = np.array([0, 0, 1, 1], dtype=float)
    states = replica_states(data)
    assert list(states.busy) == [0, 1, 0, 0]
    assert list(states.asleep) == [0, 0, 1, 1]
    assert list(states.idle) == [2, 1, 1, 1]


def test_never_used_is_a_mean_not_a_peak() -> None:
    """A GPU busy 0.5% of the time in short bursts is never used; 2% is used."""
    data = data_with({"0": [0, 0, 0, 0]})
    held = np.array(["rollout|job|0|active"] * 4, dtype=object)
    data.gpu_busy = {("n", "0"): np.array([0, 0.02, 0, 0]), ("n", "1"): np.array([0.08] * 4)}
    data.gpu_owner = {("n", "0"): held, ("n", "1"): held.copy()}
    assert [gpu for gpu, _ in never_used_gpus(data)] == [("n", "0")]


def test_a_hybrid_gpu_counts_as_its_rollout_replicas_whatever_the_order() -> None:
    """verl's hybrid mode: the trainer's WorkerDict and rollout replica 0 hold GPU 0; in
    colocated mode a reward replica too. Whatever order Prometheus lists the owners in, the
    GPU is the rollout replica's: its asleep time is asleep, its awake time busy or idle."""
    start, step = 1000.0, 15.0
    grid = np.arange(4) * step + start
    for order in ("train-first", "rollout-first"):
        data = ReportData(start=start, end=start + 3 * step, step=step, grid=grid)
        owners = [
            Series.from_samples(
                {"instance": "n", "gpu": "0", "role": r, "ray_job_id": "j", "replica": rep,
                 "state": "active"}, [(float(t), 1.0) for t in grid])
            for r, rep in (("train", ""), ("reward", "0"), ("rollout", "0"))
        ]  # fmt: skip
        if order == "rollout-first":
            owners.reverse()
        busy = Series.from_samples({"instance": "n", "gpu": "0"}, [(float(t), 0.25) for t in grid])

        def query(expr: str, owners: list[Series] = owners, busy: Series = busy) -> list[Series]:
            return owners if "owner_info" in expr else [busy]

        _fetch_gpus(query, data, None, "1m")
        assert list(data.gpu_owner[("n", "0")]) == ["rollout|j|0|active"] * 4, order
        data.asleep[("j", "0")] = np.array([0, 0, 1, 1], dtype=float)
        states = gpu_states(data)
        assert list(states.asleep) == [0, 0, 1, 1] and list(states.busy) == [0.25, 0.25, 0, 0]
