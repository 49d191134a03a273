"""From what one poll saw to the targets each file should hold.

The reconciler is the daemon's memory between polls: which servers exist and since when, their
resolved addresses, node metrics ports, and the grace timers of servers that disappeared. It is
pure apart from the resolver it is handed, and takes its clock as an argument, so tests drive
time directly.

Servers are keyed by (Ray session, actor id): Ray derives actor ids from job ids, which a new
session reuses, so the same id in a new session is another actor, with another address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, NamedTuple

from fsd_daemon.config import Config
from fsd_daemon.discovery.base import ActorRecord, ClusterSnapshot, Lookups, NodeRecord
from fsd_daemon.mixin import names
from fsd_daemon.pipeline.render import InvalidTarget, Target, parse_address, validate_target
from fsd_daemon.pipeline.targets import (
    RolloutInputs,
    gpu_target,
    ray_component_target,
    ray_node_target,
    rollout_target,
)
from fsd_daemon.recognition.recognise import Recogniser, Rejected, ServerIdentity, describe

log = logging.getLogger(__name__)

ROLLOUT_FILE = "rollout.json"
GPU_FILE = "gpu.json"
RAY_FILE = "ray.json"
# Seconds between two asks for Ray's components (dashboard, autoscaler) while one is unknown.
_COMPONENTS_RETRY = 30.0


class _ServerKey(NamedTuple):
    """A server's identity across polls (see the module docstring)."""

    session: str
    actor_id: str


@dataclass
class _Server:
    actor: ActorRecord
    identity: ServerIdentity
    # The last time a poll listed it. Every poll refreshes it, also one whose listing did not
    # change: the grace period counts from the last poll that saw the server.
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
    # When to ask again for Ray's components (dashboard, autoscaler) not known yet.
    components_due: float | None = None

    def any(self, now: float) -> bool:
        due = self.grace_deadline is not None and now >= self.grace_deadline
        components = self.components_due is not None and now >= self.components_due
        return self.unresolved or self.ports_missing or due or components


class _CachedTarget(NamedTuple):
    """One entry's target as validated at some poll, with what it was made of."""

    inputs: Hashable  # equal inputs (and an unchanged config) give an equal target
    target: Target | None  # None when it was dropped
    dropped: Dropped | None  # why, when it was dropped


@dataclass
class _Built:
    """Targets of one :meth:`Reconciler._desired` pass, and the cache it leaves behind."""

    previous: dict[tuple[str, Hashable], _CachedTarget]
    cache: dict[tuple[str, Hashable], _CachedTarget] = field(default_factory=dict)
    targets: dict[str, list[Target]] = field(
        default_factory=lambda: {ROLLOUT_FILE: [], GPU_FILE: [], RAY_FILE: []}
    )
    dropped: list[Dropped] = field(default_factory=list)


