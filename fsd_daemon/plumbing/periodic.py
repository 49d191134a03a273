"""One background worker that calls a function on its own monotonic schedule.

Replaces hand-written ``while not stop: work(); event.wait(interval)`` loops. The function
returns the seconds until its next call (None: the worker's interval), so a worker can back
off or hurry without a loop of its own. An exception in the function is logged and the
worker goes on at its interval: a failing step reports itself, it does not end the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicWorker:
    def __init__(
        self,
        name: str,
        step: Callable[[], float | None],
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.interval = interval
        self._step = step
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PeriodicWorker:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """Run the step now rather than at its next time."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop and wait up to ``timeout`` s; False if the step is still running (stuck)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                wait = self._step()
            except Exception:
                log.exception("%s: step failed; trying again in %.1fs", self.name, self.interval)
                wait = None
            if wait is None:
                # On its own schedule: the step's duration counts against the interval.
                wait = self.interval - (self._clock() - started)
            self._wake.wait(max(0.0, wait))
            self._wake.clear()
