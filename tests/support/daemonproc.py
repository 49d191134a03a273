"""Run fsd-daemon as a real process and read what it writes and serves.

The harness is ``fsd_daemon.sim.harness`` (shared with the benches).
"""

from __future__ import annotations

from fsd_daemon.sim.harness import DaemonProcess, read_groups, wait_for

__all__ = ["DaemonProcess", "read_groups", "wait_for"]
