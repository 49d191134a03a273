"""Every GPU of a verl run under its own replica and role, in each of verl's rollout modes.

A real ``ray start --head`` (clean environment, 4 GPUs declared) runs two verl-like jobs whose
actors are placed and named as verl main places them (fsd_daemon/sim/verl_modes.py, citing
verl/workers/rollout/replica.py, verl/single_controller/ray/base.py and
verl/workers/rollout/vllm_rollout/vllm_async_server.py at 1dda039b):

- job A, fully async: two standalone rollout replicas, each a ``CheckpointEngineWorker`` group
  (holding a CUDA context) in a placement group of its own and a ``vllm_server_{r}_0`` whose
  engine processes are its children; replica 1's engine is still loading (no memory yet);
- job B: the trainer's ``WorkerDict`` group on 2 GPUs, two hybrid rollout replicas on them and
  one colocated reward replica (its ``CheckpointEngineWorker`` group in the trainer's placement
  group, ``vllm_server_reward_0_0``) on the trainer's first GPU.

``fsd-gpu-exporter --simulate 4`` (the real console entry, clean environment) must show every
GPU under its replica and role with verl's mode, never role ``other``; replica 1's GPU as
reserved by replica 1; each GPU once per (job, role, replica).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsd_daemon.sim.launch import Job, free_port, start_job, stop_process
from fsd_daemon.sim.rayhead import RayHead, clean_env
from tests.gpu.helpers import parse, select

pytestmark = [pytest.mark.ray, pytest.mark.slow]

GPUS = 4


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    with RayHead(tmp_path_factory.mktemp("rayhead"), num_cpus=16, num_gpus=GPUS) as started:
        yield started


def _owners(port: int, jobs: set[str], pids: set[str]) -> list[dict[str, str]]:
    """Owner series of our jobs, and any of our processes' that has no job (role other).
    Other test runs' simulated processes may hold our simulated GPUs too: not looked at."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return [
        dict(labels)
        for labels in select(parse(text), "fsd_gpu_owner_info")
        if dict(labels)["ray_job_id"] in jobs or dict(labels)["pid"] in pids
    ]


def _pids(job: Job) -> set[str]:
    pids = {str(w["pid"]) for w in job.info["workers"]}
    for actor in job.info["actors"]:
        pids.add(str(actor["pid"]))
        pids.update(str(p) for p in actor.get("engine_pids", ()))
    return pids


def test_every_gpu_under_its_replica_and_role_in_each_mode(head: RayHead, tmp_path: Path) -> None:
    env = clean_env(head.home)
    port = free_port()
    with open(tmp_path / "exporter.log", "wb") as log:
        exporter = subprocess.Popen(
            [sys.executable, "-m", "fsd_daemon.gpu.cli", "--simulate", str(GPUS), "--listen",
             f"127.0.0.1:{port}", "--node", "verl-node"],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    jobs: list[Job] = []
    try:
        jobs.append(
            start_job(
                head.address, "--vllm", "0", "--verl-standalone", "2", "--engine-loading", "1",
                "--checkpoint-engine-context", env=env, timeout=240,
            )
        )  # fmt: skip
        jobs.append(
            start_job(
                head.address, "--vllm", "0", "--verl-hybrid", "2", "--verl-colocated-reward",
                "1", env=env, timeout=240,
            )
        )  # fmt: skip
        a, b = jobs
        gpu_of = {}
        for job in jobs:
            for w in job.info["workers"]:
                gpu_of[(job.job_id, w["role"], w["replica"])] = w["gpu"]
        standalone = [gpu_of[(a.job_id, "rollout", r)] for r in (0, 1)]
        trainer = sorted(w["gpu"] for w in b.info["workers"] if w["role"] == "train")
        assert gpu_of[(b.job_id, "reward", 0)] == trainer[0]
        assert len({*standalone, *trainer}) == GPUS  # Ray gave every GPU once

        # GPU -> the (role, replica, ray_job_id, mode) owning it, states seen.
        expected = {
            standalone[0]: {("rollout", "0", a.job_id, "standalone")},
            standalone[1]: {("rollout", "1", a.job_id, "standalone")},
            trainer[0]: {
                ("train", "", b.job_id, ""),
                ("rollout", "0", b.job_id, "hybrid"),
                ("reward", "0", b.job_id, "colocated"),
            },
            trainer[1]: {("train", "", b.job_id, ""), ("rollout", "1", b.job_id, "hybrid")},
        }
        job_ids = {a.job_id, b.job_id}
        pids = _pids(a) | _pids(b)
        deadline = time.monotonic() + 120
        seen: dict[str, set[tuple[str, str, str, str]]] = {}
        owners: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            owners = _owners(port, job_ids, pids)
            seen = {}
            for o in owners:
                seen.setdefault(o["gpu"], set()).add(
                    (o["role"], o["replica"], o["ray_job_id"], o["rollout_mode"])
                )
            named = all(o["actor_name"] for o in owners)
            if seen == expected and named:
                break
            time.sleep(0.5)
        assert seen == expected, json.dumps(owners, indent=1)
        assert not [o for o in owners if o["role"] == "other"]
        # Replica 1 of job A: given its GPU, its engine not holding it yet: reserved, by every
        # process of that replica there (its checkpoint-engine worker, its server).
        states = {
            (o["gpu"], o["actor_class"], o["state"]) for o in owners if o["ray_job_id"] == a.job_id
        }
        assert states == {
            (standalone[0], "CheckpointEngineWorker", "active"),
            (standalone[0], "vLLMHttpServer", "active"),
            (standalone[1], "CheckpointEngineWorker", "reserved"),
            (standalone[1], "vLLMHttpServer", "reserved"),
        }
        names = {o["actor_name"] for o in owners if o["actor_class"] == "CheckpointEngineWorker"}
        # Job B's reward workers hold no GPU (no CUDA context): not owners, yet their group's
        # name (WG_PREFIX) gave the reward replica its mode above.
        assert names == {
            "rollout_standalone_0CheckpointEngineWorker_0:0",
            "rollout_standalone_1CheckpointEngineWorker_0:0",
        }
    finally:
        for job in jobs:
            job.stop()
        stop_process(exporter)
