"""The report's figures (matplotlib, Agg backend: no display needed), as PNG files.

Each figure has a fixed size in pixels (:data:`FIGURE_SIZES`), so a page and a test know it.
"""

from __future__ import annotations

import math
import warnings
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
# Up to this many replicas get a line and a legend entry each; more are drawn as their
# distribution (median, 10-90% band, range) plus the few that ran longest, named: a legend of
# hundreds of lines cannot be read.
MAX_REPLICA_LINES = 10
# The replicas named beside the distribution: those with requests running latest.
SLOWEST_NAMED = 5
# Up to this many steps get a bar and a note each, and their tails shaded in the panel above;
# more (hours of a run: hundreds of steps) are drawn as each step's tail against time, the
# longest few named: a bar a few pixels wide with a note on it cannot be read.
MAX_STEP_BARS = 30
LONGEST_TAILS_NAMED = 3
# More grid times than this are drawn as bins of several (a 1,200-pixel panel).
MAX_DRAWN_TIMES = 400
DAY_SECONDS = 86400.0


def _times(data: ReportData) -> list[datetime]:
    return [datetime.fromtimestamp(t, tz=timezone.utc) for t in data.grid]


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def _format_time_axis(ax: plt.Axes) -> None:
    # At most 6 labels: "HH:MM:SS" labels run into each other on the narrower panels.
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=6, tz=timezone.utc))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=timezone.utc))
    ax.set_xlabel("time (UTC)")


def _figure(name: str) -> plt.Figure:
    width, height = FIGURE_SIZES[name]
    return plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")


