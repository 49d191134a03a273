"""Footprint of a quiet daemon: RSS of the daemon and everything it starts, CPU over a quiet
window, writes; against a real ``ray start --head`` cluster with a verl-like job.

The daemon runs as users run it (``fsd-daemon run``, built-in defaults but ``--poll``: 2 s
poll by default, bridge idle stop after 60 s) with a clean environment. Once every server is
in rollout.json, it waits ``--settle`` seconds (the bridge child goes once idle), then
measures ``--duration`` seconds: CPU seconds of the daemon's process tree (psutil), its RSS
at the end, and target-file writes (fsd_daemon_writes_total). Scaled to an hour.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import _common as common  # noqa: E402

from fsd_daemon.sim.launch import free_port, start_job, stop_process  # noqa: E402
from fsd_daemon.sim.rayhead import RayHead, clean_env  # noqa: E402


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def rss(procs: list[psutil.Process]) -> list[tuple[str, int]]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            out.append((" ".join(p.cmdline())[:60], p.memory_info().rss))
    return out


def writes(port: int) -> float:
    text = common.http_get(f"http://127.0.0.1:{port}/metrics").decode()
    return common.metric_sum(common.parse_metrics(text), "fsd_daemon_writes_total")


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="fsd-bench-quiet-"))
    with RayHead(root) as head:
        job = start_job(head.address, "--vllm", str(args.servers))
        port = free_port()
        out = root / "out"
        with open(root / "daemon.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fsd_daemon.cli",
                    "run",
                    "--ray-address",
                    head.address,
                    "--output-dir",
                    str(out),
                    "--metrics-listen",
                    f"127.0.0.1:{port}",
                ],
                env={
                    **clean_env(head.home),
                    "FSD_DAEMON_POLL_INTERVAL_SECONDS": str(args.poll),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            start = time.monotonic()
            while True:
                try:
                    groups = json.loads((out / "rollout.json").read_bytes())
                    if len(groups) == args.servers:
                        break
                except (FileNotFoundError, ValueError):
                    pass
                if time.monotonic() - start > 120:
                    raise RuntimeError("servers not written within 120 s")
                time.sleep(0.2)
            found_after = time.monotonic() - start
            peak_children = 0
            settle_end = time.monotonic() + args.settle
            while time.monotonic() < settle_end:
                peak_children = max(peak_children, len(tree(proc.pid)) - 1)
                time.sleep(1)
            procs = tree(proc.pid)
            cpu0, w0, t0 = cpu_seconds(procs), writes(port), time.monotonic()
            time.sleep(args.duration)
            procs = tree(proc.pid)
            cpu1, w1, t1 = cpu_seconds(procs), writes(port), time.monotonic()
            memory = rss(procs)
        finally:
            stop_process(proc)
            job.stop()
    hour = 3600 / (t1 - t0)
    return {
        "servers": args.servers,
        "found_after_s": found_after,
        "children_while_settling": peak_children,
        "quiet_cpu_s_per_h": (cpu1 - cpu0) * hour,
        "quiet_core_percent": (cpu1 - cpu0) / (t1 - t0) * 100,
        "writes_per_h": (w1 - w0) * hour,
        "rss": memory,
        "rss_total_mib": sum(r for _, r in memory) / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/quiet_footprint.py", description=__doc__)
    p.add_argument("--servers", type=int, default=4)
    p.add_argument("--poll", type=float, default=2.0, help="daemon.poll_interval_seconds")
    p.add_argument("--settle", type=float, default=75.0, help="s after pick-up (idle stop: 60)")
    p.add_argument("--duration", type=float, default=120.0, help="quiet window measured, s")
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
                "quiet CPU s/h",
                "% of a core",
                "writes/h",
                "processes",
                "RSS daemon + children MiB",
            ],
            [
                [
                    r["servers"],
                    r["quiet_cpu_s_per_h"],
                    r["quiet_core_percent"],
                    r["writes_per_h"],
                    len(r["rss"]),
                    r["rss_total_mib"],
                ]
            ],
        )
    )
    for name, value in r["rss"]:
        print(f"  {value / 2**20:7.1f} MiB  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