@dataclass
class Reconciler:
    config: Config
    clock: Callable[[], float] = time.monotonic
    recogniser: Recogniser = field(init=False)
    # True when the last apply() saw the Ray session change (the poll then restarts the
    # resolver and waits for it to warm up again).
    session_changed: bool = field(default=False, init=False)
    _session: str = field(default="", init=False)
    _servers: dict[_ServerKey, _Server] = field(default_factory=dict, init=False)
    _nodes: dict[str, _Node] = field(default_factory=dict, init=False)
    # Ray's own metrics endpoints other than the nodes (names.RAY_COMPONENT_KV_KEYS), by
    # component, as the resolver last gave them in this session; None: not asked yet.
    _components: dict[str, str] | None = field(default=None, init=False)
    _components_asked_at: float = field(default=float("-inf"), init=False)
    _components_delay: float = field(default=0.5, init=False)
    # What the last folded snapshot listed, and when a poll last listed it: an unchanged poll
    # returns early, so this is how its servers count as seen (see _Server.last_seen).
    _listed_servers: set[_ServerKey] = field(default_factory=set, init=False)
    _listed_nodes: set[str] = field(default_factory=set, init=False)
    _listed_at: float | None = field(default=None, init=False)
    # Listings failed since the last one folded in (Ray away): time without an answer is no
    # evidence that anything left, so a grace period counts from the first listing that
    # misses an entry, never from before the outage.
    _outage: bool = field(default=False, init=False)
    _stale_sessions: bool = field(default=False, init=False)
    _last_snapshot: ClusterSnapshot | None = field(default=None, init=False)
    _pending: _Pending = field(default_factory=_Pending, init=False)
    _warned: set[tuple[str, str]] = field(default_factory=set, init=False)
    # Each node target (gpu.json, ray.json) validated at the last poll (or why it was
    # dropped), by (file, node id): a changed poll re-validates only what changed. Rollout
    # targets are kept in _rollout instead.
    _target_cache: dict[tuple[str, Hashable], _CachedTarget] = field(
        default_factory=dict, init=False
    )
    # The rollout target of every server with an address (or why it was dropped), kept across
    # polls, each with the RolloutInputs it was built from. Only the servers in _dirty_servers
    # are looked at again; every change of an input must mark its server (_mark, or
    # _changed_nodes for a node's record, or None: all of them). That invariant is checked by
    # tests/test_incremental_poll.py, which drives long random sequences of every kind of change
    # (servers, addresses, nodes, disaggregation, config reloads, sessions) and compares the
    # files with those of a fresh reconciler. A changed poll at 10,000 servers thus rebuilds
    # only what changed, not a 10,000-server loop.
    _rollout: dict[_ServerKey, _CachedTarget] = field(default_factory=dict, init=False)
    _dirty_servers: set[_ServerKey] | None = field(default=None, init=False)
    _changed_nodes: set[str] = field(default_factory=set, init=False)
    _disaggregated: set[tuple[str, ...]] = field(default_factory=set, init=False)
    # Targets dropped as invalid, counted once per offender: (file, reason) -> count.
    dropped_counts: dict[tuple[str, str], int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.recogniser = Recogniser(self.config.patterns)

    def reset(self) -> None:
        """Forget everything (a new Ray session: every actor id and address is new)."""
        self._servers.clear()
        self._target_cache.clear()
        self._rebuild_all()
        self._nodes.clear()
        self._components, self._components_delay = None, 0.5
        self._listed_servers.clear()
        self._listed_nodes.clear()
        self._listed_at = None
        self._session = ""
        self._stale_sessions = False
        self.session_changed = False
        self._last_snapshot = None
        self._pending = _Pending()
        self.recogniser = Recogniser(self.config.patterns)

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded config without forgetting resolved addresses."""
        self.config = config
        self._target_cache.clear()  # limits and the cluster label may have changed
        self._rebuild_all()
        self.recogniser = Recogniser(config.patterns)
        for key, server in list(self._servers.items()):
            identity = self.recogniser.identify(server.actor)
            if identity is None:
                del self._servers[key]
            else:
                server.identity = identity
        self._last_snapshot = None  # recompute at the next poll, labels may have changed

    def _rebuild_all(self) -> None:
        self._rollout.clear()
        self._dirty_servers = None
        self._changed_nodes.clear()
        self._disaggregated.clear()

    def _mark(self, key: _ServerKey) -> None:
        """``key``'s rollout target must be built again (see ``_rollout``)."""
        if self._dirty_servers is not None:
            self._dirty_servers.add(key)

    def has_unresolved(self) -> bool:
        """Servers without an address yet, or (when ray.json is written) nodes without a port."""
        if any(s.address is None for s in self._servers.values()):
            return True  # only the current session's can lack one (see _start_session)
        return self.config.targets.write_ray and any(
            n.metrics_port is None for n in self._nodes.values()
        )

    def apply(self, snapshot: ClusterSnapshot, resolver: Lookups) -> Desired | None:
        """Fold one successful poll in. None means nothing can have changed since the last call.

        Only call this with a complete snapshot: a failed poll must not reach here, which is
        what keeps a Ray outage from emptying the files.
        """
        now = self.clock()
        self.session_changed = False
        if snapshot == self._last_snapshot and not self._pending.any(now):
            self._listed_at = now  # everything the last snapshot listed was seen now
            self._outage = False
            return None
        if snapshot.session and snapshot.session != self._session:
            self._start_session(snapshot.session)
        self._last_snapshot = snapshot
        self._pending = _Pending()
        self._fold_servers(snapshot, now)
        self._fold_nodes(snapshot, now)
        self._listed_at = now
        self._resolve_addresses(resolver)
        self._drop_replaced()
        ports_answered = self._resolve_ports(resolver)
        self._resolve_components(resolver, now, with_ports=ports_answered)
        self._outage = False
        return self._desired()

    def listing_failed(self) -> None:
        """A poll could not list the cluster (see ``_outage``)."""
        self._outage = True

    def unresolved_names(self) -> set[tuple[str, str]]:
        """``(ray_namespace, actor_name)`` of live recognised servers without an address yet."""
        return {
            (s.actor.namespace, s.actor.name)
            for key, s in self._servers.items()
            if s.address is None and key.session == self._session
        }

    # -- Ray sessions ----------------------------------------------------------------------

    def _start_session(self, session: str) -> None:
        """A new Ray session (or the first one seen). Old servers keep their targets until the
        grace period passes, as any server that leaves does, unless the new session lists the
        same actor again (then the new one replaces it once resolved: _drop_replaced).
        Addresses are never carried over: the key includes the session."""
        if self._session:
            self.session_changed = True
            log.info("Ray session changed (%s -> %s)", self._session, session)
            # An actor id of the old session may name another actor now.
            self.recogniser.clear()
            for key in [k for k, s in self._servers.items() if s.address is None]:
                del self._servers[key]  # nothing to keep listing: it never had an address
            self._stale_sessions = bool(self._servers)
        else:
            # The source told no session until now: what it listed belongs to this one.
            self._servers = {key._replace(session=session): s for key, s in self._servers.items()}
            self._listed_servers = {key._replace(session=session) for key in self._listed_servers}
        self._session = session
        self._dirty_servers = None  # keys carry the session
        # A new session's dashboard and autoscaler: ask again, at once.
        self._components, self._components_delay = None, 0.5

    def _drop_replaced(self) -> None:
        """Old-session servers whose actor id the new session resolved: the new one replaces."""
        if not self._stale_sessions:
            return
        resolved = {
            key.actor_id
            for key, s in self._servers.items()
            if key.session == self._session and s.address
        }
        stale = [key for key in self._servers if key.session != self._session]
        for key in stale:
            if key.actor_id in resolved:
                del self._servers[key]
        self._stale_sessions = any(key.session != self._session for key in self._servers)

    # -- servers ---------------------------------------------------------------------------

    def _fold_servers(self, snapshot: ClusterSnapshot, now: float) -> None:
        live: set[_ServerKey] = set()
        servers, session = self._servers, self._session
        for actor in snapshot.actors:
            key = _ServerKey(session, actor.actor_id)
            known = servers.get(key)
            if known is not None and known.actor is actor:
                # The very record the last fold took (RayStateSource reuses the record of an
                # unchanged raw record): a server with the same identity, pid and node.
                live.add(key)
                known.last_seen = now
                continue
            verdict = self.recogniser.classify(actor)
            if not isinstance(verdict, ServerIdentity):
                if isinstance(verdict, Rejected):
                    who = _who(actor)
                    self._warn_drop(ROLLOUT_FILE, verdict.reason, who, "")
                continue
            identity = verdict
            live.add(key)
            self._mark(key)  # new, or its record changed
            if known is None:
                servers[key] = _Server(actor, identity, now)
                continue
            if (known.actor.pid, known.actor.node_id) != (actor.pid, actor.node_id):
                # Ray restarted the actor (same id, new process): its port is new too.
                log.info(
                    "actor %s restarted (pid %s -> %s)",
                    describe(actor.name),
                    known.actor.pid,
                    actor.pid,
                )
                known.address = None
            known.actor = actor
            known.last_seen = now
        self.recogniser.forget({a.actor_id for a in snapshot.actors})
        listed_before, self._listed_servers = self._listed_servers, live
        self._expire(self._servers, live, listed_before, snapshot.truncated, now, "rollout server")

    def _expire(
        self,
        entries: dict[Any, Any],  # servers by _ServerKey or nodes by node id
        live: set[Any],
        listed_before: set[Any],
        truncated: bool,
        now: float,
        what: str,
    ) -> None:
        grace = self.config.daemon.grace_period_seconds
        for key in list(entries.keys() - live):
            entry = entries[key]
            if truncated:
                # The listing was cut at the limit: a missing entry may simply be beyond it,
                # so it counts as seen.
                entry.last_seen = now
                continue
            if key in listed_before and self._listed_at is not None:
                # Listed by every poll up to the previous one, which may have returned early;
                # after an outage, this is the first listing that misses it.
                entry.last_seen = max(entry.last_seen, now if self._outage else self._listed_at)
            deadline = entry.last_seen + grace
            if now >= deadline:
                entries.pop(key)
                name = (
                    describe(entry.actor.name) if isinstance(entry, _Server) else entry.node.node_id
                )
                log.info("%s %s gone for %.0fs: removing it", what, name, now - entry.last_seen)
            else:
                current = self._pending.grace_deadline
                self._pending.grace_deadline = (
                    deadline if current is None else min(current, deadline)
                )

    def _resolve_addresses(self, resolver: Lookups) -> None:
        waiting = [s.actor for s in self._servers.values() if s.address is None]
        if not waiting:
            return
        answers = resolver.resolve_addresses(waiting)
        for actor in waiting:
            key = _ServerKey(self._session, actor.actor_id)
            server = self._servers[key]
            answer = answers.get(actor.actor_id)
            if answer is not None and answer.address is not None:
                try:
                    server.address = parse_address(answer.address)
                    self._mark(key)
                except InvalidTarget as exc:
                    who = _who(actor)
                    self._warn_drop(ROLLOUT_FILE, exc.reason, who, f"{who}: {exc}; dropped")
                    continue
                if server.failures:
                    log.info("actor %s now answers at %s", describe(actor.name), server.address)
                continue
            if answer is not None and answer.error is not None:
                if server.failures == 0:
                    log.info(
                        "actor %s has no address yet: %s (will retry)",
                        describe(actor.name),
                        str(answer.error)[:500],
                    )
                server.failures += 1
            self._pending.unresolved = True

    # -- nodes -----------------------------------------------------------------------------

    def _fold_nodes(self, snapshot: ClusterSnapshot, now: float) -> None:
        live = set()
        changed = self._changed_nodes  # new, changed or removed: their servers' node_ip
        for node in snapshot.nodes:
            live.add(node.node_id)
            known = self._nodes.get(node.node_id)
            if known is None:
                self._nodes[node.node_id] = _Node(node, now)
                changed.add(node.node_id)
            else:
                if known.node is not node and known.node != node:
                    changed.add(node.node_id)
                known.node = node
                known.last_seen = now
        listed_before, self._listed_nodes = self._listed_nodes, live
        before = self._nodes.keys() - live
        # Never emptier than the truth, as rollout.json: a listing with no node at all is a
        # GCS whose nodes have not registered yet (a cluster always has its head node); and a
        # node that left keeps its ray.json target while a node listed on its IP (Ray started
        # again there) has no metrics port yet.
        waiting_ips = (
            {n.node.node_ip for key, n in self._nodes.items() if key in live and not n.metrics_port}
            if self.config.targets.write_ray
            else set()
        )
        for key in before:
            entry = self._nodes[key]
            if entry.metrics_port and entry.node.node_ip in waiting_ips:
                entry.last_seen = now
        self._expire(self._nodes, live, listed_before, not live, now, "node")
        changed |= before - self._nodes.keys()

    def _resolve_ports(self, resolver: Lookups) -> bool:
        """Ask for the ports not known yet; True when the resolver gave one now."""
        if not self.config.targets.write_ray:
            return False
        missing = [n.node.node_id for n in self._nodes.values() if n.metrics_port is None]
        if not missing:
            return False
        ports = resolver.metrics_ports(missing)
        for node_id in missing:
            port = ports.get(node_id)
            if port:
                self._nodes[node_id].metrics_port = port
            else:
                self._pending.ports_missing = True
        return any(ports.get(node_id) for node_id in missing)

    def _resolve_components(self, resolver: Lookups, now: float, *, with_ports: bool) -> None:
        """Ray's dashboard and autoscaler addresses: fixed for a session once written (they
        are written at their start), so asked until both are known: at once when the
        resolver has just given nodes' ports (it answers now), else after a delay that grows
        from 1 s to ``_COMPONENTS_RETRY`` (a cluster may run without an autoscaler)."""
        if not self.config.targets.write_ray:
            return
        known = self._components or {}
        wanted = names.RAY_COMPONENT_KV_KEYS.keys()
        if self._components is not None and known.keys() >= wanted:
            return
        due = self._components_asked_at + self._components_delay
        if self._components is not None and not with_ports and now < due:
            self._pending.components_due = due
            return
        self._components_asked_at = now
        answer = resolver.ray_components()
        if answer is None:
            self._components = dict(known)  # no such components here: asked no more
            self._components_delay = float("inf")
            return
        self._components = {c: a for c, a in {**known, **answer}.items() if c in wanted}
        if self._components.keys() >= wanted:
            self._components_delay = 1.0
            return
        self._components_delay = min(_COMPONENTS_RETRY, self._components_delay * 2)
        self._pending.components_due = now + self._components_delay

    # -- targets ---------------------------------------------------------------------------

    def _desired(self) -> Desired:
        cluster = self.config.daemon.cluster
        built = _Built(previous=self._target_cache)
        rollout_targets, rollout_dropped = self._rollout_targets(cluster)
        built.targets[ROLLOUT_FILE] = rollout_targets
        gpu_port = self.config.targets.gpu_exporter_port
        listed_ips = {self._nodes[key].node.node_ip for key in self._listed_nodes}
        for key, entry in self._nodes.items():
            record = entry.node
            who = partial(str.__add__, "node ", record.node_id)
            # A node that left, on an IP where a listed node is now: the new one's gpu target
            # (same address) replaces it at once; only its ray.json target may still be waited.
            replaced = key not in self._listed_nodes and record.node_ip in listed_ips
            if self.config.targets.write_gpu and not replaced:
                make = partial(gpu_target, record, gpu_port, cluster)
                self._add(built, GPU_FILE, record.node_id, (record, gpu_port), make, who)
            if self.config.targets.write_ray and entry.metrics_port:
                port = entry.metrics_port
                make = partial(ray_node_target, record, port, cluster)
                self._add(built, RAY_FILE, record.node_id, (record, port), make, who)
        if self.config.targets.write_ray:
            head = next((n.node for n in self._nodes.values() if n.node.is_head), None)
            for component, value in sorted((self._components or {}).items()):
                who = partial(str.__add__, "Ray component ", component)
                make = partial(ray_component_target, component, value, head, cluster)
                self._add(built, RAY_FILE, component, (value, head), make, who)
        self._target_cache = built.cache
        files = {ROLLOUT_FILE: tuple(rollout_targets)}
        if self.config.targets.write_gpu:
            files[GPU_FILE] = tuple(built.targets[GPU_FILE])
        if self.config.targets.write_ray:
            files[RAY_FILE] = tuple(built.targets[RAY_FILE])
        return Desired(files, (*rollout_dropped, *built.dropped))

    def _rollout_targets(self, cluster: str) -> tuple[list[Target], list[Dropped]]:
        """Every server's rollout target (and the drops), rebuilding only the dirty ones."""
        servers, rollout = self._servers, self._rollout
        for gone in rollout.keys() - servers.keys():
            del rollout[gone]
        disaggregated = _disaggregated_replicas(servers)
        dirty: Iterable[_ServerKey]
        if self._dirty_servers is None:
            dirty = list(servers)
        else:
            dirty = self._dirty_servers
            nodes_changed, flipped = self._changed_nodes, disaggregated ^ self._disaggregated
            if nodes_changed or flipped:
                dirty |= {
                    key
                    for key, s in servers.items()
                    if s.actor.node_id in nodes_changed or _replica_key(key.session, s) in flipped
                }
        nodes = self._nodes
        for key in dirty:
            server = servers.get(key)
            if server is None or server.address is None:
                rollout.pop(key, None)
                continue
            session = key.session
            actor, ident = server.actor, server.identity
            if (
                disaggregated
                and not ident.disaggregation
                and _replica_key(session, server) in disaggregated
            ):
                # A disaggregated replica's prefill server keeps the plain name
                # (verl/workers/rollout/vllm_rollout/vllm_pd_replica.py): it is known as the
                # plain server of a replica that also has decode servers.
                ident = replace(ident, disaggregation=names.DISAGGREGATION_PREFILL)
            node = nodes.get(actor.node_id)
            node_ip = node.node.node_ip if node else ""
            inputs = RolloutInputs(server.address, ident, actor, node_ip, session)
            cached = rollout.get(key)
            if cached is None or cached.inputs != inputs:
                made = rollout_target(inputs, cluster)
                invalid = self._invalid(ROLLOUT_FILE, made, partial(_who, actor))
                cached = _CachedTarget(inputs, None if invalid else made, invalid)
            rollout[key] = cached
        self._dirty_servers = set()
        self._changed_nodes = set()
        self._disaggregated = disaggregated
        targets = [c.target for c in rollout.values() if c.target is not None]
        dropped = [c.dropped for c in rollout.values() if c.dropped is not None]
        return targets, dropped

    def _add(
        self,
        built: _Built,
        file: str,
        ident: Hashable,  # a server's key or a node's id
        key: tuple[Any, ...],
        make: Callable[[], Target],
        who: Callable[[], str],  # called only when the target is invalid
    ) -> None:
        """Validate ``make()`` into ``built`` unless the same ``key`` was validated last time.

        Invariant: the cache is keyed by everything a target is made of (besides the config,
        whose change clears it), so a cached answer is the answer validation would give now.
        """
        slot = (file, ident)
        cached = built.previous.get(slot)
        if cached is None or cached.inputs != key:
            made = make()
            invalid = self._invalid(file, made, who)
            cached = _CachedTarget(key, None if invalid else made, invalid)
        built.cache[slot] = cached
        if cached.target is not None:
            built.targets[file].append(cached.target)
        elif cached.dropped is not None:
            built.dropped.append(cached.dropped)

    def _invalid(self, file: str, target: Target, who: Callable[[], str]) -> Dropped | None:
        """Why ``target`` cannot be written (warned once per offender), or None if it can."""
        try:
            validate_target(target, self.config.targets.max_label_value_length)
        except InvalidTarget as exc:
            name = who()
            self._warn_drop(file, exc.reason, name, f"{file}: dropped {name}: {exc}")
            return Dropped(file, exc.reason, name, str(exc))
        return None

    def _warn_drop(self, file: str, reason: str, who: str, message: str) -> None:
        """Warn (unless ``message`` is empty: logged already) and count once per offender, not
        once per poll."""
        if (file, who) in self._warned:
            return
        if len(self._warned) > 100_000:  # bound the memory a flood of bad actors can take
            self._warned.clear()
        self._warned.add((file, who))
        self.dropped_counts[(file, reason)] = self.dropped_counts.get((file, reason), 0) + 1
        if message:
            log.warning("%s", message)

    @property
    def server_count(self) -> int:
        return len(self._servers)


def _who(actor: ActorRecord) -> str:
    """An actor for log lines and drop counts: its name and id, each bounded in length."""
    return f"actor {describe(actor.name)} ({describe(actor.actor_id, 64)})"


def _replica_key(session: str, server: _Server) -> tuple[str, ...]:
    a, i = server.actor, server.identity
    return (session, a.job_id, a.namespace, i.engine, i.role, i.replica)


def _disaggregated_replicas(servers: dict[_ServerKey, _Server]) -> set[tuple[str, ...]]:
    """The replicas that have decode servers (their plain-named server is the prefill one)."""
    return {
        _replica_key(session, s)
        for (session, _actor_id), s in servers.items()
        if s.identity.disaggregation == names.DISAGGREGATION_DECODE
    }


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
