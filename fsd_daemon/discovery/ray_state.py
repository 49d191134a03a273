"""ALIVE actors and nodes from Ray's state API, over plain HTTP (no Ray in this process).

The dashboard's REST API answers the listings (``ray_http.DashboardClient``); only finding the
dashboard from a GCS address needs Ray, in a short-lived child, once per connection. Token
auth is decided as Ray's CLI decides it (``ray_auth``).

Quick polls: between full listings, ``snapshot`` asks only for the counts of ``limit=1``
listings and returns the previous snapshot while they are unchanged; this saves the daemon's
parsing, not the dashboard's work (it filters every ALIVE actor before it applies the limit:
python/ray/dashboard/state_aggregator.py list_actors). An actor moves PENDING -> ALIVE -> DEAD,
and two moves at once can cancel out in any one count, so the fingerprint has three: ALIVE;
``total`` (DEAD included), which every creation raises (one server replaced by another); and
DEAD, which every death raises (one server ALIVE as another dies). Only an actor created but
not ALIVE yet can make that last move, so DEAD is asked in quick polls only while the last
full listing left such actors (``total`` above ALIVE plus DEAD), and a full listing asks it
before its ALIVE listing, so a move between the two can overstate those actors, never hide
one. A full listing every ``full_listing_interval`` seconds bounds what no count shows: an
actor Ray restarts as another becomes ALIVE, and a replacement once the GCS evicts one DEAD
actor per death. BENCHMARKS.md ("Soak") has the measurements behind this.
"""

from __future__ import annotations

import concurrent.futures
import logging
import operator
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from fsd_daemon.discovery.base import ActorRecord, ClusterSnapshot, NodeRecord, SourceError
from fsd_daemon.discovery.ray_auth import RayAuth, RayAuthError, load_auth
from fsd_daemon.discovery.ray_http import (
    DashboardClient,
    DashboardError,
    find_dashboard_url,
    is_dashboard_url,
)
from fsd_daemon.mixin import names
from fsd_daemon.plumbing.gcpause import paused_gc

log = logging.getLogger(__name__)

# A truncated listing is logged at most this often (it is also visible in the self-metrics).
_TRUNCATION_LOG_INTERVAL = 60.0
# Finding the dashboard starts Python and imports Ray in a child: seconds on a loaded head.
_LOOKUP_TIMEOUT = 30.0
_ALIVE = (("state", "=", "ALIVE"),)
_DEAD = (("state", "=", "DEAD"),)  # filtered inside the GCS, like ALIVE
_PENDING = (("state", "=", "PENDING_CREATION"),)
# Between full listings a poll only compares counts (see the module's docstring); what they
# cannot show is seen at most this late.
FULL_LISTING_INTERVAL = 30.0
# The change probe runs between polls on the poll's thread: a slow Ray must not hold it long.
PROBE_TIMEOUT = 1.0


class _TokenChanged(SourceError):
    """Ray rejected a token that has been replaced since (a rotated token file)."""


