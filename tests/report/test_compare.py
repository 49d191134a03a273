"""Two runs side by side on hand-made grids: per step, run A's long tail and idle replicas
against run B's, in the summary lines, compare.json's figures and compare.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fsd_daemon.report import compare
from fsd_daemon.report.analysis import analyse
from fsd_daemon.report.data import ReportData
from fsd_daemon.report.figures import FIGURE_SIZES


def run_with(finish: dict[str, int], steps: int, start: float) -> ReportData:
    """``steps`` steps of 12 s (10 s of work at most, then 2 s of nothing): replica r runs one
    request from the step's start until ``finish[r]`` s into it."""
    per_step = 12
    n = steps * per_step + 2
    data = ReportData(start=start, end=start + n - 1, step=1.0, grid=start + np.arange(n))
    for replica, until in finish.items():
        values = np.zeros(n)
        for k in range(steps):
            first = 1 + k * per_step
            values[first : first + until] = 1
        data.running[("job", replica)] = values
        data.engines[("job", replica)] = "vllm"
    return data


def test_per_step_tail_and_idle_run_a_against_run_b(tmp_path: Path) -> None:
    """Run A: replicas finish at 2, 3 and 10 s (tail 7 s: the median one waits for the slowest);
    run B, after the change: 3, 4 and 5 s (tail 1 s). Idle replicas during a step: A has two
    done replicas for longer than B."""
    a = run_with({"0": 2, "1": 3, "2": 10}, steps=3, start=1000.0)
    b = run_with({"0": 3, "1": 4, "2": 5}, steps=3, start=5000.0)
    unit_a, steps_a = compare.per_step(a, analyse(a))
    unit_b, steps_b = compare.per_step(b, analyse(b))
    assert unit_a == unit_b == "replicas"
    assert [s.tail_seconds for s in steps_a] == [7.0, 7.0, 7.0]
    assert [s.tail_seconds for s in steps_b] == [1.0, 1.0, 1.0]
    # A step lasts from its start until the slowest replica finishes: 10 grid times in A,
    # replicas 0 and 1 done for 8 and 7 of them; 5 in B, done for 2 and 1.
    assert steps_a[0].idle == (8 + 7) / 10
    assert steps_b[0].idle == (2 + 1) / 5
    runs = (
        compare.Run("A", a.start, a.end, cluster="c1", job="job"),
        compare.Run("B", b.start, b.end, cluster="c1", job="job"),
    )
    lines = compare.lines(runs, (steps_a, steps_b), unit_a)
    assert "run A (cluster c1, job job," in lines[0] and "3 steps, median tail 7.0 s" in lines[0]
    assert "median tail 1.0 s" in lines[1]
    assert lines[2].startswith("run B against run A: median tail -6.0 s (-86%)")
    doc = compare.as_json(runs, (steps_a, steps_b), unit_a)
    assert [r["name"] for r in doc["runs"]] == ["A", "B"]
    assert doc["runs"][1]["steps"][0]["tail_seconds"] == 1.0
    png = tmp_path / compare.COMPARE_PNG
    compare.draw(runs, (steps_a, steps_b), unit_a, png)
    with Image.open(png) as image:
        assert image.size == FIGURE_SIZES[compare.COMPARE_PNG]
        # Both runs' colours are drawn (bars of A in blue, of B in orange).
        colours = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 20) or []}
    for hex_colour in compare.RUN_COLOURS:
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in colours, hex_colour


def test_a_run_without_steps_is_said_not_drawn_as_zero(tmp_path: Path) -> None:
    a = run_with({"0": 2, "1": 9}, steps=2, start=1000.0)
    b = run_with({"0": 0, "1": 0}, steps=1, start=5000.0)
    _, steps_a = compare.per_step(a, analyse(a))
    _, steps_b = compare.per_step(b, analyse(b))
    assert steps_b == []
    runs = (compare.Run("A", a.start, a.end), compare.Run("B", b.start, b.end))
    lines = compare.lines(runs, (steps_a, steps_b), "replicas")
    assert lines[1].endswith("no whole rollout step in the range") and len(lines) == 2
    compare.draw(runs, (steps_a, steps_b), "replicas", tmp_path / "c.png")
