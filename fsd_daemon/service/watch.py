"""File watching (watchdog): the config file, the output directory, Ray's temp directory.

The watcher knows nothing of the daemon: it calls the callbacks it is given, from watchdog's
threads, and those callbacks only set flags and wake the service's loop. Our own writes produce
events too (the rename of a temp file onto a target file): they cost a stat, because a restore
only writes when the file differs from what was written last.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)

# Editors write a config in several steps (truncate, write, rename): wait for the last one.
CONFIG_DEBOUNCE_SECONDS = 0.3


def _paths(event: FileSystemEvent) -> list[str]:
    paths = [os.fsdecode(event.src_path)]
    dest = getattr(event, "dest_path", "")
    if dest:
        paths.append(os.fsdecode(dest))
    return paths


def _is_read(event: FileSystemEvent) -> bool:
    return event.event_type in ("opened", "closed_no_write")


class _OutputDirHandler(FileSystemEventHandler):
    def __init__(self, root: str, names: frozenset[str], on_change: Callable[[str], None]) -> None:
        self.root = root
        self.names = names
        self.on_change = on_change
        # Set once the watched directory itself is deleted or moved away: this watch is dead
        # from then on (watchdog stops its emitter), whatever the path holds later.
        self.root_gone = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if _is_read(event):
            return
        paths = _paths(event)
        if self.root in paths and event.event_type in ("deleted", "moved"):
            # The directory itself removed or moved away: every file in it is gone, and
            # refresh() must watch whatever directory takes its path.
            self.root_gone.set()
            for name in sorted(self.names):
                self.on_change(name)
            return
        if event.is_directory:
            return
        for path in paths:
            name = os.path.basename(path)
            if name in self.names:
                self.on_change(name)


class _ConfigHandler(FileSystemEventHandler):
    def __init__(self, config_path: Path, on_change: Callable[[], None]) -> None:
        self.config_path = config_path
        self.on_change = on_change
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if _is_read(event):
            return
        if not any(Path(p).absolute() == self.config_path for p in _paths(event)):
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(CONFIG_DEBOUNCE_SECONDS, self.on_change)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()


class _SessionHandler(FileSystemEventHandler):
    """Ray's temp dir: a new session_latest link means Ray restarted."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if any(os.path.basename(p) == "session_latest" for p in _paths(event)):
            self.on_change()


def _dir_id(path: Path | None) -> tuple[int, int] | None:
    """(device, inode) of a directory; None when missing or not a directory."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


@dataclass(frozen=True)
class WatchPlan:
    """What to watch; a None path is not watched."""

    output_dir: Path | None = None
    managed_files: frozenset[str] = frozenset()
    config_file: Path | None = None
    ray_temp_dir: Path | None = None


class Watcher:
    """Watches what a :class:`WatchPlan` names and calls back:
    ``on_target_file(name)`` for a managed file touched by anyone, ``on_config()`` once per
    edit of the config file (debounced), ``on_ray_session()`` when session_latest changes."""

    def __init__(
        self,
        plan: WatchPlan,
        *,
        on_target_file: Callable[[str], None],
        on_config: Callable[[], None],
        on_ray_session: Callable[[], None],
    ) -> None:
        self.plan = plan
        self._on_target_file = on_target_file
        self._on_config = on_config
        self._on_ray_session = on_ray_session
        self._observer: Any = None
        self._config_handler: _ConfigHandler | None = None
        self._output_dir_handler: _OutputDirHandler | None = None
        self._output_dir_id: tuple[int, int] | None = None

    def start(self) -> None:
        plan = self.plan
        observer = Observer()
        watched: list[str] = []
        self._output_dir_id = _dir_id(plan.output_dir)
        self._output_dir_handler = None
        if plan.output_dir is not None and self._output_dir_id is not None:
            root = os.fsdecode(os.path.abspath(plan.output_dir))
            handler = _OutputDirHandler(root, plan.managed_files, self._on_target_file)
            observer.schedule(handler, root, recursive=False)
            self._output_dir_handler = handler
            watched.append(root)
        if plan.config_file is not None:
            config_path = plan.config_file.absolute()
            if config_path.parent.is_dir():
                self._config_handler = _ConfigHandler(config_path, self._on_config)
                observer.schedule(self._config_handler, str(config_path.parent), recursive=False)
                watched.append(str(config_path))
        if plan.ray_temp_dir is not None and plan.ray_temp_dir.is_dir():
            handler_s = _SessionHandler(self._on_ray_session)
            observer.schedule(handler_s, str(plan.ray_temp_dir), recursive=False)
            watched.append(str(plan.ray_temp_dir))
        if not watched:
            return
        observer.daemon = True
        observer.start()
        self._observer = observer
        log.debug("watching %s", ", ".join(watched))

    def refresh(self) -> bool:
        """Watch the output directory again if it was removed and made anew (or was missing
        at start): inotify watches an inode, not a path. A stat; called once per loop step.
        True when it watches a new directory: what happened there before is not seen.

        The watch's own word that its directory went counts as much as the stat: a directory
        made again at once often gets the freed inode number back (ext4 does), so the same
        (device, inode) does not prove the same directory."""
        if self.plan.output_dir is None:
            return False
        handler = self._output_dir_handler
        gone = handler is not None and handler.root_gone.is_set()
        if gone or _dir_id(self.plan.output_dir) != self._output_dir_id:
            self.stop()
            self.start()
            return True
        return False

    def replan(self, plan: WatchPlan) -> None:
        if plan == self.plan and self._observer is not None:
            return
        self.stop()
        self.plan = plan
        self.start()

    def stop(self) -> None:
        if self._config_handler is not None:
            self._config_handler.cancel()
            self._config_handler = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None


def plan_for(
    output_dir: str | None,
    managed_files: Iterable[str],
    config_file: str | None,
    ray_temp_dir: str | None,
) -> WatchPlan:
    return WatchPlan(
        output_dir=Path(output_dir) if output_dir else None,
        managed_files=frozenset(managed_files),
        config_file=Path(config_file) if config_file else None,
        ray_temp_dir=Path(ray_temp_dir) if ray_temp_dir else None,
    )
