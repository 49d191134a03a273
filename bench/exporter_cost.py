"""What fsd-gpu-exporter costs: scrape latency over HTTP, the sampler's CPU share, RSS.

Starts ``fsd-gpu-exporter --simulate N`` (8 GPUs, the default 1 s sampling) as a process of its
own, lets it sample undisturbed for ``--idle-seconds`` (its CPU use then is the background
sampler and the ownership scan: nothing else runs in it), then scrapes /metrics ``--scrapes``
times over HTTP and reports latency percentiles, CPU and RSS. The peer figures printed next to
ours are quoted from public reports (../shared/FACTS.md), not measured here.

    python bench/exporter_cost.py [--gpus 8] [--idle-seconds 30] [--scrapes 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import http_get, machine, parse_metrics, percentile, start_exporter, stop_pid, table

from tests.support.harness import wait_for


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
    args = p.parse_args(argv)

    proc, url, command = start_exporter(
        "--simulate", str(args.gpus), sample_interval=args.sample_interval
    )
    try:
        ps = psutil.Process(proc.pid)
        wait_for(lambda: _get_ok(url), timeout=60, step=0.1)
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

    sample_ms = metrics.get("fsd_gpu_sample_duration_seconds", float("nan")) * 1000
    scan_ms = metrics.get("fsd_gpu_ownership_refresh_duration_seconds", float("nan")) * 1000
    print(f"machine: {machine()}")
    print(
        f"command: FSD_EXPORTER_SAMPLE_INTERVAL_SECONDS={args.sample_interval:g} "
        f"{' '.join(command)}"
    )
    print(
        f"{args.gpus} simulated GPUs, sampling every {args.sample_interval:g} s, ownership scan "
        f"every 5 s; {args.scrapes} scrapes of {size:,} bytes, "
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
                ["one ownership scan (ms, last)", scan_ms],
                ["RSS (MB)", rss / 1e6],
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


def _get_ok(url: str) -> bool:
    try:
        http_get(url, timeout=2)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
