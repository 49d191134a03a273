"""ALIVE actors and nodes from Ray's state API (an HTTP client of the dashboard).

No ``ray.init`` here: the state API needs only the dashboard, and a process that is not a Ray
driver cannot be taken down by Ray's own failure handling when the cluster goes away.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any

from fsd_daemon.discovery.base import ActorRecord, ClusterSnapshot, NodeRecord, SourceError

log = logging.getLogger(__name__)

# A truncated listing is logged at most this often (it is also visible in the self-metrics).
_TRUNCATION_LOG_INTERVAL = 60.0


class RayStateSource:
    """Lists ALIVE actors and nodes. Raises :class:`SourceError`; never returns partial data."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 5.0,
        actor_limit: int = 10_000,
        node_limit: int = 2_000,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.actor_limit = actor_limit
        self.node_limit = node_limit
        self._client: Any = None
        self._connecting: concurrent.futures.Future[Any] | None = None
        self._last_truncation_log = -_TRUNCATION_LOG_INTERVAL

    def snapshot(self) -> ClusterSnapshot:
        client = self._connect()
        try:
            actors, truncated = self._list(client, "actors", self.actor_limit)
            nodes, nodes_cut = self._list(client, "nodes", self.node_limit)
        except SourceError:
            # The dashboard may come back elsewhere (a Ray restart picks its URL anew).
            self._client = None
            raise
        if truncated:
            now = time.monotonic()
            if now - self._last_truncation_log >= _TRUNCATION_LOG_INTERVAL:
                self._last_truncation_log = now
                log.warning(
                    "Ray returned %d ALIVE actors, the configured limit (ray.actor_limit): the "
                    "list may be cut. No server will be removed until it fits; raise the limit.",
                    len(actors),
                )
        if nodes_cut:
            raise SourceError(
                "truncated", f"{len(nodes)} ALIVE nodes reach ray.node_limit; raise the limit"
            )
        return ClusterSnapshot(
            actors=tuple(a for a in (_actor(r) for r in actors) if a is not None),
            nodes=tuple(n for n in (_node(r) for r in nodes) if n is not None),
            truncated=truncated,
        )

    def _connect(self) -> Any:
        """The state API client, made off the poll thread.

        Finding the dashboard asks the GCS, and Ray's GCS client waits a minute or more for a
        GCS that is down (a Ray restart): done inline, that would stall the whole loop, its
        systemd watchdog pings included. So it runs in one helper thread; a poll waits at most
        ``timeout`` for it and otherwise fails as unreachable, and the next poll picks up the
        same attempt instead of starting another.
        """
        if self._client is not None:
            return self._client
        if self._connecting is None:
            self._connecting = concurrent.futures.Future()
            # A daemon thread: one stuck in Ray's GCS client must not hold up the exit.
            threading.Thread(
                target=_make_client,
                args=(self.address, self._connecting),
                daemon=True,
                name="ray-connect",
            ).start()
        try:
            self._client = self._connecting.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise SourceError(
                "timeout", f"no answer from Ray at {self.address!r} within {self.timeout:g} s"
            ) from None
        except Exception as exc:  # Ray raises bare ConnectionError, ValueError, RuntimeError
            self._connecting = None
            raise SourceError(
                "unreachable", f"cannot reach Ray at {self.address!r}: {exc}"
            ) from exc
        self._connecting = None
        return self._client

    def _list(self, client: Any, resource: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """One page of ``/api/v0/<resource>``, the dashboard's documented REST endpoint.

        The raw response is used, not ``StateApiClient.list``, because only the raw response
        says whether the API server cut the answer at its own cap
        (RAY_MAX_LIMIT_FROM_API_SERVER, 10,000 by default), which no client-side limit shows.
        """
        params = {
            # Filter in the query: only state, job_id and actor_id filters run inside GCS,
            # and dead actors pile up by the tens of thousands on a long-lived cluster.
            "filter_keys": ["state"],
            "filter_predicates": ["="],
            "filter_values": ["ALIVE"],
            "limit": limit,
            "timeout": max(1, int(self.timeout * 0.8)),
            "detail": False,
        }
        try:
            response = client._make_http_get_request(
                f"/api/v0/{resource}", params, timeout=self.timeout
            )
        except Exception as exc:
            raise SourceError(_classify(exc), f"listing {resource} failed: {_short(exc)}") from exc
        try:
            data = response  # the ListApiResponse, unwrapped by the client
            result = data["result"]
            # A partial answer (an unreachable raylet, truncation at the source) is an error,
            # never a smaller list that would look like servers leaving.
            if data.get("partial_failure_warning"):
                raise SourceError(
                    "partial", f"{resource}: {_short(data['partial_failure_warning'])}"
                )
            # Not for nodes: Ray 2.60's list_nodes counts the nodes its GCS-side state filter
            # left out (the DEAD ones) in `total` but not in `num_after_truncation`
            # (ray/dashboard/state_aggregator.py list_nodes, ray/util/state/state_manager.py
            # get_all_node_info), so after any node died every poll would fail. A node list
            # cut by a limit is still caught below.
            if resource != "nodes" and data.get("total", len(result)) > data.get(
                "num_after_truncation", len(result)
            ):
                raise SourceError("partial", f"{resource}: Ray truncated the answer at the source")
            # Cut by the limit, ours or the API server's own cap.
            cut = data.get("num_filtered", len(result)) > len(result) or len(result) >= limit
        except (KeyError, TypeError) as exc:
            raise SourceError("bad_response", f"{resource}: unexpected answer: {exc!r}") from exc
        if not isinstance(result, list):
            raise SourceError("bad_response", f"{resource}: result is not a list")
        return result, cut


def _classify(exc: BaseException) -> str:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    names = " ".join(type(e).__name__.lower() for e in chain)
    text = " ".join(str(e).lower() for e in chain)
    if "timeout" in names or "timed out" in text:
        return "timeout"
    if "connection" in names or "unavailable" in names or "refused" in text:
        return "unreachable"
    return "api_error"


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _make_client(address: str, result: concurrent.futures.Future[Any]) -> None:
    try:
        from ray.util.state import StateApiClient

        result.set_result(StateApiClient(address=address))
    except BaseException as exc:  # handed to the poll that waits for it
        result.set_exception(exc)


def _actor(record: Any) -> ActorRecord | None:
    try:
        if not record["actor_id"]:
            raise ValueError("actor without id")
        return ActorRecord(
            actor_id=str(record["actor_id"]),
            class_name=str(record.get("class_name") or ""),
            name=str(record.get("name") or ""),
            job_id=str(record.get("job_id") or ""),
            namespace=str(record.get("ray_namespace") or ""),
            node_id=str(record.get("node_id") or ""),
            pid=int(record.get("pid") or 0),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring a malformed actor record from Ray (%s): %r", exc, record)
        return None


def _node(record: Any) -> NodeRecord | None:
    try:
        if not record["node_id"] or not record["node_ip"]:
            raise ValueError("node without id or ip")
        return NodeRecord(
            node_id=str(record["node_id"]),
            node_ip=str(record["node_ip"]),
            node_name=str(record.get("node_name") or ""),
            is_head=bool(record.get("is_head_node")),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring a malformed node record from Ray (%s): %r", exc, record)
        return None
