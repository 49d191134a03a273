"""What a Ray driver keeps per actor it resolves, and what replacing the bridge child does to it.

The soak (bench/soak.py) saw the bridge child, a Ray driver, grow under steady server churn
while the daemon stayed flat. This bench tells apart where the growth comes from and measures
the fix, every piece a process of its own against one ``ray start --head`` (own temp dir, own
ports from ``--base-port``, stopped by its PID):

- a creator driver starts ``--actors`` simulated servers one after another (the soak's:
  ``fsd_daemon.sim.rollout_server.vLLMHttpServer``, named as verl names its servers), keeps 4
  alive, kills the oldest, and appends "actor_id name" of each to a listing file;
- one observer per mode reads the listing file every 0.5 s and, for each new actor:
  ``idle`` nothing (a connected driver: what time alone adds), ``get_actor`` only
  ``ray.get_actor``, ``get_actor+call`` that and ``get_server_address()`` (what the bridge
  does), ``bridge`` the daemon's own ``RayBridge`` through its real protocol with replacement
  switched off, ``bridge-replaced`` the same with its defaults (replaced after
  ``RECYCLE_AFTER`` lookups). The first four report their own RSS, the bridge modes their
  child's (the driver).

Printed: RSS after the first ``--skip`` actors and at the end, and the least-squares growth per
actor resolved. ``--json FILE`` keeps every sample.

    .venv/bin/python bench/driver_memory.py --json /tmp/driver_memory.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common
from soak import slope_per_hour, user_env

from fsd_daemon.sim.rayhead import RayHead

MODES = ("idle", "get_actor", "get_actor+call", "bridge", "bridge-replaced")
LIVE = 4


def create_main(argv: Sequence[str]) -> int:
    """``driver_memory.py create ADDRESS LISTING N``."""
    address, listing, count = argv[0], Path(argv[1]), int(argv[2])
    import ray

    ray.init(address=address, namespace="bench", logging_level=logging.ERROR, log_to_driver=False)
    from fsd_daemon.sim.rollout_server import vLLMHttpServer

    server: Any = ray.remote(vLLMHttpServer)  # the soak's servers: verl's class and methods

    live = []
    for i in range(count):
        name = f"vllm_server_{i}_0"
        handle = server.options(name=name, num_cpus=0).remote(seed=i, options={"idle": True})
        _wait_serving(ray, handle)
        with listing.open("a") as f:
            f.write(f"{handle._actor_id.hex()} {name}\n")
        live.append(handle)
        if len(live) > LIVE:
            ray.kill(live.pop(0))
    for handle in live:
        ray.kill(handle)
    return 0


def _wait_serving(ray: Any, handle: Any) -> None:
    """Until ``get_server_address()`` answers (it fails until the HTTP server is up)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            ray.get(handle.get_server_address.remote(), timeout=30)
            return
        except ray.exceptions.RayTaskError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def observe_main(argv: Sequence[str]) -> int:
    """``driver_memory.py observe MODE ADDRESS LISTING N``: one JSON line per 25 actors."""
    mode, address, listing, count = argv[0], argv[1], Path(argv[2]), int(argv[3])
    bridge: Any = None
    if mode.startswith("bridge"):
        from fsd_daemon.discovery.ray_bridge import RECYCLE_AFTER, RayBridge

        bridge = RayBridge(
            address,
            timeout=2.0,
            recycle_after=RECYCLE_AFTER if mode == "bridge-replaced" else 10**9,
        )
        if not bridge.wait_ready(120):
            print(json.dumps({"error": bridge.problem()}), flush=True)
            return 1
    else:
        import ray

        ray.init(address=address, namespace="obs", logging_level=logging.ERROR, log_to_driver=False)
    from fsd_daemon.discovery.base import ActorRecord

    done: set[str] = set()
    reported = -1
    deadline = time.monotonic() + 1800
    try:
        while len(done) < count and time.monotonic() < deadline:
            waiting = []
            for line in listing.read_text().splitlines() if listing.exists() else []:
                actor_id, name = line.split()
                if actor_id not in done:
                    waiting.append((actor_id, name))
            if bridge is not None and waiting:
                records = [
                    ActorRecord(
                        actor_id=a,
                        class_name="vLLMHttpServer",
                        name=n,
                        job_id="",
                        namespace="bench",
                        node_id="",
                        pid=0,
                    )
                    for a, n in waiting
                ]
                done.update(bridge.resolve_addresses(records))
            else:
                for actor_id, name in waiting:
                    if mode != "idle":
                        _resolve(mode, name)
                    done.add(actor_id)
            if len(done) // 25 != reported:
                reported = len(done) // 25
                pid = bridge.pid if bridge is not None else os.getpid()
                if pid is not None:
                    rss = psutil.Process(pid).memory_info().rss
                    sample = {"resolved": len(done), "rss_kib": rss >> 10, "pid": pid}
                    print(json.dumps(sample), flush=True)
            time.sleep(0.5)
    finally:
        if bridge is not None:
            bridge.close()
    return 0


