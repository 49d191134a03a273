"""Busy time as a counter: rate() of fsd_gpu_busy_seconds_total is the true busy fraction;
a utilization gauge scraped every 15 s is not.

The driver is the simulated one on a fake clock, so the truth is known exactly; everything
from the driver's samples to the rendered exposition is the production code.
"""

from __future__ import annotations

import random

import pytest

from fsd_daemon.gpu.backend import UtilSample
from fsd_daemon.gpu.busy import RateIntegrator, SampleIntegrator
from fsd_daemon.gpu.sampler import Sampler
from fsd_daemon.gpu.simulated import DutyCycle, SimulatedNvml
from tests.gpu.helpers import FakeClock, one, parse, render

SCRAPE_INTERVAL = 15.0
WINDOW = 600.0  # ten minutes of rate()


def scrape_run(cycle: DutyCycle, scrape_offset: float) -> tuple[float, float, float]:
    """Sample every 1 s and scrape every 15 s (from ``scrape_offset``) for 11 minutes.

    Returns (counter rate over the window, mean of the gauge over the window's scrapes, truth).
    """
    clock = FakeClock(1_700_000_000.0)
    sim = SimulatedNvml(1, script=(cycle,), clock=clock)
    sampler = Sampler(sim, interval=1.0, clock=clock, wall_clock=clock, timer=clock)
    start = clock.now
    next_scrape = start + 60.0 + scrape_offset  # let the exporter run a minute first
    scrapes: list[tuple[float, float, float]] = []  # (time, counter, gauge)
    while len(scrapes) < WINDOW / SCRAPE_INTERVAL + 1:
        sampler.sample_once()
        if clock.now >= next_scrape:
            series = parse(render(sampler))
            scrapes.append(
                (
                    clock.now,
                    one(series, "fsd_gpu_busy_seconds_total", gpu="0"),
                    one(series, "fsd_gpu_utilization_ratio", gpu="0"),
                )
            )
            next_scrape += SCRAPE_INTERVAL
        clock.advance(0.25 if clock.now + 1.0 > next_scrape else 1.0)  # land on the scrape
    (t0, c0, _), (t1, c1, _) = scrapes[0], scrapes[-1]
    rate = (c1 - c0) / (t1 - t0)
    gauge = sum(g for _, _, g in scrapes[1:]) / (len(scrapes) - 1)
    truth = sim.true_busy_seconds(0, t0, t1) / (t1 - t0)
    return rate, gauge, truth


@pytest.mark.parametrize("scrape_offset", [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
def test_counter_rate_is_within_1pp_of_truth_and_a_15s_gauge_is_not(scrape_offset: float) -> None:
    """300 ms busy every 2 s (15%): rate over 10 min within 1 percentage point of the truth,
    whatever the phase of the scrapes against the bursts; the gauge is off by more."""
    rate, gauge, truth = scrape_run(DutyCycle(2.0, 0.3), scrape_offset)
    assert truth == pytest.approx(0.15, abs=1e-3)
    assert abs(rate - truth) < 0.01, (rate, truth)
    assert abs(gauge - truth) > 0.01, (gauge, truth)


def test_counter_follows_a_slow_long_burst_pattern() -> None:
    """5% busy in 0.5 s bursts every 10 s: still within 1 percentage point."""
    rate, _, truth = scrape_run(DutyCycle(10.0, 0.5, 3.0), 0.0)
    assert abs(rate - truth) < 0.01


# -- the integrators ------------------------------------------------------------------------


def s(t_s: float, percent: float) -> UtilSample:
    return UtilSample(timestamp_us=round(t_s * 1e6), percent=percent)


def test_first_answer_is_history_and_counts_nothing() -> None:
    """The ring buffer's past belongs to before the exporter started."""
    integ = SampleIntegrator()
    integ.feed([s(1.0, 100), s(2.0, 100)])
    assert integ.busy_seconds == 0.0
    assert integ.since_us == 2_000_000


def test_each_period_is_counted_once_despite_repeats_and_duplicates() -> None:
    integ = SampleIntegrator()
    integ.feed([s(1.0, 0)])
    integ.feed([s(1.0, 100), s(2.0, 50), s(2.0, 90), s(3.0, 100)])
    integ.feed([s(2.0, 100), s(3.0, 100)])  # all old: nothing
    assert integ.busy_seconds == pytest.approx(1.5)


def test_a_gap_from_a_stalled_sampler_is_not_extrapolated() -> None:
    """Samples lost to a ring-buffer wrap are uncovered time, not guessed busy time."""
    integ = SampleIntegrator()
    integ.feed([s(0.0, 0), s(1.0, 0), s(2.0, 0)])  # period learnt: 1 s
    integ.feed([s(30.0, 100)])
    assert integ.busy_seconds == pytest.approx(1.0)
    assert integ.uncovered_seconds == pytest.approx(27.0)


def test_rate_integrator_caps_a_long_step() -> None:
    """The fallback holds a reading at most max_step seconds (a stalled sampler)."""
    integ = RateIntegrator(max_step_seconds=3.0)
    integ.feed(50.0, 0.0)
    integ.feed(50.0, 2.0)
    integ.feed(100.0, 60.0)
    assert integ.busy_seconds == pytest.approx(1.0 + 3.0)


def test_a_sampler_starved_of_cpu_loses_no_busy_time() -> None:
    """A sampler that runs late (a node whose CPUs are busy with training) still counts every
    driver period: each read asks for the samples after the last one it saw, so ticks 0.2 s
    to 19 s apart (inside the driver's 20 s buffer) integrate the very samples that ticks
    every second do, and the counter is the same to the microsecond."""
    rng = random.Random(7)
    start = 1_700_000_000.0
    on_time_clock, late_clock = FakeClock(start), FakeClock(start)
    script = (DutyCycle(2.0, 0.3), DutyCycle(0.5, 0.05, 0.1))  # 15% and 10%, bursts of 50 ms
    on_time = Sampler(SimulatedNvml(2, script=script, clock=on_time_clock), clock=on_time_clock)
    late = Sampler(SimulatedNvml(2, script=script, clock=late_clock), clock=late_clock)
    end = start + 600.0
    on_time.sample_once()
    late.sample_once()
    while on_time_clock.now < end:
        on_time_clock.advance(1.0)
        on_time.sample_once()
    while late_clock.now < end:
        late_clock.advance(min(rng.choice((0.2, 1.3, 4.0, 11.0, 19.0)), end - late_clock.now))
        late.sample_once()
    for gpu in (0, 1):
        kept = on_time.snapshot.gpus[gpu].busy_seconds
        assert kept is not None and kept > 10.0
        assert late.snapshot.gpus[gpu].busy_seconds == pytest.approx(kept, abs=1e-6)
        # And both are the script's truth over the window they cover, within 1 point.
        truth = SimulatedNvml(2, script=script).true_busy_seconds(gpu, start, end)
        assert abs(kept - truth) / (end - start) < 0.01
