"""The state source's quick poll against a dashboard stand-in (a real HTTP server on
127.0.0.1 answering with Ray's envelope): between full listings only counts are asked, and
any sign of change (a count, a node never seen, a failure, the interval) brings a full one.
The answers' shape is checked against real Ray in tests/test_ray_http.py."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fsd_daemon.discovery.base import SourceError
from fsd_daemon.discovery.ray_auth import RayAuth
from fsd_daemon.discovery.ray_state import RayStateSource


class Dashboard:
    """Serves /api/v0/actors|nodes from ``actors``/``nodes``; records every request."""

    def __init__(self) -> None:
        self.actors: list[dict[str, Any]] = []  # the ALIVE ones
        # Actors the GCS still holds as DEAD: Ray's `total` counts them too (checked against
        # Ray 2.60: total 2 -> 2 -> 3 as two actors die and a third is created).
        self.dead_actors = 0
        self.pending_actors = 0  # created, not ALIVE yet: in `total` only
        self.dead_asks = 0
        self.pending_asks = 0
        self.nodes: list[dict[str, Any]] = [_node("a" * 56, head=True)]
        self.requests: list[tuple[str, int]] = []
        self.headers: list[str | None] = []
        self.fail = False
        self.refuse = ""  # the API server's own refusal (result false), e.g. Ray 2.44's
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                owner.headers.append(self.headers.get("Authorization"))
                if owner.fail:
                    self.send_error(500)
                    return
                if owner.refuse:
                    body: Any = {"result": False, "msg": owner.refuse, "data": {}}
                elif url.path == "/api/version":
                    body = {"session_name": "session_x"}
                else:
                    rows = owner.actors if url.path.endswith("actors") else owner.nodes
                    held = len(rows)
                    if rows is owner.actors:
                        held += owner.dead_actors + owner.pending_actors
                        if query["filter_values"] == ["DEAD"]:
                            rows = [{"state": "DEAD"}] * owner.dead_actors
                            owner.dead_asks += 1
                        elif query["filter_values"] == ["PENDING_CREATION"]:
                            rows = [{"state": "PENDING_CREATION"}] * owner.pending_actors
                            owner.pending_asks += 1
                    limit = int(query["limit"][0])
                    owner.requests.append((url.path.rsplit("/", 1)[1], limit))
                    assert int(query["timeout"][0]) >= 2  # Ray 2.44 refuses less
                    body = {
                        "result": True,
                        "msg": "",
                        "data": {
                            "result": {
                                "result": rows[:limit],
                                # As Ray 2.60 answers: total and num_after_truncation
                                # before the state filter, num_filtered after it.
                                "total": held,
                                "num_after_truncation": held,
                                "num_filtered": len(rows),
                                "partial_failure_warning": "",
                            }
                        },
                    }
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._handler = Handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def start_again(self) -> None:
        """On the same port, as ``ray start`` with fixed ports brings the dashboard back."""
        self.server = ThreadingHTTPServer(self.server.server_address, self._handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def full_listings(self) -> int:
        return sum(1 for kind, limit in self.requests if kind == "actors" and limit > 1)


def _node(node_id: str, head: bool = False) -> dict[str, Any]:
    return {"node_id": node_id, "node_ip": "10.0.0.1", "is_head_node": head, "node_name": "n"}


def _actor(i: int) -> dict[str, Any]:
    return {
        "actor_id": f"{i:032x}",
        "class_name": "vLLMHttpServer",
        "name": f"vllm_server_{i}_0",
        "job_id": "01000000",
        "ray_namespace": "ns",
        "node_id": "a" * 56,
        "pid": 100 + i,
        "state": "ALIVE",
    }


@pytest.fixture
def dashboard() -> Iterator[Dashboard]:
    d = Dashboard()
    try:
        yield d
    finally:
        d.server.shutdown()
        d.server.server_close()


def _source(d: Dashboard, interval: float = 3600.0) -> RayStateSource:
    auth = RayAuth(token_mode=True, source="test", why="test", token="t0k")
    return RayStateSource(d.url, timeout=1.0, full_listing_interval=interval, auth=auth)


def test_quick_polls_ask_counts_until_something_changes(dashboard: Dashboard) -> None:
    dashboard.actors = [_actor(i) for i in range(3)]
    source = _source(dashboard)
    first = source.snapshot()
    assert len(first.actors) == 3 and first.session == "session_x"
    for _ in range(5):
        assert source.snapshot() is first
    assert dashboard.full_listings() == 1
    assert dashboard.dead_asks == 1  # by the full listing only: no actor is on its way up
    assert set(dashboard.headers) == {"Bearer t0k"}  # every request carries the token
    dashboard.actors.append(_actor(3))  # a new server: the count changes
    assert len(source.snapshot().actors) == 4
    assert dashboard.full_listings() == 2
    # One server replaced by another: as many ALIVE as before, but one more created. Seen at
    # the next poll (the ALIVE count alone hid it until the next full listing, up to 30 s).
    dashboard.actors[0] = _actor(10)
    dashboard.dead_actors += 1
    assert {a.actor_id for a in source.snapshot().actors} == {
        a["actor_id"] for a in dashboard.actors
    }
    assert dashboard.full_listings() == 3


def test_an_actor_that_becomes_alive_as_another_dies_is_seen_at_the_next_poll(
    dashboard: Dashboard,
) -> None:
    """A replacement in two steps: the new server is created (total + 1: a full listing, but
    it is not ALIVE yet), then it becomes ALIVE as the old one dies: the ALIVE count and the
    total are both as they were, only the DEAD count moves. The soak bench saw each such step
    picked up only at the next creation, 4.5 s late (pick-up p50 4.7 s with 2 s polls)."""
    dashboard.actors = [_actor(i) for i in range(3)]
    source = _source(dashboard)
    source.snapshot()
    dashboard.pending_actors = 1  # created: its worker is starting
    assert len(source.snapshot().actors) == 3
    assert dashboard.full_listings() == 2
    asked = dashboard.dead_asks
    source.snapshot()
    assert dashboard.dead_asks == asked + 1  # one is on its way up: quick polls watch DEAD
    dashboard.pending_actors = 0
    dashboard.actors[0] = _actor(10)  # ALIVE now, as the oldest dies
    dashboard.dead_actors += 1
    assert {a.actor_id for a in source.snapshot().actors} == {
        a["actor_id"] for a in dashboard.actors
    }
    assert dashboard.full_listings() == 3
    source.snapshot()
    assert dashboard.full_listings() == 3  # and quick again


def test_ray_back_on_the_same_ports_is_seen_without_waiting_for_a_lookup(
    dashboard: Dashboard,
) -> None:
    """A GCS address is configured: the dashboard's URL is looked up through the GCS. Ray goes
    away and comes back on the same ports while the new lookup still waits for the GCS (it
    retries for up to ``lookup_timeout``): the next poll finds the dashboard where it was.
    Meanwhile each poll fails fast as unreachable (probed at the poll interval), not as a
    lookup timeout (backoff)."""
    lookups: list[str] = []
    gcs_back = threading.Event()

    def find_dashboard(address: str, auth: RayAuth, timeout: float) -> str:
        lookups.append(address)
        if len(lookups) > 1:  # the first one finds it; later ones wait for the GCS
            gcs_back.wait(timeout=60)
        return dashboard.url

    auth = RayAuth(token_mode=False, source="", why="test")
    source = RayStateSource(
        "127.0.0.1:6379",
        timeout=1.0,
        full_listing_interval=3600,
        auth=auth,
        find_dashboard=find_dashboard,
    )
    dashboard.actors = [_actor(1)]
    assert len(source.snapshot().actors) == 1
    dashboard.stop()
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(SourceError) as down:
            source.snapshot()
        assert down.value.kind == "unreachable", down.value
        assert time.monotonic() - started < 0.9  # fails fast: the loop probes at its interval
    assert len(lookups) == 2  # and the second still waits for the GCS
    dashboard.start_again()
    try:
        assert len(source.snapshot().actors) == 1
    finally:
        gcs_back.set()


def test_a_restarted_ray_is_never_answered_from_the_old_snapshot(dashboard: Dashboard) -> None:
    """Same counts, new node ids (Ray restarted between two polls): a full listing."""
    source = _source(dashboard)
    source.snapshot()
    dashboard.nodes = [_node("b" * 56, head=True)]
    snapshot = source.snapshot()
    assert [n.node_id for n in snapshot.nodes] == ["b" * 56]
    assert dashboard.full_listings() == 2


def test_after_a_failure_or_the_interval_a_full_listing(dashboard: Dashboard) -> None:
    source = _source(dashboard, interval=0.0)
    source.snapshot()
    source.snapshot()
    assert dashboard.full_listings() == 2  # interval 0: every poll lists in full
    source = _source(dashboard)
    source.snapshot()
    dashboard.fail = True
    with pytest.raises(SourceError) as failed:
        source.snapshot()
    assert failed.value.kind == "api_error" and "HTTP 500" in str(failed.value)
    dashboard.fail = False
    before = dashboard.full_listings()
    source.snapshot()
    assert dashboard.full_listings() == before + 1


def test_the_api_servers_refusal_is_named_not_called_unreachable(dashboard: Dashboard) -> None:
    """Ray 2.44 answers a too-short timeout with result=false and its own words; the error
    says that, not that Ray is unreachable."""
    dashboard.refuse = "AssertionError: 0 second timeout is not supported."
    with pytest.raises(SourceError) as refused:
        _source(dashboard).snapshot()
    assert refused.value.kind == "api_error"
    assert "refused /api/v0/actors: AssertionError: 0 second timeout" in str(refused.value)
    assert "unreachable" not in str(refused.value)


def test_the_change_probe_sees_a_creation_and_a_start_once_each(dashboard: Dashboard) -> None:
    """Between polls the probe asks only for the actors PENDING_CREATION (``limit=1``; the GCS
    filters by state, so the dashboard converts none of the ALIVE ones): a creation raises
    ``total``, an actor becoming ALIVE lowers the pending count; each is reported once. A
    failed probe says nothing changed and raises nothing."""
    dashboard.actors = [_actor(i) for i in range(3)]
    source = _source(dashboard)
    assert source.looks_changed() is False  # nothing to compare with before a listing
    source.snapshot()
    listed, asked = len(dashboard.requests), dashboard.pending_asks
    assert source.looks_changed() is False
    dashboard.pending_actors = 1  # a server actor created, not ALIVE yet
    assert source.looks_changed() is True
    assert source.looks_changed() is False  # reported once
    dashboard.pending_actors = 0
    dashboard.actors.append(_actor(3))  # ... and now ALIVE: total unchanged
    assert source.looks_changed() is True
    assert dashboard.pending_asks - asked == 4
    assert dashboard.requests[listed:] == [("actors", 1)] * 4  # no listing of ALIVE actors
    dashboard.fail = True
    assert source.looks_changed() is False
