"""The records every discovery source returns, and the two interfaces of the discovery seam."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ActorRecord:
    """One ALIVE Ray actor as the state API lists it (no address: Ray does not know it)."""

    actor_id: str
    class_name: str
    name: str
    job_id: str
    namespace: str
    node_id: str
    pid: int


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One ALIVE Ray node."""

    node_id: str
    node_ip: str
    node_name: str
    is_head: bool


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """What one poll saw. Tuples, so that two snapshots compare equal when nothing changed."""

    actors: tuple[ActorRecord, ...]
    nodes: tuple[NodeRecord, ...]
    # The actor list may have been cut at the configured limit: absence proves nothing then.
    truncated: bool = False
    # The Ray session's identity (its session name, else the head node id); "" when the source
    # cannot tell. Actor and job ids repeat across sessions: the reconciler tells them apart.
    session: str = ""


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of asking one actor for its HTTP address."""

    # What get_server_address() returned, unvalidated: (host, port) (verl 0.6+) or "host:port"
    # (verl <= 0.5); None while unknown. The reconciler validates it (render.parse_address).
    address: object | None
    error: str | None = None  # why it is unknown; None while the call is still running


class SourceError(Exception):
    """A poll could not see the cluster. ``kind`` is a short, stable label for metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ClusterSource(Protocol):
    """Lists what is ALIVE. Raises :class:`SourceError`; never returns a partial snapshot."""

    def snapshot(self) -> ClusterSnapshot: ...


class Lookups(Protocol):
    """Asks servers and nodes for what the listing does not carry: all the reconciler needs.

    Every call returns within its timeout with whatever is known; anything missing from the
    answer is simply not known yet and is asked again at a later poll.
    """

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]: ...

    def metrics_ports(self, node_ids: Iterable[str]) -> Mapping[str, int]: ...

    def ray_components(self) -> Mapping[str, str] | None:
        """The metrics addresses of Ray's own components other than its nodes, by component
        (``names.RAY_COMPONENT_KV_KEYS``: dashboard, autoscaler), unvalidated, as Ray's
        service-discovery file lists them; those not known (yet) are left out. None: the
        source has no Ray components at all (a described cluster), nothing to ask again."""
        ...


class Resolver(Lookups, Protocol):
    """The lookups, and the life cycle the poll and the one-shot commands drive: every method
    either calls, so none is optional and none is probed for."""

    @property
    def ready(self) -> bool:
        """Whether lookups can be answered now (never blocks). Files that need the resolver
        wait until it is (the poll's warm-up), at most RESOLVER_WARMUP_SECONDS."""
        ...

    def wait_ready(self, timeout: float) -> bool:
        """Block until ``ready`` or ``timeout`` seconds passed; whether it is ready. Only the
        one-shot commands wait; the daemon's loop never blocks on it."""
        ...

    def restart(self) -> None:
        """A new Ray session: drop whatever is tied to the old one (the bridge's driver);
        ``ready`` stays false until the resolver answers in the new session."""
        ...

    def problem(self) -> str | None:
        """None while resolution works; else one line saying what fails (e.g. "Ray bridge
        cannot connect: ..."). /healthz shows it as the "resolver" stage, and the daemon logs
        when it starts and ends."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ChangeProbe(Protocol):
    """A source that can tell, more cheaply than a poll, that the cluster may have changed."""

    def looks_changed(self) -> bool:
        """True when a poll now may see something new. False also when the source cannot
        tell: the regular polls still run, so a False is never taken as proof of anything."""
        ...
