"""Ray's actor export events as a wake-up call: poll when an actor changes, not at the next tick.

A Ray cluster started with ``RAY_enable_export_api_write_config=EXPORT_ACTOR`` (or
``RAY_enable_export_api_write=1``; ray ``python/ray/_private/ray_constants.py``) has its GCS
append one JSON line per actor state change to
``<temp dir>/session_latest/logs/export_events/event_EXPORT_ACTOR.log``. The line is written as
the state changes, so an inotify watch on that file tells the daemon at once that a server came
or went. The file is only a doorbell: what is written still comes from the state API, so a
line's content is never parsed (it is a stranger's text) and a missing or rotated file costs
nothing but the quiet poll interval.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)

ACTOR_EVENTS_FILE = "event_EXPORT_ACTOR.log"
# Relative to a session directory (ray _private/event/export_event_logger.py: the export
# events go to <session>/logs/export_events).
EVENTS_DIR = Path("logs") / "export_events"


def actor_events_dir(ray_temp_dir: Path) -> Path | None:
    """The export-events directory of the newest session, or None while Ray writes none."""
    try:
        session = (ray_temp_dir / "session_latest").resolve(strict=True)
    except OSError:
        return None
    events = session / EVENTS_DIR
    return events if (events / ACTOR_EVENTS_FILE).is_file() else None


class _ActorEventsHandler(FileSystemEventHandler):
    def __init__(self, on_event: Callable[[], None]) -> None:
        self.on_event = on_event

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write", "closed"):
            return
        if os.path.basename(os.fsdecode(event.src_path)) == ACTOR_EVENTS_FILE:
            self.on_event()


class ActorEventWatch:
    """Calls ``on_actor_event()`` (from watchdog's thread; it should only wake the poll) each
    time Ray appends to the newest session's actor export events.

    ``refresh()`` follows a new session (a Ray restart, or export events switched on later);
    the service calls it once per poll, where it costs a readlink and a stat."""

    def __init__(self, ray_temp_dir: Path, on_actor_event: Callable[[], None]) -> None:
        self.ray_temp_dir = ray_temp_dir
        self._on_actor_event = on_actor_event
        self._lock = threading.Lock()
        self._observer: Any = None
        self._watched: Path | None = None

    @property
    def watched(self) -> Path | None:
        """The export-events directory watched now (None: Ray writes no actor events)."""
        return self._watched

    @property
    def ringing(self) -> bool:
        """Whether Ray has written actor events in the watched session: Ray 2.60 creates the
        file, empty, whether or not export events are on, so a watched file alone says
        nothing. A stat."""
        watched = self._watched
        if watched is None:
            return False
        try:
            return (watched / ACTOR_EVENTS_FILE).stat().st_size > 0
        except OSError:
            return False

    def refresh(self) -> None:
        events_dir = actor_events_dir(self.ray_temp_dir)
        with self._lock:
            if events_dir == self._watched:
                return
            self._stop_observer()
            if events_dir is None:
                log.info("Ray writes no actor export events: new servers are seen at the next poll")
                return
            observer = Observer()
            try:
                observer.schedule(
                    _ActorEventsHandler(self._on_actor_event), str(events_dir), recursive=False
                )
                observer.daemon = True
                observer.start()
            except OSError as exc:  # inotify limits, or the session removed meanwhile
                log.warning("cannot watch Ray's actor export events in %s: %s", events_dir, exc)
                return
            self._observer, self._watched = observer, events_dir
            log.info(
                "watching Ray's actor export events in %s: a server is seen as it starts",
                events_dir,
            )

    def stop(self) -> None:
        with self._lock:
            self._stop_observer()

    def _stop_observer(self) -> None:
        observer, self._observer, self._watched = self._observer, None, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
