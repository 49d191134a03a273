"""Faults of Ray itself, with the daemon running from a clean environment against
``ray start --head`` (its own process): the GCS killed and Ray started again on the same port,
the dashboard stopped for a while. The files are never emptier, and the log tells a lasting
condition at its start and end, not at every poll.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from fsd_daemon.mixin import names
from fsd_daemon.sim.harness import DaemonProcess, LocalRayCluster, read_groups, wait_for
from fsd_daemon.sim.rayhead import RayHead

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FILES = ("gpu.json", "ray.json")


def _targets(path: Path) -> int:
    """Node targets: gpu.json's, and ray.json's node metrics ports (Ray's dashboard and
    autoscaler addresses there come and go with the GCS's own keys, not with the node)."""
    return sum(
        len(g["targets"])
        for g in read_groups(path)
        if g["labels"].get(names.RAY_COMPONENT, names.RAY_COMPONENT_NODE)
        == names.RAY_COMPONENT_NODE
    )


def test_gcs_restart_never_empties_gpu_or_ray_file(tmp_path: Path) -> None:
    """gpu.json and ray.json, like rollout.json, are never emptier than before at any moment
    (sampled every 10 ms), though the outage lasts longer than the grace period and the new
    node's metrics port takes the restarted bridge a while."""
    first = RayHead(tmp_path / "first").start()
    second: RayHead | None = None
    out = tmp_path / "out"
    settings = {"daemon.poll_interval_seconds": 0.5, "daemon.max_backoff_seconds": 1.0}
    d = DaemonProcess(first.address, out, clean_env=True, **settings)
    least = {name: 10**6 for name in FILES}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name in FILES:
                least[name] = min(least[name], _targets(out / name))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        wait_for(lambda: all(_targets(out / name) == 1 for name in FILES), timeout=90)
        sampler.start()
        for pid in first.process_pids("gcs_server"):
            os.kill(pid, signal.SIGKILL)
        first.stop()  # what was left of the first Ray, by PID
        time.sleep(3.0)  # a few failed polls: longer than the 1 s grace period
        second = RayHead(tmp_path / "second")
        second.gcs_port = first.gcs_port
        second.start()
        # The daemon is back on the new Ray: the node's ray.json target names the new node.
        new_id = _head_node_id(second)
        wait_for(
            lambda: any(
                g["labels"].get("node_id") == new_id for g in read_groups(out / "ray.json")
            ),
            timeout=90,
        )
        time.sleep(2.0)
        stop.set()
        sampler.join(timeout=5)
        assert least == {name: 1 for name in FILES}, least
        assert "Traceback" not in d.output()
    finally:
        stop.set()
        assert d.stop() == 0
        if second is not None:
            second.stop()
        first.stop()


def _head_node_id(head: RayHead) -> str:
    import json
    import urllib.request

    url = f"{head.dashboard_url}/api/v0/nodes?limit=10"
    with urllib.request.urlopen(url, timeout=10) as reply:
        nodes = json.loads(reply.read())["data"]["result"]["result"]
    return str(next(n["node_id"] for n in nodes if n.get("is_head_node")))


def test_dashboard_down_is_logged_at_start_not_every_poll(tmp_path: Path) -> None:
    """The dashboard killed (connection refused while the GCS still names its address), polls
    every 0.5 s for 20 s: at INFO, the outage's first line and nothing per reconnect."""
    cluster = LocalRayCluster(num_cpus=2).start()
    out = tmp_path / "out"
    settings = {
        "daemon.poll_interval_seconds": 0.5,
        "daemon.max_backoff_seconds": 1.0,
        "ray.request_timeout_seconds": 1.0,
    }
    d = DaemonProcess(cluster.address, out, clean_env=True, log_level="info", **settings)
    try:
        wait_for(lambda: _targets(out / "gpu.json") == 1, timeout=90)
        time.sleep(1.0)
        before = len(d.output().splitlines())
        os.kill(cluster.dashboard_pid(), signal.SIGKILL)
        time.sleep(20.0)
        during = [line for line in d.output().splitlines()[before:] if " fsd_daemon." in line]
        print("\n".join(during))
        assert sum("Ray state API at" in line for line in during) == 0
        assert 1 <= len(during) <= 3, during
    finally:
        assert d.stop() == 0
        cluster.stop()
