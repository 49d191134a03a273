"""Two runs side by side: the long tail and the idle rollout GPUs of each rollout step, run A
against run B, so a user sees whether a change helped.

A run is one Ray job in one cluster over a time range (``--cluster``, ``--job``, ``--from``/
``--to``; run B's ``--compare-*`` default to run A's). Steps are compared by their order in
each run (step 1 with step 1): two runs of one training script go through the same steps.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fsd_daemon.report.analysis import Analysis
from fsd_daemon.report.data import ReportData
from fsd_daemon.report.figures import COMPARE_PNG, DPI, FIGURE_SIZES, plt

RUN_COLOURS = ("#2b8cbe", "#e6550d")


@dataclass(frozen=True)
class Run:
    """What selects a run, for titles and summary.json."""

    name: str  # "A" or "B"
    start: float
    end: float
    cluster: str | None = None
    job: str | None = None

    def describe(self) -> str:
        def utc(t: float) -> str:
            return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")

        where = ", ".join(
            part
            for part in (
                f"cluster {self.cluster}" if self.cluster else "",
                f"job {self.job}" if self.job else "",
            )
            if part
        )
        span = f"{utc(self.start)} to {utc(self.end)}"
        return f"run {self.name} ({where + ', ' if where else ''}{span})"


@dataclass(frozen=True)
class StepFigures:
    job: str
    index: int  # 0-based, within its job
    tail_seconds: float
    # Mean idle rollout GPUs (or idle replicas, without the exporter) over the step; NaN when
    # nothing was counted.
    idle: float


def per_step(data: ReportData, analysis: Analysis) -> tuple[str, list[StepFigures]]:
    """(unit of ``idle``, each measured step's figures)."""
    states = analysis.states
    out = []
    for step in analysis.steps:
        idle = math.nan
        if states is not None:
            # [start, end): at ``end`` the slowest replica has finished too.
            inside = (data.grid >= step.start) & (data.grid < step.end)
            if inside.any():
                idle = float(np.nanmean(states.idle[inside]))
        out.append(StepFigures(step.job, step.index, step.tail_seconds, idle))
    return (states.unit if states is not None else "GPUs"), out


def _median(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(statistics.median(finite)) if finite else math.nan


def lines(
    runs: tuple[Run, Run], figures: tuple[list[StepFigures], list[StepFigures]], unit: str
) -> list[str]:
    out = []
    for run, steps in zip(runs, figures, strict=True):
        if not steps:
            out.append(f"{run.describe()}: no whole rollout step in the range")
            continue
        out.append(
            f"{run.describe()}: {len(steps)} steps, median tail "
            f"{_median([s.tail_seconds for s in steps]):.1f} s, median idle rollout {unit} per "
            f"step {_median([s.idle for s in steps]):.2f}"
        )
    a, b = figures
    if a and b:
        tail_a, tail_b = _median([s.tail_seconds for s in a]), _median([s.tail_seconds for s in b])
        idle_a, idle_b = _median([s.idle for s in a]), _median([s.idle for s in b])
        change = f" ({(tail_b - tail_a) / tail_a:+.0%})" if tail_a > 0 else ""
        out.append(
            f"run B against run A: median tail {tail_b - tail_a:+.1f} s{change}, median idle "
            f"rollout {unit} per step {idle_b - idle_a:+.2f}"
        )
    return out


def as_json(
    runs: tuple[Run, Run], figures: tuple[list[StepFigures], list[StepFigures]], unit: str
) -> dict[str, Any]:
    def nan_to_none(value: float) -> float | None:
        return None if math.isnan(value) else value

    return {
        "idle_unit": unit,
        "runs": [
            {
                "name": run.name,
                "start": run.start,
                "end": run.end,
                "cluster": run.cluster,
                "job": run.job,
                "steps": [
                    {
                        "job": s.job,
                        "index": s.index,
                        "tail_seconds": s.tail_seconds,
                        "idle": nan_to_none(s.idle),
                    }
                    for s in steps
                ],
            }
            for run, steps in zip(runs, figures, strict=True)
        ],
    }


def draw(
    runs: tuple[Run, Run],
    figures: tuple[list[StepFigures], list[StepFigures]],
    unit: str,
    path: Path,
) -> None:
    """Two panels, steps on the x axis, run A's and run B's bars side by side: the tail of each
    step (seconds), and the idle rollout GPUs during it (mean)."""
    width, height = FIGURE_SIZES[COMPARE_PNG]
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    count = max((len(steps) for steps in figures), default=0)
    x = np.arange(1, count + 1)
    bar = 0.38
    for offset, run, steps, colour in zip(
        (-bar / 2, bar / 2), runs, figures, RUN_COLOURS, strict=True
    ):
        label = run.describe()
        tails = [s.tail_seconds for s in steps]
        idle = [s.idle for s in steps]
        bars = top.bar(x[: len(steps)] + offset, tails, bar, color=colour, label=label)
        top.bar_label(bars, fmt="%.1f s", fontsize="small")
        bars = bottom.bar(x[: len(steps)] + offset, idle, bar, color=colour, label=label)
        bottom.bar_label(bars, fmt="%.2f", fontsize="small")
    top.set_title("Long tail of each rollout step: the slowest replica after the median one")
    top.set_ylabel("tail (s)")
    # One legend for both panels, above them: inside a panel it would cover a bar.
    handles, labels = top.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", fontsize="small")
    bottom.set_title(f"Idle rollout {unit} during each step (mean; asleep is not idle)")
    bottom.set_ylabel(f"idle {unit}")
    bottom.set_xlabel("rollout step (in each run's order)")
    if count:
        bottom.set_xticks(x)
        bottom.set_xlim(0.4, count + 0.6)  # a margin beside the outer bars, even for one step
        for ax in (top, bottom):
            ax.margins(y=0.15)  # room for the values above the bars
    else:
        for ax in (top, bottom):
            ax.text(0.5, 0.5, "no whole rollout step in either run", ha="center",
                    transform=ax.transAxes)  # fmt: skip
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


__all__ = ["COMPARE_PNG", "Run", "StepFigures", "as_json", "draw", "lines", "per_step"]
