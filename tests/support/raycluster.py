"""A real local Ray cluster for tests, and verl-like jobs as separate driver processes.

Both live in the package (``fsd_daemon.sim.harness``, ``fsd_daemon.sim.launch``), shared with
the benches; this module keeps the tests' import path.
"""

from __future__ import annotations

from fsd_daemon.sim.harness import LocalRayCluster
from fsd_daemon.sim.launch import Job, free_port, start_job

__all__ = ["Job", "LocalRayCluster", "free_port", "start_job"]
