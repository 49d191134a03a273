"""The report's figures (matplotlib, Agg backend: no display needed), as PNG files.

Each figure has a fixed size in pixels (:data:`FIGURE_SIZES`), so a page and a test know it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from fsd_daemon.report.analysis import Analysis
from fsd_daemon.report.data import ReportData

DPI = 100
LONG_TAIL_PNG = "long-tail.png"
IDLENESS_PNG = "idleness.png"
COMPARE_PNG = "compare.png"  # drawn by fsd_daemon.report.compare
FIGURE_SIZES = {LONG_TAIL_PNG: (1200, 750), IDLENESS_PNG: (1200, 650), COMPARE_PNG: (1200, 750)}
STATE_COLOURS = {"busy": "#2b8cbe", "idle": "#fdae61", "asleep": "#bababa"}


def _times(data: ReportData) -> list[datetime]:
    return [datetime.fromtimestamp(t, tz=timezone.utc) for t in data.grid]


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def _format_time_axis(ax: plt.Axes) -> None:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=timezone.utc))
    ax.set_xlabel("time (UTC)")


def _figure(name: str) -> plt.Figure:
    width, height = FIGURE_SIZES[name]
    return plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")


def _note(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_long_tail(data: ReportData, analysis: Analysis, path: Path) -> None:
    fig = _figure(LONG_TAIL_PNG)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 2])
    times = _times(data)
    jobs = data.jobs
    if not data.running:
        _note(top, "No rollout engine series in the range: the long tail cannot be drawn.")
    for key, values in sorted(data.running.items()):
        job, replica = key
        label = f"replica {replica}" if len(jobs) == 1 else f"{job} / replica {replica}"
        top.step(times, values, where="post", linewidth=1.2, label=label)
    for step in analysis.steps:
        top.axvspan(_when(step.median_finish), _when(step.end), color="#d7301f", alpha=0.15)
        top.axvline(_when(step.median_finish), color="#555555", linestyle="--", linewidth=0.8)
    if data.running:
        top.set_ylabel("requests running")
        top.set_title(
            "Requests running per rollout replica; shaded: the tail, from the median replica's "
            "finish to the slowest's"
        )
        top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        _format_time_axis(top)
    if analysis.steps:
        labels = [
            f"{s.index + 1}" if len(jobs) == 1 else f"{s.job[:8]}:{s.index + 1}"
            for s in analysis.steps
        ]
        x = np.arange(len(analysis.steps))
        median_part = [s.median_finish - s.start for s in analysis.steps]
        tail_part = [s.tail_seconds for s in analysis.steps]
        bottom.bar(x, median_part, color="#74a9cf", label="until the median replica finished")
        bottom.bar(
            x,
            tail_part,
            bottom=median_part,
            color="#d7301f",
            label="tail: waiting for the slowest replica",
        )
        for xi, s in zip(x, analysis.steps, strict=True):
            bottom.annotate(
                f"{s.tail_seconds:.0f} s tail\n{s.tail_share:.0%} of GPU time",
                (xi, s.seconds),
                ha="center",
                va="bottom",
                fontsize="small",
            )
        bottom.set_xticks(x, labels)
        bottom.set_xlabel("rollout step")
        bottom.set_ylabel("seconds")
        bottom.set_ylim(0, max(s.seconds for s in analysis.steps) * 1.35)
        bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        bottom.set_title("Per step: time until the median replica finished, then the tail")
    else:
        _note(
            bottom,
            "No complete rollout step in the range (a step ends when running "
            "requests fall to zero).",
        )
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def draw_idleness(data: ReportData, analysis: Analysis, path: Path) -> None:
    fig = _figure(IDLENESS_PNG)
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    states = analysis.states
    if states is None:
        _note(left, "No engine or exporter series in the range: idleness cannot be drawn.")
    else:
        times = _times(data)
        left.stackplot(
            times,
            states.busy,
            states.idle,
            states.asleep,
            labels=["awake, busy", "awake, idle", "asleep (lent to the trainer)"],
            colors=[STATE_COLOURS["busy"], STATE_COLOURS["idle"], STATE_COLOURS["asleep"]],
            step="post",
        )
        left.set_ylabel(f"rollout {states.unit}")
        source = "fsd-gpu-exporter busy time" if states.unit == "GPUs" else "engines' requests"
        left.set_title(f"Rollout {states.unit}: busy, idle, asleep (from {source})")
        left.legend(loc="upper left", fontsize="small")
        left.set_ylim(0, float(np.nanmax(states.busy + states.idle + states.asleep)) * 1.3 or 1)
        _format_time_axis(left)
    if analysis.idle_gpu_hours:
        groups = sorted(analysis.idle_gpu_hours.items(), key=lambda kv: -kv[1])[:12]
        names = [f"{role} / {job[:10] or '-'}" for (role, job), _ in groups]
        values = [hours for _, hours in groups]
        y = np.arange(len(groups))
        right.barh(y, values, color=STATE_COLOURS["idle"])
        right.set_yticks(y, names)
        right.invert_yaxis()
        right.set_xlabel("idle GPU-hours (awake)")
        right.set_title("Idle GPU-hours by role / job")
        for yi, v in zip(y, values, strict=True):
            right.annotate(f" {v:.3g}", (v, yi), va="center", fontsize="small")
        right.set_xlim(0, max(values) * 1.25 or 1)
    else:
        _note(right, "Idle GPU-hours need fsd-gpu-exporter series; none in the range.")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
