"""Which actors are rollout servers, and what their names say (engine, role, replica, node).

Invariant: every string here comes from whoever created the actor, so it is bounded in length
BEFORE any regex sees it, matched only by ASCII patterns with bounded repetition, and only
short runs of ASCII digits reach ``int()``. A name that fails is dropped and logged once (the
verdict is cached per actor id); it never raises.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from fsd_daemon.discovery.base import ActorRecord
from fsd_daemon.recognition.verl import (
    DEFAULT_METRICS_PATH,
    GROUP_ENGINE,
    GROUP_NODE,
    GROUP_REPLICA,
    GROUP_ROLE,
    GROUP_SUFFIX,
    ROLE_ROLLOUT,
    ROLE_TEACHER,
    RecognitionPattern,
)

log = logging.getLogger(__name__)

# Longest class and actor names looked at. verl's longest names are a prefix, a role, two
# numbers and a teacher key: far below these. Longer is not a server (and is logged).
MAX_CLASS_NAME_LENGTH = 256
MAX_ACTOR_NAME_LENGTH = 512
# Replica numbers and node ranks: at most this many ASCII digits (far below Python's
# 4,300-digit int() limit, and below 2**31).
MAX_NUMBER_DIGITS = 9
# Name words that say which half of a prefill/decode disaggregated replica a server is.
DISAGGREGATION_ROLES = ("prefill", "decode")


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    engine: str
    role: str  # rollout, reward, teacher: what the server is used for
    replica: str  # "" when the name carries none
    node_rank: int  # 0 when the name carries none (for a decode server: its index)
    # "decode" from the name; "prefill" is inferred by the reconciler (the prefill server of a
    # disaggregated replica keeps the plain name); "" when not disaggregated.
    disaggregation: str = ""
    teacher: str = ""  # the teacher key (verl's name_suffix) of a teacher server
    metrics_path: str = DEFAULT_METRICS_PATH
    has_metrics_route: bool = True


@dataclass(frozen=True, slots=True)
class Rejected:
    """An actor that looked like a server but cannot be one. ``reason`` is a metrics label."""

    reason: str
    message: str


@dataclass(frozen=True)
class _Compiled:
    pattern: RecognitionPattern
    class_re: re.Pattern[str]
    name_re: re.Pattern[str]


def describe(name: str, limit: int = 80) -> str:
    """An actor name fit for a log line: repr'd, and cut with its length said when long."""
    if len(name) <= limit:
        return repr(name)
    return f"{name[:limit]!r}... ({len(name)} characters)"


def bounded_number(text: str) -> int | None:
    """``int(text)`` for 1 to MAX_NUMBER_DIGITS ASCII digits, else None (never raises)."""
    if 0 < len(text) <= MAX_NUMBER_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


class Recogniser:
    """Matches actors against the configured patterns, first match wins.

    Results are cached by actor id: an actor's class and name never change while it lives, and
    a poll of 10,000 actors must not run 10,000 regexes when nothing changed.
    """

    def __init__(self, patterns: tuple[RecognitionPattern, ...]) -> None:
        self._patterns = [
            _Compiled(p, re.compile(p.class_name, re.ASCII), re.compile(p.name, re.ASCII))
            for p in patterns
        ]
        self._cache: dict[str, ServerIdentity | Rejected | None] = {}

    def identify(self, actor: ActorRecord) -> ServerIdentity | None:
        """The identity of a rollout server that serves HTTP, or None for any other actor."""
        verdict = self.classify(actor)
        return verdict if isinstance(verdict, ServerIdentity) else None

    def classify(self, actor: ActorRecord) -> ServerIdentity | Rejected | None:
        """A server's identity, None for other actors, or why a would-be server was refused."""
        try:
            return self._cache[actor.actor_id]
        except KeyError:
            pass
        verdict = self._classify(actor.class_name, actor.name)
        if isinstance(verdict, Rejected):
            # Logged once: the verdict is cached for as long as the actor lives.
            log.warning(
                "actor %s (%s) ignored: %s",
                describe(actor.name),
                describe(actor.actor_id, 64),
                verdict.message,
            )
        self._cache[actor.actor_id] = verdict
        return verdict

    def forget(self, live_actor_ids: set[str]) -> None:
        """Drop cached answers for actors that are gone, so the cache never outgrows the cluster."""
        for actor_id in self._cache.keys() - live_actor_ids:
            del self._cache[actor_id]

    def clear(self) -> None:
        """Forget every verdict (a new Ray session may reuse an actor id for another actor)."""
        self._cache.clear()

    def name_groups(self, class_name: str, name: str) -> dict[str, str]:
        """What the first pattern matching this class and name captures (``replica``,
        ``role``, ``node``, ...; absent groups left out), whatever the node rank; {} when no
        pattern matches or a name is over its bound. The GPU exporter reads replicas and roles
        of GPU holders with it."""
        if not _within_bounds(class_name, name):
            return {}
        found = self._first_match(class_name, name)
        if found is None:
            return {}
        return {k: v for k, v in found[1].items() if v}

    def _first_match(
        self, class_name: str, name: str
    ) -> tuple[RecognitionPattern, dict[str, str | None]] | None:
        for p in self._patterns:
            if p.class_re.fullmatch(class_name):
                m = p.name_re.fullmatch(name)
                if m is not None:
                    return p.pattern, m.groupdict()
        return None

    def _classify(self, class_name: str, name: str) -> ServerIdentity | Rejected | None:
        if not _within_bounds(class_name, name):
            if "Server" not in class_name[:MAX_CLASS_NAME_LENGTH]:
                return None  # not even trying to look like a server: nothing to report
            return Rejected(
                "name_too_long",
                f"class or actor name over {MAX_CLASS_NAME_LENGTH}/{MAX_ACTOR_NAME_LENGTH} "
                f"characters (class {len(class_name)}, name {len(name)})",
            )
        found = self._first_match(class_name, name)
        if found is None:
            return None
        p, groups = found
        name_role = groups.get(GROUP_ROLE) or ROLE_ROLLOUT
        node_text = groups.get(GROUP_NODE) or "0"
        node_rank = bounded_number(node_text)
        if node_rank is None:
            return Rejected("bad_node_rank", f"node rank {node_text[:20]!r} is not a small number")
        replica = groups.get(GROUP_REPLICA) or ""
        if replica and bounded_number(replica) is None:
            return Rejected("bad_replica", f"replica {replica[:20]!r} is not a small number")
        # Only node rank 0 of a multi-node replica runs the HTTP server; the others have
        # nothing to scrape. Some roles (disaggregated decode) serve on every index.
        if node_rank != 0 and name_role not in p.every_index_serves_roles:
            return None
        role, disaggregation = name_role, ""
        if name_role in DISAGGREGATION_ROLES:
            role, disaggregation = ROLE_ROLLOUT, name_role
        return ServerIdentity(
            engine=groups.get(GROUP_ENGINE) or p.engine,
            role=role,
            replica=replica,
            node_rank=node_rank,
            disaggregation=disaggregation,
            teacher=(groups.get(GROUP_SUFFIX) or "") if role == ROLE_TEACHER else "",
            metrics_path=p.metrics_path,
            has_metrics_route=p.has_metrics_route,
        )


def _within_bounds(class_name: str, name: str) -> bool:
    return len(class_name) <= MAX_CLASS_NAME_LENGTH and len(name) <= MAX_ACTOR_NAME_LENGTH
