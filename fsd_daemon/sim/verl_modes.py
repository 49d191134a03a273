"""verl main's placement of rollout replicas, in each rollout mode, on a real Ray cluster.

What is created, under which names, on which GPUs, follows verl-project/verl main 1dda039b
(the same in 0.7.1 to 0.9.x; docs/upstream.md):

- ``verl/single_controller/ray/base.py``: a resource pool is one placement group per node of
  bundles ``{"CPU": max_colocate_count, "GPU": 1}`` (``RayResourcePool``); each worker takes
  ``1 / max_colocate_count`` of its bundle's GPU (``RayClassWithInitArgs.__call__``) and is
  named ``f"{name_prefix}{ClassName}_{pg_idx}:{local_rank}"``, started with ``WORLD_SIZE``,
  ``RANK``, ``WG_PREFIX``, ``WG_BACKEND``, ``RAY_LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
  ``MASTER_PORT`` in its runtime_env (``RayWorkerGroup._create_worker``). Ray gives each worker
  its GPU inside the process (``CUDA_VISIBLE_DEVICES`` is not in its start environment).
- ``verl/trainer/ppo/ray_trainer.py``: the trainer's group is ``create_colocated_worker_cls``'s
  ``WorkerDict`` without a name prefix (6 random letters and digits), max_colocate_count 3
  (``ResourcePoolManager``); it holds its GPUs (role train).
- ``verl/workers/rollout/replica.py``: hybrid (``init_hybrid``): the replica's workers are the
  trainer's WorkerDicts; colocated (``init_colocated``, the reward model as a judge): a
  ``CheckpointEngineWorker`` group in the trainer's pool, named
  ``rollout_[reward_|teacher_]colocate_{replica}{suffix}``; standalone (``init_standalone``,
  fully async): its own pool ``rollout_pool_...`` (max_colocate_count 2) and a
  ``CheckpointEngineWorker`` group ``rollout_[reward_|teacher_]standalone_{replica}{suffix}``.
- ``verl/workers/rollout/vllm_rollout/vllm_async_server.py`` (``vLLMReplica.launch_servers``):
  the replica's workers are asked for their node and GPU (``__ray_call__`` with
  ``get_accelerator_ids``); one ``vLLMHttpServer`` per node is created with hard node
  affinity, ``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1`` in its runtime_env and those GPUs
  as ``cuda_visible_devices``, named ``vllm_server_[reward_|teacher_]{replica}_{node}{suffix}``;
  its engine's GPU processes are its children (mp executor). SGLang's replica does the same
  (``sglang_rollout/async_sglang_server.py``: ``SGLangHttpServer``, ``sglang_server_...``, its
  scheduler processes its children).

The simulation's only liberty is the GPU memory: trainer workers register a simulated CUDA
context (:func:`fsd_daemon.sim.register_gpu_context`) and engine processes announce theirs in
their environment, for the simulated NVML of ``fsd-gpu-exporter --simulate``.
"""

from __future__ import annotations

import os
import random
import string
from dataclasses import dataclass, field
from typing import Any

from fsd_daemon.recognition import verl
from fsd_daemon.sim import register_gpu_context

TRAINER_MAX_COLOCATE_COUNT = 3  # ResourcePoolManager's default (single_controller/ray/base.py)
STANDALONE_MAX_COLOCATE_COUNT = 2  # RolloutReplica.init_standalone
TRAINER_GPU_BYTES = 60 * 1024**3  # what an FSDP actor's shard and optimizer take of an H200
CONTEXT_BYTES = 512 * 1024**2  # a bare CUDA context


class CheckpointEngineWorker:
    """verl/checkpoint_engine/base.py: given a replica's GPU, colocated with the engine's
    worker process there. Touches CUDA only where ``context`` says so (verl's NCCL checkpoint
    engine after its first weight sync; its Worker base under
    RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES)."""

    def __init__(self, context: bool = False) -> None:
        if context:
            register_gpu_context(_ray_gpu_ids())

    def pid(self) -> int:
        return os.getpid()


class WorkerDict:
    """The trainer's fused worker (create_colocated_worker_cls): holds its GPU."""

    def __init__(self) -> None:
        register_gpu_context(_ray_gpu_ids())

    def pid(self) -> int:
        return os.getpid()


def _ray_gpu_ids() -> list[str]:
    import ray

    return [str(g) for g in ray.get_runtime_context().get_accelerator_ids()["GPU"]]


@dataclass
class Group:
    """A worker group as RayWorkerGroup creates it: its placement group and its workers."""

    prefix: str
    placement_group: Any
    workers: list[tuple[str, Any]] = field(default_factory=list)  # (name, handle)


