"""On a real GPU: does fsd-gpu-exporter's busy counter see a known duty cycle, and at what cost?

Starts the real exporter (NVML) as a process of its own, then a second process that runs a
known duty cycle on one GPU with torch (default: 200 ms of back-to-back bf16 matmuls every
400 ms, 50% busy) for ``--duration`` seconds (default 120). Meanwhile this process scrapes
/metrics once a second. It prints:

- the busy fraction from the exporter's counter (increase of fsd_gpu_busy_seconds_total over
  the load, divided by its length) against the expected one (the load process's own busy time,
  host-timed around synchronised kernels), and what a 15 s-sampled utilization gauge shows;
- scrape latency p50/p99 over HTTP, the exporter's CPU share and RSS, and its busy method.

It needs a CUDA GPU, its driver and torch; it takes about 2.5 minutes (under 5 with
``--duration 120``). ``--simulate`` runs the same plumbing against ``--simulate 1`` without
torch or a GPU, to check the script itself.

    python bench/gpu_duty_cycle.py [--duration 120] [--busy-ms 200] [--period-ms 400] [--gpu 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import http_get, machine, parse_metrics, percentile, start_exporter, stop_pid, table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python bench/gpu_duty_cycle.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--duration", type=float, default=120.0, help="seconds of duty cycle")
    p.add_argument("--busy-ms", type=float, default=200.0, help="busy part of each period")
    p.add_argument("--period-ms", type=float, default=400.0, help="period of the duty cycle")
    p.add_argument("--gpu", type=int, default=0, help="NVML index (= CUDA index, PCI bus order)")
    p.add_argument("--sample-interval", type=float, default=1.0, help="exporter sampling, s")
    p.add_argument("--matrix", type=int, default=8192, help="square bf16 matmul size")
    p.add_argument("--simulate", action="store_true", help="no GPU: check the plumbing")
    p.add_argument("--load-child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- the load process ---------------------------------------------------------------------------


def load_child(args: argparse.Namespace) -> int:
    """Warm up, say ready, wait for a line on stdin, run the duty cycle, print JSON."""
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA numbering = NVML numbering
    import torch

    dev = torch.device(f"cuda:{args.gpu}")
    props = torch.cuda.get_device_properties(dev)
    a = torch.randn(args.matrix, args.matrix, device=dev, dtype=torch.bfloat16)
    b = torch.randn(args.matrix, args.matrix, device=dev, dtype=torch.bfloat16)
    for _ in range(20):
        a @ b
    torch.cuda.synchronize(dev)
    started = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize(dev)
    kernel_ms = (time.perf_counter() - started) / 20 * 1000
    uuid = str(getattr(props, "uuid", ""))
    print(
        json.dumps({"ready": True, "name": props.name, "uuid": uuid, "kernel_ms": kernel_ms}),
        flush=True,
    )
    sys.stdin.readline()

    busy_s, period_s = args.busy_ms / 1000, args.period_ms / 1000
    busy_total = 0.0
    t_start = time.time()
    p_start = time.perf_counter()
    k = 0
    while time.perf_counter() - p_start < args.duration:
        cycle_start = p_start + k * period_s
        now = time.perf_counter()
        if now < cycle_start:
            time.sleep(cycle_start - now)
        begin = time.perf_counter()
        # Kernels back to back until the busy part is over; one synchronise per kernel bounds
        # the overrun to one kernel (about a millisecond).
        while time.perf_counter() - begin < busy_s:
            a @ b
            torch.cuda.synchronize(dev)
        busy_total += time.perf_counter() - begin
        k += 1
    end_wait = p_start + k * period_s - time.perf_counter()
    if end_wait > 0:
        time.sleep(end_wait)
    print(
        json.dumps(
            {
                "start": t_start,
                "end": t_start + (time.perf_counter() - p_start),
                "busy_seconds": busy_total,
                "cycles": k,
            }
        ),
        flush=True,
    )
    return 0


# -- the measuring process ------------------------------------------------------------------------


class Scraper(threading.Thread):
    """Scrapes once a second: latency, and (time, busy counter, utilization) of one GPU."""

    def __init__(self, url: str, gpu: str) -> None:
        super().__init__(daemon=True)
        self.url, self.gpu = url, gpu
        self.latencies: list[float] = []
        self.points: list[tuple[float, float, float]] = []
        self.last: dict[str, float] = {}
        self.stop = threading.Event()

    def scrape(self) -> dict[str, float]:
        started = time.perf_counter()
        body = http_get(self.url)
        self.latencies.append(time.perf_counter() - started)
        metrics = parse_metrics(body.decode())
        self.last = metrics
        return metrics

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                m = self.scrape()
            except OSError:
                continue
            busy = _gpu_value(m, "fsd_gpu_busy_seconds_total", self.gpu)
            util = _gpu_value(m, "fsd_gpu_utilization_ratio", self.gpu)
            if busy is not None:
                self.points.append((time.time(), busy, util if util is not None else float("nan")))


def _gpu_value(metrics: dict[str, float], name: str, gpu: str) -> float | None:
    for key, value in metrics.items():
        if key.startswith(name + "{") and f'gpu="{gpu}"' in key:
            return value
    return None


def _label(metrics: dict[str, float], name: str, gpu: str, label: str) -> str:
    for key in metrics:
        if key.startswith(name + "{") and f'gpu="{gpu}"' in key:
            for part in key[len(name) + 1 : -1].split(","):
                k, _, v = part.partition("=")
                if k == label:
                    return v.strip('"')
    return "?"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_child:
        return load_child(args)
    import psutil

    gpu = "0" if args.simulate else str(args.gpu)
    simulate = ["--simulate", "1"] if args.simulate else []
    exporter, url, _ = start_exporter(
        "--node", "bench", *simulate, sample_interval=args.sample_interval
    )
    load: subprocess.Popen[str] | None = None
    try:
        if not args.simulate:
            child_cmd = [sys.executable, __file__, "--load-child", *_child_args(args)]
            load = subprocess.Popen(
                child_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        metrics = _wait_up(url, timeout=60)
        method = _label(metrics, "fsd_gpu_busy_source_info", gpu, "method")
        model = _label(metrics, "fsd_gpu_busy_seconds_total", gpu, "gpu_model")
        uuid = _label(metrics, "fsd_gpu_busy_seconds_total", gpu, "uuid")
        info: dict[str, Any] = {}
        if load is not None:
            assert load.stdin is not None and load.stdout is not None
            info = json.loads(load.stdout.readline())
            if info.get("uuid") and info["uuid"].replace("GPU-", "") not in uuid:
                print(f"warning: torch's GPU {info['uuid']} is not NVML's GPU {gpu} ({uuid})")
        scraper = Scraper(url, gpu)
        ps = psutil.Process(exporter.pid)
        time.sleep(3.0)
        c0 = _gpu_value(scraper.scrape(), "fsd_gpu_busy_seconds_total", gpu) or 0.0
        t_c0 = time.time()
        scraper.start()
        cpu0, w0 = sum(ps.cpu_times()[:2]), time.monotonic()
        if load is not None:
            assert load.stdin is not None and load.stdout is not None
            load.stdin.write("go\n")
            load.stdin.flush()
            result = json.loads(load.stdout.readline())
        else:
            time.sleep(args.duration)
            result = {}  # filled in below, over the scrapes' window
        cpu1, w1 = sum(ps.cpu_times()[:2]), time.monotonic()
        # The counter lags the load by up to one sampling interval plus a driver period.
        time.sleep(args.sample_interval + 2.0)
        scraper.stop.set()
        scraper.join(5)
        last = scraper.scrape()
        c1 = _gpu_value(last, "fsd_gpu_busy_seconds_total", gpu) or 0.0
        if args.simulate:
            # The simulated GPU runs its script all along: compare over the scrapes' window
            # (both ends lag by about the same sampling delay).
            from fsd_daemon.gpu.simulated import DEFAULT_SCRIPT

            t_c1 = time.time()
            result = {
                "start": t_c0,
                "end": t_c1,
                "busy_seconds": DEFAULT_SCRIPT[0].busy_between(t_c0, t_c1),
            }
        rss = ps.memory_info().rss
    finally:
        if load is not None:
            stop_pid(load)
            for stream in (load.stdin, load.stdout):
                if stream is not None:
                    stream.close()
        stop_pid(exporter)

    length = result["end"] - result["start"]
    expected = result["busy_seconds"] / length
    measured = (c1 - c0) / length
    inside = [p for p in scraper.points if result["start"] <= p[0] <= result["end"]]
    gauge_15s = inside[::15]
    gauge = sum(p[2] for p in gauge_15s) / len(gauge_15s) if gauge_15s else float("nan")
    print(f"machine: {machine()}")
    print(f"GPU {gpu}: {model} {uuid}; torch sees {info.get('name', 'n/a')}")
    print(
        "command: python bench/gpu_duty_cycle.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
    )
    if args.simulate:
        load_text = "the simulated GPU's own script (300 ms busy every 2 s), no torch"
    else:
        load_text = (
            f"{args.busy_ms:g} ms busy every {args.period_ms:g} ms ({args.matrix}x{args.matrix} "
            f"bf16 matmul, {info.get('kernel_ms', float('nan')):.2f} ms each)"
        )
    print(
        f"load: {load_text} for {length:.1f} s; exporter sampling every "
        f"{args.sample_interval:g} s, busy method {method}"
    )
    print()
    print(
        table(
            ["measure", "value"],
            [
                ["expected busy fraction (host-timed)", f"{expected:.2%}"],
                ["measured: increase(fsd_gpu_busy_seconds_total) / length", f"{measured:.2%}"],
                ["error, percentage points", f"{(measured - expected) * 100:+.2f}"],
                [f"15 s-sampled utilization gauge ({len(gauge_15s)} points)", f"{gauge:.2%}"],
                ["scrape latency p50 (ms)", percentile(scraper.latencies, 50) * 1000],
                ["scrape latency p99 (ms)", percentile(scraper.latencies, 99) * 1000],
                ["scrapes", len(scraper.latencies)],
                ["exporter CPU share during load (% of one core)", (cpu1 - cpu0) / (w1 - w0) * 100],
                ["exporter RSS (MB)", rss / 1e6],
                [
                    "one sampling pass, all GPUs (ms, last)",
                    last.get("fsd_gpu_sample_duration_seconds", float("nan")) * 1000,
                ],
            ],
        )
    )
    return 0


def _child_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--duration={args.duration}",
        f"--busy-ms={args.busy_ms}",
        f"--period-ms={args.period_ms}",
        f"--gpu={args.gpu}",
        f"--matrix={args.matrix}",
    ]


def _wait_up(url: str, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    metrics: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            metrics = parse_metrics(http_get(url, timeout=2).decode())
            if metrics.get("fsd_gpu_nvml_up") == 1.0 and any(
                k.startswith("fsd_gpu_busy_seconds_total") for k in metrics
            ):
                return metrics
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the exporter did not report NVML up within {timeout:.0f} s: {metrics}")


if __name__ == "__main__":
    sys.exit(main())
