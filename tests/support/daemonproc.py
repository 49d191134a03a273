"""Run fsd-daemon as a real process and read what it writes and serves.

The harness is ``tests.support.harness`` (test-only code, shared with the benches).
"""

from __future__ import annotations

from tests.support.harness import DaemonProcess, read_groups, wait_for

__all__ = ["DaemonProcess", "read_groups", "wait_for"]
