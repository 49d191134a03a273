"""What every fsd_daemon program does as a process: log to stderr, and handle signals.

Shared by ``fsd-daemon run``, ``fsd-daemon demo`` and ``fsd-gpu-exporter`` so that they log in
one format and stop the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from types import FrameType

log = logging.getLogger("fsd_daemon")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def configure_logging(level: str) -> None:
    # Under systemd, journald stamps each line already.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        stream=sys.stderr, format=f"{stamp}%(levelname)s %(name)s: %(message)s", force=True
    )
    set_log_level(level)


def set_log_level(level: str) -> None:
    logging.getLogger("fsd_daemon").setLevel(level.upper())


@contextlib.contextmanager
def handled_signals(handlers: Mapping[signal.Signals, Callable[[], None]]) -> Iterator[None]:
    """Run ``handlers[signum]()`` (after a log line) when a signal arrives, inside the block;
    the previous handlers come back on leaving it.

    Python handles signals only in the main thread: elsewhere (tests running a loop in a
    thread) the block runs without handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        handlers[signal.Signals(signum)]()

    previous = {signum: signal.signal(signum, handle) for signum in handlers}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