def _env(prefix: str, rank: int, world_size: int) -> dict[str, str]:
    # RayWorkerGroup._create_worker's env_vars, plus what the simulated driver reads.
    from fsd_daemon.sim import SIMULATED_GPU_CONTEXTS_ENV

    env = {
        "WORLD_SIZE": str(world_size),
        "RANK": str(rank),
        verl.WORKER_GROUP_PREFIX_ENV: prefix,
        "WG_BACKEND": "ray",
        "RAY_LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "0",
    }
    contexts = os.environ.get(SIMULATED_GPU_CONTEXTS_ENV)
    if contexts:
        env[SIMULATED_GPU_CONTEXTS_ENV] = contexts
    return env


def resource_pool(ray: Any, gpus: int, max_colocate_count: int) -> Any:
    """One node's placement group of a RayResourcePool (strategy PACK on one node)."""
    from ray.util.placement_group import placement_group

    bundles = [{"CPU": max_colocate_count, "GPU": 1} for _ in range(gpus)]
    pg = placement_group(bundles=bundles, strategy="PACK")
    ray.get(pg.ready())
    return pg


def worker_group(
    ray: Any,
    cls: type,
    pg: Any,
    prefix: str,
    *,
    bundles: list[int],
    max_colocate_count: int,
    memory_bytes: int,
    init: dict[str, Any] | None = None,
) -> Group:
    """Workers of ``cls`` on ``bundles`` of ``pg``, named and started as _create_worker does."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from fsd_daemon.sim import SIMULATED_GPU_MEMORY_ENV

    group = Group(prefix, pg)
    for rank, bundle in enumerate(bundles):
        env = _env(prefix, rank, len(bundles))
        if memory_bytes:
            env[SIMULATED_GPU_MEMORY_ENV] = str(memory_bytes)
        name = verl.worker_name(prefix, cls.__name__, 0, bundle)
        handle = (
            ray.remote(cls)
            .options(
                name=name,
                num_gpus=1 / max_colocate_count,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=bundle
                ),
                runtime_env={"env_vars": env},
            )
            .remote(**(init or {}))
        )
        group.workers.append((name, handle))
    return group


def trainer(ray: Any, gpus: int) -> Group:
    """The trainer's WorkerDict group (no name prefix: 6 random characters)."""
    pg = resource_pool(ray, gpus, TRAINER_MAX_COLOCATE_COUNT)
    prefix = "".join(random.choice(string.ascii_letters + string.digits) for _ in range(6))
    return worker_group(
        ray,
        WorkerDict,
        pg,
        prefix,
        bundles=list(range(gpus)),
        max_colocate_count=TRAINER_MAX_COLOCATE_COUNT,
        memory_bytes=TRAINER_GPU_BYTES,
    )


def standalone_workers(
    ray: Any, replica: int, gpus: int, *, role: str = "", context: bool = False
) -> Group:
    pg = resource_pool(ray, gpus, STANDALONE_MAX_COLOCATE_COUNT)
    return worker_group(
        ray,
        CheckpointEngineWorker,
        pg,
        verl.worker_group_prefix(verl.MODE_STANDALONE, replica, role),
        bundles=list(range(gpus)),
        max_colocate_count=STANDALONE_MAX_COLOCATE_COUNT,
        memory_bytes=CONTEXT_BYTES if context else 0,
        init={"context": context},
    )


def colocated_workers(
    ray: Any, replica: int, pool: Group, bundles: list[int], *, role: str, context: bool = False
) -> Group:
    return worker_group(
        ray,
        CheckpointEngineWorker,
        pool.placement_group,
        verl.worker_group_prefix(verl.MODE_COLOCATED, replica, role),
        bundles=bundles,
        max_colocate_count=TRAINER_MAX_COLOCATE_COUNT,
        memory_bytes=CONTEXT_BYTES if context else 0,
        init={"context": context},
    )


def node_and_gpu(ray: Any, handle: Any) -> tuple[str, str]:
    """What launch_servers asks each worker: its node id and its first GPU id."""

    def ask(self: Any) -> tuple[str, str]:
        import ray as ray_

        ctx = ray_.get_runtime_context()
        return ctx.get_node_id(), str(ctx.get_accelerator_ids()["GPU"][0])

    node_id, gpu = ray.get(handle.__ray_call__.remote(ask))
    return str(node_id), str(gpu)


def launch_server(
    ray: Any, server_cls: type, name: str, workers: list[tuple[str, Any]], **init: Any
) -> tuple[Any, str, str]:
    """The replica's server on its workers' node, given their GPUs; returns (handle, node id,
    CUDA_VISIBLE_DEVICES). One node per replica here (gpus per replica <= gpus per node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    placed = [node_and_gpu(ray, handle) for _, handle in workers]
    node_id = placed[0][0]
    devices = ",".join(gpu for _, gpu in placed)
    handle = (
        ray.remote(server_cls)
        .options(
            name=name,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            runtime_env={"env_vars": {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}},
            max_concurrency=4,
        )
        .remote(cuda_visible_devices=devices, **init)
    )
    return handle, node_id, devices
