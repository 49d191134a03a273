"""The report's figures on hand-made data (no Prometheus): readable at 256 replicas, drawn over
the time that has data, and words, not an empty frame, where there is nothing to draw."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from fsd_daemon.report.analysis import Analysis, StateSeries, analyse
from fsd_daemon.report.data import ReportData
from fsd_daemon.report.figures import (
    MAX_DRAWN_TIMES,
    MAX_REPLICA_LINES,
    idleness_figure,
    long_tail_figure,
)

START = 1_700_000_000.0
# More bars (or notes) than this in a 1200-pixel panel cannot be read.
READABLE_BARS = 40


def run_of(replicas: int, asked_seconds: int, run_seconds: int) -> ReportData:
    """``replicas`` replicas with samples for the first ``run_seconds`` of an asked range of
    ``asked_seconds`` (the rest NaN: the run had not started or had ended)."""
    grid = START + np.arange(asked_seconds, dtype=float)
    data = ReportData(start=START, end=grid[-1], step=1.0, grid=grid)
    rng = np.random.default_rng(0)
    for r in range(replicas):
        values = np.full(asked_seconds, np.nan)
        finish = int(rng.integers(10, run_seconds))
        values[:run_seconds] = 0.0
        values[1:finish] = 4.0
        data.running[("01000000", str(r))] = values
        data.engines[("01000000", str(r))] = "vllm"
    return data


def x_seconds(ax: plt.Axes) -> tuple[float, float]:
    lo, hi = ax.get_xlim()
    return mdates.num2date(lo).timestamp(), mdates.num2date(hi).timestamp()


def test_256_replicas_draw_a_distribution_with_a_short_legend() -> None:
    data = run_of(256, 120, 120)
    fig = long_tail_figure(data, analyse(data))
    top = fig.axes[0]
    legend = top.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) <= MAX_REPLICA_LINES
    assert "median replica" in texts
    assert "256 rollout replicas" in top.get_title()
    plt.close(fig)


def test_a_few_replicas_keep_one_line_each() -> None:
    data = run_of(4, 120, 120)
    fig = long_tail_figure(data, analyse(data))
    legend = fig.axes[0].get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == [f"replica {r}" for r in range(4)]
    plt.close(fig)


def test_a_two_minute_run_asked_for_ten_minutes_is_drawn_over_its_two_minutes() -> None:
    data = run_of(3, 600, 120)
    fig = long_tail_figure(data, analyse(data))
    lo, hi = x_seconds(fig.axes[0])
    assert abs(lo - START) < 1.0
    assert abs(hi - (START + 120)) < 1.0, datetime.fromtimestamp(hi, tz=timezone.utc)
    plt.close(fig)


def test_no_complete_step_is_said_in_words_not_an_empty_frame() -> None:
    data = run_of(3, 60, 60)
    for values in data.running.values():
        values[:] = 2.0  # running the whole range: no step ends
    analysis = analyse(data)
    assert not analysis.steps
    fig = long_tail_figure(data, analysis)
    bottom = fig.axes[1]
    assert not bottom.axison
    assert any("No complete rollout step" in t.get_text() for t in bottom.texts)
    plt.close(fig)


def test_idleness_without_data_is_words() -> None:
    data = run_of(1, 60, 60)
    fig = idleness_figure(data, Analysis())
    assert all(not ax.axison for ax in fig.axes)
    plt.close(fig)


def day_of_steps(steps: int, replicas: int = 16, period: int = 300) -> ReportData:
    """``steps`` rollout steps of ``period`` seconds on a 15 s grid; in each step one replica
    (a different one each time) is the straggler."""
    grid = START + np.arange(0, steps * period + period, 15, dtype=float)
    data = ReportData(start=START, end=grid[-1], step=15.0, grid=grid)
    offset = np.mod(grid - START, period)
    index = ((grid - START) // period).astype(int)
    for r in range(replicas):
        finish = np.where(index % replicas == r, 240, 120)
        values = np.where((offset > 0) & (offset < finish), 4.0, 0.0)
        data.running[("01000000", str(r))] = values
        data.engines[("01000000", str(r))] = "vllm"
    return data


def test_hundreds_of_steps_are_drawn_as_tails_over_time_not_a_bar_each() -> None:
    data = day_of_steps(288)  # a day of 5-minute steps
    analysis = analyse(data)
    assert len(analysis.steps) > 250
    fig = long_tail_figure(data, analysis)
    top, bottom = fig.axes[0], fig.axes[1]
    assert len(bottom.patches) <= READABLE_BARS  # no bar per step
    assert len(bottom.texts) <= READABLE_BARS  # no note per step
    assert f"{len(analysis.steps)} steps" in bottom.get_title()
    assert "120 s" in bottom.get_title()  # the median tail: 240 - 120 s
    # The panel above does not shade hundreds of tails, and its title does not say it does.
    assert len(top.patches) <= READABLE_BARS and len(top.lines) <= MAX_REPLICA_LINES + 1
    assert "shaded" not in top.get_title()
    # Nor draws each of 5,780 grid times in 1,200 pixels: replicas' means over bins of them.
    assert "mean per" in top.get_title()
    assert all(np.size(line.get_xdata()) <= 600 for line in top.lines)
    # The longest tails are named where their notes do not overlap.
    xs = sorted(t.get_position()[0] for t in bottom.texts)
    assert all(b - a > 0.1 for a, b in itertools.pairwise(xs)), xs  # days apart > 2 h
    # A day and more: the time labels say the day.
    fig.canvas.draw()
    labels = [t.get_text() for t in bottom.get_xticklabels() if t.get_text()]
    assert labels and all(len(label.split()) == 3 for label in labels), labels
    plt.close(fig)


def test_a_few_steps_keep_a_bar_and_a_note_each() -> None:
    data = day_of_steps(4, replicas=3)
    analysis = analyse(data)
    fig = long_tail_figure(data, analysis)
    bottom = fig.axes[1]
    assert len(bottom.patches) == 2 * len(analysis.steps)
    assert sum("s tail" in t.get_text() for t in bottom.texts) == len(analysis.steps)
    plt.close(fig)


def test_a_day_of_gpu_states_is_drawn_as_bin_means_that_still_add_up() -> None:
    """A day on a 15 s grid is 5,761 points in a 700-pixel panel: drawn as they are, the stack
    is a striped band. Bins of grid times are drawn instead (at most MAX_DRAWN_TIMES), their
    means keep the total, and the title says what is drawn."""
    data = day_of_steps(288)
    n = len(data.grid)
    busy = np.where(np.arange(n) % 20 < 8, 300.0, 100.0)  # a 5-minute rhythm of busy GPUs
    states = StateSeries(unit="GPUs", busy=busy, idle=400.0 - busy, asleep=np.full(n, 250.0))
    fig = idleness_figure(data, Analysis(states=states))
    left = fig.axes[0]
    assert "mean per" in left.get_title()
    drawn = [c for c in left.collections if len(c.get_paths())]
    assert len(drawn) == 3
    for layer in drawn:
        xs = layer.get_paths()[0].vertices[:, 0]
        # fill_between with step="post" makes 2 vertices per point, plus the closing ones.
        assert len(np.unique(xs)) <= MAX_DRAWN_TIMES + 2
    top = max(float(v[:, 1].max()) for c in drawn for v in (c.get_paths()[0].vertices,))
    assert abs(top - 650.0) < 1e-6  # busy + idle + asleep, whatever the bins
    plt.close(fig)
