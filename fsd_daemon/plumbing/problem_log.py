"""A persisting condition (a disk that stays full, Ray that stays away), logged without noise.

Logged once when it starts, again every ``repeat_seconds`` while it lasts (with how long it has
lasted), and once when it ends. A condition that merely continues is not news; logging it at
every poll buries the line that says when it began.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ProblemLog:
    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        ended: str = "",
        level: int = logging.WARNING,
        repeat_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger
        self.what = what
        self.ended = ended or f"{what}: no more"
        self.level = level
        self.repeat_seconds = repeat_seconds
        self._clock = clock
        self._since: float | None = None
        self._last_logged = 0.0
        self._count = 0
        self._cause = ""
        self.message = ""

    @property
    def active(self) -> bool:
        return self._since is not None

    def failing(self, message: str, cause: str = "") -> None:
        """The condition holds (again) now; ``message`` says how. A different ``cause`` (the
        GCS down, then the token rejected) is news: logged at once, so that the last line
        logged always names what is wrong now."""
        now = self._clock()
        self._count += 1
        self.message = message
        changed, self._cause = cause != self._cause, cause
        if self._since is None:
            self._since, self._last_logged = now, now
            self.log.log(self.level, "%s: %s", self.what, message)
        elif changed:
            self._last_logged = now
            self.log.log(self.level, "%s for %.0fs, now: %s", self.what, now - self._since, message)
        elif now - self._last_logged >= self.repeat_seconds:
            self._last_logged = now
            self.log.log(
                self.level,
                "%s for %.0fs (%d times): %s",
                self.what,
                now - self._since,
                self._count,
                message,
            )

    def fine(self) -> None:
        """The condition no longer holds; says so once if it did."""
        if self._since is None:
            return
        lasted = self._clock() - self._since
        self.log.info("%s, after %.0fs (%d times)", self.ended, lasted, self._count)
        self._since, self._count, self.message, self._cause = None, 0, "", ""
