"""One poll: discover, reconcile, render, write. A plain object: no threads, signals or servers.

The service (``service/daemon.py``) decides when to call :meth:`Poll.run_once`; everything one
call does happens here, so a test can drive polls one by one with a described cluster and its
own clock.

Three gates keep a file from getting emptier than the truth:
- a failed listing changes no file (a Ray outage never empties a target file);
- the resolver warm-up: files that need the resolver (server addresses, node ports) wait until
  it has answered once, again after every Ray restart (the bridge is restarted then);
- the start-up gate: rollout.json is not written with fewer targets than the file found at
  start while any of that file's servers is still unresolved (bounded), so a restarted daemon
  never drops servers it merely has not re-resolved yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from fsd_daemon.config import Config
from fsd_daemon.discovery.base import ClusterSnapshot, ClusterSource, Resolver, SourceError
from fsd_daemon.mixin import names
from fsd_daemon.pipeline.oneshot import discover_once
from fsd_daemon.pipeline.reconcile import (
    GPU_FILE,
    RAY_FILE,
    ROLLOUT_FILE,
    Desired,
    Reconciler,
    summarize_changes,
)
from fsd_daemon.pipeline.render import Renderer, Target
from fsd_daemon.pipeline.selfmetrics import Health, SelfMetrics
from fsd_daemon.plumbing.atomic_files import AtomicFileWriter, WriteError
from fsd_daemon.plumbing.problem_log import ProblemLog

log = logging.getLogger(__name__)

# How each file's changes are summarised in the log: noun, grouping label, group name.
_CHANGE_LOG = {
    ROLLOUT_FILE: ("rollout", names.RAY_JOB_ID, "job"),
    GPU_FILE: ("gpu exporter", names.NODE_IP, "node"),
    RAY_FILE: ("ray metrics", names.NODE_IP, "node"),
}

# Files whose content needs the resolver (server addresses, node ports).
_RESOLVED_FILES = frozenset({ROLLOUT_FILE, RAY_FILE})
RESOLVER_WARMUP_SECONDS = 30.0
# How long the start-up gate may hold rollout.json back: servers of the old file that are
# really gone are removed after this at the latest (their grace period starts then).
STARTUP_GATE_SECONDS = 60.0

# Health stages, as /healthz names them.
STAGE_RAY = "ray"
STAGE_RESOLVER = "resolver"


class ReloadRefused(Exception):
    """A new config cannot be applied; the running one stays entirely."""


@dataclass(frozen=True)
class PreparedConfig:
    """A new config and what it needs built ahead (see :meth:`Poll.prepare_config`)."""

    config: Config
    writer: AtomicFileWriter | None  # prepared; None: the same output directory
    components: tuple[ClusterSource, Resolver] | None  # None: the same Ray settings


def write_stage(name: str) -> str:
    return f"write:{name}"


@dataclass
class PollResult:
    ok: bool
    changed: list[str] = field(default_factory=list)
    error: str = ""
    error_kind: str = ""  # SourceError.kind of a failed listing
    # Servers or node ports seen but not resolved yet: worth looking again soon.
    unresolved: bool = False
    # The cluster looked different from the previous poll.
    cluster_changed: bool = False

    @property
    def busy(self) -> bool:
        """Whether the cluster is changing: the service polls sooner then."""
        return self.cluster_changed or self.unresolved


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
    return source, RayBridge(
        config.ray.address,
        timeout=config.ray.resolve_timeout_seconds,
        keep_connected=config.ray.keep_bridge_connected,
    )


def servers_in_file(path: Path) -> tuple[int, frozenset[tuple[str, str]]]:
    """(target count, ``(ray_namespace, actor_name)`` of each target) of an existing
    rollout.json; (0, empty) when it is missing or unreadable."""
    try:
        groups = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return 0, frozenset()
    count, servers = 0, set()
    if not isinstance(groups, list):
        return 0, frozenset()
    for group in groups:
        if not isinstance(group, dict):
            continue
        targets = group.get("targets")
        labels = group.get("labels")
        if not isinstance(targets, list) or not isinstance(labels, dict):
            continue
        count += len(targets)
        namespace = labels.get(names.RAY_NAMESPACE, "")
        actor = labels.get(names.ACTOR_NAME, "")
        if isinstance(namespace, str) and isinstance(actor, str) and actor:
            servers.add((namespace, actor))
    return count, frozenset(servers)


class Poll:
    """Everything one poll does, and the state kept between polls."""

    def __init__(
        self,
        config: Config,
        source: ClusterSource,
        resolver: Resolver,
        *,
        metrics: SelfMetrics | None = None,
        health: Health | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.source = source
        self.resolver = resolver
        self._clock = clock
        self.metrics = metrics or SelfMetrics()
        self.health = health or Health(stale_after(config), clock=clock)
        self.reconciler = Reconciler(config, clock=clock)
        self.writer = AtomicFileWriter(config.daemon.output_dir)
        self.written_targets: dict[str, tuple[Target, ...]] = {}
        # One per file: each keeps the rendered groups of its file's last render.
        self._renderers: dict[str, Renderer] = {}
        self._dropped_reported: dict[tuple[str, str], int] = {}
        self._desired: Desired | None = None
        self._unwritten: set[str] = set()
        self._head_node: str | None = None
        self._previous_snapshot: ClusterSnapshot | None = None
        self._warmup_started = clock()
        self._resolver_warm = False
        self.failures = 0
        self._ray_down = ProblemLog(log, "Ray poll failed", ended="Ray answers again", clock=clock)
        self._resolver_down = ProblemLog(
            log, "address resolution fails", ended="address resolution works again", clock=clock
        )
        self._write_failing: dict[str, ProblemLog] = {}
        self._gate_count = 0
        self._gate_names: frozenset[tuple[str, str]] = frozenset()
        self._gate_until = 0.0

    def prepare(self) -> None:
        """Create the output directory and arm the start-up gate from the file found there.
        Raises OSError when the directory cannot be made (the caller reports it)."""
        self._arm_startup_gate()
        self.writer.prepare()

    def _arm_startup_gate(self) -> None:
        count, servers = servers_in_file(self.writer.directory / ROLLOUT_FILE)
        self._gate_count, self._gate_names = count, servers
        self._gate_until = self._clock() + STARTUP_GATE_SECONDS
        if count:
            log.debug("start-up gate: %d rollout targets found in the existing file", count)

    # -- switching to a new config: prepare (may fail, changes nothing), then commit ------------

    def prepare_config(self, new: Config) -> PreparedConfig:
        """Build what ``new`` needs that may fail: a writer for another output directory
        (created now), a source and resolver for other Ray settings. Raises ReloadRefused and
        leaves this object untouched; :meth:`discard` undoes a preparation not committed."""
        writer = None
        if new.daemon.output_dir != self.config.daemon.output_dir:
            writer = AtomicFileWriter(new.daemon.output_dir)
            try:
                writer.prepare()
            except WriteError as exc:
                raise ReloadRefused(f"daemon.output_dir: {exc}") from None
        components = None
        if new.ray != self.config.ray:
            try:
                components = default_components(new)
            except Exception as exc:  # a broken address or missing Ray install
                raise ReloadRefused(f"ray: {exc}") from None
        return PreparedConfig(new, writer, components)

    @staticmethod
    def discard(prepared: PreparedConfig) -> None:
        if prepared.components is not None:
            prepared.components[1].close()

    def reconfigure(self, prepared: PreparedConfig) -> None:
        """Switch to a prepared config; nothing here is expected to fail."""
        config = prepared.config
        if prepared.writer is not None:
            log.info(
                "output directory %s -> %s", self.config.daemon.output_dir, config.daemon.output_dir
            )
        self.config = config
        self.reconciler.reconfigure(config)
        if prepared.writer is not None:
            self.writer = prepared.writer
            self.written_targets.clear()
            self._unwritten = set(self._desired.files) if self._desired else set()
            self._arm_startup_gate()
        if prepared.components is not None:
            self.resolver.close()
            self.source, self.resolver = prepared.components
            self._restart_warmup()
        self.health.stale_after_seconds = stale_after(config)

    def close(self) -> None:
        self.resolver.close()

    # -- one poll -------------------------------------------------------------------------------

    def run_once(self) -> PollResult:
        """One pass: list, reconcile, write what changed. Never raises for Ray or disk trouble."""
        started = time.perf_counter()
        try:
            return self._run_once()
        finally:
            self.metrics.poll_duration.observe(time.perf_counter() - started)

    def _run_once(self) -> PollResult:
        # Before asking Ray, and whether or not it answers: a file or directory removed by
        # someone else is put back within one poll, not at the next cluster change.
        self.keep_files()
        try:
            snapshot = self.source.snapshot()
        except SourceError as exc:
            self.failures += 1
            self.reconciler.listing_failed()
            self.metrics.poll_errors.labels(exc.kind).inc()
            self.health.problem(STAGE_RAY, f"{exc.kind}: {exc}")
            # Invariant: a failed poll changes no file. The last good files stay until Ray
            # answers again; that is the whole point of not trusting an error as "empty".
            self._ray_down.failing(f"{exc}; keeping the files as they are", cause=exc.kind)
            return PollResult(ok=False, error=str(exc), error_kind=exc.kind)
        self._ray_down.fine()
        self.failures = 0
        self.health.clear(STAGE_RAY)
        self.metrics.truncated.set(1 if snapshot.truncated else 0)
        cluster_changed, self._previous_snapshot = snapshot != self._previous_snapshot, snapshot
        self._before_apply(snapshot)
        desired = self.reconciler.apply(snapshot, self.resolver)
        self._after_apply()
        self._check_resolver()
        self.metrics.servers.set(self.reconciler.server_count)
        for key, count in self.reconciler.dropped_counts.items():
            reported = self._dropped_reported.get(key, 0)
            if count > reported:
                self.metrics.dropped.labels(*key).inc(count - reported)
                self._dropped_reported[key] = count
        if desired is not None:
            self._desired = desired
            self._unwritten = set(desired.files)
        changed = self.write_pending()
        self.health.succeeded()
        self.metrics.last_success.set(time.time())
        return PollResult(
            ok=True,
            changed=changed,
            unresolved=self.reconciler.has_unresolved(),
            cluster_changed=cluster_changed,
        )

    def write_once(self) -> PollResult:
        """``run --once``: :func:`discover_once`, then write what is known, even where some
        servers never answered (no warm-up, no start-up gate: there is no later poll)."""
        try:
            found = discover_once(self.config, self.source, self.resolver, clock=self._clock)
        except SourceError as exc:
            return PollResult(ok=False, error=str(exc), error_kind=exc.kind)
        self._check_resolver()
        self._desired = found.desired
        self._unwritten = set(found.desired.files)
        changed = self.write_pending(force=True)
        return PollResult(ok=True, changed=changed, unresolved=found.unresolved)

    def _before_apply(self, snapshot: ClusterSnapshot) -> None:
        """Where the source does not tell the session (``snapshot.session`` empty): a new head
        node id is a new Ray session; forget the old one before folding the new one in."""
        if snapshot.session:
            return  # the reconciler tells sessions apart (see _after_apply)
        head = next((n.node_id for n in snapshot.nodes if n.is_head), None)
        if head is None:
            return
        if self._head_node is not None and head != self._head_node:
            self.reconciler.reset()
            self._new_session()
        self._head_node = head

    def _after_apply(self) -> None:
        """Warm-up and Ray restarts: the resolver must answer once per Ray session."""
        if self.reconciler.session_changed:
            self._new_session()
        if not self._resolver_warm and (
            self.resolver.ready or self._clock() - self._warmup_started > RESOLVER_WARMUP_SECONDS
        ):
            self._resolver_warm = True

    def _new_session(self) -> None:
        # Every actor id, address and port of the old session is meaningless now, and the
        # bridge's driver is connected to a cluster that no longer exists.
        log.info("Ray restarted (a new session): re-resolving every server")
        self.resolver.restart()
        self._restart_warmup()

    def _restart_warmup(self) -> None:
        self._resolver_warm = False
        self._warmup_started = self._clock()

    def _check_resolver(self) -> None:
        problem = self.resolver.problem()
        if problem:
            self.health.problem(STAGE_RESOLVER, problem)
            self._resolver_down.failing(problem)
        else:
            self.health.clear(STAGE_RESOLVER)
            self._resolver_down.fine()

    # -- writing ----------------------------------------------------------------------------------

    def _held_by_startup_gate(self, targets: tuple[Target, ...]) -> bool:
        if not self._gate_count:
            return False
        if len(targets) >= self._gate_count:
            self._gate_count = 0  # the old file is superseded by one at least as full
            return False
        if self._clock() >= self._gate_until:
            log.warning(
                "start-up gate: servers of the previous rollout.json still unresolved after "
                "%.0fs; writing what is known",
                STARTUP_GATE_SECONDS,
            )
            self._gate_count = 0
            return False
        waiting = bool(self._gate_names & self.reconciler.unresolved_names())
        if not waiting:
            self._gate_count = 0  # every old server is resolved or gone: the gate is done
        return waiting

    def write_pending(self, *, force: bool = False) -> list[str]:
        """Write every file whose content is not on disk yet. ``force`` writes even before
        the resolver answered (``run --once``: what is known, once)."""
        changed: list[str] = []
        if self._desired is None:
            return changed
        for name in sorted(self._unwritten):
            targets = self._desired.files[name]
            if not force and name in _RESOLVED_FILES and not self._resolver_warm:
                continue
            if not force and name == ROLLOUT_FILE and self._held_by_startup_gate(targets):
                continue
            stage = write_stage(name)
            failing = self._write_condition(name)
            try:
                data = self._renderers.setdefault(name, Renderer()).render(targets)
                wrote = self.writer.write(name, data)
            except WriteError as exc:
                self._write_failed(name, exc)
                continue
            failing.fine()
            self._unwritten.discard(name)
            self.health.clear(stage)
            self.metrics.targets.labels(name).set(len(targets))
            if wrote:
                changed.append(name)
                self.metrics.writes.labels(name).inc()
                self._log_changes(name, targets)
            self.written_targets[name] = targets
        return changed

    @property
    def unwritten(self) -> frozenset[str]:
        return frozenset(self._unwritten)

    def _write_condition(self, name: str) -> ProblemLog:
        return self._write_failing.setdefault(
            name,
            ProblemLog(log, f"writing {name}", ended=f"{name} written again", level=logging.ERROR),
        )

    def _write_failed(self, name: str, exc: WriteError) -> None:
        """Counted, on /healthz, logged as a lasting condition; every word true now."""
        self.metrics.poll_errors.labels("write").inc()
        self.health.problem(write_stage(name), str(exc))
        if self.writer.exists(name):
            what = "the previous file stays"
        else:
            what = "no file is there now"
            # The gauge says what Prometheus reads: nothing, while the file is missing.
            self.metrics.targets.labels(name).set(0)
        self._write_condition(name).failing(f"{exc}; {what}, retrying every poll")

    def keep_files(self) -> None:
        """Put back every file written since start that is missing or changed (a stat each)."""
        for name in self.writer.written_names():
            self.restore(name)

    def restore(self, name: str) -> None:
        """Put back a file someone else deleted or changed, with the bytes written last.
        A file whose new content waits (for the resolver, for a disk) keeps the old until
        then: no emptier, never missing."""
        if name in self._unwritten and self.writer.exists(name):
            return  # a pending write will put the right content there anyway
        try:
            restored = self.writer.restore(name)
        except WriteError as exc:
            self._write_failed(name, exc)
            return
        if name not in self._unwritten:
            self.health.clear(write_stage(name))
            self._write_condition(name).fine()
        if restored:
            self.metrics.restores.labels(name).inc()
            if name in self.written_targets:
                self.metrics.targets.labels(name).set(len(self.written_targets[name]))
            log.warning("restored %s (deleted or changed by someone else)", name)

    def _log_changes(self, name: str, targets: tuple[Target, ...]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # the diff costs tens of ms at 10,000 targets; skip it when nobody reads it
        noun, label, group = _CHANGE_LOG.get(name, (name, "job", "job"))
        lines = summarize_changes(self.written_targets.get(name, ()), targets, noun, label, group)
        if lines:
            log.info("%s: %s (%d in all)", name, ", ".join(lines), len(targets))
        else:
            log.info("wrote %s (%d targets)", name, len(targets))


def stale_after(config: Config) -> float:
    """Seconds without a successful poll before /healthz says so."""
    return max(3 * config.daemon.poll_interval_seconds, config.daemon.max_backoff_seconds) + 5


__all__ = [
    "Poll",
    "PollResult",
    "PreparedConfig",
    "ReloadRefused",
    "default_components",
    "servers_in_file",
]
