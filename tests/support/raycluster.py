"""A real local Ray cluster for tests, and verl-like jobs as separate driver processes.

The cluster is in ``tests.support.harness``, the jobs in ``fsd_daemon.sim.launch`` (the demo
uses them too).
"""

from __future__ import annotations

from fsd_daemon.sim.launch import Job, free_port, start_job
from tests.support.harness import LocalRayCluster

__all__ = ["Job", "LocalRayCluster", "free_port", "start_job"]
