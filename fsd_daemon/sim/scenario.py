"""Scripted loads for the simulated rollout servers, with the answers a report must find.

``python -m fsd_daemon.sim.job --scenario long-tail`` gives each rollout replica a fixed amount
of work per rollout step instead of the random long-tailed load: every replica receives its
batch at the same moment (steps aligned on the wall clock, as verl's trainer sends one batch to
all replicas at once), and every request of a replica runs exactly ``busy_seconds[replica]``.
A replica with 0 busy seconds gets no request at all (awake and idle).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

TOKENS_PER_SECOND_PER_REQUEST = 40.0
REQUESTS_PER_STEP = 4  # fewer than the engine's max_running: all run at once, none wait


@dataclass(frozen=True)
class Scenario:
    name: str
    step_seconds: float
    busy_seconds: tuple[float, ...]  # per rollout replica, in replica order
    # The simulated GPU (fsd-gpu-exporter --simulate) each replica is pinned to.
    gpus: tuple[int, ...] = ()

    @property
    def replicas(self) -> int:
        return len(self.busy_seconds)

    @property
    def working(self) -> list[float]:
        return [b for b in self.busy_seconds if b > 0]

    @property
    def idle_replicas(self) -> list[int]:
        return [r for r, b in enumerate(self.busy_seconds) if b <= 0]

    def load_for(self, replica: int) -> dict[str, Any]:
        """The :class:`~fsd_daemon.sim.rollout_server.LoadModel` fields for ``replica``."""
        busy = self.busy_seconds[replica] if replica < self.replicas else 0.0
        return {
            "step_seconds": self.step_seconds,
            "align_steps": True,
            "batch_per_replica": REQUESTS_PER_STEP if busy > 0 else 0,
            "sigma": 0.0,  # every request exactly the median length
            "median_tokens": busy * TOKENS_PER_SECOND_PER_REQUEST,
            "tokens_per_second_per_request": TOKENS_PER_SECOND_PER_REQUEST,
        }

    # The truth a report must find, per step.
    @property
    def step_busy_seconds(self) -> float:
        return max(self.working)

    @property
    def tail_seconds(self) -> float:
        return max(self.working) - statistics.median(self.working)

    @property
    def tail_share(self) -> float:
        return self.tail_seconds / self.step_busy_seconds

    @property
    def waiting_share(self) -> float:
        longest = self.step_busy_seconds
        return sum(longest - b for b in self.working) / (len(self.working) * longest)

    @property
    def mean_busy_replicas(self) -> float:
        return sum(self.working) / self.step_seconds


SCENARIOS = {
    s.name: s
    for s in (
        # Four replicas finishing at 3, 5, 7 and 13 s into a 20 s step, and one idle replica:
        # the median replica is done at 6 s, the slowest keeps the step waiting 7 s more.
        # The idle replica sits on simulated GPU 5, whose scripted duty cycle is zero
        # (fsd_daemon.gpu.simulated.DEFAULT_SCRIPT): held, and never busy.
        Scenario(
            "long-tail",
            step_seconds=20.0,
            busy_seconds=(3.0, 5.0, 7.0, 13.0, 0.0),
            gpus=(0, 1, 2, 3, 5),
        ),
    )
}
