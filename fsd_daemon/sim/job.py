"""A verl-like RL job: a separate Ray driver that creates rollout server actors.

Like verl, it passes no namespace (its actors live in the driver's anonymous namespace), names
the actors ``vllm_server_{replica}_{node}``, ``sglang_server_{replica}_{node}``,
``vllm_server_reward_{replica}_{node}`` (or ``async_llm_server_{rank}`` for verl <= 0.5), pins
nothing to GPUs, and its actors die with it.

Run as ``python -m fsd_daemon.sim.job --address ADDR --vllm 2 --sglang 1``: it prints one JSON
line describing the actors once they serve, then waits until its stdin closes or it gets
SIGTERM/SIGINT, and exits (its actors with it).

Flags that make replicas behave as verl does in its other modes (each replica number R names
every server of that replica: vLLM, SGLang, reward and every node rank):

- ``--metrics-off R[,R...]``: verl's defaults (``rollout.disable_log_stats: True``,
  ``rollout.prometheus.enable: False``): vLLM serves ``/metrics`` without any ``vllm:`` series,
  SGLang has no ``/metrics`` route (HTTP 404).
- ``--sleep-between-steps [LEVEL]``: colocated training: every engine sleeps after the rollout
  part of each step (``vllm:engine_sleep_state`` flips awake -> discard_all, verl's level 2, or
  weights_offloaded with LEVEL 1) and wakes up for the next.
- ``--idle-replicas R[,R...]``: those replicas get no requests at all.

verl main's rollout modes, with every process verl creates, named and placed as verl does
(:mod:`fsd_daemon.sim.verl_modes`; the cluster needs GPUs, ``ray start --num-gpus N``):

- ``--verl-standalone N``: fully async training's rollout replicas, each with a
  ``CheckpointEngineWorker`` group in a placement group of its own;
- ``--verl-hybrid N``: rollout replicas on the trainer's ``WorkerDict`` GPUs;
- ``--verl-colocated-reward N``: reward replicas (LLM as a judge) with a
  ``CheckpointEngineWorker`` group in the trainer's placement group;
- ``--engine-loading R[,R...]``: those standalone replicas' engines have started and hold no
  GPU memory yet; ``--checkpoint-engine-context``: the worker groups hold a CUDA context.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import orjson

from fsd_daemon.plumbing.process import STOP_SIGNALS, handled_signals
from fsd_daemon.recognition import engines, verl
from fsd_daemon.sim import SIMULATED_GPU_CONTEXTS_ENV, SIMULATED_GPU_MEMORY_ENV
from fsd_daemon.sim.scenario import SCENARIOS

SIMULATED_ENGINE_BYTES = 120 * 1024**3  # what a loaded engine takes of an H200


def replica_list(text: str) -> frozenset[int]:
    """``"0,2"`` -> {0, 2}: ASCII replica numbers, comma separated (an argparse type)."""
    replicas = set()
    for part in text.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit() and len(part) <= 6):
            raise argparse.ArgumentTypeError(f"not a replica number: {part!r} (want R[,R...])")
        replicas.add(int(part))
    return frozenset(replicas)


def _releases(engine: engines.Engine) -> list[str]:
    return [v for shape in engine.shapes for v in shape.versions]


def _release_of(engine: engines.Engine) -> Callable[[str], str]:
    """An argparse type: a release of ``engine`` that fsd_daemon/recognition/engines.py knows ("":
    newest)."""

    def release(text: str) -> str:
        if text and text not in _releases(engine):
            known = ", ".join(_releases(engine))
            raise argparse.ArgumentTypeError(
                f"unknown {engine.label} version {text!r}; known: {known}"
            )
        return text

    return release


def server_options(args: argparse.Namespace, replica: int) -> dict[str, Any]:
    """The :class:`~fsd_daemon.sim.rollout_server.ServerOptions` of one replica's servers."""
    return {
        "metrics_off": replica in args.metrics_off,
        "sleep_level": args.sleep_between_steps,
        "idle": replica in args.idle_replicas,
        "versions": {e.label: vars(args)[f"{e.label}_version"] for e in engines.ENGINES},
        "speculative_tokens": args.speculative_tokens,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fsd_daemon.sim.job")
    p.add_argument("--address", required=True, help="Ray GCS address")
    p.add_argument("--vllm", type=int, default=1, help="vLLM rollout replicas")
    p.add_argument("--sglang", type=int, default=0, help="SGLang rollout replicas")
    p.add_argument("--reward", type=int, default=0, help="vLLM reward replicas")
    p.add_argument("--nodes-per-replica", type=int, default=1, help="node ranks per replica")
    p.add_argument(
        "--legacy", type=int, default=0, help="verl <= 0.5 vLLM replicas (no metrics route)"
    )
    p.add_argument(
        "--hang", type=int, default=0, help="extra vLLM replicas whose get_server_address() hangs"
    )
    p.add_argument("--launch-delay", type=float, default=0.0, help="seconds before HTTP serves")
    p.add_argument("--step-seconds", type=float, default=20.0, help="rollout step length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cuda-visible-devices", default="", help="comma list, one entry per replica")
    p.add_argument("--worker-children", action="store_true", help="each server spawns a child")
    p.add_argument(
        "--reserved-only",
        type=int,
        default=0,
        help="the last N servers given a GPU hold no memory on it (reserved and idle)",
    )
    p.add_argument(
        "--metrics-off",
        type=replica_list,
        default=frozenset(),
        metavar="R[,R...]",
        help="replicas with verl's default metrics settings (vLLM: no vllm: series; SGLang: "
        "no /metrics route)",
    )
    p.add_argument(
        "--sleep-between-steps",
        type=int,
        nargs="?",
        const=2,
        default=0,
        choices=(1, 2),
        metavar="LEVEL",
        help="engines sleep between rollout steps, as in colocated training (level 2, "
        "discard_all, unless LEVEL 1, weights_offloaded)",
    )
    p.add_argument(
        "--idle-replicas",
        type=replica_list,
        default=frozenset(),
        metavar="R[,R...]",
        help="replicas that get no requests at all",
    )
    for engine in engines.ENGINES:
        p.add_argument(
            f"--{engine.label}-version",
            type=_release_of(engine),
            default="",
            metavar="VERSION",
            help=f"the {engine.label} release whose series shape the servers serve (one of "
            f"{', '.join(_releases(engine))}; default: the newest)",
        )
    p.add_argument(
        "--speculative-tokens",
        type=int,
        default=0,
        metavar="K",
        help="speculative decoding (verl: MTP) with K draft tokens per step; 0: off",
    )
    p.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        help="scripted load per rollout replica instead of the random one (sim/scenario.py)",
    )
    p.add_argument("--verl-standalone", type=int, default=0, help="standalone vLLM replicas")
    p.add_argument("--verl-hybrid", type=int, default=0, help="hybrid vLLM rollout replicas")
    p.add_argument(
        "--verl-colocated-reward", type=int, default=0, help="colocated vLLM reward replicas"
    )
    p.add_argument("--gpus-per-replica", type=int, default=1, help="GPUs of each verl replica")
    p.add_argument(
        "--verl-standalone-engine",
        choices=("vllm", "sglang"),
        default="vllm",
        help="the engine of the standalone replicas",
    )
    p.add_argument(
        "--engine-loading",
        type=replica_list,
        default=frozenset(),
        metavar="R[,R...]",
        help="standalone replicas whose engine holds no GPU memory yet",
    )
    p.add_argument(
        "--checkpoint-engine-context",
        action="store_true",
        help="CheckpointEngineWorkers hold a CUDA context on their GPU",
    )
    p.add_argument(
        "--place",
        default="",
        metavar="NAME=NODE_ID[,...]",
        help="run these actors on these Ray nodes (hard node affinity); others go anywhere",
    )
    return p.parse_args(argv)


