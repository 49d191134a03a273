"""File watching (watchdog): the config file, the output directory, Ray's temp directory.

Watchdog's threads only set flags on the daemon and wake it; the daemon's own thread does the
work. Our own writes produce events too (the rename of a temp file onto a target file): they
cost a stat, because a restore only writes when the file differs from what we wrote last.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from fsd_daemon.config import Config
from fsd_daemon.promconfig import PatchError, patch_file, reload_prometheus
from fsd_daemon.reconcile import GPU_FILE, RAY_FILE, ROLLOUT_FILE

if TYPE_CHECKING:
    from fsd_daemon.daemon import Daemon

log = logging.getLogger(__name__)

MANAGED_FILES = frozenset({ROLLOUT_FILE, GPU_FILE, RAY_FILE})
# Editors write a config in several steps (truncate, write, rename): wait for the last one.
_CONFIG_DEBOUNCE_SECONDS = 0.3


def _paths(event: FileSystemEvent) -> list[str]:
    paths = [os.fsdecode(event.src_path)]
    dest = getattr(event, "dest_path", "")
    if dest:
        paths.append(os.fsdecode(dest))
    return paths


class _OutputDirHandler(FileSystemEventHandler):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        for path in _paths(event):
            name = os.path.basename(path)
            if name in MANAGED_FILES:
                self.daemon.request_restore(name)


class _ConfigHandler(FileSystemEventHandler):
    def __init__(self, daemon: Daemon, config_path: Path) -> None:
        self.daemon = daemon
        self.config_path = config_path
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if not any(Path(p).absolute() == self.config_path for p in _paths(event)):
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(_CONFIG_DEBOUNCE_SECONDS, self.daemon.request_reload)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()


class _WakeHandler(FileSystemEventHandler):
    """Ray's temp dir: a new session_latest link means Ray restarted; look at once."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def on_any_event(self, event: FileSystemEvent) -> None:
        if any(os.path.basename(p) == "session_latest" for p in _paths(event)):
            self.daemon.wake()


class PrometheusConfigKeeper:
    """Keeps prometheus.yml files patched: a configured one, and Ray's generated one.

    Checked after every poll (a stat and a readlink), so it works without inotify too; the
    watcher only makes a Ray restart be noticed at once rather than at the next poll.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._done: dict[Path, tuple[int, int]] = {}

    def targets(self) -> list[Path]:
        paths = []
        if self.config.prometheus.config_file:
            paths.append(Path(self.config.prometheus.config_file))
        if self.config.prometheus.patch_ray_config:
            latest = Path(self.config.prometheus.ray_temp_dir) / "session_latest"
            try:
                session = latest.resolve(strict=True)
            except OSError:
                return paths
            paths.append(session / "metrics" / "prometheus" / "prometheus.yml")
        return paths

    def check(self) -> None:
        for path in self.targets():
            try:
                st = path.stat()
            except OSError:
                continue  # Ray writes it a moment after the session starts: next time
            signature = (st.st_ino, st.st_mtime_ns)
            if self._done.get(path) == signature:
                continue
            try:
                changed = patch_file(path, self.config)
            except PatchError as exc:
                log.error("cannot patch %s: %s", path, exc)
                self._done[path] = signature  # do not retry until it changes again
                continue
            st = path.stat()
            self._done[path] = (st.st_ino, st.st_mtime_ns)
            if changed:
                log.info("patched %s with the rollout, gpu and ray scrape jobs", path)
                if self.config.prometheus.reload_url:
                    reload_prometheus(self.config.prometheus.reload_url)


class DaemonWatcher:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.keeper = PrometheusConfigKeeper(daemon.config)
        self._observer: Any = None
        self._config_handler: _ConfigHandler | None = None

    def start(self) -> None:
        config = self.daemon.config
        observer = Observer()
        watched = []
        if config.daemon.watch_output_dir:
            out = Path(config.daemon.output_dir)
            observer.schedule(_OutputDirHandler(self.daemon), str(out), recursive=False)
            watched.append(str(out))
        if self.daemon.config_path:
            config_path = Path(self.daemon.config_path).absolute()
            if config_path.parent.is_dir():
                self._config_handler = _ConfigHandler(self.daemon, config_path)
                observer.schedule(self._config_handler, str(config_path.parent), recursive=False)
                watched.append(str(config_path))
        ray_dir = Path(config.prometheus.ray_temp_dir)
        if config.prometheus.patch_ray_config and ray_dir.is_dir():
            observer.schedule(_WakeHandler(self.daemon), str(ray_dir), recursive=False)
            watched.append(str(ray_dir))
        if not watched:
            return
        observer.daemon = True
        observer.start()
        self._observer = observer
        log.debug("watching %s", ", ".join(watched))

    def after_poll(self) -> None:
        self.keeper.check()

    def reconfigure(self, config: Config) -> None:
        self.keeper = PrometheusConfigKeeper(config)
        self.stop()
        self.start()

    def stop(self) -> None:
        if self._config_handler is not None:
            self._config_handler.cancel()
            self._config_handler = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
