"""How well each way of measuring GPU busy time sees a bursty duty cycle.

For duty cycles of 10, 50 and 90% busy in bursts of 50 ms to 2 s, a simulated GPU (driver
samples every 1/6 s, whole percents, as data-center GPUs do) is read by the exporter's sampler
every 1 s on a fake clock, and "Prometheus" scrapes every 15 s for 10 minutes. Three estimates
of the busy fraction over those 10 minutes are compared with the script's exact truth:

- counter (samples): rate(fsd_gpu_busy_seconds_total) from the driver's samples (the default),
  each scrape seeing the sampler's last tick (0 to 1 s old);
- counter (rates): the same counter where the driver keeps no samples and the exporter
  integrates its 1 s utilization readings (fsd_gpu_busy_source_info{method="utilization_rates"});
- 15 s gauge: avg_over_time of fsd_gpu_utilization_ratio scraped every 15 s (what a
  utilization-gauge exporter gives).

Each cell is the mean and the worst absolute error, in percentage points, over 12 phases of the
bursts and of the sampler's ticks against the scrapes. What is measured is the integration, on
an ideal simulated driver: a real driver's own sampling error is not in these numbers.

    python bench/idle_fidelity.py [--minutes 10] [--phases 12]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import machine, table

from fsd_daemon.gpu.backend import NotSupported, UtilSample
from fsd_daemon.gpu.sampler import Sampler
from fsd_daemon.gpu.simulated import DutyCycle, SimulatedNvml

FRACTIONS = (0.10, 0.50, 0.90)
BURSTS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
SCRAPE = 15.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class NoSamples(SimulatedNvml):
    """A driver without utilization samples: the exporter falls back to utilization rates."""

    def utilization_samples(self, index: int, since_us: int) -> list[UtilSample]:
        raise NotSupported("nvmlDeviceGetSamples", "no samples on this GPU (simulated)")


def run(cycle: DutyCycle, minutes: float, samples: bool, tick_offset: float) -> tuple[float, ...]:
    """(counter rate, 15 s gauge mean, truth) over the window.

    The sampler ticks every second at ``tick_offset`` past the second, scrapes come on whole
    seconds: a scrape sees the snapshot of the last tick, as in production (up to 1 s old).
    """
    base = 1_700_000_000.0
    clock = Clock(base)
    backend = (SimulatedNvml if samples else NoSamples)(1, script=(cycle,), clock=clock)
    sampler = Sampler(backend, interval=1.0, clock=clock, wall_clock=clock, timer=clock)
    n = int(minutes * 60 / SCRAPE) + 1
    next_tick = base + tick_offset
    scrape_times = [base + 60.0 + k * SCRAPE for k in range(n)]
    scrapes: list[tuple[float, float, float]] = []
    while len(scrapes) < n:
        due = scrape_times[len(scrapes)]
        if next_tick <= due:
            clock.now = next_tick
            sampler.sample_once()
            next_tick += 1.0
        else:
            clock.now = due
            gpu = sampler.snapshot.gpus[0]
            scrapes.append((due, gpu.busy_seconds or 0.0, gpu.utilization_ratio or 0.0))
    (t0, c0, _), (t1, c1, _) = scrapes[0], scrapes[-1]
    gauge = sum(g for _, _, g in scrapes[1:]) / (n - 1)
    return (c1 - c0) / (t1 - t0), gauge, backend.true_busy_seconds(0, t0, t1) / (t1 - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--phases", type=int, default=12)
    args = p.parse_args(argv)
    started = time.perf_counter()
    rows = []
    worst = {"samples": 0.0, "rates": 0.0, "gauge": 0.0}
    for fraction in FRACTIONS:
        for burst in BURSTS:
            period = burst / fraction
            errors: dict[str, list[float]] = {"samples": [], "rates": [], "gauge": []}
            for k in range(args.phases):
                # Irrational-ish phase steps: bursts land anywhere against the 1/6 s grid.
                cycle = DutyCycle(period, burst, phase_s=(k * 0.7071) % period)
                offset = (0.05 + k * 0.3819) % 1.0  # where in the second the sampler ticks
                rate, gauge, truth = run(cycle, args.minutes, samples=True, tick_offset=offset)
                errors["samples"].append(abs(rate - truth) * 100)
                errors["gauge"].append(abs(gauge - truth) * 100)
                rate_fb, _, truth_fb = run(cycle, args.minutes, samples=False, tick_offset=offset)
                errors["rates"].append(abs(rate_fb - truth_fb) * 100)
            for key, values in errors.items():
                worst[key] = max(worst[key], max(values))
            rows.append(
                [
                    f"{fraction:.0%}",
                    f"{burst * 1000:.0f} ms / {period:.2f} s",
                    *(
                        f"{sum(v) / len(v):.2f} / {max(v):.2f}"
                        for v in (errors["samples"], errors["rates"], errors["gauge"])
                    ),
                ]
            )
    print(f"machine: {machine()}")
    print(
        f"command: python bench/idle_fidelity.py --minutes {args.minutes:g} --phases {args.phases}"
    )
    print(
        f"window {args.minutes:g} min, sampler every 1 s, scrapes every {SCRAPE:g} s, "
        f"{args.phases} burst phases per row; cells: mean / worst absolute error, "
        "percentage points"
    )
    print()
    print(
        table(
            ["busy", "burst / period", "counter (samples)", "counter (rates)", "15 s gauge"],
            rows,
        )
    )
    print()
    print(
        f"worst over all rows: counter (samples) {worst['samples']:.2f} pp, counter (rates) "
        f"{worst['rates']:.2f} pp, 15 s gauge {worst['gauge']:.2f} pp"
    )
    print(f"({time.perf_counter() - started:.0f} s of computation, fake clock)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
