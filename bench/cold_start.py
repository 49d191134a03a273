"""Cold start at 10,000 servers: every server unresolved, addresses learnt through the real
bridge protocol.

The daemon (in-process ``Poll.run_once()``, its loop's cadence imitated) starts against a
cluster that already has N servers, none resolved, and a rollout.json from before the restart
holding all N. Addresses come from a real ``RayBridge`` child process over its pipe; inside it
the backend answers like Ray with realistic latency (``fsd_daemon/sim/slowray.py``: each
``get_actor`` a GCS round trip of ``--lookup-ms``, each ``get_server_address`` call
``--call-ms``). Measured: seconds until rollout.json holds all N, polls it took, every write's
target count (a write with fewer than at start is what a restart must never do), the bridge
child's restarts, and the main process's CPU.

The peer is the old bridge's way, computed from the same latencies: one ``get_actor`` after
another for the whole batch, killed at ``resolve_timeout + 3`` s, so a batch that needs longer
never finishes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import _common as common  # noqa: E402

from fsd_daemon.discovery.base import ActorRecord, ClusterSnapshot, NodeRecord  # noqa: E402


def cluster(n: int) -> ClusterSnapshot:
    nodes_n = max(1, math.ceil(n / 8))
    nodes = tuple(
        NodeRecord(f"{i:056x}", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}", "", i == 0)
        for i in range(nodes_n)
    )
    actors = tuple(
        ActorRecord(
            actor_id=f"{seq:032x}",
            class_name="vLLMHttpServer",
            name=f"vllm_server_{seq % 256}_0",
            job_id=f"{seq // 256 + 1:02x}000000",
            namespace=f"{seq // 256:08x}-1b4e-4c3a-9f7d-1a2b3c4d5e6f",
            node_id=f"{seq % nodes_n:056x}",
            pid=100000 + seq,
        )
        for seq in range(n)
    )
    return ClusterSnapshot(actors=actors, nodes=nodes)


class FixedSource:
    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.value = snapshot

    def snapshot(self) -> ClusterSnapshot:
        return self.value


def count_targets(path: Path) -> int:
    try:
        return sum(len(g["targets"]) for g in json.loads(path.read_bytes()))
    except (FileNotFoundError, ValueError):
        return -1


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fsd_daemon.config import load_config
    from fsd_daemon.discovery.ray_bridge import RayBridge
    from fsd_daemon.pipeline.poll import Poll
    from fsd_daemon.sim.slowray import address_of

    snapshot = cluster(args.servers)
    out = Path(tempfile.mkdtemp(prefix="fsd-bench-cold-"))
    config = load_config(
        None,
        environ={},
        overrides={
            "daemon.output_dir": str(out),
            "daemon.cluster": "bench",
            "daemon.poll_interval_seconds": args.poll,
            "ray.resolve_timeout_seconds": args.resolve_timeout,
        },
    )
    # The file a previous run left: every server, resolved.
    out.mkdir(exist_ok=True)
    seed = [
        {
            "targets": [f"{address_of(a.actor_id)[0]}:{address_of(a.actor_id)[1]}"],
            "labels": {"ray_namespace": a.namespace, "actor_name": a.name},
        }
        for a in snapshot.actors
    ]
    (out / "rollout.json").write_text(json.dumps(seed))
    at_start = count_targets(out / "rollout.json")
    bridge = RayBridge(
        "fake:0",
        timeout=args.resolve_timeout,
        concurrency=args.concurrency,
        backend="fsd_daemon.sim.slowray:SlowBackend",
        backend_options={
            "lookup_seconds": args.lookup_ms / 1000,
            "call_seconds": args.call_ms / 1000,
            "connect_seconds": args.connect_s,
        },
    )
    daemon = Poll(config, FixedSource(snapshot), bridge)
    daemon.prepare()  # arms the start-up gate from the file found there
    writes: list[tuple[float, int]] = []
    polls = 0
    cpu0 = time.process_time()
    started = time.monotonic()
    done_at = None
    try:
        while time.monotonic() - started < args.limit:
            polls += 1
            result = daemon.run_once()
            if "rollout.json" in result.changed:
                writes.append((time.monotonic() - started, count_targets(out / "rollout.json")))
            if writes and writes[-1][1] == args.servers:
                done_at = writes[-1][0]
                break
            time.sleep(args.poll)
    finally:
        cpu = time.process_time() - cpu0
        starts = bridge.starts
        daemon.close()
    peer_batch_s = args.servers * args.lookup_ms / 1000
    return {
        "servers": args.servers,
        "at_start": at_start,
        "all_in_file_s": done_at,
        "polls": polls,
        "writes": writes,
        "fewer_than_at_start": sum(1 for _, n in writes if n < at_start),
        "bridge_starts": starts,
        "main_cpu_s": cpu,
        "peer_batch_s": peer_batch_s,
        "peer_kill_after_s": args.resolve_timeout + 3,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python bench/cold_start.py",
        description="Daemon cold start against N unresolved servers through the real bridge "
        "protocol (a child answering like Ray with realistic latency).",
    )
    p.add_argument("--servers", type=int, default=10_000)
    p.add_argument("--lookup-ms", type=float, default=5.0, help="get_actor round trip")
    p.add_argument("--call-ms", type=float, default=15.0, help="get_server_address call")
    p.add_argument("--connect-s", type=float, default=2.0, help="driver start + ray.init")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--poll", type=float, default=2.0, help="daemon.poll_interval_seconds")
    p.add_argument("--resolve-timeout", type=float, default=2.0)
    p.add_argument("--limit", type=float, default=120.0, help="give up after this many s")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    print(f"machine: {common.machine()}", flush=True)
    r = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    print(
        common.table(
            [
                "servers",
                "all in file (s)",
                "polls",
                "writes",
                "writes < at start",
                "bridge starts",
                "main CPU (s)",
                "old way: one batch (s)",
                "old way killed at (s)",
            ],
            [
                [
                    r["servers"],
                    r["all_in_file_s"],
                    r["polls"],
                    len(r["writes"]),
                    r["fewer_than_at_start"],
                    r["bridge_starts"],
                    r["main_cpu_s"],
                    r["peer_batch_s"],
                    r["peer_kill_after_s"],
                ]
            ],
        )
    )
    print("writes (s after start, targets):", [(round(t, 2), n) for t, n in r["writes"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