def parse_placement(text: str) -> dict[str, str]:
    """``--place`` as actor name -> Ray node id."""
    placement = {}
    for item in filter(None, text.split(",")):
        name, sep, node_id = item.partition("=")
        if not (sep and name and node_id):
            raise SystemExit(f"--place: expected NAME=NODE_ID, got {item!r}")
        placement[name] = node_id
    return placement


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    ray.init(address=args.address, logging_level=logging.ERROR, log_to_driver=False)
    # Where this job's simulated trainer and checkpoint-engine workers register the GPUs they
    # hold (fsd_daemon.sim.register_gpu_context); removed with the job.
    contexts = tempfile.mkdtemp(prefix="fsd-sim-gpu-contexts-")
    os.environ[SIMULATED_GPU_CONTEXTS_ENV] = contexts
    try:
        return _run(ray, args)
    finally:
        shutil.rmtree(contexts, ignore_errors=True)


def _run(ray: Any, args: argparse.Namespace) -> int:
    from fsd_daemon.sim import rollout_server as sim

    devices = [d for d in args.cuda_visible_devices.split(",") if d]
    placement = parse_placement(args.place)
    plan: list[tuple[type, str, int]] = []
    # Each server under the name verl gives it (fsd_daemon/recognition/verl.py SERVER_FORMS).
    for r in range(args.vllm):
        for n in range(args.nodes_per_replica):
            plan.append((sim.vLLMHttpServer, sim.actor_name(sim.vLLMHttpServer, r, n), r))
    for r in range(args.sglang):
        for n in range(args.nodes_per_replica):
            plan.append((sim.SGLangHttpServer, sim.actor_name(sim.SGLangHttpServer, r, n), r))
    for r in range(args.reward):
        name = sim.actor_name(sim.vLLMHttpServer, r, role=verl.ROLE_REWARD)
        plan.append((sim.vLLMHttpServer, name, r))
    for r in range(args.legacy):
        plan.append((sim.AsyncvLLMServer, sim.actor_name(sim.AsyncvLLMServer, r), r))
    hanging: set[str] = set()
    for replica in range(args.vllm, args.vllm + args.hang):
        name = sim.actor_name(sim.vLLMHttpServer, replica)
        hanging.add(name)
        plan.append((sim.vLLMHttpServer, name, replica))

    actors: list[tuple[str, Any]] = []
    placed = _place_verl_modes(ray, args)
    actors.extend((entry["name"], entry.pop("handle")) for entry in placed["servers"])
    pinned = min(len(devices), len(plan))
    for i, (cls, name, replica) in enumerate(plan):
        load: dict[str, Any] = {"step_seconds": args.step_seconds}
        if args.scenario and "reward" not in name:
            load = SCENARIOS[args.scenario].load_for(replica)
        env = {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}
        options: dict[str, Any] = {}
        if name in placement:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                placement[name], soft=False
            )
        if i < pinned:
            env["CUDA_VISIBLE_DEVICES"] = devices[i]
            if i < pinned - args.reserved_only:
                # Read by the simulated NVML (fsd-gpu-exporter --simulate): this process holds
                # that much memory on its GPU, as a loaded vLLM engine would.
                env[SIMULATED_GPU_MEMORY_ENV] = str(SIMULATED_ENGINE_BYTES)
        handle: Any = (
            ray.remote(cls)
            .options(
                name=name,
                num_cpus=0,
                runtime_env={"env_vars": env},
                max_concurrency=4 if name in hanging else 1,
                **options,
            )
            .remote(
                seed=args.seed * 1000 + i,
                launch_delay=args.launch_delay,
                load=load,
                legacy_address=cls is sim.AsyncvLLMServer,
                hang_address=name in hanging,
                options=server_options(args, replica),
            )
        )
        actors.append((name, handle))

    described = []
    verl_servers = {entry["name"]: entry for entry in placed["servers"]}
    for name, handle in actors:
        pid = ray.get(handle.pid.remote())
        if name in verl_servers:
            described.append({"name": name, "pid": pid, **verl_servers[name]})
            continue
        worker = ray.get(handle.spawn_worker.remote()) if args.worker_children else None
        described.append({"name": name, "pid": pid, "worker_pid": worker})
    # Wait until every server serves HTTP, so callers can time discovery from here.
    for entry, (name, handle) in zip(described, actors, strict=True):
        hangs = name in hanging
        entry["address"] = None if hangs else _wait_address(ray, handle, args.launch_delay + 60)
    ctx = ray.get_runtime_context()
    info = {
        "job_id": ctx.get_job_id(),
        "namespace": ctx.namespace,
        "driver_pid": os.getpid(),
        "actors": described,
        "workers": placed["workers"],
    }
    sys.stdout.write(orjson.dumps(info).decode() + "\n")
    sys.stdout.flush()

    done = threading.Event()

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    with handled_signals({signum: done.set for signum in STOP_SIGNALS}):
        done.wait()
    ray.shutdown()
    return 0


