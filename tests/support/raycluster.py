"""A real local Ray cluster for tests, and verl-like jobs as separate driver processes.

The cluster is started through Ray's own library (``ray.cluster_utils.Cluster``), bound to
127.0.0.1, with the dashboard (the state API needs it) on a free port. Every process started
here is stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from fsd_daemon.sim.launch import Job, free_port, start_job

__all__ = ["Job", "LocalRayCluster", "free_port", "start_job"]


class LocalRayCluster:
    def __init__(self, num_cpus: int = 8, gcs_port: int | None = None) -> None:
        self.num_cpus = num_cpus
        self.gcs_port = gcs_port
        self.cluster: Any = None
        self.dashboard_port = 0

    def start(self) -> LocalRayCluster:
        from ray.cluster_utils import Cluster

        self.dashboard_port = free_port()
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "node_ip_address": "127.0.0.1",
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": self.dashboard_port,
                "num_cpus": self.num_cpus,
                **({"gcs_server_port": self.gcs_port} if self.gcs_port else {}),
            },
        )
        self.wait_for_dashboard()
        return self

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    @property
    def head(self) -> Any:
        return self.cluster.head_node

    def dashboard_pid(self) -> int:
        from ray._private import ray_constants

        return int(self.head.all_processes[ray_constants.PROCESS_TYPE_DASHBOARD][0].process.pid)

    def wait_for_dashboard(self, timeout: float = 60.0) -> None:
        from ray.util.state import StateApiClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                client = StateApiClient(address=self.address)
                client._make_http_get_request("/api/v0/nodes", {"limit": 10}, timeout=5)
                return
            except Exception as exc:  # the dashboard takes a few seconds to serve
                last = exc
                time.sleep(0.5)
        raise RuntimeError(f"Ray dashboard did not come up: {last}")

    def pause_dashboard(self) -> None:
        """Make the state API unreachable (requests time out) without stopping Ray."""
        os.kill(self.dashboard_pid(), signal.SIGSTOP)

    def resume_dashboard(self) -> None:
        os.kill(self.dashboard_pid(), signal.SIGCONT)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None
