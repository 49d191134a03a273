"""A child process's output (the Ray bridge's driver), as one log line per event.

Ray's driver writes Python tracebacks and C++ stack dumps (glog's ``*** StackTrace
Information ***`` and a frame per line) to stderr. Passed through as they are, one
``InvalidAuthToken`` puts thirty lines into the daemon's log, none of which says which event
it belongs to. Here the child's stdout and stderr go to a pipe; a thread reads it, groups the
lines into events (a traceback with its final exception line, a message with its indented or
stack-frame continuation lines) and logs each event as one WARNING line: the line that says
what happened, and how many lines it stood for. The whole text goes to DEBUG.
"""

from __future__ import annotations

import logging
import os
import re
import select
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# What continues the event before it: indentation, a glog stack dump and its frames.
_CONTINUATION = re.compile(r"(?:\s|\*\*\* |/\S*\(|\[0x|0x[0-9a-f]+ |@ )")
_TRACEBACK = "Traceback (most recent call last)"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
_MAX_LINE = 500
_MAX_EVENT_LINES = 1000
# An event whose last line came this long ago is complete.
_QUIET_SECONDS = 0.5


class EventLines:
    """Groups lines into events; ``emit(summary, lines)`` once per event."""

    def __init__(self, emit: Callable[[str, list[str]], None]) -> None:
        self._emit = emit
        self._lines: list[str] = []
        self._summary = ""
        self._in_traceback = False

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line.strip():
            if not self._in_traceback:
                self.flush()
            return
        if line.startswith(_TRACEBACK):
            if not self._in_traceback:
                self.flush()
                self._in_traceback = True
            self._add(line)
            return
        if self._in_traceback:
            if not _CONTINUATION.match(line) and not line.startswith(_CHAINED):
                self._summary = line  # the exception line: what happened; the end of it
                self._in_traceback = False
            self._add(line)
            return
        if self._lines and _CONTINUATION.match(line):
            self._add(line)
            return
        self.flush()
        self._summary = line
        self._add(line)

    def _add(self, line: str) -> None:
        if len(self._lines) < _MAX_EVENT_LINES:
            self._lines.append(line)

    def flush(self) -> None:
        if self._lines:
            summary = self._summary or self._lines[-1]
            self._emit(summary[:_MAX_LINE], self._lines)
        self._lines, self._summary, self._in_traceback = [], "", False

    @property
    def pending(self) -> bool:
        return bool(self._lines)


def follow(fd: int, who: str, on_event: Callable[[str], None] | None = None) -> threading.Thread:
    """Read ``fd`` (a pipe's read end, owned from now on) until EOF on a daemon thread; log
    each event as one line naming ``who``; ``on_event(summary)`` sees each too."""

    def emit(summary: str, lines: list[str]) -> None:
        more = f" (+{len(lines) - 1} lines at DEBUG)" if len(lines) > 1 else ""
        log.warning("%s: %s%s", who, summary, more)
        if more:
            log.debug("%s, whole output:\n%s", who, "\n".join(lines))
        if on_event is not None:
            on_event(summary)

    def run() -> None:
        events = EventLines(emit)
        buffered = b""
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], _QUIET_SECONDS)
                if not ready:
                    if events.pending:
                        events.flush()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buffered += chunk
                *complete, buffered = buffered.split(b"\n")
                for raw in complete:
                    events.feed(raw.decode("utf-8", "replace"))
                if len(buffered) > 65536:  # a line without end: take it as it is
                    events.feed(buffered.decode("utf-8", "replace"))
                    buffered = b""
        except OSError:
            pass
        finally:
            if buffered:
                events.feed(buffered.decode("utf-8", "replace"))
            events.flush()
            os.close(fd)

    thread = threading.Thread(target=run, name=f"output of {who}", daemon=True)
    thread.start()
    return thread
