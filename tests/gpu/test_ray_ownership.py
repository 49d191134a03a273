"""Ownership with real Ray actors: a verl-like job's vLLMHttpServer actors (and a child process
each, standing for the vLLM worker) on a real local Ray cluster, GPUs from the simulated NVML.

GPU 0 is reported as held by replica 0's worker child: the exporter labels it role rollout,
replica 0, with the actor's class, name and Ray job. GPUs 1 and 2 were handed to replicas 1
and 2 through CUDA_VISIBLE_DEVICES (by index and by UUID) and hold nothing: reserved. When the
job stops, every one of these series goes.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from fsd_daemon.config import Config, ExporterSection
from fsd_daemon.gpu.exporter import Exporter
from fsd_daemon.gpu.simulated import SimulatedNvml, simulated_uuid
from fsd_daemon.sim.harness import LocalRayCluster
from fsd_daemon.sim.launch import start_job
from tests.gpu.helpers import parse, select

pytestmark = pytest.mark.ray


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def owners(port: int, pids: set[int]) -> dict[str, dict[str, str]]:
    """Owner series of our processes, keyed by pid (other test runs may share the machine)."""
    out = {}
    for labels in select(parse(scrape(port)), "fsd_gpu_owner_info"):
        d = dict(labels)
        if int(d["pid"]) in pids:
            out[d["pid"]] = d
    return out


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout}s; last: {last!r}")


def test_rollout_replica_holding_and_reserving_gpus_then_gone(ray_cluster: LocalRayCluster) -> None:
    sim = SimulatedNvml(4)
    config = Config(
        exporter=ExporterSection(sample_interval_seconds=0.2, ownership_interval_seconds=0.5)
    )
    exporter = Exporter(
        sim, config, node="test-node", backend_name="simulated", listen=("127.0.0.1", 0)
    ).start()
    try:
        job = start_job(
            ray_cluster.address,
            "--vllm", "3",
            "--worker-children",
            "--cuda-visible-devices", f"0,1,{simulated_uuid(2)}",
        )  # fmt: skip
        try:
            actors = {a["name"]: a for a in job.info["actors"]}
            a0, a1, a2 = (actors[f"vllm_server_{r}_0"] for r in range(3))
            pids = {a0["pid"], a0["worker_pid"], a1["pid"], a2["pid"]}
            sim.set_holder(0, a0["worker_pid"], 8 * 2**30)

            def complete() -> dict[str, dict[str, str]] | None:
                found = owners(exporter.port, pids)
                named = all(o["actor_name"] for o in found.values())
                return found if len(found) == 3 and named else None

            found = wait_for(complete, 120, "three named owners")
            common = {
                "actor_class": "vLLMHttpServer",
                "ray_job_id": job.job_id,
                "role": "rollout",
                "node": "test-node",
                "teacher": "",
                "rollout_mode": "",  # pinned by CUDA_VISIBLE_DEVICES, no worker group: unknown
            }
            assert found[str(a0["worker_pid"])] == {
                **common,
                "gpu": "0",
                "uuid": simulated_uuid(0),
                "pid": str(a0["worker_pid"]),
                "replica": "0",
                "actor_name": "vllm_server_0_0",
                "state": "active",
            }
            assert found[str(a1["pid"])] == {
                **common,
                "gpu": "1",
                "uuid": simulated_uuid(1),
                "pid": str(a1["pid"]),
                "replica": "1",
                "actor_name": "vllm_server_1_0",
                "state": "reserved",
            }
            assert found[str(a2["pid"])]["gpu"] == "2"
            assert found[str(a2["pid"])]["state"] == "reserved"
            assert found[str(a2["pid"])]["replica"] == "2"
            # Replica 0 holds its GPU: it is active there, not also reserved.
            assert str(a0["pid"]) not in found
        finally:
            job.stop()
        wait_for(lambda: not owners(exporter.port, pids), 60, "owner series gone")
    finally:
        exporter.stop()
