"""From what one poll saw to the targets each file should hold.

The reconciler is the daemon's memory between polls: which servers exist and since when, their
resolved addresses, node metrics ports, and the grace timers of servers that disappeared. It is
pure apart from the resolver it is handed, and takes its clock as an argument, so tests drive
time directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fsd_daemon.config import Config
from fsd_daemon.discovery.base import ActorRecord, ClusterSnapshot, NodeRecord, Resolver
from fsd_daemon.discovery.recognise import Recogniser, ServerIdentity
from fsd_daemon.render import InvalidTarget, Target, format_address, parse_address, validate_target

log = logging.getLogger(__name__)

ROLLOUT_FILE = "rollout.json"
GPU_FILE = "gpu.json"
RAY_FILE = "ray.json"


@dataclass
class _Server:
    actor: ActorRecord
    identity: ServerIdentity
    last_seen: float
    address: str | None = None
    # Resolution failures are expected while a server starts (verl creates the actor first and
    # launches HTTP later): log the first, then stay quiet until it succeeds.
    failures: int = 0


@dataclass
class _Node:
    node: NodeRecord
    last_seen: float
    metrics_port: int | None = None


@dataclass(frozen=True)
class Dropped:
    file: str
    reason: str
    who: str
    message: str


@dataclass(frozen=True)
class Desired:
    """The targets every file should hold, and what was dropped on the way (with why)."""

    files: dict[str, tuple[Target, ...]]
    dropped: tuple[Dropped, ...] = ()


@dataclass
class _Pending:
    """Work that can change the result even when the next snapshot is identical."""

    unresolved: bool = False
    grace_deadline: float | None = None
    ports_missing: bool = False

    def any(self, now: float) -> bool:
        due = self.grace_deadline is not None and now >= self.grace_deadline
        return self.unresolved or self.ports_missing or due


# (what the target was made of, the valid target or None, why it was dropped or None)
_CachedTarget = tuple[tuple[Any, ...], "Target | None", "Dropped | None"]


@dataclass
class _Built:
    """Targets of one :meth:`Reconciler._desired` pass, and the cache it leaves behind."""

    previous: dict[tuple[str, str], _CachedTarget]
    cache: dict[tuple[str, str], _CachedTarget] = field(default_factory=dict)
    targets: dict[str, list[Target]] = field(
        default_factory=lambda: {ROLLOUT_FILE: [], GPU_FILE: [], RAY_FILE: []}
    )
    dropped: list[Dropped] = field(default_factory=list)


@dataclass
class Reconciler:
    config: Config
    clock: Callable[[], float] = time.monotonic
    recogniser: Recogniser = field(init=False)
    _servers: dict[str, _Server] = field(default_factory=dict, init=False)
    _nodes: dict[str, _Node] = field(default_factory=dict, init=False)
    _last_snapshot: ClusterSnapshot | None = field(default=None, init=False)
    _pending: _Pending = field(default_factory=_Pending, init=False)
    _warned: set[tuple[str, str]] = field(default_factory=set, init=False)
    # Each target validated at the last poll (or why it was dropped), by (file, actor or node
    # id): a changed poll re-validates only what changed (at 10,000 servers, most of a changed
    # poll's CPU went into validating targets that had not changed).
    _target_cache: dict[tuple[str, str], _CachedTarget] = field(default_factory=dict, init=False)
    # Targets dropped as invalid, counted once per offender: (file, reason) -> count.
    dropped_counts: dict[tuple[str, str], int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.recogniser = Recogniser(self.config.patterns)

    def reset(self) -> None:
        """Forget everything (a new Ray session: every actor id and address is new)."""
        self._servers.clear()
        self._target_cache.clear()
        self._nodes.clear()
        self._last_snapshot = None
        self._pending = _Pending()
        self.recogniser = Recogniser(self.config.patterns)

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded config without forgetting resolved addresses."""
        self.config = config
        self._target_cache.clear()  # limits and the cluster label may have changed
        self.recogniser = Recogniser(config.patterns)
        for actor_id, server in list(self._servers.items()):
            identity = self.recogniser.identify(server.actor)
            if identity is None:
                del self._servers[actor_id]
            else:
                server.identity = identity
        self._last_snapshot = None  # recompute at the next poll, labels may have changed

    def has_unresolved(self) -> bool:
        """Servers without an address yet, or (when ray.json is written) nodes without a port."""
        if any(s.address is None for s in self._servers.values()):
            return True
        return self.config.targets.write_ray and any(
            n.metrics_port is None for n in self._nodes.values()
        )

    def apply(self, snapshot: ClusterSnapshot, resolver: Resolver) -> Desired | None:
        """Fold one successful poll in. None means nothing can have changed since the last call.

        Only call this with a complete snapshot: a failed poll must not reach here, which is
        what keeps a Ray outage from emptying the files.
        """
        now = self.clock()
        if snapshot == self._last_snapshot and not self._pending.any(now):
            return None
        self._last_snapshot = snapshot
        self._pending = _Pending()
        self._fold_servers(snapshot, now)
        self._fold_nodes(snapshot, now)
        self._resolve_addresses(resolver)
        self._resolve_ports(resolver)
        return self._desired()

    # -- servers ---------------------------------------------------------------------------

    def _fold_servers(self, snapshot: ClusterSnapshot, now: float) -> None:
        live: set[str] = set()
        for actor in snapshot.actors:
            identity = self.recogniser.identify(actor)
            if identity is None:
                continue
            live.add(actor.actor_id)
            known = self._servers.get(actor.actor_id)
            if known is None:
                self._servers[actor.actor_id] = _Server(actor, identity, now)
                continue
            if (known.actor.pid, known.actor.node_id) != (actor.pid, actor.node_id):
                # Ray restarted the actor (same id, new process): its port is new too.
                log.info(
                    "actor %s restarted (pid %s -> %s)", actor.name, known.actor.pid, actor.pid
                )
                known.address = None
            known.actor = actor
            known.last_seen = now
        self.recogniser.forget({a.actor_id for a in snapshot.actors})
        self._expire(self._servers, live, snapshot.truncated, now, "rollout server")

    def _expire(
        self,
        entries: dict[str, _Server] | dict[str, _Node],
        live: set[str],
        truncated: bool,
        now: float,
        what: str,
    ) -> None:
        grace = self.config.daemon.grace_period_seconds
        for key in list(entries.keys() - live):
            if truncated:
                # The listing was cut at the limit: a missing entry may simply be beyond it.
                continue
            deadline = entries[key].last_seen + grace
            if now >= deadline:
                entry = entries.pop(key)
                name = entry.actor.name if isinstance(entry, _Server) else entry.node.node_id
                log.info("%s %s gone for %.0fs: removing it", what, name, now - entry.last_seen)
            else:
                current = self._pending.grace_deadline
                self._pending.grace_deadline = (
                    deadline if current is None else min(current, deadline)
                )

    def _resolve_addresses(self, resolver: Resolver) -> None:
        waiting = [s.actor for s in self._servers.values() if s.address is None]
        if not waiting:
            return
        answers = resolver.resolve_addresses(waiting)
        for actor in waiting:
            server = self._servers[actor.actor_id]
            answer = answers.get(actor.actor_id)
            if answer is not None and answer.address is not None:
                try:
                    server.address = parse_address(answer.address)
                except InvalidTarget as exc:
                    who = f"actor {actor.name!r} ({actor.actor_id})"
                    self._warn_drop(ROLLOUT_FILE, exc.reason, who, f"{who}: {exc}; dropped")
                    continue
                if server.failures:
                    log.info("actor %s now answers at %s", actor.name, server.address)
                continue
            if answer is not None and answer.error is not None:
                if server.failures == 0:
                    log.info(
                        "actor %s has no address yet: %s (will retry)", actor.name, answer.error
                    )
                server.failures += 1
            self._pending.unresolved = True

    # -- nodes -----------------------------------------------------------------------------

    def _fold_nodes(self, snapshot: ClusterSnapshot, now: float) -> None:
        live = set()
        for node in snapshot.nodes:
            live.add(node.node_id)
            known = self._nodes.get(node.node_id)
            if known is None:
                self._nodes[node.node_id] = _Node(node, now)
            else:
                known.node = node
                known.last_seen = now
        self._expire(self._nodes, live, False, now, "node")

    def _resolve_ports(self, resolver: Resolver) -> None:
        if not self.config.targets.write_ray:
            return
        missing = [n.node.node_id for n in self._nodes.values() if n.metrics_port is None]
        if not missing:
            return
        ports = resolver.metrics_ports(missing)
        for node_id in missing:
            port = ports.get(node_id)
            if port:
                self._nodes[node_id].metrics_port = port
            else:
                self._pending.ports_missing = True

    # -- targets ---------------------------------------------------------------------------

    def _desired(self) -> Desired:
        cluster = self.config.daemon.cluster
        built = _Built(previous=self._target_cache)
        for server in self._servers.values():
            if server.address is None:
                continue
            actor = server.actor
            node = self._nodes.get(actor.node_id)
            node_ip = node.node.node_ip if node else ""
            self._add(
                built,
                ROLLOUT_FILE,
                actor.actor_id,
                (actor, server.identity, node_ip, server.address),
                partial(_rollout_target, server.address, server.identity, actor, node_ip, cluster),
                f"actor {actor.name!r} ({actor.actor_id})",
            )
        gpu_port = self.config.targets.gpu_exporter_port
        for entry in self._nodes.values():
            record, who = entry.node, f"node {entry.node.node_id}"
            if self.config.targets.write_gpu:
                make = partial(_node_target, record, gpu_port, cluster)
                self._add(built, GPU_FILE, record.node_id, (record, gpu_port), make, who)
            if self.config.targets.write_ray and entry.metrics_port:
                port = entry.metrics_port
                make = partial(_node_target, record, port, cluster)
                self._add(built, RAY_FILE, record.node_id, (record, port), make, who)
        self._target_cache = built.cache
        files = {ROLLOUT_FILE: tuple(built.targets[ROLLOUT_FILE])}
        if self.config.targets.write_gpu:
            files[GPU_FILE] = tuple(built.targets[GPU_FILE])
        if self.config.targets.write_ray:
            files[RAY_FILE] = tuple(built.targets[RAY_FILE])
        return Desired(files, tuple(built.dropped))

    def _add(
        self,
        built: _Built,
        file: str,
        ident: str,
        key: tuple[Any, ...],
        make: Callable[[], Target],
        who: str,
    ) -> None:
        """Validate ``make()`` into ``built`` unless the same ``key`` was validated last time.

        Invariant: the cache is keyed by everything a target is made of (besides the config,
        whose change clears it), so a cached answer is the answer validation would give now.
        """
        slot = (file, ident)
        cached = built.previous.get(slot)
        if cached is None or cached[0] != key:
            made = make()
            invalid = self._invalid(file, made, who)
            cached = (key, None if invalid else made, invalid)
        built.cache[slot] = cached
        _, target, why = cached
        if target is not None:
            built.targets[file].append(target)
        elif why is not None:
            built.dropped.append(why)

    def _invalid(self, file: str, target: Target, who: str) -> Dropped | None:
        """Why ``target`` cannot be written (warned once per offender), or None if it can."""
        try:
            validate_target(target, self.config.targets.max_label_value_length)
        except InvalidTarget as exc:
            self._warn_drop(file, exc.reason, who, f"{file}: dropped {who}: {exc}")
            return Dropped(file, exc.reason, who, str(exc))
        return None

    def _warn_drop(self, file: str, reason: str, who: str, message: str) -> None:
        """Warn and count once per offender, not once per poll."""
        if (file, who) in self._warned:
            return
        if len(self._warned) > 100_000:  # bound the memory a flood of bad actors can take
            self._warned.clear()
        self._warned.add((file, who))
        self.dropped_counts[(file, reason)] = self.dropped_counts.get((file, reason), 0) + 1
        log.warning("%s", message)

    @property
    def server_count(self) -> int:
        return len(self._servers)


