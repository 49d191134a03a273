"""Which actors are rollout servers, and what their names say (engine, role, replica, node)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fsd_daemon.config import RecognitionPattern
from fsd_daemon.discovery.base import ActorRecord


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    engine: str
    role: str
    replica: str  # "" when the name carries none
    node_rank: int  # 0 when the name carries none


@dataclass(frozen=True)
class _Compiled:
    class_re: re.Pattern[str]
    name_re: re.Pattern[str]
    engine: str
    every_index_serves_roles: frozenset[str]


class Recogniser:
    """Matches actors against the configured patterns, first match wins.

    Results are cached by actor id: an actor's class and name never change while it lives, and
    a poll of 10,000 actors must not run 10,000 regexes when nothing changed.
    """

    def __init__(self, patterns: tuple[RecognitionPattern, ...]) -> None:
        self._patterns = [
            _Compiled(
                re.compile(p.class_name),
                re.compile(p.name),
                p.engine,
                frozenset(p.every_index_serves_roles),
            )
            for p in patterns
        ]
        self._cache: dict[str, ServerIdentity | None] = {}

    def identify(self, actor: ActorRecord) -> ServerIdentity | None:
        """The identity of a rollout server that serves HTTP, or None for any other actor."""
        try:
            return self._cache[actor.actor_id]
        except KeyError:
            pass
        identity = self._match(actor.class_name, actor.name)
        self._cache[actor.actor_id] = identity
        return identity

    def forget(self, live_actor_ids: set[str]) -> None:
        """Drop cached answers for actors that are gone, so the cache never outgrows the cluster."""
        for actor_id in self._cache.keys() - live_actor_ids:
            del self._cache[actor_id]

    def name_groups(self, class_name: str, name: str) -> dict[str, str]:
        """What the first pattern matching this class and name captures (``replica``,
        ``role``, ``node``, ...; absent groups left out), whatever the node rank; {} when no
        pattern matches. The GPU exporter reads replicas and roles of GPU holders with it."""
        found = self._first_match(class_name, name)
        if found is None:
            return {}
        return {k: v for k, v in found[1].items() if v}

    def _first_match(
        self, class_name: str, name: str
    ) -> tuple[_Compiled, dict[str, str | None]] | None:
        for p in self._patterns:
            if p.class_re.fullmatch(class_name):
                m = p.name_re.fullmatch(name)
                if m is not None:
                    return p, m.groupdict()
        return None

    def _match(self, class_name: str, name: str) -> ServerIdentity | None:
        found = self._first_match(class_name, name)
        if found is None:
            return None
        p, groups = found
        role = groups.get("role") or "rollout"
        node_text = groups.get("node")
        node_rank = int(node_text) if node_text else 0
        # Only node rank 0 of a multi-node replica runs the HTTP server; the others have
        # nothing to scrape. Some roles (disaggregated decode) serve on every index.
        if node_rank != 0 and role not in p.every_index_serves_roles:
            return None
        return ServerIdentity(
            engine=groups.get("engine") or p.engine,
            role=role,
            replica=groups.get("replica") or "",
            node_rank=node_rank,
        )