class RayStateSource:
    """Lists ALIVE actors and nodes. Raises :class:`SourceError`; never returns partial data."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 5.0,
        actor_limit: int = 10_000,
        node_limit: int = 2_000,
        full_listing_interval: float = FULL_LISTING_INTERVAL,
        auth: RayAuth | None = None,
        lookup_timeout: float = _LOOKUP_TIMEOUT,
        find_dashboard: Callable[[str, RayAuth, float], str] = find_dashboard_url,
    ) -> None:
        """``find_dashboard(address, auth, timeout)`` turns a GCS address into the dashboard's
        URL (Ray's lookup in a child process unless given another)."""
        self.address = address
        self._find_dashboard = find_dashboard
        self.timeout = timeout
        self.actor_limit = actor_limit
        self.node_limit = node_limit
        self.full_listing_interval = full_listing_interval
        self.lookup_timeout = lookup_timeout
        self._auth_error: str | None = None
        self._auth_given = auth is not None  # fixed by the caller: never read again
        self.auth = RayAuth(token_mode=False, source="", why="unusable auth settings")
        if auth is None:
            self.reload_auth()
        else:
            self.auth = auth
        self._client: DashboardClient | None = None
        self._looking_up: concurrent.futures.Future[str] | None = None
        self._last_url: str | None = None  # where the dashboard answered last
        self._last_truncation_log = -_TRUNCATION_LOG_INTERVAL
        self._last: ClusterSnapshot | None = None
        self._last_actor_counts = (-1, -1)
        self._last_dead: int | None = None  # asked in quick polls only when not None
        self._last_node_ids: frozenset[str] = frozenset()
        self._last_node_counts = (-1, -1)
        self._last_full = -float("inf")
        self._probe_mark: tuple[int, int] | None = None  # see looks_changed
        self._session = ""
        self._session_head = ""
        self._parser = ListingParser()
        self.full_listings = 0  # full listings made (the rest were quick polls)

    # -- one poll ------------------------------------------------------------------------------

    def reload_auth(self) -> bool:
        """Decide token mode and find the token again, as at start: a rotated token file is
        read anew (SIGHUP, a rejection, every poll while the settings are unusable). True when
        what we send changed; the next request uses it."""
        if self._auth_given:
            return False
        try:
            auth = load_auth()
        except RayAuthError as exc:
            changed = self._auth_error != str(exc)
            self._auth_error = str(exc)
            return changed
        changed = self._auth_error is not None or auth != self.auth
        self._auth_error = None
        if auth != self.auth:
            self.auth = auth
            self._client = None  # built again with the new header; found where it was
            self._looking_up = None  # a lookup under way asks with the old token
        return changed

    def _rotated(self) -> SourceError:
        """A rejection of a token that has changed since: the message must not blame the
        token we send from now on."""
        return _TokenChanged(
            "auth",
            f"Ray rejected the token; it has changed since ({self.auth.describe()}), and the "
            "new one was rejected too",
        )

    def snapshot(self) -> ClusterSnapshot:
        try:
            return self._snapshot()
        except _TokenChanged:
            # Rotated: ask again with the new token now, not after the failure backoff.
            return self._snapshot()

    def _snapshot(self) -> ClusterSnapshot:
        if self._auth_error is not None:
            self.reload_auth()  # an operator may have fixed it
            if self._auth_error is not None:
                raise SourceError("auth", self._auth_error)
        try:
            client = self._connect()
        except SourceError as exc:
            if exc.kind == "auth" and self.reload_auth():
                raise self._rotated() from None
            raise
        try:
            quick = self._quick(client)
            if quick is not None:
                return quick
            dead = self._dead_count(client)  # before the listing: see the module's docstring
            probe_mark = self._pending_mark(client, self.timeout)  # before it, likewise
            actors, truncated, actor_counts = self._list(client, "actors", self.actor_limit)
            # Built before the next request: the 10,000 raw records then live only inside the
            # collector's pause (fsd_daemon.plumbing.gcpause), not across another HTTP round trip.
            with paused_gc():
                actor_records = self._parser.actors.parse(actors)
            listed_actors = len(actors)
            del actors
            nodes, nodes_cut, node_counts = self._list(client, "nodes", self.node_limit)
            session = self._session_of(client, nodes)
        except DashboardError as exc:
            self._last = None  # after a failure, only a full listing says what is there
            self._probe_mark = None
            if exc.kind == "unreachable" and not is_dashboard_url(self.address):
                # The dashboard may come back elsewhere (a Ray restart picks its URL anew).
                self._client = None
            if exc.kind == "auth" and self.reload_auth():
                raise self._rotated() from None
            raise SourceError(exc.kind, str(exc)) from None
        if truncated:
            now = time.monotonic()
            if now - self._last_truncation_log >= _TRUNCATION_LOG_INTERVAL:
                self._last_truncation_log = now
                log.warning(
                    "Ray returned %d ALIVE actors, the configured limit (ray.actor_limit): the "
                    "list may be cut. No server will be removed until it fits; raise the limit.",
                    listed_actors,
                )
        if nodes_cut:
            raise SourceError(
                "truncated", f"{len(nodes)} ALIVE nodes reach ray.node_limit; raise the limit"
            )
        snapshot = ClusterSnapshot(
            actors=actor_records,
            nodes=self._parser.nodes.parse(nodes),
            truncated=truncated,
            session=session,
        )
        self._last, self._last_actor_counts = snapshot, actor_counts
        self._probe_mark = probe_mark
        # Actors created but not ALIVE yet (or restarting): one may become ALIVE as another
        # dies, moving only the DEAD count.
        self._last_dead = dead if actor_counts[1] - actor_counts[0] - dead > 0 else None
        self._last_node_ids = frozenset(n.node_id for n in snapshot.nodes)
        self._last_node_counts = node_counts
        self._last_full = time.monotonic()
        self.full_listings += 1
        return snapshot

    def _quick(self, client: DashboardClient) -> ClusterSnapshot | None:
        """The previous snapshot when a full listing is not due and nothing seems changed:
        the same number of ALIVE actors and nodes, and a node that the last full listing had
        (node ids are never reused, so a restarted Ray fails this at once)."""
        if self._last is None or self._last.truncated:
            return None
        if time.monotonic() - self._last_full >= self.full_listing_interval:
            return None
        actors = client.list_state("actors", filters=_ALIVE, limit=1, timeout=self.timeout)
        if _counts(actors) != self._last_actor_counts:
            return None
        if self._last_dead is not None and self._dead_count(client) != self._last_dead:
            return None
        nodes = client.list_state("nodes", filters=_ALIVE, limit=1, timeout=self.timeout)
        first = nodes["result"][0].get("node_id") if nodes["result"] else None
        if _counts(nodes) != self._last_node_counts or (
            first is not None and first not in self._last_node_ids
        ):
            return None
        return self._last

    def looks_changed(self) -> bool:
        """Whether an actor may have been created or become ALIVE since the last look (a
        ``ChangeProbe``). One ``limit=1`` listing of the actors PENDING_CREATION: the GCS
        filters by state itself, so the dashboard converts only the pending actors (none on a
        quiet cluster), where a listing of ALIVE ones converts every ALIVE actor before it
        cuts (python/ray/dashboard/state_aggregator.py list_actors). Its ``total`` (every
        actor the GCS holds) rises with every creation; its count of pending actors falls as
        one becomes ALIVE. Deaths are left to the polls (a leaving server waits out its grace
        period anyway).

        The mark it compares with is taken before every full listing and after every probe,
        so a move is reported once. False when there is nothing to compare with, or the
        question fails: the next poll finds out either way, so the probe never decides what
        a file holds. Asked at most PROBE_TIMEOUT long."""
        client = self._client
        if client is None or self._probe_mark is None:
            return False
        try:
            mark = self._pending_mark(client, min(self.timeout, PROBE_TIMEOUT))
        except DashboardError as exc:
            log.debug("change probe failed (%s); the next poll asks in full", exc)
            return False
        changed, self._probe_mark = mark != self._probe_mark, mark
        return changed

    def _pending_mark(self, client: DashboardClient, timeout: float) -> tuple[int, int]:
        listing = client.list_state("actors", filters=_PENDING, limit=1, timeout=timeout)
        try:
            return _counts(listing)
        except (TypeError, ValueError) as exc:
            raise DashboardError("bad_response", f"actors: bad PENDING count ({exc})") from None

    def _dead_count(self, client: DashboardClient) -> int:
        dead = client.list_state("actors", filters=_DEAD, limit=1, timeout=self.timeout)
        try:
            return _counts(dead)[0]
        except (TypeError, ValueError) as exc:
            raise DashboardError("bad_response", f"actors: bad DEAD count ({exc})") from None

    def _connect(self) -> DashboardClient:
        """The dashboard client; finding its URL runs off the poll thread.

        The lookup child may wait a minute for a GCS that is down (a Ray restart): done inline
        that would stall the loop and its watchdog pings. A poll waits at most ``timeout`` for
        it and otherwise fails as ``timeout``; the next poll picks up the same attempt.

        After Ray went away, the dashboard is first looked for where it was: ``ray start`` on
        the same ports brings it back there, and a lookup begun while the GCS was down waits
        out its own retries (the soak bench saw Ray's return noticed 20 s late that way). While
        nothing answers there either, the poll fails as ``unreachable``, so Ray is probed at
        the poll interval; the lookup goes on for a dashboard that moved.
        """
        if self._client is not None:
            return self._client
        if self._looking_up is None:
            future: concurrent.futures.Future[str] = concurrent.futures.Future()
            self._looking_up = future
            threading.Thread(
                target=_lookup,
                args=(self._find_dashboard, self.address, self.auth, self.lookup_timeout, future),
                daemon=True,  # must not hold up the exit
                name="ray-dashboard-lookup",
            ).start()
        try:
            wait = 0.0 if self._last_url is not None else self.timeout
            url = self._looking_up.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            if self._last_url is None:
                raise SourceError(
                    "timeout",
                    f"still looking for Ray's dashboard via {self.address!r} "
                    f"(waited {self.timeout:g} s this poll)",
                ) from None
            url = self._where_it_was(self._last_url)
        except DashboardError as exc:
            self._looking_up = None
            # A look-up that ran out of time while this poll did not wait (it ran on its own
            # thread) means the GCS is not there yet, not that Ray is slow: the service then
            # polls again at the poll interval, not after the failure backoff, and sees Ray's
            # return within a poll.
            quick = self._last_url is not None and exc.kind == "timeout"
            raise SourceError("unreachable" if quick else exc.kind, str(exc)) from None
        self._looking_up = None  # a lookup still running is left to end by itself
        self._client = DashboardClient(url, self.auth)
        # News once: found again where it was (after every failed request while the
        # dashboard is down) is not; that outage is logged by the poll, at its start, every
        # few minutes, and at its end.
        level = logging.INFO if url != self._last_url else logging.DEBUG
        self._last_url = url
        log.log(level, "Ray state API at %s (via %s)", url, self.address)
        return self._client

    def _where_it_was(self, url: str) -> str:
        """``url`` when the dashboard answers there again; else the poll fails."""
        try:
            DashboardClient(url, self.auth).session_name(timeout=self.timeout)
        except DashboardError as exc:
            raise SourceError(
                exc.kind, f"{exc} (and still looking for Ray's dashboard via {self.address!r})"
            ) from None
        return url

    def _list(
        self, client: DashboardClient, resource: str, limit: int
    ) -> tuple[list[Any], bool, tuple[int, int]]:
        """ALIVE records, whether the answer may be cut, and the listing's counts (``_counts``).

        Filtered in the query: only state, job_id and actor_id filters run inside GCS, and
        dead actors pile up by the tens of thousands on a long-lived cluster.
        """
        data = client.list_state(resource, filters=_ALIVE, limit=limit, timeout=self.timeout)
        result = data["result"]
        # A partial answer (an unreachable raylet, truncation at the source) is an error,
        # never a smaller list that would look like servers leaving.
        warning = data.get("partial_failure_warning")
        if warning:
            raise DashboardError("partial", f"{resource}: {_short(str(warning))}")
        try:
            # Not for nodes: Ray 2.60's list_nodes counts the nodes its GCS-side state filter
            # left out (the DEAD ones) in `total` but not in `num_after_truncation`
            # (ray/dashboard/state_aggregator.py list_nodes, ray/util/state/state_manager.py
            # get_all_node_info), so after any node died every poll would fail. A node list
            # cut by a limit is still caught below.
            if resource != "nodes" and int(data.get("total", len(result))) > int(
                data.get("num_after_truncation", len(result))
            ):
                raise DashboardError(
                    "partial", f"{resource}: Ray truncated the answer at the source"
                )
            counts = _counts(data)
        except (TypeError, ValueError) as exc:
            raise DashboardError("bad_response", f"{resource}: bad counts ({exc})") from None
        # Cut by the limit, ours or the API server's own cap (RAY_MAX_LIMIT_FROM_API_SERVER).
        cut = counts[0] > len(result) or len(result) >= limit
        return result, cut, counts

    def _session_of(self, client: DashboardClient, nodes: list[Any]) -> str:
        """The session's name (asked again only when the head node changes), else the head
        node's id; unchanged while no head is listed (a listing during a restart)."""
        head = next(
            (str(r.get("node_id")) for r in nodes if isinstance(r, dict) and r.get("is_head_node")),
            "",
        )
        if not head or head == self._session_head:
            return self._session
        try:
            name = client.session_name(self.timeout)
        except DashboardError as exc:
            log.debug("no session name from /api/version (%s); using the head node id", exc)
            name = ""
        self._session, self._session_head = (name or f"head:{head[:64]}"), head
        return self._session


_Record = TypeVar("_Record", ActorRecord, NodeRecord)

# The fields of a listed record that ``_actor`` / ``_node`` read (everything else in Ray's
# answer is ignored), and the types a cached record's raw values must have (see RecordCache).
_NONE = type(None)
_ACTOR_FIELDS = ("actor_id", "class_name", "name", "job_id", "ray_namespace", "node_id", "pid")
_ACTOR_TYPES = ((str, _NONE),) * 6 + ((int, _NONE),)
_NODE_FIELDS = (
    names.RAY_NODE_ID_FIELD,
    names.RAY_NODE_IP_FIELD,
    names.RAY_NODE_NAME_FIELD,
    names.RAY_IS_HEAD_NODE_FIELD,
)
_NODE_TYPES = ((str,), (str,), (str, _NONE), (bool, _NONE))


class RecordCache(Generic[_Record]):
    """Turns a listing's raw records into records, reusing those of the previous listing.

    At 10,000 actors, building the records was two thirds of parsing Ray's answer, and almost
    every record of a listing is one the previous listing had. A raw record is looked up by the
    values of the fields ``make`` reads (``fields``), as Ray sent them.

    Invariants:
    - a reused record is what ``make`` returns for this raw record: ``make`` is a pure function
      of the ``fields`` values, and only records whose values all have the plain JSON types of
      ``types`` are kept, so that an equal-comparing value of another type (``1 == True``)
      never picks up a record that ``make`` would build differently. Anything else (a missing
      field, an unhashable or odd value) goes through ``make`` every time, as sent;
    - the cache holds only the records of the last listing, so it never outgrows it;
    - an unchanged record comes back as the same object, so the comparisons further on
      (``ClusterSnapshot ==``, the reconciler's per-target inputs) end at identity.
    Nothing here validates hostile names or addresses: recognise and render do, per actor id
    and per target input, for every new or changed record; the cache skips none of that.
    """

    def __init__(
        self,
        fields: tuple[str, ...],
        types: tuple[tuple[type, ...], ...],
        make: Callable[[Any], _Record | None],
    ) -> None:
        self._key = operator.itemgetter(*fields)
        self._types = types
        self._make: Callable[[Any], _Record | None] = make
        self._last: dict[Hashable, tuple[tuple[Any, ...], _Record]] = {}

    def parse(self, raw_records: list[Any]) -> tuple[_Record, ...]:
        # Looked up by the first field (the id: one short string to hash), then the whole raw
        # key compared, so that any changed field is a miss.
        key_of, make, last = self._key, self._make, self._last
        kept: dict[Hashable, tuple[tuple[Any, ...], _Record]] = {}
        records: list[_Record] = []
        for raw in raw_records:
            try:
                key = key_of(raw)
                cached = last.get(key[0])
            except (KeyError, TypeError, IndexError):  # a missing field, an unhashable value
                key, cached = None, None
            if cached is not None and cached[0] == key:
                record = cached[1]
            else:
                made = make(raw)
                if made is None:
                    continue  # malformed, logged by make
                record = made
                if key is None or not self._plain(key):
                    records.append(record)
                    continue
            kept[key[0]] = (key, record)
            records.append(record)
        self._last = kept
        return tuple(records)

    def _plain(self, key: tuple[Any, ...]) -> bool:
        return all(type(v) in t for v, t in zip(key, self._types, strict=True))


class ListingParser:
    """Records from the raw records of the actor and node listings, each kind cached apart."""

    def __init__(self) -> None:
        self.actors = RecordCache(_ACTOR_FIELDS, _ACTOR_TYPES, _actor)
        self.nodes = RecordCache(_NODE_FIELDS, _NODE_TYPES, _node)


def _lookup(
    find: Callable[[str, RayAuth, float], str],
    address: str,
    auth: RayAuth,
    timeout: float,
    result: concurrent.futures.Future[str],
) -> None:
    try:
        result.set_result(find(address, auth, timeout))
    except BaseException as exc:  # handed to the poll that waits for it
        result.set_exception(exc)


def _counts(listing: dict[str, Any]) -> tuple[int, int]:
    """How many records matched the filters (before the limit), and how many the GCS holds
    in all (DEAD ones included: it grows with every actor created)."""
    matched = int(listing.get("num_filtered", len(listing["result"])))
    return matched, int(listing.get("total", matched))


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _text(value: Any) -> str:
    # Ray sends strings (or null); anything else is stringified, never trusted as a str.
    return value if type(value) is str else ("" if value is None else str(value))


def _actor(record: Any) -> ActorRecord | None:
    """One record of the listing; None (logged) when malformed. Runs 10,000 times a poll:
    plain type checks instead of conversions where Ray already sends the right type."""
    try:
        actor_id = record["actor_id"]
        if not actor_id:
            raise ValueError("actor without id")
        pid = record.get("pid") or 0
        return ActorRecord(
            actor_id=_text(actor_id),
            class_name=_text(record.get("class_name")),
            name=_text(record.get("name")),
            job_id=_text(record.get("job_id")),
            namespace=_text(record.get("ray_namespace")),
            node_id=_text(record.get("node_id")),
            pid=pid if type(pid) is int else int(pid),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring a malformed actor record from Ray (%s): %.300r", exc, record)
        return None


def _node(record: Any) -> NodeRecord | None:
    try:
        node_id, node_ip = record[names.RAY_NODE_ID_FIELD], record[names.RAY_NODE_IP_FIELD]
        if not node_id or not node_ip:
            raise ValueError("node without id or ip")
        return NodeRecord(
            node_id=str(node_id),
            node_ip=str(node_ip),
            node_name=str(record.get(names.RAY_NODE_NAME_FIELD) or ""),
            is_head=bool(record.get(names.RAY_IS_HEAD_NODE_FIELD)),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring a malformed node record from Ray (%s): %.300r", exc, record)
        return None
