"""The tests' harness (a local Ray cluster, ``fsd-daemon run`` as a process, waits): it lives
in ``fsd_daemon.sim.harness``, which the benches use too."""

from __future__ import annotations

from fsd_daemon.sim.harness import (
    TEST_DEFAULTS,
    DaemonProcess,
    LocalRayCluster,
    healthz,
    polls_done,
    read_groups,
    remove_tree,
    targets_in,
    wait_for,
)

__all__ = [
    "TEST_DEFAULTS",
    "DaemonProcess",
    "LocalRayCluster",
    "healthz",
    "polls_done",
    "read_groups",
    "remove_tree",
    "targets_in",
    "wait_for",
]