def _place_verl_modes(ray: Any, args: argparse.Namespace) -> dict[str, list[Any]]:
    """verl main's replicas in standalone, hybrid and colocated mode (sim/verl_modes.py):
    their worker groups, their servers (started) and the engines' processes. Rollout replicas
    are numbered after the ``--vllm`` ones."""
    from fsd_daemon.sim import rollout_server as sim
    from fsd_daemon.sim import verl_modes as modes

    g = args.gpus_per_replica
    servers: list[dict[str, Any]] = []
    workers: list[dict[str, Any]] = []
    # The worker groups' handles, held for the job's life: Ray ends an actor whose last
    # handle is gone (verl's RayWorkerGroup holds them the same way).
    groups: list[Any] = []

    def describe(group: modes.Group, mode: str, role: str, replica: int | None) -> None:
        groups.append(group)
        for name, handle in group.workers:
            _, gpu = modes.node_and_gpu(ray, handle)
            pid = ray.get(handle.pid.remote())
            workers.append(
                {"name": name, "pid": pid, "gpu": gpu, "mode": mode, "role": role,
                 "replica": replica}
            )  # fmt: skip

    def serve(
        replica: int,
        role: str,
        mode: str,
        group: list[tuple[str, Any]],
        memory: int,
        engine: str = "vllm",
    ) -> None:
        server_cls = sim.SGLangHttpServer if engine == "sglang" else sim.vLLMHttpServer
        name = sim.actor_name(server_cls, replica, role=role)
        init = {
            "seed": args.seed * 1000 + len(servers),
            "launch_delay": args.launch_delay,
            "load": {"step_seconds": args.step_seconds},
            "options": server_options(args, replica),
        }
        handle, node_id, devices = modes.launch_server(ray, server_cls, name, group, **init)
        engine = ray.get(handle.start_engine.remote(memory))
        servers.append(
            {"name": name, "handle": handle, "role": role or "rollout", "replica": replica,
             "mode": mode, "node_id": node_id, "gpus": devices, "engine_pids": engine}
        )  # fmt: skip

    # Numbered after the job's other replicas of the same engine (their server names).
    offset = args.sglang if args.verl_standalone_engine == "sglang" else args.vllm
    for i in range(args.verl_standalone):
        r = offset + i
        group = modes.standalone_workers(ray, r, g, context=args.checkpoint_engine_context)
        describe(group, "standalone", "rollout", r)
        memory = 0 if r in args.engine_loading else SIMULATED_ENGINE_BYTES
        serve(r, "", "standalone", group.workers, memory, args.verl_standalone_engine)
    trainer_gpus = max(args.verl_hybrid, args.verl_colocated_reward) * g
    if trainer_gpus:
        pool = modes.trainer(ray, trainer_gpus)
        describe(pool, "", "train", None)
        for i in range(args.verl_hybrid):
            r = args.vllm + i
            serve(r, "", "hybrid", pool.workers[i * g : (i + 1) * g], SIMULATED_ENGINE_BYTES)
        for r in range(args.verl_colocated_reward):
            bundles = list(range(r * g, (r + 1) * g))
            group = modes.colocated_workers(
                ray, r, pool, bundles, role="reward", context=args.checkpoint_engine_context
            )
            describe(group, "colocated", "reward", r)
            serve(r, "reward", "colocated", group.workers, SIMULATED_ENGINE_BYTES)
    return {"servers": servers, "workers": workers, "groups": groups}


def _wait_address(ray: Any, handle: Any, timeout: float) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = ray.get(handle.get_server_address.remote(), timeout=10)
            return list(value) if isinstance(value, tuple) else value
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
