"""``fsd-daemon report``'s arguments: bad input is one line on stderr and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fsd_daemon.report.command import parse_duration, parse_time


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "2x"], "not a duration"),
        (["--since", "0s"], "must be positive"),
        (["--since", "1h", "--from", "2026-01-01"], "not both"),
        (["--from", "2026-01-02", "--to", "2026-01-01"], "range is empty"),
        (["--from", "yesterday"], "not a time"),
        (["--job", 'x"} or vector(1) #'], "not a Ray job id"),
        (["--prometheus", "localhost:9090"], "http(s):// URL"),
        (["--since", "2h", "--resolution", "0.1"], "more than 10000 points"),
        (["--cluster", 'a"} or vector(1) #'], "not a cluster name"),
        (["--compare-job", "02000000"], "--compare-from says where run B starts"),
        (["--compare-from", "2026-01-02", "--compare-to", "2026-01-01"], "run B's range is empty"),
        (["--compare-from", "soon"], "not a time"),
        (["--compare-from", "2026-01-01", "--compare-cluster", "x y"], "not a cluster name"),
    ],
)
def test_bad_arguments(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fsd_daemon.cli", "report", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_durations_and_times() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_time("2026-12-01T00:00:00Z") == parse_time("2026-12-01T00:00:00")
    assert parse_time("1796136378.5") == 1796136378.5
