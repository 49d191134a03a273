"""Shared fixtures. A real local Ray cluster, bound to 127.0.0.1, is started once per session
by the ``ray_cluster`` fixture; jobs are separate driver processes (fsd_daemon/sim/launch.py).
"""

from __future__ import annotations

import os
import shutil

# Before anything imports ray: a single-machine cluster that only uses 127.0.0.1. Ray otherwise
# turns "127.0.0.1" into the machine's outward address when a client connects, and tests talk
# to loopback only. Child processes (job drivers, the daemon, its bridge) inherit it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from collections.abc import Iterator

import pytest

from fsd_daemon.sim.harness import LocalRayCluster


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalRayCluster]:
    cluster = LocalRayCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is missing: install Debian's prometheus package (the test command does)"
        )
    return path


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(
            "prometheus is missing: install Debian's prometheus package (the test command does)"
        )
    return path
