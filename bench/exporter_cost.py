"""What fsd-gpu-exporter costs: scrape latency over HTTP, the sampler's CPU share, RSS, and the
ownership scan on a node with thousands of processes.

Starts ``--processes`` extra sleeping processes (a busy training node has thousands), then
``fsd-gpu-exporter --simulate N`` (8 GPUs, the default 1 s sampling) as a process of its own,
lets it sample undisturbed for ``--idle-seconds`` (its CPU use then is the background sampler
and the ownership scan every 5 s: nothing else runs in it), then scrapes /metrics ``--scrapes``
times over HTTP and reports latency percentiles, CPU and RSS.

The ownership scan is also measured in this process, side by side on the same process table:
the full scan (every ``/proc/<pid>/stat`` read, as before the incremental table) against the
incremental one (``fsd_daemon.gpu.proctable.ProcessTable``, warm). The peer figures printed at
the end are quoted from public reports (../shared/FACTS.md), not measured here.

    python bench/exporter_cost.py [--gpus 8] [--processes 2000] [--idle-seconds 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from _common import (
    http_answers,
    http_get,
    machine,
    parse_metrics,
    percentile,
    start_exporter,
    stop_pid,
    table,
)

from fsd_daemon.config import load_config
from fsd_daemon.gpu.ownership import OwnershipTracker
from fsd_daemon.gpu.proctable import ProcessTable
from fsd_daemon.gpu.sampler import Sampler
from fsd_daemon.gpu.simulated import SimulatedNvml
from fsd_daemon.sim.harness import wait_for

# Forks N children that sleep until killed, prints their pids, and waits for stdin to close.
_SLEEPERS = """
import os, signal, sys
pids = []
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    pids.append(pid)
print(" ".join(map(str, pids)), flush=True)
sys.stdin.read()
"""


def start_sleepers(count: int) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLEEPERS, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, [int(p) for p in proc.stdout.readline().split()]


def stop_sleepers(proc: subprocess.Popen[str], pids: list[int]) -> None:
    """Every sleeper by its PID, then their parent (which reaps them)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.wait(timeout=30)


def scan_costs(repeats: int = 5) -> dict[str, float]:
    """CPU ms of one ownership refresh (8 simulated GPUs), full process-table read vs warm
    incremental table, on this machine's process table as it is now."""
    config = load_config(None, environ={})
    sampler = Sampler(SimulatedNvml(8))
    sampler.sample_once()
    tracker = OwnershipTracker(
        lambda: sampler.snapshot, roles=config.gpu_roles, patterns=config.patterns
    )
    tracker.refresh()  # warm: every process read once
    incremental = []
    for _ in range(repeats):
        started = time.process_time()
        tracker.refresh()
        incremental.append(time.process_time() - started)
    full = []
    for _ in range(repeats):
        started = time.process_time()
        ProcessTable().read()  # a cold table reads every /proc/<pid>/stat, as before
        full.append(time.process_time() - started)
    return {
        "processes": float(len(ProcessTable().read())),
        "full_ms": percentile(full, 50) * 1000,
        "incremental_ms": percentile(incremental, 50) * 1000,
    }


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--scrapes", type=int, default=300)
    p.add_argument("--scrape-gap", type=float, default=0.05, help="seconds between scrapes")
    p.add_argument("--sample-interval", type=float, default=1.0)
    p.add_argument("--processes", type=int, default=2000, help="extra sleeping processes")
    args = p.parse_args(argv)

    sleepers, sleeper_pids = start_sleepers(args.processes)
    try:
        scan = scan_costs()
        proc, url, command = start_exporter(
            "--simulate", str(args.gpus), sample_interval=args.sample_interval
        )
    except BaseException:
        stop_sleepers(sleepers, sleeper_pids)
        raise
    try:
        ps = psutil.Process(proc.pid)
        wait_for(lambda: http_answers(url), timeout=60, step=0.1)
        time.sleep(3.0)  # first ticks, imports settled

        cpu0, t0 = cpu_seconds(ps), time.monotonic()
        time.sleep(args.idle_seconds)
        cpu1, t1 = cpu_seconds(ps), time.monotonic()
        idle_share = (cpu1 - cpu0) / (t1 - t0)

        latencies = []
        size = 0
        for _ in range(args.scrapes):
            started = time.perf_counter()
            body = http_get(url)
            latencies.append(time.perf_counter() - started)
            size = len(body)
            time.sleep(args.scrape_gap)
        cpu2, t2 = cpu_seconds(ps), time.monotonic()
        scrape_cpu_ms = (cpu2 - cpu1 - idle_share * (t2 - t1)) / args.scrapes * 1000
        rss = ps.memory_info().rss
        metrics = parse_metrics(body.decode())
    finally:
        stop_pid(proc)
        stop_sleepers(sleepers, sleeper_pids)

    sample_ms = metrics.get("fsd_gpu_sample_duration_seconds", float("nan")) * 1000
    scan_ms = metrics.get("fsd_gpu_ownership_refresh_duration_seconds", float("nan")) * 1000
    print(f"machine: {machine()}")
    print(
        f"command: FSD_EXPORTER_SAMPLE_INTERVAL_SECONDS={args.sample_interval:g} "
        f"{' '.join(command)}"
    )
    print(
        f"{args.gpus} simulated GPUs, sampling every {args.sample_interval:g} s, ownership scan "
        f"every 5 s, {scan['processes']:,.0f} processes on the machine ({args.processes:,} of "
        f"them sleepers); {args.scrapes} scrapes of {size:,} bytes, "
        f"{args.scrape_gap * 1000:.0f} ms apart"
    )
    print()
    print(
        table(
            ["measure", "fsd-gpu-exporter (measured)"],
            [
                ["scrape latency p50 over HTTP (ms)", percentile(latencies, 50) * 1000],
                ["scrape latency p99 over HTTP (ms)", percentile(latencies, 99) * 1000],
                ["scrape latency max (ms)", max(latencies) * 1000],
                ["CPU per scrape (ms)", scrape_cpu_ms],
                ["background CPU share, no scrapes (% of one core)", idle_share * 100],
                ["one sampling pass, 8 GPUs (ms, last)", sample_ms],
                ["one ownership scan (ms, last, wall)", scan_ms],
                ["RSS (MB)", rss / 1e6],
            ],
        )
    )
    print()
    print("Ownership scan, measured side by side in this process (CPU ms per scan, median of 5):")
    print(
        table(
            ["scan", "CPU ms per scan", "share of a core at 5 s"],
            [
                ["full /proc read (before)", scan["full_ms"], f"{scan['full_ms'] / 50:.3f}%"],
                [
                    "incremental ProcessTable (now)",
                    scan["incremental_ms"],
                    f"{scan['incremental_ms'] / 50:.3f}%",
                ],
                ["ratio full / incremental", scan["full_ms"] / scan["incremental_ms"], ""],
            ],
        )
    )
    print()
    print("Peers, as quoted in public reports (../shared/FACTS.md), not measured here:")
    print(
        table(
            ["exporter", "default interval", "CPU", "RSS", "scrape"],
            [
                ["dcgm-exporter", "30 s", "15-20% of a core", "~71 MB", "10 s timeouts reported"],
                ["nvidia_gpu_exporter", "per scrape", "n/a", "n/a", "7 ms to 600 ms (nvidia-smi)"],
                ["nvitop-exporter", "1 s loop", "n/a", "n/a", "n/a"],
            ],
        )
    )
    print(
        "\nCaveat: simulated GPUs; real NVML calls cost more per GPU than the simulation "
        "(bench/gpu_duty_cycle.py measures the real thing on a GPU machine)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
