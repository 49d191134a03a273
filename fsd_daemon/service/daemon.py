"""The service around the poll: signals, systemd notify, the metrics listener, file watching,
config reload, the prometheus.yml keeper, and the loop that decides when to poll.

One thread does all the work (polls, writes, restores, reloads, patches), so no lock guards
the poll's state; signal handlers and the watcher's callbacks only set flags and wake it.

Timing: the normal interval while the cluster is quiet; ``fast_poll_interval_seconds`` for
FAST_POLL_WINDOW_SECONDS after a poll that saw the cluster change (servers come in waves: the
next one, or the address of the one just seen, is picked up sooner); the
capped backoff (``fsd_daemon.plumbing.backoff``) while Ray fails slowly (timeouts, errors: it may be
overloaded), but the normal interval while Ray is simply absent (connection refused costs it
nothing), so a Ray that is back is seen within a poll, not at the backoff ceiling. Where Ray
logs actor export events (``fsd_daemon.discovery.ray_events``), each one brings the next poll
forward to at most ACTOR_EVENT_MIN_GAP_SECONDS after the last one began. Between quiet polls
after a good one, a source that is a ``ChangeProbe`` is asked every
``ray.change_probe_interval_seconds`` whether the actors changed; a yes polls at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsd_daemon.config import Config, ConfigError, holds_no_settings, parse_listen
from fsd_daemon.discovery.base import ChangeProbe, ClusterSource, Resolver
from fsd_daemon.discovery.ray_auth import ReloadsAuth
from fsd_daemon.discovery.ray_events import ActorEventWatch
from fsd_daemon.pipeline.poll import Poll, PollResult, ReloadRefused, default_components
from fsd_daemon.pipeline.reconcile import GPU_FILE, RAY_FILE, ROLLOUT_FILE
from fsd_daemon.plumbing.atomic_files import WriteError
from fsd_daemon.plumbing.backoff import Backoff
from fsd_daemon.plumbing.process import handled_signals, set_log_level
from fsd_daemon.plumbing.sdnotify import SystemdNotifier
from fsd_daemon.plumbing.webconfig import BasicAuth, WebConfigError, load_web_config
from fsd_daemon.probe import RolloutMetricsProbe
from fsd_daemon.prometheus.scrape_config import PrometheusConfigKeeper
from fsd_daemon.prometheus.sd_routes import sd_jobs
from fsd_daemon.service.grafana_session import keeper_from_config
from fsd_daemon.service.httpsd import HeldTargetLists
from fsd_daemon.service.watch import Watcher, WatchPlan, plan_for

log = logging.getLogger(__name__)

MANAGED_FILES = frozenset({ROLLOUT_FILE, GPU_FILE, RAY_FILE})
# How long fast polling lasts after the last poll that saw the cluster change.
FAST_POLL_WINDOW_SECONDS = 10.0
# A failed poll that took less than this was refused, not slow: Ray is absent, not overloaded.
_QUICK_FAILURE_SECONDS = 1.0
# A burst of actor events (a job starting) polls at this pace at most.
ACTOR_EVENT_MIN_GAP_SECONDS = 0.2
_REPEAT_TRACEBACK_SECONDS = 300.0
# A config file is read only once it has settled: unchanged (inode, size, mtime) for this long,
# or last modified at least this long ago. An editor or `cat new > file` saving in place
# truncates, then writes; the reload never reads between the two.
CONFIG_SETTLE_SECONDS = 0.5


# Write errors at start-up that someone may fix while the daemon runs; anything else (a file in
# the way, a read-only filesystem) is a configuration error and ends it with exit 2.
_FIXABLE_WITHOUT_US = frozenset({"EACCES", "EPERM", "ENOSPC", "EDQUOT"})


class StartupError(Exception):
    """The service cannot start as configured. ``str()`` is the one line for the user."""


def _bind_metrics(config: Config, poll: Poll, sd_lists: HeldTargetLists) -> Any:
    """A started listener for ``config`` (/metrics, /healthz, the /sd/ lists), or None when
    none is configured. Raises OSError (busy port, address not on this host), ConfigError, or
    WebConfigError (``daemon.web_config_file`` unusable)."""
    listen = config.daemon.metrics_listen
    if not listen:
        return None
    from fsd_daemon.plumbing.httpserve import MetricsServer

    host, port = parse_listen(listen, "daemon.metrics_listen")
    web = load_web_config(config.daemon.web_config_file) if config.daemon.web_config_file else None
    return MetricsServer(
        host,
        port,
        poll.metrics.registry,
        poll.health.check,
        ssl_context=web.ssl_context if web is not None else None,
        authenticate=BasicAuth(web.users) if web is not None and web.users else None,
        json_routes=sd_lists.routes(sd_jobs(config)),
    ).start()


def _listener_changed(old: Config, new: Config) -> bool:
    """Whether the listener must be bound again: its address, its TLS/auth file or the lists it
    serves changed. (The file's content is read at bind time only, as exporter-toolkit's is.)"""
    return (old.daemon.metrics_listen, old.daemon.web_config_file, sd_jobs(old)) != (
        new.daemon.metrics_listen,
        new.daemon.web_config_file,
        sd_jobs(new),
    )


class Service:
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
        if source is None or resolver is None:
            default_source, default_resolver = default_components(config)
            source = source or default_source
            resolver = resolver or default_resolver
        self.poll = Poll(config, source, resolver, clock=clock)
        # What the /sd/ endpoints serve: always the bytes of the current writer's last write.
        self.sd_lists = HeldTargetLists(lambda name: self.poll.writer.last_written(name))
        self.keeper = PrometheusConfigKeeper(config, clock=clock)
        self.dashboards_keeper = keeper_from_config(config)
        self.notifier = SystemdNotifier()
        self.config_path = config_path
        self._config_loader = config_loader
        self._loaded_config_bytes = self._config_bytes()
        # The config file's (inode, size, mtime_ns) at the first look of a pending reload, and
        # when; the reload waits until it has settled.
        self._config_seen: tuple[tuple[int, int, int], float] | None = None
        self._reload_at: float | None = None
        self._clock = clock
        self._backoff = self._new_backoff(config)
        self._fast_until = 0.0
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self._poll_now = False
        self._actor_event = False
        self._last_poll_started = -ACTOR_EVENT_MIN_GAP_SECONDS
        # When to ask the source's change probe next; infinite while it must not be asked
        # (before the first good poll, after a failed one: the poll's own pace decides then).
        self._next_probe = float("inf")
        self.probes = 0  # change probes asked (what a quiet cluster costs between polls)
        self._restore: set[str] = set()
        self._restore_lock = threading.Lock()
        self._metrics_server: Any = None
        self._probe: RolloutMetricsProbe | None = None
        self._watcher: Watcher | None = None
        self._actor_events: ActorEventWatch | None = None
        self._looping = False  # the keeper's thread runs (run() without --once)
        self.loop_errors = 0
        self._last_traceback = -_REPEAT_TRACEBACK_SECONDS

    # -- what tests and the CLI read ---------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.poll.config

    @property
    def metrics(self) -> Any:
        return self.poll.metrics

    @property
    def health(self) -> Any:
        return self.poll.health

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.port if self._metrics_server is not None else None

    # -- requests from signal handlers and watchers (any thread) -----------------------------------

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def wake(self) -> None:
        """Poll now rather than at the next tick (Ray's session link changed)."""
        self._poll_now = True
        self._wake.set()

    def actor_event(self) -> None:
        """Ray logged an actor state change: poll now, or as soon as the last poll is
        ACTOR_EVENT_MIN_GAP_SECONDS old (a job starting logs hundreds of events a second)."""
        self._actor_event = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def request_restore(self, name: str) -> None:
        with self._restore_lock:
            self._restore.add(name)
        self._wake.set()

    # -- start-up ----------------------------------------------------------------------------------

    def start(self, *, watch: bool = True, serve: bool = True) -> None:
        """Fallible set-up, before anything is announced: the output directory, the metrics
        listener, the watcher. Raises :class:`StartupError` with one line saying what is wrong."""
        config = self.config
        try:
            self.poll.prepare()
        except WriteError as exc:
            directory = self.poll.writer.directory
            if exc.reason not in _FIXABLE_WITHOUT_US or not directory.is_dir():
                raise StartupError(f"daemon.output_dir: {exc}") from None
            # A directory we may not write yet (an admin will chown it) or a full disk: run,
            # keep the files there, and write once it works; health and the log say why.
            log.error("%s; starting anyway, the files are written once it works", exc)
        if serve:
            self.sd_lists.seed(self.poll.writer.directory)
            try:
                self._metrics_server = _bind_metrics(config, self.poll, self.sd_lists)
            except OSError as exc:
                raise StartupError(
                    f"daemon.metrics_listen: cannot listen on {config.daemon.metrics_listen}: "
                    f"{exc.strerror or exc}"
                ) from None
            except WebConfigError as exc:
                raise StartupError(f"daemon.web_config_file: {exc}") from None
            if self._metrics_server is not None:
                host, _ = parse_listen(config.daemon.metrics_listen, "daemon.metrics_listen")
                where = f"[{host}]" if ":" in host else host
                log.info(
                    "listening on %s:%d: /metrics, /healthz, /sd/<job> (HTTP service discovery)",
                    where,
                    self._metrics_server.port,
                )
            if self._metrics_server is not None:
                # Tells a missing metrics route (HTTP 404: verl's defaults) from a dead server
                # for the alerts; its results are only useful where Prometheus scrapes us.
                self._probe = RolloutMetricsProbe(
                    self.poll.metrics.registry,
                    lambda: self.poll.written_targets.get(ROLLOUT_FILE, ()),
                ).start()
        if watch:
            self._watcher = Watcher(
                self._watch_plan(config),
                on_target_file=self.request_restore,
                on_config=self.request_reload,
                on_ray_session=self.wake,
            )
            self._watcher.start()
            self._watch_actor_events(config)

    def _watch_actor_events(self, config: Config) -> None:
        if self._actor_events is not None:
            self._actor_events.stop()
            self._actor_events = None
        if config.ray.watch_export_events:
            self._actor_events = ActorEventWatch(
                Path(config.prometheus.ray_temp_dir), self.actor_event
            )
            self._actor_events.refresh()

    def _watch_plan(self, config: Config) -> WatchPlan:
        return plan_for(
            config.daemon.output_dir if config.daemon.watch_output_dir else None,
            MANAGED_FILES,
            self.config_path,
            config.prometheus.ray_temp_dir
            if config.prometheus.patch_ray_config or config.prometheus.ray_grafana_dashboards
            else None,
        )

    # -- running -----------------------------------------------------------------------------------

    def run(self, *, once: bool = False, watch: bool = True) -> int:
        """Start, then loop until stopped (or one pass for ``once``). Raises StartupError."""
        if once:
            try:
                self.start(watch=False, serve=False)
                return self._run_once()
            finally:
                self.shutdown()
        try:
            self.start(watch=watch)
        except BaseException:
            self.shutdown()
            raise
        # SIGTERM/SIGINT stop after the current step; SIGHUP reloads the config.
        signals = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGHUP: self.request_reload,
        }
        with handled_signals(signals):
            self.keeper.start()
            self._looping = True
            self.notifier.notify(READY=1, STATUS="started, first poll")
            log.info(
                "fsd-daemon started: Ray %s, writing %s every %.1fs, cluster label %r (%s)",
                self.config.ray.address,
                self.config.daemon.output_dir,
                self.config.daemon.poll_interval_seconds,
                self.config.daemon.cluster,
                self.config.cluster_origin or "set",
            )
            try:
                self._loop()
            finally:
                self.shutdown()
        return 0

    def _loop(self) -> None:
        next_poll = self._clock()
        while not self._stop:
            try:
                next_poll = self._step(next_poll)
            except Exception:
                # Last resort: whatever escaped is logged and counted, and the loop goes on
                # (after a backoff, so a bug that fails every time does not spin).
                self.loop_errors += 1
                self.metrics.poll_errors.labels("internal").inc()
                self.health.problem("loop", "unexpected error; see the log")
                now = self._clock()
                # The traceback once, then again every few minutes if it keeps happening.
                if now - self._last_traceback >= _REPEAT_TRACEBACK_SECONDS:
                    self._last_traceback = now
                    log.exception("unexpected error in the daemon loop; going on")
                else:
                    log.debug("unexpected error in the daemon loop again", exc_info=True)
                next_poll = now + self._backoff.failed()
            self.notifier.notify(WATCHDOG=1)
            wait = max(0.0, min(next_poll, self._next_probe) - self._clock())
            if self._reload_at is not None:
                wait = min(wait, max(0.0, self._reload_at - self._clock()))
            # A backoff may be longer than WatchdogSec: ping while waiting (the interval is
            # already half of WATCHDOG_USEC), so only a stuck loop gets restarted.
            if self.notifier.watchdog_interval is not None:
                wait = min(wait, self.notifier.watchdog_interval)
            self._wake.wait(timeout=wait)
            self._wake.clear()

    def _step(self, next_poll: float) -> float:
        if self._reload or (self._reload_at is not None and self._clock() >= self._reload_at):
            self._reload = False
            wait = self._config_unsettled_for()
            if wait > 0:
                self._reload_at = self._clock() + wait  # look again then
            else:
                self._reload_at = None
                self.notifier.notify(RELOADING=1)
                token_changed = self._reload_ray_token()
                if self.reload_config() or token_changed:
                    next_poll = self._clock()
                self.notifier.notify(READY=1)
        if self._restore:
            with self._restore_lock:
                names, self._restore = self._restore, set()
            for name in sorted(names):
                self.poll.restore(name)
        # The output directory may have been made anew. A file removed from it before it was
        # watched raised no event: look at every file once more.
        if self._watcher is not None and self._watcher.refresh():
            self.poll.keep_files()
        if self._poll_now:
            self._poll_now = False
            next_poll = self._clock()
        if self._actor_event:
            self._actor_event = False
            next_poll = min(next_poll, self._last_poll_started + ACTOR_EVENT_MIN_GAP_SECONDS)
        now = self._clock()
        if now < next_poll and now >= self._next_probe and self._probe_says_changed():
            next_poll = now
        if now >= next_poll:
            started = self._last_poll_started = self._clock()
            result = self.poll.run_once()
            next_poll = self._clock() + self.next_delay(result, self._clock() - started)
            self._schedule_probe(result)
            self._after_poll(result)
            self.health.clear("loop")
            if self._actor_events is not None:
                self._actor_events.refresh()  # follows a Ray restart: a readlink and a stat
        return next_poll

    def _probe_says_changed(self) -> bool:
        source = self.poll.source
        interval = self.config.ray.change_probe_interval_seconds
        if not isinstance(source, ChangeProbe) or interval <= 0:
            self._next_probe = float("inf")
            return False
        if self._actor_events is not None and self._actor_events.ringing:
            # Ray's actor export events ring the bell already: asking would only cost.
            self._next_probe = self._clock() + interval
            return False
        self.probes += 1
        changed = source.looks_changed()
        self._next_probe = self._clock() + interval
        if changed:
            log.debug("change probe: the actors changed; polling now")
        return changed

    def _schedule_probe(self, result: PollResult) -> None:
        interval = self.config.ray.change_probe_interval_seconds
        if result.ok and interval > 0:
            self._next_probe = self._clock() + interval
        else:
            self._next_probe = float("inf")

    def next_delay(self, result: PollResult, took: float = 0.0) -> float:
        daemon = self.config.daemon
        if not result.ok:
            delay = self._backoff.failed()
            if result.error_kind == "unreachable" and took < _QUICK_FAILURE_SECONDS:
                delay = min(delay, daemon.poll_interval_seconds)
            return delay
        self._backoff.succeeded()
        now = self._clock()
        if result.cluster_changed:
            self._fast_until = now + FAST_POLL_WINDOW_SECONDS
        if now < self._fast_until:
            return min(daemon.fast_poll_interval_seconds, daemon.poll_interval_seconds)
        return daemon.poll_interval_seconds

    def _after_poll(self, result: PollResult) -> None:
        self._keep_prometheus_config()
        if self._probe is not None and ROLLOUT_FILE in result.changed:
            self._probe.wake()
        healthy, _details = self.health.check()
        self.metrics.healthy.set(1 if healthy else 0)
        counts = {name: len(t) for name, t in self.poll.written_targets.items()}
        state = "ok" if result.ok else f"Ray unreachable ({self.poll.failures} failed polls)"
        summary = ", ".join(
            f"{n} {name.removesuffix('.json')}" for name, n in sorted(counts.items())
        )
        self.notifier.notify(STATUS=f"{state}; targets: {summary or 'none yet'}")

    def _keep_prometheus_config(self) -> None:
        """After every poll, watching or not. The prometheus.yml keeper works on its own
        thread (a large file must not hold up the polls); a pass with ``run --once`` waits."""
        if self._looping:
            self.keeper.kick()
        else:
            self.keeper.check()
        if self.dashboards_keeper is not None:
            self.dashboards_keeper.check()  # logs its own filesystem errors, never raises

    # -- one pass ----------------------------------------------------------------------------------

    def _run_once(self) -> int:
        """``run --once``: one listing (an unreachable Ray fails within
        ray.request_timeout_seconds), resolution for a bounded while, then every file written
        with what is known (:func:`fsd_daemon.pipeline.oneshot.discover_once`)."""
        result = self.poll.write_once()
        if not result.ok:
            log.error("Ray could not be reached: %s", result.error)
            return 1
        if self.poll.unwritten:
            log.error("could not write %s", ", ".join(sorted(self.poll.unwritten)))
            return 1
        self._keep_prometheus_config()
        return 0

    # -- reload: all or nothing --------------------------------------------------------------------

    def _config_bytes(self) -> bytes | None:
        if not self.config_path:
            return None
        try:
            return Path(self.config_path).read_bytes()
        except OSError:
            return None

    def _reload_ray_token(self) -> bool:
        """Find Ray's token again, as at start (a rotated token file); True when it changed."""
        parts = {id(p): p for p in (self.poll.source, self.poll.resolver)}.values()
        changed = [p.reload_auth() for p in parts if isinstance(p, ReloadsAuth)]
        if any(changed):
            log.info("Ray's token read again: it changed; the next requests send the new one")
        elif changed:
            log.info("Ray's token read again: unchanged")
        return any(changed)

    def _config_unsettled_for(self) -> float:
        """Seconds to wait before the config file may be read; 0 once it has settled (see
        CONFIG_SETTLE_SECONDS), or when there is no file to wait for."""
        if not self.config_path:
            return 0.0
        try:
            st = os.stat(self.config_path)
        except OSError:
            self._config_seen = None
            return 0.0  # missing or unreadable: the loader says so in one line
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        now = self._clock()
        if self._config_seen is None or self._config_seen[0] != signature:
            self._config_seen = (signature, now)
        unchanged_for = now - self._config_seen[1]
        modified_ago = time.time() - st.st_mtime  # negative for an mtime in the future
        if unchanged_for >= CONFIG_SETTLE_SECONDS or modified_ago >= CONFIG_SETTLE_SECONDS:
            return 0.0
        return CONFIG_SETTLE_SECONDS - unchanged_for

    def reload_config(self) -> bool:
        """Load the config again and switch to it, or keep the running one entirely.

        An edit is reloaded once: the file watch and a SIGHUP for the same edit find the same
        bytes, and the second request is a no-op. A file that held a config and now holds none
        (emptied, or caught between a truncate and a write) is not a new config: the running one
        stays, and the write that follows is reloaded as an edit. Bytes that change while they
        are loaded are not taken either: the reload waits for the file to settle again."""
        if self._config_loader is None:
            return False
        current = self._config_bytes()
        if self.config_path and current is not None and current == self._loaded_config_bytes:
            log.debug("config file unchanged since the last reload; nothing to do")
            return False
        was_config = bool(self._loaded_config_bytes) and not holds_no_settings(
            self._loaded_config_bytes or b""
        )
        if current is not None and was_config and holds_no_settings(current):
            log.warning(
                "config file %s holds no settings now (emptied, or being written); "
                "keeping the running config",
                self.config_path,
            )
            return False
        try:
            new = self._config_loader()
            if self._config_bytes() != current:
                log.info("config file changed while it was read; reading it once it settles")
                self._reload_at = self._clock() + CONFIG_SETTLE_SECONDS
                return False
            self.apply_config(new)
        except (ConfigError, ReloadRefused) as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
            return False
        self._loaded_config_bytes = current
        log.info("config reloaded")
        return True

    def apply_config(self, new: Config) -> None:
        """The one place a new config comes in: prepare every part it needs (the pipeline's
        output directory and Ray components, this service's listener), then switch every part
        to it. Raises ReloadRefused, having changed nothing, when any part cannot be prepared."""
        old = self.config
        prepared = self.poll.prepare_config(new)
        new_listener = _listener_changed(old, new)
        # Same address, another TLS/auth file or other lists: the old socket holds the port
        # until the switch, so only the file is checked now and the listener is bound again at
        # the switch.
        same_address = new_listener and new.daemon.metrics_listen == old.daemon.metrics_listen
        try:
            server = self._prepare_listener(new, new_listener, same_address)
        except ReloadRefused:
            self.poll.discard(prepared)
            raise
        # Commit: from here on nothing is expected to fail.
        self.poll.reconfigure(prepared)
        if new_listener:
            if self._metrics_server is not None:
                self._metrics_server.stop()
            if same_address and new.daemon.metrics_listen:
                try:
                    server = _bind_metrics(new, self.poll, self.sd_lists)
                except (OSError, WebConfigError) as exc:
                    log.error("cannot listen on %s again: %s", new.daemon.metrics_listen, exc)
            self._metrics_server = server
            if server is not None:
                log.info("self-metrics now on http://%s/metrics", new.daemon.metrics_listen)
        self.keeper.stop()
        self.keeper = PrometheusConfigKeeper(new, clock=self._clock)
        if self._looping:
            self.keeper.start().kick()
        self.dashboards_keeper = keeper_from_config(new)
        failures = self._backoff.failures
        self._backoff = self._new_backoff(new)
        self._backoff.failures = failures
        set_log_level(new.daemon.log_level)
        if self._watcher is not None:
            try:
                self._watcher.replan(self._watch_plan(new))
            except OSError as exc:  # the config is applied; only the watching is degraded
                log.warning("cannot watch files as configured: %s", exc)
            if (new.ray.watch_export_events, new.prometheus.ray_temp_dir) != (
                old.ray.watch_export_events,
                old.prometheus.ray_temp_dir,
            ):
                self._watch_actor_events(new)

    def _prepare_listener(self, new: Config, changed: bool, same_address: bool) -> Any:
        """The listener ``new`` needs, bound (None: none, or bound again at the switch).
        Raises ReloadRefused."""
        if same_address and new.daemon.web_config_file:
            try:
                load_web_config(new.daemon.web_config_file)
            except WebConfigError as exc:
                raise ReloadRefused(f"daemon.web_config_file: {exc}") from None
        if not (changed and new.daemon.metrics_listen and not same_address):
            return None
        try:
            return _bind_metrics(new, self.poll, self.sd_lists)
        except OSError as exc:
            raise ReloadRefused(
                f"daemon.metrics_listen: cannot listen on {new.daemon.metrics_listen}: "
                f"{exc.strerror or exc}"
            ) from None
        except WebConfigError as exc:
            raise ReloadRefused(f"daemon.web_config_file: {exc}") from None

    @staticmethod
    def _new_backoff(config: Config) -> Backoff:
        return Backoff(
            base=config.daemon.poll_interval_seconds, cap=config.daemon.max_backoff_seconds
        )

    # -- shutdown ----------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self.notifier.notify(STOPPING=1)
        self._looping = False
        self.keeper.stop()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._actor_events is not None:
            self._actor_events.stop()
            self._actor_events = None
        if self._probe is not None:
            self._probe.stop()
            self._probe = None
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        self.poll.close()
        self.notifier.close()


__all__ = ["Service", "StartupError"]
