"""fsd-gpu-exporter on a busy node: scrape latency against a static file, and busy-time error,
with every core loaded by other work.

A GPU node in training has its CPUs busy. This bench starts ``--processes`` extra sleeping
processes and one CPU burner per core (plain Python loops at normal priority, each bounded by
``--load-seconds`` and stopped by its PID at the end), then for each ``--gpus`` count:

1. starts ``fsd-gpu-exporter --simulate N`` (1 s sampling, its own process) and lets it run;
2. saves one /metrics body to a file and serves it with ``python -m http.server`` (a process of
   its own, the same Python): the static file of the same body;
3. scrapes both ``--scrapes`` times, interleaved (exporter then static, then the other order),
   ``--scrape-gap`` apart, with the same client, so the load falls on both alike;
4. computes the busy-time error: the exporter's ``fsd_gpu_busy_seconds_total`` between the
   first and the last sampler tick seen, against the simulated script's exact busy time over
   the driver periods those ticks covered (a tick covers the driver's samples up to the last
   1/6 s boundary before it read them; only ticks whose read window lies within one period are
   used, so the covered end is known exactly). A sampler starved of CPU reads late; it must
   still count every period. After the scrapes the exporter is stopped outright (SIGSTOP) for
   ``--freeze-seconds`` and read once more, so the window also spans a stall of that length.

The exporter's code is this checkout's unless ``--code DIR`` names another checkout (its
``fsd_daemon`` is imported instead of this one's): run once with the code before the
change and once with it, in the same minutes, to compare.

    python bench/exporter_busy_node.py [--gpus 8,16] [--processes 2000] [--scrapes 400]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import (
    REPO,
    free_port,
    http_answers,
    http_get,
    machine,
    parse_metrics,
    percentile,
    stop_pid,
    table,
)
from exporter_cost import start_sleepers, stop_sleepers

from fsd_daemon.gpu.simulated import SAMPLE_PERIOD_SECONDS, SimulatedNvml
from fsd_daemon.sim.harness import wait_for

_BURNER = """
import sys, time
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    pass
"""


def start_burners(count: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """``count`` busy loops, each ending by itself after ``seconds`` (stopped by PID sooner)."""
    return [subprocess.Popen([sys.executable, "-c", _BURNER, str(seconds)]) for _ in range(count)]


def start_exporter(gpus: int, code: Path | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {
        "FSD_EXPORTER_SAMPLE_INTERVAL_SECONDS": "1"
    }
    python = [sys.executable]
    if code is not None:
        # -S: no .pth files, so this checkout's editable install does not shadow ``code``.
        python.append("-S")
        env["PYTHONPATH"] = f"{code}:{sysconfig.get_paths()['purelib']}"
    command = [*python, "-m", "fsd_daemon.gpu.cli", "--simulate", str(gpus)]
    command += ["--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
    proc = subprocess.Popen(command, cwd=code or REPO, env=env)
    return proc, f"http://127.0.0.1:{port}/metrics"


def start_static(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}/metrics"


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


class Tick:
    """One sampler tick as a scrape shows it."""

    def __init__(self, metrics: dict[str, float], gpus: int) -> None:
        self.at = metrics["fsd_gpu_last_sample_timestamp_seconds"]
        duration = metrics["fsd_gpu_sample_duration_seconds"]
        first = math.floor((self.at - duration) / SAMPLE_PERIOD_SECONDS)
        last = math.floor(self.at / SAMPLE_PERIOD_SECONDS)
        # The driver's newest sample when the GPUs were read; None if the read straddled one.
        self.covered_to = last * SAMPLE_PERIOD_SECONDS if first == last else None
        self.busy = [self._busy(metrics, g) for g in range(gpus)]

    @staticmethod
    def _busy(metrics: dict[str, float], gpu: int) -> float:
        for key, value in metrics.items():
            if key.startswith("fsd_gpu_busy_seconds_total{") and f'gpu="{gpu}"' in key:
                return value
        raise KeyError(f"no busy counter for GPU {gpu}")


def busy_error(ticks: list[Tick], gpus: int) -> dict[str, float]:
    """Worst absolute error of the busy fraction over the window, percentage points."""
    exact = [t for t in ticks if t.covered_to is not None]
    first, last = exact[0], exact[-1]
    assert first.covered_to is not None and last.covered_to is not None
    window = last.covered_to - first.covered_to
    truth = SimulatedNvml(gpus)
    errors = [
        abs(
            (last.busy[g] - first.busy[g])
            - truth.true_busy_seconds(g, first.covered_to, last.covered_to)
        )
        / window
        * 100
        for g in range(gpus)
    ]
    gaps = [b.at - a.at for a, b in itertools.pairwise(ticks) if b.at > a.at]
    return {"window_s": window, "worst_pp": max(errors), "max_tick_gap_s": max(gaps)}


def run_one(args: argparse.Namespace, gpus: int) -> dict[str, Any]:
    exporter, url = start_exporter(gpus, args.code)
    static = None
    try:
        wait_for(lambda: http_answers(url), timeout=60, step=0.1)
        time.sleep(args.settle_seconds)
        body = http_get(url)
        directory = tempfile.mkdtemp(prefix="fsd-static-")
        Path(directory, "metrics").write_bytes(body)
        static, static_url = start_static(directory)
        wait_for(lambda: http_answers(static_url), timeout=60, step=0.1)
        for _ in range(20):  # warm both
            http_get(url)
            http_get(static_url)
        lat: dict[str, list[float]] = {"exporter": [], "static": []}
        ticks: list[Tick] = []
        cpu0 = {"exporter": cpu_seconds(exporter.pid), "static": cpu_seconds(static.pid)}
        load0 = os.getloadavg()[0]
        for i in range(args.scrapes):
            order = (("exporter", url), ("static", static_url))
            for name, target in order if i % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                got = http_get(target)
                lat[name].append(time.perf_counter() - started)
                if name == "exporter":
                    ticks.append(Tick(parse_metrics(got.decode()), gpus))
            time.sleep(args.scrape_gap)
        cpu = {
            "exporter": cpu_seconds(exporter.pid) - cpu0["exporter"],
            "static": cpu_seconds(static.pid) - cpu0["static"],
        }
        load1 = os.getloadavg()[0]
        if args.freeze_seconds > 0:
            # Starved outright: the whole exporter stopped (SIGSTOP) for longer than any
            # scheduler would starve it, then scraped again once it has ticked.
            os.kill(exporter.pid, signal.SIGSTOP)
            try:
                time.sleep(args.freeze_seconds)
            finally:
                os.kill(exporter.pid, signal.SIGCONT)
            for _ in range(10):  # until a tick whose covered end is exact
                time.sleep(1.0)
                ticks.append(Tick(parse_metrics(http_get(url).decode()), gpus))
                if ticks[-1].covered_to is not None:
                    break
    finally:
        stop_pid(static)
        stop_pid(exporter)
    return {
        "gpus": gpus,
        "bytes": len(body),
        "latency_ms": {
            k: {q: percentile(v, q) * 1000 for q in (50, 90, 99)} for k, v in lat.items()
        },
        "cpu_ms_per_scrape": {k: v / args.scrapes * 1000 for k, v in cpu.items()},
        "busy": busy_error(ticks, gpus),
        "load": (load0, load1),
    }


def render_costs(gpu_counts: list[int], repeats: int = 200) -> list[list[str]]:
    """CPU ms of one render of each form, in this process (what the exporter now spends once
    per sampler tick for each form scrapers ask for, and before spent on every scrape)."""
    import gzip

    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    from fsd_daemon.config import load_config
    from fsd_daemon.gpu.exporter import Exporter

    rows = []
    for gpus in gpu_counts:
        ex = Exporter(
            SimulatedNvml(gpus),
            load_config(None, environ={}),
            node="bench",
            backend_name="simulated",
            listen=("127.0.0.1", 0),
        )
        ex.sampler.sample_once()
        ex.ownership.refresh()
        for form, render in (("text", generate_latest), ("OpenMetrics", generate_openmetrics)):
            started = time.process_time()
            for _ in range(repeats):
                body = render(ex.registry)
            rendered = (time.process_time() - started) / repeats
            started = time.process_time()
            for _ in range(repeats):
                gzip.compress(body)
            zipped = (time.process_time() - started) / repeats
            rows.append(
                [str(gpus), form, f"{len(body):,}", f"{rendered * 1e3:.2f}", f"{zipped * 1e3:.2f}"]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", default="8,16", help="comma-separated simulated GPU counts")
    p.add_argument("--processes", type=int, default=2000, help="extra sleeping processes")
    p.add_argument("--burners", type=int, default=os.cpu_count() or 2, help="busy loops")
    p.add_argument("--load-seconds", type=float, default=600.0, help="bound of each busy loop")
    p.add_argument("--scrapes", type=int, default=400)
    p.add_argument("--scrape-gap", type=float, default=0.05, help="seconds between scrapes")
    p.add_argument("--settle-seconds", type=float, default=5.0)
    p.add_argument(
        "--freeze-seconds",
        type=float,
        default=12.0,
        help="after the scrapes, stop the exporter (SIGSTOP) this long; the busy-time window "
        "spans it (under the driver's 20 s buffer; 0: no freeze)",
    )
    p.add_argument("--code", type=Path, help="checkout whose exporter to run (default: this)")
    p.add_argument(
        "--render-cost",
        action="store_true",
        help="only measure one render of each form in this process (no load, no servers)",
    )
    args = p.parse_args(argv)

    print(f"machine: {machine()}", flush=True)
    if args.render_cost:
        gpu_counts = [int(g) for g in args.gpus.split(",")]
        header = ["GPUs", "form", "bytes", "render CPU ms", "gzip CPU ms"]
        print(table(header, render_costs(gpu_counts)))
        return 0
    print(f"command: python bench/exporter_busy_node.py {' '.join(argv or sys.argv[1:])}")
    sleepers, sleeper_pids = start_sleepers(args.processes)
    burners: list[subprocess.Popen[bytes]] = []
    try:
        burners = start_burners(args.burners, args.load_seconds)
        results = [run_one(args, int(g)) for g in args.gpus.split(",")]
    finally:
        for burner in burners:
            with contextlib.suppress(ProcessLookupError):
                burner.kill()
            burner.wait(timeout=30)
        stop_sleepers(sleepers, sleeper_pids)

    print(
        f"{args.processes:,} extra sleeping processes, {args.burners} busy loops on "
        f"{os.cpu_count()} cores; {args.scrapes} scrapes of each server, interleaved, "
        f"{args.scrape_gap * 1000:.0f} ms apart; code: {args.code or 'this checkout'}"
    )
    rows = []
    for r in results:
        ex, st = r["latency_ms"]["exporter"], r["latency_ms"]["static"]
        rows.append(
            [
                f"{r['gpus']} ({r['bytes']:,} B)",
                f"{ex[50]:.2f} / {ex[90]:.2f} / {ex[99]:.2f}",
                f"{st[50]:.2f} / {st[90]:.2f} / {st[99]:.2f}",
                f"{ex[50] / st[50]:.2f} / {ex[90] / st[90]:.2f} / {ex[99] / st[99]:.2f}",
                f"{r['cpu_ms_per_scrape']['exporter']:.2f} / "
                f"{r['cpu_ms_per_scrape']['static']:.2f}",
                f"{r['busy']['worst_pp']:.3f} ({r['busy']['window_s']:.0f} s)",
                f"{r['busy']['max_tick_gap_s']:.2f}",
                f"{r['load'][0]:.1f} / {r['load'][1]:.1f}",
            ]
        )
    print(
        table(
            [
                "GPUs (body)",
                "exporter p50 / p90 / p99 ms",
                "static p50 / p90 / p99 ms",
                "ratio p50 / p90 / p99",
                "CPU ms/scrape exp / static (incl. background)",
                "busy error, worst GPU (pp)",
                "max tick gap s",
                "load avg 1 min",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
