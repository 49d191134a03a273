"""Busy time as a counter: integrate what the driver measured, not what a scrape happened to see.

The driver keeps a ring buffer of utilization samples, one per sample period (1/6 s to 1 s by
product); each value is the percent of that period in which a kernel ran. Summing
``value / 100 * period`` over consecutive samples gives the seconds the GPU was busy, so
``rate(fsd_gpu_busy_seconds_total[w])`` is the true busy fraction over any window ``w``, however
bursty the load and whatever the scrape interval. A gauge read every 15 s sees one sample period
out of ninety and can be off by the whole burst.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from fsd_daemon.gpu.backend import UtilSample

# A period longer than this many driver periods means samples were lost between two reads
# (the ring buffer wrapped while the sampler was stalled). A sample's value describes only its
# own period, so the gap is not extrapolated from it.
_GAP_FACTOR = 2.0


class SampleIntegrator:
    """Integrates driver utilization samples into busy seconds (one GPU).

    Invariants: ``last_timestamp_us`` only grows; every driver period is counted at most once;
    samples at or before ``last_timestamp_us`` (repeats, duplicates) add nothing.
    """

    def __init__(self) -> None:
        self.busy_seconds = 0.0
        self.last_timestamp_us: int | None = None
        # Seconds the driver did not cover (samples lost to a stall), for diagnosis and tests.
        self.uncovered_seconds = 0.0
        self._period_us: int | None = None  # the driver's sample period, as last measured

    @property
    def since_us(self) -> int:
        """The timestamp to ask the driver for newer samples than (0 on the first call)."""
        return self.last_timestamp_us or 0

    def feed(self, samples: Iterable[UtilSample]) -> None:
        by_time: dict[int, float] = {}
        for s in samples:
            if self.last_timestamp_us is not None and s.timestamp_us <= self.last_timestamp_us:
                continue
            # Duplicates of one timestamp describe one period: keep the first seen.
            by_time.setdefault(s.timestamp_us, s.percent)
        if not by_time:
            return
        ordered = sorted(by_time.items())
        self._learn_period(ordered)
        previous = self.last_timestamp_us
        self.last_timestamp_us = ordered[-1][0]
        if previous is None:
            # First call: the buffer holds history from before we started watching; counting
            # starts at the newest sample, so the counter starts at 0 with the exporter.
            return
        first_ts, first_percent = ordered[0]
        # Samples inside one answer are consecutive in the driver's ring buffer, so only the
        # span from our last-seen sample to the first new one can hide lost samples.
        span_us = first_ts - previous
        if self._period_us is not None and span_us > _GAP_FACTOR * self._period_us:
            self.uncovered_seconds += (span_us - self._period_us) / 1e6
            span_us = self._period_us
        busy_us = _fraction(first_percent) * span_us
        for (t0, _), (t1, percent) in itertools.pairwise(ordered):
            busy_us += _fraction(percent) * (t1 - t0)
        self.busy_seconds += busy_us / 1e6

    def _learn_period(self, ordered: list[tuple[int, float]]) -> None:
        # The median spacing: robust to one odd timestamp, unlike the minimum or the mean.
        spacings = sorted(t1 - t0 for (t0, _), (t1, _) in itertools.pairwise(ordered))
        if spacings:
            self._period_us = spacings[len(spacings) // 2]


def _fraction(percent: float) -> float:
    return min(max(percent, 0.0), 100.0) / 100.0


class RateIntegrator:
    """Fallback where the driver keeps no samples: the current utilization reading, held over
    the time since the previous read. Approximate (a reading covers only the driver's last
    period), which is why ``fsd_gpu_busy_source_info`` says which method a GPU uses.
    """

    def __init__(self, max_step_seconds: float) -> None:
        self.busy_seconds = 0.0
        self._last_time: float | None = None
        # A stalled sampler must not stretch one reading over minutes.
        self._max_step = max_step_seconds

    def feed(self, percent: float, now: float) -> None:
        if self._last_time is not None:
            step = min(max(now - self._last_time, 0.0), self._max_step)
            self.busy_seconds += _fraction(percent) * step
        self._last_time = now
