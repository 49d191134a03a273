"""The capped backoff and the periodic worker shared by the daemon and the exporter."""

from __future__ import annotations

import threading

from fsd_daemon.plumbing.backoff import Backoff, backoff_step
from fsd_daemon.plumbing.periodic import PeriodicWorker


def test_backoff_doubles_then_caps() -> None:
    assert [backoff_step(n, 2.0, 30.0) for n in range(7)] == [0, 2, 4, 8, 16, 30, 30]


def test_backoff_never_overflows() -> None:
    """A six-hour outage at one failure a second: 2 ** n alone raises OverflowError near
    n = 1024; the capped step stays at the cap."""
    for failures in (1_023, 1_024, 1_025, 21_600, 10**9):
        assert backoff_step(failures, 2.0, 30.0) == 30.0
    b = Backoff(2.0, 30.0)
    for _ in range(5_000):
        delay = b.failed()
    assert 15.0 <= delay <= 30.0
    b.succeeded()
    assert b.delay() == 0.0


def test_backoff_without_jitter_and_tiny_cap() -> None:
    assert Backoff(1.0, 0.5, jitter=False).failed() == 0.5


def test_periodic_worker_survives_a_failing_step() -> None:
    calls: list[int] = []
    done = threading.Event()

    def step() -> float:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first step fails")
        if len(calls) >= 3:
            done.set()
        return 0.01

    worker = PeriodicWorker("test-worker", step, interval=0.01).start()
    try:
        assert done.wait(5)
    finally:
        worker.stop()
    assert not worker.running
