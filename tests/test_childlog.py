"""A child process's output grouped into events, one log line each: a Python traceback ends
in its exception line, a glog C++ stack dump (as Ray's driver writes on an unexpected GCS
state) folds into the line that opened it, plain lines stay lines."""

from __future__ import annotations

import logging
import os

import pytest

from fsd_daemon.plumbing.childlog import EventLines, follow

RAY_DUMP = """\
[2026-12-04 07:37:55,508 C 28146 28160] global_state_accessor.cc:111:  An unexpected system state has occurred.
*** StackTrace Information ***
/x/ray/_raylet.so(+0x1812b9a) [0x7f2170412b9a] ray::operator<<()
/x/ray/_raylet.so(_ZN3ray6RayLogD1Ev+0x469) [0x7f21704151c9] ray::RayLog::~RayLog()
/lib/x86_64-linux-gnu/libc.so.6(+0x891f5) [0x7f21716a71f5]

Traceback (most recent call last):
  File "/x/fsd_daemon/discovery/ray_bridge.py", line 570, in bridge_main
    description = impl.connect(address)
ray.exceptions.AuthenticationError: InvalidAuthToken: the token does not match
plain line one
plain line two
"""  # noqa: E501


def test_events_are_grouped() -> None:
    events: list[tuple[str, int]] = []
    lines = EventLines(lambda summary, got: events.append((summary, len(got))))
    for line in RAY_DUMP.splitlines():
        lines.feed(line)
    lines.flush()
    assert events == [
        (RAY_DUMP.splitlines()[0], 5),
        ("ray.exceptions.AuthenticationError: InvalidAuthToken: the token does not match", 4),
        ("plain line one", 1),
        ("plain line two", 1),
    ]


def test_follow_logs_one_line_per_event(caplog: pytest.LogCaptureFixture) -> None:
    """Through a real pipe, read to its end: four WARNING lines, the dumps at DEBUG."""
    read, write = os.pipe()
    caplog.set_level(logging.DEBUG, logger="fsd_daemon.plumbing.childlog")
    seen: list[str] = []
    thread = follow(read, "child (pid 1)", seen.append)
    os.write(write, RAY_DUMP.encode())
    os.close(write)
    thread.join(timeout=10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4 and len(seen) == 4
    assert warnings[1].startswith("child (pid 1): ray.exceptions.AuthenticationError")
    assert "(+3 lines at DEBUG)" in warnings[1]