def _rollout_target(
    address: str, ident: ServerIdentity, actor: ActorRecord, node_ip: str, cluster: str
) -> Target:
    return Target.of(
        address,
        {
            "engine": ident.engine,
            "role": ident.role,
            "replica": ident.replica,
            "node_ip": node_ip,
            "node_id": actor.node_id,
            "ray_job_id": actor.job_id,
            "ray_namespace": actor.namespace,
            "actor_name": actor.name,
            "cluster": cluster,
        },
    )


def _node_target(record: NodeRecord, port: int, cluster: str) -> Target:
    labels = {
        "node_id": record.node_id,
        "node_ip": record.node_ip,
        "node_name": record.node_name,
        "is_head_node": "true" if record.is_head else "false",
        "cluster": cluster,
    }
    return Target.of(format_address(record.node_ip, port), labels)


def summarize_changes(
    old: Iterable[Target], new: Iterable[Target], noun: str, group_label: str, group_name: str
) -> list[str]:
    """Human lines for the log: ``+2 rollout targets (job 03000000)``."""
    old_set, new_set = set(old), set(new)
    counts: dict[tuple[str, str], int] = {}
    for sign, targets in (("+", new_set - old_set), ("-", old_set - new_set)):
        for t in targets:
            key = (sign, t.label(group_label))
            counts[key] = counts.get(key, 0) + 1
    return [
        f"{sign}{n} {noun} target{'s' if n != 1 else ''} ({group_name} {value or '-'})"
        for (sign, value), n in sorted(counts.items())
    ]
