"""The daemon's metrics probe at N quiet servers: CPU and bytes, measured per round.

N real HTTP servers (``fsd_daemon.sim.rollout_server.serve_metrics``: the simulated vLLM
engine's real ``/metrics`` page, every series of the release ``fsd_daemon.engines`` lists)
run in one child process of their own, so their CPU is not counted here. This process runs
the daemon's own ``RolloutMetricsProbe`` on them with a stepped clock, as the daemon would
over a quiet hour:

- round 1 at t=0: every server is new, every page is fetched;
- round 2 at t=60 s (the probe's interval): nothing is due (all answered OK);
- round 3 at t=901 s: every OK verdict is older than ``recheck_ok_interval`` (900 s), every
  page is fetched again.

CPU is this process's (``time.process_time``: the probe's threads, urllib, counting the
series). Bytes are the pages' sizes, read once per server before the rounds. The quiet hour
holds 60 rounds, 4 of them full (3600 / 900): the hour-equivalent is 4 full rounds plus 56
empty ones, scaled from the measured rounds; the table says so.

Only 127.0.0.1; the child is stopped by its PID.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

from fsd_daemon.mixin import names
from fsd_daemon.pipeline.render import Target
from fsd_daemon.probe import RolloutMetricsProbe

_SERVERS = """
import http.server, sys, threading
from prometheus_client import generate_latest
from fsd_daemon.sim.rollout_server import LoadModel, SimulatedEngine, serve_metrics
n, page_kb = int(sys.argv[1]), float(sys.argv[2])
ports = []
if page_kb <= 0:
    for i in range(n):
        engine = SimulatedEngine("vllm", "Qwen/Qwen2.5-0.5B-Instruct", LoadModel(), seed=i)
        ports.append(serve_metrics(engine, "127.0.0.1").server_address[1])
else:
    # One simulated engine's page, repeated to page_kb: the same lines (a real vLLM page
    # holds more series of the same kinds), served as is by every server.
    engine = SimulatedEngine("vllm", "Qwen/Qwen2.5-0.5B-Instruct", LoadModel(), seed=0)
    page = generate_latest(engine.registry)
    body = page * max(1, round(page_kb * 1000 / len(page)))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    for i in range(n):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ports.append(server.server_address[1])
print(" ".join(map(str, ports)), flush=True)
threading.Event().wait()
"""


# "A vLLM page is hundreds of kB" (the issue): the sim's page is smaller, so the figures are
# also given scaled to this size, CPU in proportion to bytes (parsing is per byte).
REAL_PAGE_KB = 300


class SteppedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(args: argparse.Namespace) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    child = subprocess.Popen(
        [sys.executable, "-c", _SERVERS, str(args.servers), str(args.page_kb)],
        stdout=subprocess.PIPE,
        cwd=str(common.REPO),
    )
    try:
        assert child.stdout is not None
        ports = [int(p) for p in child.stdout.readline().split()]
        if len(ports) != args.servers:
            raise SystemExit(f"the server process started {len(ports)} of {args.servers}")
        targets = [
            Target.of(
                f"127.0.0.1:{port}",
                {names.ENGINE: "vllm", names.ACTOR_NAME: f"vllm_server_{i}_0"},
            )
            for i, port in enumerate(ports)
        ]
        page_bytes = []
        for t in targets:
            with urllib.request.urlopen(f"http://{t.address}/metrics", timeout=10) as r:
                page_bytes.append(len(r.read()))
        clock = SteppedClock()
        probe = RolloutMetricsProbe(CollectorRegistry(), lambda: targets, clock=clock)
        rounds = []
        for at in (0.0, 60.0, 901.0):
            clock.now = at
            cpu0, wall0 = time.process_time(), time.perf_counter()
            probe.run_once()
            rounds.append(
                {"at": at, "cpu": time.process_time() - cpu0, "wall": time.perf_counter() - wall0}
            )
        return {"servers": args.servers, "page_bytes": page_bytes, "rounds": rounds}
    finally:
        common.stop_pid(child)


def summarize(r: dict[str, Any]) -> str:
    n, rounds = r["servers"], r["rounds"]
    full_cpu = (rounds[0]["cpu"] + rounds[2]["cpu"]) / 2
    empty_cpu = rounds[1]["cpu"]
    page = sum(r["page_bytes"]) / n
    per_hour_cpu = 4 * full_cpu + 56 * empty_cpu
    rows = [
        ["full round (every page), CPU s", f"{rounds[0]['cpu']:.3f} / {rounds[2]['cpu']:.3f}"],
        ["full round, wall s", f"{rounds[0]['wall']:.2f} / {rounds[2]['wall']:.2f}"],
        ["round with nothing due, CPU s", f"{empty_cpu:.4f}"],
        ["page size, mean (kB)", f"{page / 1000:.1f}"],
        ["quiet hour: CPU s (4 full + 56 empty rounds)", f"{per_hour_cpu:.2f}"],
        ["quiet hour: share of a core", f"{per_hour_cpu / 36:.4f}%"],
        ["bytes per second, mean over the hour", f"{n * page / 900 / 1e6:.4f} MB/s"],
        [
            f"the same with {REAL_PAGE_KB} kB pages (a real vLLM's; CPU scaled by bytes)",
            f"{per_hour_cpu * REAL_PAGE_KB * 1000 / page / 36:.3f}% of a core, "
            f"{n * REAL_PAGE_KB * 1000 / 900 / 1e6:.3f} MB/s",
        ],
        ["bytes per second during a full round", f"{n * page / rounds[2]['wall'] / 1e6:.1f} MB/s"],
    ]
    return (
        f"Metrics probe, {n} quiet servers (re-fetch of an OK page every 900 s, interval 60 s)\n"
        + common.table(["", "measured"], rows)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python bench/probe_cost.py",
        description="CPU and bytes of the daemon's metrics probe over N quiet servers.",
    )
    p.add_argument("--servers", type=int, default=1000, help="simulated vLLM servers")
    p.add_argument(
        "--page-kb",
        type=float,
        default=0.0,
        help="serve one simulated page repeated to this size (0: each engine's own page)",
    )
    return common.bench_main(p, run, summarize, argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