def _resolve(mode: str, name: str) -> None:
    import ray

    try:
        handle = ray.get_actor(name, namespace="bench")
        if mode == "get_actor+call":
            ray.get(handle.get_server_address.remote(), timeout=10)
    except Exception:  # killed before we got to it: counted all the same
        pass


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="driver-memory-", dir=args.work_root))
    home = work / "home"
    home.mkdir()
    (work / "r").mkdir()
    head = RayHead(work, env=user_env(home), base_port=args.base_port, temp_dir=work / "r")
    listing = work / "listing.txt"
    env = user_env(home)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    observers: dict[str, subprocess.Popen[str]] = {}
    result: dict[str, Any] = {"machine": common.machine(), "actors": args.actors}
    head.start()
    try:
        me = str(Path(__file__).resolve())
        for mode in MODES:
            observers[mode] = subprocess.Popen(
                [
                    sys.executable,
                    me,
                    "observe",
                    mode,
                    head.address,
                    str(listing),
                    str(args.actors),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
        time.sleep(10)  # every observer connected before the first actor
        began = time.time()
        creator = subprocess.run(
            [sys.executable, me, "create", head.address, str(listing), str(args.actors)],
            env=env,
            timeout=3600,
            capture_output=True,
            text=True,
        )
        result["create_seconds"] = round(time.time() - began, 1)
        if creator.returncode != 0:
            raise RuntimeError(f"creator failed: {creator.stderr[-2000:]}")
        samples: dict[str, list[dict[str, Any]]] = {}
        for mode, proc in observers.items():
            out, _ = proc.communicate(timeout=600)
            samples[mode] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        result["samples"] = samples
    finally:
        for proc in observers.values():
            common.stop_pid(proc)
        head.stop()
        result["ray_leftovers_killed"] = head.leftovers_killed
    result["summary"] = {mode: _summary(s, args.skip) for mode, s in result["samples"].items()}
    return result


def _summary(samples: list[dict[str, Any]], skip: int) -> dict[str, Any]:
    kept = [s for s in samples if s["resolved"] >= skip]
    if len(kept) < 2:
        return {"error": "too few samples"}
    # slope_per_hour takes (x, y) and scales by 3600: per actor, then.
    per_actor = slope_per_hour([(s["resolved"], s["rss_kib"]) for s in kept]) / 3600
    return {
        "first": kept[0]["rss_kib"],
        "last": kept[-1]["rss_kib"],
        "max": max(s["rss_kib"] for s in kept),
        "resolved": kept[-1]["resolved"],
        "kib_per_actor": round(per_actor, 2),
        "drivers": len({s["pid"] for s in samples}),
    }


def summarize(result: dict[str, Any]) -> str:
    rows = []
    for mode, s in result["summary"].items():
        if "error" in s:
            rows.append([mode, s["error"], "", "", "", "", ""])
            continue
        rows.append(
            [
                mode,
                s["resolved"],
                round(s["first"] / 1024, 1),
                round(s["last"] / 1024, 1),
                round(s["max"] / 1024, 1),
                s["kib_per_actor"],
                s["drivers"],
            ]
        )
    return "\n".join(
        [
            common.table(
                [
                    "observer",
                    "actors",
                    "RSS first (MiB)",
                    "RSS last",
                    "RSS max",
                    "KiB / actor",
                    "drivers",
                ],
                rows,
            ),
            f"{result['actors']} actors created in {result['create_seconds']} s",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["create"]:
        return create_main(argv[1:])
    if argv[:1] == ["observe"]:
        return observe_main(argv[1:])
    p = argparse.ArgumentParser(prog="bench/driver_memory.py", description=__doc__.split("\n")[0])
    p.add_argument("--actors", type=int, default=400, help="actors created one after another")
    p.add_argument("--skip", type=int, default=25, help="actors left out as warm-up")
    p.add_argument("--base-port", type=int, default=23000, help="Ray's ports: this .. +299")
    p.add_argument("--work-root", default="/tmp", help="where the work dir goes")
    common.bench_main(p, run, summarize, argv, json_what="result and samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
