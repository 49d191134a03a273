"""The target lists as Prometheus HTTP service discovery (``http_sd_configs``) endpoints.

A Prometheus that is not on the head node cannot read the target files; it can ask the
daemon's own listener (``daemon.metrics_listen``) for the same lists: ``GET /sd/rollout``,
``/sd/gpu``, ``/sd/ray``. The format of an HTTP SD answer is file_sd's JSON list of target
groups (Prometheus ``docs/http_sd.md``), so the answer is the file's bytes, unchanged.

Invariants, the same as the files':
- an endpoint serves exactly the bytes last written to its file (each write renders the whole
  list and is atomic), so it is never half-written and never shows a list the file did not. It
  takes a file's new bytes once that write is complete (renamed, directory fsynced): never
  ahead of the file, and behind it only for that moment;
- before the daemon's first write, it serves what the file held at start (a restarted daemon
  serves the previous run's list, as the file still says it), and where there is no file yet
  it answers 503: Prometheus keeps the targets it had when a refresh fails, so a daemon that
  starts never empties a remote Prometheus;
- a job the config does not write (``targets.write_gpu = false``) is 404, not ``[]``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import orjson

from fsd_daemon.prometheus.sd_routes import SD_FILES, sd_path

log = logging.getLogger(__name__)

# A target file larger than this is not read at start (ours are a few MB at 10,000 targets).
_MAX_SEED_BYTES = 256 * 1024 * 1024

# The bytes last written to a file (None before the first write of this process).
LastWritten = Callable[[str], "bytes | None"]


class HeldTargetLists:
    """What each endpoint serves: the bytes last written to its file, else those the file held
    at start. Thread-safe: requests read it from the listener's threads, the poll writes."""

    def __init__(self, last_written: LastWritten, jobs: Mapping[str, str] | None = None) -> None:
        self._last_written = last_written
        self._jobs = dict(SD_FILES if jobs is None else jobs)
        self._held: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def jobs(self) -> tuple[str, ...]:
        return tuple(self._jobs)

    def seed(self, directory: Path) -> None:
        """Hold what the files in ``directory`` say now, for the time before the first write.
        A file that is missing, unreadable or not a JSON list of groups is not held."""
        for job, name in self._jobs.items():
            path = directory / name
            try:
                if path.stat().st_size > _MAX_SEED_BYTES:
                    continue
                data = path.read_bytes()
                groups = orjson.loads(data)
            except FileNotFoundError:
                continue
            except (OSError, orjson.JSONDecodeError) as exc:
                log.warning("not serving %s from before the start: %s", path, exc)
                continue
            if isinstance(groups, list):
                with self._lock:
                    self._held.setdefault(job, data)

    def get(self, job: str) -> bytes | None:
        """The list to serve for ``job``; None when there is none yet (or no such job)."""
        name = self._jobs.get(job)
        if name is None:
            return None
        current = self._last_written(name)
        with self._lock:
            if current is not None:
                # Kept, so that a writer replaced by a reload (a new output directory, nothing
                # written there yet) does not make the endpoint go back to an older list.
                self._held[job] = current
            return self._held.get(job)

    def routes(self, jobs: Iterable[str]) -> dict[str, Callable[[], bytes | None]]:
        """URL path -> body of each of ``jobs`` (those the config writes: the others are not
        routes, hence 404), for the listener (``fsd_daemon.plumbing.httpserve``)."""
        return {sd_path(job): functools.partial(self.get, job) for job in jobs if job in self._jobs}


__all__ = ["HeldTargetLists"]
