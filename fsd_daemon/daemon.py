"""The daemon loop: poll, reconcile, render, write; back off on errors; obey signals.

One thread does all the work (polls, writes, restores, reloads), so no lock guards the state;
signal handlers and file watchers only set flags and wake it.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fsd_daemon.config import Config, ConfigError, parse_listen
from fsd_daemon.discovery.base import ClusterSnapshot, ClusterSource, Resolver, SourceError
from fsd_daemon.process import handled_signals, set_log_level
from fsd_daemon.reconcile import RAY_FILE, ROLLOUT_FILE, Desired, Reconciler, summarize_changes
from fsd_daemon.render import Target, render
from fsd_daemon.sdnotify import SystemdNotifier
from fsd_daemon.selfmetrics import Health, SelfMetrics
from fsd_daemon.writer import TargetFileWriter, WriteError

log = logging.getLogger(__name__)

# How each file's changes are summarised in the log: noun, grouping label, group name.
_CHANGE_LOG = {
    "rollout.json": ("rollout", "ray_job_id", "job"),
    "gpu.json": ("gpu exporter", "node_ip", "node"),
    "ray.json": ("ray metrics", "node_ip", "node"),
}


# Files whose content needs the resolver (server addresses, node ports). Until the resolver has
# answered once they are not written: a restarted daemon must not replace a good rollout.json
# with one that lacks every address it has not re-learnt yet.
_RESOLVED_FILES = frozenset({ROLLOUT_FILE, RAY_FILE})
_RESOLVER_WARMUP_SECONDS = 30.0


@dataclass
class PollResult:
    ok: bool
    changed: list[str] = field(default_factory=list)
    error: str = ""


def default_components(config: Config) -> tuple[ClusterSource, Resolver]:
    """Ray's state API plus the bridge; or a cluster file for ``ray.address = "file:PATH"``."""
    from fsd_daemon.discovery.ray_bridge import RayBridge
    from fsd_daemon.discovery.ray_state import RayStateSource
    from fsd_daemon.discovery.static import STATIC_PREFIX, StaticCluster

    if config.ray.address.startswith(STATIC_PREFIX):
        cluster = StaticCluster(config.ray.address.removeprefix(STATIC_PREFIX))
        return cluster, cluster

    source = RayStateSource(
        config.ray.address,
        timeout=config.ray.request_timeout_seconds,
        actor_limit=config.ray.actor_limit,
        node_limit=config.ray.node_limit,
    )
    return source, RayBridge(config.ray.address, timeout=config.ray.resolve_timeout_seconds)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        source: ClusterSource | None = None,
        resolver: Resolver | None = None,
        config_loader: Callable[[], Config] | None = None,
        config_path: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        if source is None or resolver is None:
            default_source, default_resolver = default_components(config)
            source = source or default_source
            resolver = resolver or default_resolver
        self.source = source
        self.resolver = resolver
        self._config_loader = config_loader
        self.config_path = config_path
        self._clock = clock
        self.reconciler = Reconciler(config, clock=clock)
        self.writer = TargetFileWriter(config.daemon.output_dir)
        self.metrics = SelfMetrics()
        self.health = Health(self._stale_after(config))
        self.notifier = SystemdNotifier()
        self._written_targets: dict[str, tuple[Target, ...]] = {}
        self._dropped_reported: dict[tuple[str, str], int] = {}
        self._desired: Desired | None = None
        self._unwritten: set[str] = set()
        self._head_node: str | None = None
        self._started = clock()
        self._resolver_warm = False
        self._failures = 0
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self._restore: set[str] = set()
        self._restore_lock = threading.Lock()
        self._metrics_server: Any = None
        self._watcher: Any = None

    @staticmethod
    def _stale_after(config: Config) -> float:
        return max(3 * config.daemon.poll_interval_seconds, config.daemon.max_backoff_seconds) + 5

    # -- requests from signal handlers and watchers (any thread) ------------------------------

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def wake(self) -> None:
        """Poll now rather than at the next tick (Ray's session link changed)."""
        self._wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def request_restore(self, name: str) -> None:
        with self._restore_lock:
            self._restore.add(name)
        self._wake.set()

    # -- one poll ----------------------------------------------------------------------------

    def poll(self) -> PollResult:
        """One pass: list, reconcile, write what changed. Never raises for Ray or disk trouble."""
        started = time.perf_counter()
        try:
            return self._poll()
        finally:
            self.metrics.poll_duration.observe(time.perf_counter() - started)

    def _poll(self) -> PollResult:
        try:
            snapshot = self.source.snapshot()
        except SourceError as exc:
            self._failures += 1
            self.metrics.poll_errors.labels(exc.kind).inc()
            self.health.problem("ray", f"{exc.kind}: {exc}")
            # Invariant: a failed poll changes no file. The last good files stay until Ray
            # answers again; that is the whole point of not trusting an error as "empty".
            if self._failures == 1 or self._failures % 30 == 0:
                log.warning(
                    "Ray poll failed (%d in a row), keeping the files as they are: %s",
                    self._failures,
                    exc,
                )
            return PollResult(ok=False, error=str(exc))
        if self._failures:
            log.info("Ray answers again after %d failed polls", self._failures)
        self._failures = 0
        self.health.clear("ray")
        self._check_session(snapshot)
        self.metrics.truncated.set(1 if snapshot.truncated else 0)
        resolver_ready = bool(getattr(self.resolver, "ready", True))
        desired = self.reconciler.apply(snapshot, self.resolver)
        if not self._resolver_warm and (
            resolver_ready or self._clock() - self._started > _RESOLVER_WARMUP_SECONDS
        ):
            self._resolver_warm = True
        self.metrics.servers.set(self.reconciler.server_count)
        for key, count in self.reconciler.dropped_counts.items():
            reported = self._dropped_reported.get(key, 0)
            if count > reported:
                self.metrics.dropped.labels(*key).inc(count - reported)
                self._dropped_reported[key] = count
        if desired is not None:
            self._desired = desired
            self._unwritten = set(desired.files)
        changed = self._write_pending()
        self.health.succeeded()
        self.metrics.last_success.set(time.time())
        return PollResult(ok=True, changed=changed)

    def _check_session(self, snapshot: ClusterSnapshot) -> None:
        head = next((n.node_id for n in snapshot.nodes if n.is_head), None)
        if head is None:
            return
        if self._head_node is not None and head != self._head_node:
            # A new head node id means Ray was restarted: every actor id, address and port of
            # the old session is meaningless now, and the bridge's driver is connected to a
            # cluster that no longer exists.
            log.info("Ray restarted (head node %s -> %s): starting over", self._head_node, head)
            self.reconciler.reset()
            restart = getattr(self.resolver, "restart", None)
            if restart is not None:
                restart()
        self._head_node = head

    def _write_pending(self) -> list[str]:
        changed: list[str] = []
        if self._desired is None:
            return changed
        for name in sorted(self._unwritten):
            if name in _RESOLVED_FILES and not self._resolver_warm:
                continue
            targets = self._desired.files[name]
            try:
                wrote = self.writer.write(name, render(targets))
            except WriteError as exc:
                self.metrics.poll_errors.labels("write").inc()
                self.health.problem(f"write:{name}", str(exc))
                log.error("%s; the previous file stays, retrying next poll", exc)
                continue
            self._unwritten.discard(name)
            self.health.clear(f"write:{name}")
            self.metrics.targets.labels(name).set(len(targets))
            if wrote:
                changed.append(name)
                self.metrics.writes.labels(name).inc()
                self._log_changes(name, targets)
            self._written_targets[name] = targets
        return changed

    def _log_changes(self, name: str, targets: tuple[Target, ...]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # the diff costs tens of ms at 10,000 targets; skip it when nobody reads it
        noun, label, group = _CHANGE_LOG.get(name, (name, "job", "job"))
        lines = summarize_changes(self._written_targets.get(name, ()), targets, noun, label, group)
        if lines:
            log.info("%s: %s (%d in all)", name, ", ".join(lines), len(targets))
        else:
            log.info("wrote %s (%d targets)", name, len(targets))

    # -- restores and reloads ------------------------------------------------------------------

    def _do_restores(self) -> None:
        with self._restore_lock:
            names, self._restore = self._restore, set()
        for name in sorted(names):
            if name in self._unwritten:
                continue  # a pending write will put the right content there anyway
            try:
                if self.writer.restore(name):
                    self.metrics.restores.labels(name).inc()
                    log.warning("restored %s (deleted or changed by someone else)", name)
            except WriteError as exc:
                self.health.problem(f"write:{name}", str(exc))
                log.error("restoring %s failed: %s", name, exc)

    def reload_config(self) -> bool:
        """Load the config again; a broken one is refused and the running config stays."""
        if self._config_loader is None:
            return False
        try:
            new = self._config_loader()
        except ConfigError as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
            return False
        self.apply_config(new)
        log.info("config reloaded")
        return True

    def apply_config(self, new: Config) -> None:
        old, self.config = self.config, new
        self.reconciler.reconfigure(new)
        if new.daemon.output_dir != old.daemon.output_dir:
            log.info("output directory %s -> %s", old.daemon.output_dir, new.daemon.output_dir)
            self.writer = TargetFileWriter(new.daemon.output_dir)
            self.writer.prepare()
            self._written_targets.clear()
        if new.ray != old.ray:
            self.resolver.close()
            self.source, self.resolver = default_components(new)
        self.health.stale_after_seconds = self._stale_after(new)
        set_log_level(new.daemon.log_level)
        if self._watcher is not None:
            self._watcher.reconfigure(new)
        if new.daemon.metrics_listen != old.daemon.metrics_listen:
            self._stop_metrics_server()
            self._start_metrics_server()

    # -- the loop ------------------------------------------------------------------------------

    def next_delay(self, result: PollResult) -> float:
        interval = self.config.daemon.poll_interval_seconds
        if result.ok:
            return interval
        # Exponential backoff with "equal jitter": never less than half the step, so a
        # restarted cluster is not hit by every daemon at once, and never above the cap.
        step = min(self.config.daemon.max_backoff_seconds, interval * 2 ** (self._failures - 1))
        return step / 2 + random.uniform(0, step / 2)

    def run(self, *, once: bool = False, watch: bool = True) -> int:
        self.writer.prepare()
        if once:
            return self._run_once()
        self._start_metrics_server()
        if watch:
            self._start_watcher()
        # SIGTERM/SIGINT stop after the current step; SIGHUP reloads the config.
        signals = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGHUP: self.request_reload,
        }
        with handled_signals(signals):
            self.notifier.notify(READY=1, STATUS="started, first poll")
            log.info(
                "fsd-daemon started: Ray %s, writing %s every %.1fs",
                self.config.ray.address,
                self.config.daemon.output_dir,
                self.config.daemon.poll_interval_seconds,
            )
            try:
                self._loop()
            finally:
                self.shutdown()
        return 0

    def _loop(self) -> None:
        next_poll = self._clock()
        while not self._stop:
            if self._reload:
                self._reload = False
                self.notifier.notify(RELOADING=1)
                self.reload_config()
                self.notifier.notify(READY=1)
                next_poll = self._clock()
            if self._restore:
                self._do_restores()
            now = self._clock()
            if now >= next_poll:
                result = self.poll()
                self._after_poll(result)
                next_poll = self._clock() + self.next_delay(result)
            self.notifier.notify(WATCHDOG=1)
            wait = max(0.0, next_poll - self._clock())
            # Backoff after failures may be longer than WatchdogSec: ping while waiting (the
            # interval is already half of WATCHDOG_USEC), so only a stuck loop gets restarted.
            if self.notifier.watchdog_interval is not None:
                wait = min(wait, self.notifier.watchdog_interval)
            self._wake.wait(timeout=wait)
            self._wake.clear()

    def _after_poll(self, result: PollResult) -> None:
        healthy, _details = self.health.check()
        self.metrics.healthy.set(1 if healthy else 0)
        if self._watcher is not None:
            self._watcher.after_poll()
        counts = {name: len(t) for name, t in self._written_targets.items()}
        state = "ok" if result.ok else f"Ray unreachable ({self._failures} failed polls)"
        summary = ", ".join(
            f"{n} {name.removesuffix('.json')}" for name, n in sorted(counts.items())
        )
        self.notifier.notify(STATUS=f"{state}; targets: {summary or 'none yet'}")

    def _run_once(self) -> int:
        """One pass for ``run --once``: give slow address resolution a few rounds, then write."""
        deadline = self._clock() + self.config.ray.resolve_timeout_seconds + 10
        wait_ready = getattr(self.resolver, "wait_ready", None)
        if wait_ready is not None:
            wait_ready(max(0.0, deadline - self._clock()))
        result = self.poll()
        if not result.ok:
            log.error("Ray could not be reached: %s", result.error)
            return 1
        while self.reconciler.has_unresolved() and self._clock() < deadline:
            result = self.poll()
            if not result.ok:
                return 1
            if self.reconciler.has_unresolved():
                time.sleep(0.2)
        self._resolver_warm = True  # write what is known, even if some servers never answered
        self._write_pending()
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        self.notifier.notify(STOPPING=1)
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._stop_metrics_server()
        self.resolver.close()
        self.notifier.close()

    def _start_metrics_server(self) -> None:
        listen = self.config.daemon.metrics_listen
        if not listen:
            return
        from fsd_daemon.httpserve import MetricsServer

        host, port = parse_listen(listen, "daemon.metrics_listen")
        self._metrics_server = MetricsServer(host, port, self.metrics.registry, self.health.check)
        self._metrics_server.start()
        log.info("self-metrics on http://%s/metrics and /healthz", listen)

    def _stop_metrics_server(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None

    def _start_watcher(self) -> None:
        try:
            from fsd_daemon.watch import DaemonWatcher
        except ImportError:  # pragma: no cover - watch.py ships with the package
            return
        self._watcher = DaemonWatcher(self)
        self._watcher.start()


__all__ = ["ROLLOUT_FILE", "Daemon", "PollResult"]