def _note(ax: plt.Axes, text: str) -> None:
    """Words instead of an empty frame: no axes, no ticks, only ``text``."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)


def data_span(data: ReportData) -> tuple[float, float] | None:
    """First and last grid time where any replica or GPU has a sample (None: no data at all).

    The figures' time axes end here rather than at the asked range: a 2-minute run reported
    with ``--since 10m`` is drawn over its 2 minutes."""
    present = np.zeros(len(data.grid), dtype=bool)
    for series in (*data.running.values(), *data.gpu_busy.values()):
        present |= np.isfinite(series)
    if not present.any():
        return None
    idx = np.flatnonzero(present)
    # The last point is drawn as a step lasting one grid step.
    return float(data.grid[idx[0]]), float(data.grid[idx[-1]]) + data.step


def _fit_time_axis(ax: plt.Axes, data: ReportData) -> None:
    span = data_span(data)
    if span is not None:
        ax.set_xlim(float(mdates.date2num(_when(span[0]))), float(mdates.date2num(_when(span[1]))))
        if span[1] - span[0] > DAY_SECONDS:
            # Over a day "HH:MM:SS" repeats: the labels say the day.
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d %H:%M", tz=timezone.utc))


def _replica_label(key: tuple[str, str], jobs: list[str]) -> str:
    job, replica = key
    return f"replica {replica}" if len(jobs) == 1 else f"{job} / replica {replica}"


def _last_running(values: np.ndarray) -> int:
    """Index of the last point with requests running (-1: never)."""
    idx = np.flatnonzero(np.nan_to_num(values) > 0)
    return int(idx[-1]) if len(idx) else -1


def _bin_means(rows: np.ndarray, per_bin: int) -> np.ndarray:
    """Each row's mean over consecutive bins of ``per_bin`` grid times (NaN ignored; the last
    bin may be short). A stack of bin means still adds up: the mean of a sum is the sum of the
    means."""
    pad = (-rows.shape[1]) % per_bin
    padded = np.pad(rows, ((0, 0), (0, pad)), constant_values=np.nan)
    return np.nanmean(padded.reshape(rows.shape[0], -1, per_bin), axis=2)


def _draw_running(ax: plt.Axes, data: ReportData, shaded: bool) -> str:
    """Requests running per replica: one line each up to MAX_REPLICA_LINES, else the
    distribution over replicas and the SLOWEST_NAMED that ran latest. Returns the title."""
    times = mdates.date2num(_times(data))
    jobs = data.jobs
    ordered = sorted(data.running.items())
    if len(ordered) <= MAX_REPLICA_LINES:
        for key, values in ordered:
            ax.step(times, values, where="post", linewidth=1.2, label=_replica_label(key, jobs))
        return "Requests running per rollout replica" + (
            "; shaded: the tail, from the median replica's finish to the slowest's"
            if shaded
            else ""
        )
    matrix = np.vstack([values for _, values in ordered])
    per_bin = math.ceil(len(times) / MAX_DRAWN_TIMES)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns outside the run
        if per_bin > 1:
            # Hundreds of steps in a few pixels each are a carpet: each replica's mean over a
            # bin of grid times is drawn instead (the distribution of load, not each step).
            matrix = _bin_means(matrix, per_bin)
            times = times[::per_bin]
        low, p10, median, p90, high = np.nanpercentile(matrix, [0, 10, 50, 90, 100], axis=0)
    if per_bin > 1:
        ax.fill_between(times, low, high, step="post", color="#c6dbef", label="range (min-max)")
        ax.fill_between(times, p10, p90, step="post", color="#6baed6", label="10-90% of replicas")
        ax.step(times, median, where="post", color="#08306b", linewidth=1.5, label="median")
        minutes = per_bin * data.step / 60
        return (
            f"Requests running over {len(ordered)} rollout replicas, each replica's mean per "
            f"{minutes:.3g} min: median, 10-90% band and range"
        )
    ax.fill_between(times, low, high, step="post", color="#c6dbef", label="range (min-max)")
    ax.fill_between(times, p10, p90, step="post", color="#6baed6", label="10-90% of replicas")
    ax.step(times, median, where="post", color="#08306b", linewidth=1.5, label="median replica")
    slowest = sorted(ordered, key=lambda kv: _last_running(kv[1]), reverse=True)[:SLOWEST_NAMED]
    for key, values in slowest:
        ax.step(times, values, where="post", linewidth=0.9, label=_replica_label(key, jobs))
    return (
        f"Requests running over {len(ordered)} rollout replicas: median, 10-90% band and range, "
        f"with the {len(slowest)} that ran latest" + ("; shaded red: the tail" if shaded else "")
    )


def _draw_step_bars(ax: plt.Axes, analysis: Analysis, jobs: list[str]) -> None:
    """One stacked bar per step: until the median replica finished, then the tail."""
    steps = analysis.steps
    labels = [f"{s.index + 1}" if len(jobs) == 1 else f"{s.job[:8]}:{s.index + 1}" for s in steps]
    x = np.arange(len(steps))
    median_part = [s.median_finish - s.start for s in steps]
    tail_part = [s.tail_seconds for s in steps]
    ax.bar(x, median_part, color="#74a9cf", label="until the median replica finished")
    ax.bar(
        x,
        tail_part,
        bottom=median_part,
        color="#d7301f",
        label="tail: waiting for the slowest replica",
    )
    for xi, s in zip(x, steps, strict=True):
        ax.annotate(
            f"{s.tail_seconds:.0f} s tail\n{s.tail_share:.0%} of GPU time",
            (xi, s.seconds),
            ha="center",
            va="bottom",
            fontsize="small",
        )
    ax.set_xticks(x, labels)
    ax.set_xlabel("rollout step")
    ax.set_ylabel("seconds")
    ax.set_ylim(0, max(s.seconds for s in steps) * 1.35)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_title("Per step: time until the median replica finished, then the tail")


def _draw_step_tails(ax: plt.Axes, data: ReportData, analysis: Analysis) -> None:
    """Too many steps for bars: each step's tail (seconds) at its start time, one marker
    colour per job, the longest LONGEST_TAILS_NAMED named."""
    steps = analysis.steps
    for job in sorted({s.job for s in steps}):
        mine = [s for s in steps if s.job == job]
        ax.plot(
            mdates.date2num([_when(s.start) for s in mine]),
            [s.tail_seconds for s in mine],
            marker=".",
            markersize=3,
            linewidth=0.5,
            label=f"{job[:10]} ({len(mine)} steps)",
        )
    named: list[float] = []
    span = max(s.start for s in steps) - min(s.start for s in steps)
    for s in sorted(steps, key=lambda s: -s.tail_seconds):
        # Apart by a sixth of the range at least: notes on neighbouring steps overlap.
        if len(named) == LONGEST_TAILS_NAMED:
            break
        if any(abs(s.start - t) < span / 6 for t in named):
            continue
        named.append(s.start)
        ax.annotate(
            f"{s.tail_seconds:.0f} s ({s.tail_share:.0%})\n{s.job[:8]}:{s.index + 1}",
            (float(mdates.date2num(_when(s.start))), s.tail_seconds),
            ha="center",
            va="bottom",
            fontsize="small",
        )
    tails = [s.tail_seconds for s in steps]
    shares = [s.tail_share for s in steps]
    ax.set_ylim(0, max(tails) * 1.3 or 1)
    ax.set_ylabel("tail (s)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_title(
        f"Tail of each of {len(steps)} steps (slowest replica's finish minus the median's), "
        f"at the step's start: median {np.median(tails):.0f} s, "
        f"{np.median(shares):.0%} of the step's GPU time",
        fontsize="medium",
    )
    _format_time_axis(ax)
    _fit_time_axis(ax, data)


def long_tail_figure(data: ReportData, analysis: Analysis) -> plt.Figure:
    fig = _figure(LONG_TAIL_PNG)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 2])
    jobs = data.jobs
    if not data.running:
        _note(top, "No rollout engine series in the range: the long tail cannot be drawn.")
    else:
        title = _draw_running(top, data, shaded=len(analysis.steps) <= MAX_STEP_BARS)
    if len(analysis.steps) <= MAX_STEP_BARS:
        for step in analysis.steps:
            top.axvspan(_when(step.median_finish), _when(step.end), color="#d7301f", alpha=0.15)
            top.axvline(_when(step.median_finish), color="#555555", linestyle="--", linewidth=0.8)
    if data.running:
        top.set_ylabel("requests running")
        top.set_title(title, fontsize="medium")
        top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
        _format_time_axis(top)
        _fit_time_axis(top, data)
    if not analysis.steps:
        _note(
            bottom,
            "No complete rollout step in the range (a step ends when running "
            "requests fall to zero).",
        )
    elif len(analysis.steps) <= MAX_STEP_BARS:
        _draw_step_bars(bottom, analysis, jobs)
    else:
        _draw_step_tails(bottom, data, analysis)
    return fig


def draw_long_tail(data: ReportData, analysis: Analysis, path: Path) -> None:
    fig = long_tail_figure(data, analysis)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def idleness_figure(data: ReportData, analysis: Analysis) -> plt.Figure:
    fig = _figure(IDLENESS_PNG)
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    states = analysis.states
    if states is None:
        _note(left, "No engine or exporter series in the range: idleness cannot be drawn.")
    else:
        times = mdates.date2num(_times(data))
        layers = np.vstack([states.busy, states.idle, states.asleep])
        per_bin = math.ceil(len(times) / MAX_DRAWN_TIMES)
        if per_bin > 1:
            # A day of 15 s points is thousands of slivers per pixel column (a striped band):
            # the mean of each bin of grid times is drawn, and the title says so.
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins outside the run
                layers = _bin_means(layers, per_bin)
            times = times[::per_bin]
        left.stackplot(
            times,
            *layers,
            labels=["awake, busy", "awake, idle", "asleep (lent to the trainer)"],
            colors=[STATE_COLOURS["busy"], STATE_COLOURS["idle"], STATE_COLOURS["asleep"]],
            step="post",
        )
        left.set_ylabel(f"rollout {states.unit}")
        source = "fsd-gpu-exporter busy time" if states.unit == "GPUs" else "engines' requests"
        binned = f";\neach a mean per {per_bin * data.step / 60:.3g} min" if per_bin > 1 else ""
        left.set_title(f"Rollout {states.unit}: busy, idle, asleep (from {source}{binned})")
        left.legend(loc="upper left", fontsize="small")
        left.set_ylim(0, float(np.nanmax(layers.sum(axis=0))) * 1.3 or 1)
        _format_time_axis(left)
        _fit_time_axis(left, data)
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
            right.annotate(
                f" {v:,.0f}" if v >= 100 else f" {v:.3g}", (v, yi), va="center", fontsize="small"
            )
        right.set_xlim(0, max(values) * 1.25 or 1)
    else:
        _note(right, "Idle GPU-hours need fsd-gpu-exporter series; none in the range.")
    return fig


def draw_idleness(data: ReportData, analysis: Analysis, path: Path) -> None:
    fig = idleness_figure(data, analysis)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
