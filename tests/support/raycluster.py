"""A real local Ray cluster for tests, and verl-like jobs as separate driver processes.

The cluster is in ``fsd_daemon.sim.harness``, the jobs in ``fsd_daemon.sim.launch`` (the demo
uses them too).
"""

from __future__ import annotations

from fsd_daemon.sim.harness import LocalRayCluster
from fsd_daemon.sim.launch import Job, free_port, start_job

__all__ = ["Job", "LocalRayCluster", "free_port", "start_job"]
