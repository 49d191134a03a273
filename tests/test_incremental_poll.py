"""The caches that make a changed poll at 10,000 servers cheap give what no cache would give.

- ``ray_state.RecordCache`` reuses a record only for equal raw values of plain JSON types;
  anything else is parsed (and refused or logged) as sent.
- The reconciler rebuilds only the rollout targets whose inputs changed: after any sequence
  of changes (servers added, gone, restarted with a new or hostile address, nodes added, gone
  or given a new or hostile IP, replicas turning disaggregated and back, a reloaded config, a
  new Ray session), its files and drops equal those of a fresh reconciler that sees only the
  current cluster.
- ``render.Renderer`` gives render()'s bytes for any sequence of target sets.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from fsd_daemon.config import load_config
from fsd_daemon.discovery.base import ActorRecord, ClusterSnapshot, Resolution
from fsd_daemon.discovery.ray_state import ListingParser
from fsd_daemon.pipeline.reconcile import Desired, Reconciler
from fsd_daemon.pipeline.render import Renderer, Target, render


def raw_actor(actor_id: str, name: str, node_id: str, pid: int) -> dict[str, Any]:
    """One record as the dashboard's /api/v0/actors lists it (detail=False)."""
    return {
        "actor_id": actor_id,
        "class_name": "vLLMHttpServer",
        "state": "ALIVE",
        "job_id": "01000000",
        "name": name,
        "node_id": node_id,
        "pid": pid,
        "ray_namespace": "ns",
        "repr_name": "",
    }


def test_record_cache_reuses_only_equal_plain_records(caplog: pytest.LogCaptureFixture) -> None:
    parser = ListingParser()
    first = parser.actors.parse([raw_actor("a1", "vllm_server_0_0", "n0", 10)])
    again = parser.actors.parse([raw_actor("a1", "vllm_server_0_0", "n0", 10)])
    assert again[0] is first[0]  # unchanged raw values: the same record object
    moved = parser.actors.parse([raw_actor("a1", "vllm_server_0_0", "n1", 10)])
    assert moved[0] is not first[0] and moved[0].node_id == "n1"
    # An equal-comparing value of another type is parsed as sent, never matched to a record
    # made from a plain value (True == 1, but the name "True" is not "1").
    odd = parser.actors.parse([{**raw_actor("a2", "x", "n0", 1), "name": True}])
    assert odd[0].name == "True"
    plain_one = parser.actors.parse([{**raw_actor("a2", "x", "n0", 1), "name": 1}])
    assert plain_one[0].name == "1"
    # Malformed records are refused (and logged) every time they come, cached or not.
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert parser.actors.parse([{"actor_id": "", "name": "x"}, ["not", "a", "dict"]]) == ()
    assert sum("malformed actor record" in r.getMessage() for r in caplog.records) == 4
    # Only the last listing's records are kept.
    parser.actors.parse([raw_actor("a3", "vllm_server_3_0", "n0", 3)])
    assert [key for key in parser.actors._last] == ["a3"]


class AddressBook:
    """A resolver answering from a dict: (actor id, pid) -> what get_server_address() says."""

    def __init__(self) -> None:
        self.addresses: dict[tuple[str, int], object] = {}

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]:
        return {
            a.actor_id: Resolution(self.addresses[(a.actor_id, a.pid)])
            for a in actors
            if (a.actor_id, a.pid) in self.addresses
        }

    def metrics_ports(self, node_ids: Iterable[str]) -> Mapping[str, int]:
        return dict.fromkeys(node_ids, 8080)

    def ray_components(self) -> Mapping[str, str] | None:
        return None  # a described cluster: no Ray components

    def problem(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def _outcome(desired: Desired | None) -> tuple[dict[str, frozenset[Target]], frozenset[Any]]:
    assert desired is not None
    files = {name: frozenset(targets) for name, targets in desired.files.items()}
    return files, frozenset((d.file, d.reason, d.who) for d in desired.dropped)


def _config(cluster: str = "c") -> Any:
    return load_config(
        None,
        environ={},
        overrides={"daemon.grace_period_seconds": 0.0, "daemon.cluster": cluster},
    )


@pytest.mark.parametrize("seed", range(8))
def test_incremental_targets_equal_a_fresh_build(seed: int) -> None:
    rng = random.Random(seed)
    book = AddressBook()
    long_reconciler = Reconciler(_config(), clock=lambda: 1000.0)
    actor_parser, node_parser = ListingParser(), ListingParser()
    actors: dict[str, dict[str, Any]] = {}
    nodes: dict[str, dict[str, Any]] = {}
    made = 0
    # "": a source that tells no session (until a change below gives one).
    session, cluster = rng.choice(["", "session_0"]), "c"

    def add_node() -> None:
        node_id = f"n{len(nodes)}-{rng.randrange(10**6)}"
        nodes[node_id] = {"node_id": node_id, "node_ip": f"10.0.0.{len(nodes)}"}

    def add_server() -> None:
        nonlocal made
        made += 1
        replica = rng.randrange(6)
        name = rng.choice(
            [f"vllm_server_{replica}_0", f"vllm_server_decode_{replica}_{rng.randrange(2)}"]
        )
        actor_id = f"a{made}"
        raw = raw_actor(actor_id, name, rng.choice(list(nodes)), 100 + made)
        actors[actor_id] = raw
        book.addresses[(actor_id, raw["pid"])] = ["127.0.0.1", 20000 + made]

    for _ in range(3):
        add_node()
    for _ in range(20):
        add_server()
    for step in range(60):
        for _ in range(rng.randrange(1, 4)):
            change = rng.randrange(11)
            if change == 0:
                add_server()
            elif change == 1 and actors:
                del actors[rng.choice(list(actors))]
            elif change == 2 and actors:  # restarted: a new pid, a new (maybe hostile) address
                raw = actors[rng.choice(list(actors))]
                raw["pid"] += 1000
                hostile = rng.random() < 0.3
                address = ["127.0.0.1\n", 1] if hostile else ["127.0.0.1", 30000 + step]
                book.addresses[(raw["actor_id"], raw["pid"])] = address
            elif change == 3 and nodes:  # a new IP, sometimes over the label length limit
                raw = nodes[rng.choice(list(nodes))]
                raw["node_ip"] = "1" * 5000 if rng.random() < 0.3 else f"10.1.{step}.1"
            elif change == 4:
                add_node()
            elif change == 5 and len(nodes) > 1:
                del nodes[rng.choice(list(nodes))]  # its servers keep running, unlabelled
            elif change == 6 and actors:  # a server that no resolver answers for
                raw = actors[rng.choice(list(actors))]
                raw["pid"] += 1
            elif change == 7:  # the resolver answers at last for a server it did not know
                waiting = [
                    r for r in actors.values() if (r["actor_id"], r["pid"]) not in book.addresses
                ]
                if waiting:
                    raw = rng.choice(waiting)
                    book.addresses[(raw["actor_id"], raw["pid"])] = ["127.0.0.1", 40000 + step]
            elif change == 9:  # a reloaded config: another cluster label
                cluster = rng.choice(["c", "d"])
                long_reconciler.reconfigure(_config(cluster))
            elif change == 10:  # Ray restarted: a new session, the same actor ids
                session = f"session_{step}"
            # change 8: nothing changes (an identical listing)
        actor_list = [dict(raw) for raw in actors.values()]
        node_list = [
            {**raw, "node_name": "", "is_head_node": i == 0} for i, raw in enumerate(nodes.values())
        ]
        snapshot = ClusterSnapshot(
            actor_parser.actors.parse(actor_list),
            node_parser.nodes.parse(node_list),
            session=session,
        )
        got = long_reconciler.apply(snapshot, book)
        fresh = Reconciler(_config(cluster), clock=lambda: 1000.0)
        expected = fresh.apply(
            ClusterSnapshot(
                ListingParser().actors.parse(actor_list),
                ListingParser().nodes.parse(node_list),
                session=session,
            ),
            book,
        )
        if got is None:  # nothing changed: the previous answer stands
            continue
        assert _outcome(got) == _outcome(expected), f"seed {seed}, step {step}"


def test_a_source_that_starts_telling_the_session_keeps_every_target() -> None:
    """The same actors (the very records: an unchanged listing), now with the session the
    source could not tell before: their keys change, their targets stay."""
    book = AddressBook()
    parser = ListingParser()
    raws = [raw_actor(f"a{i}", f"vllm_server_{i}_0", "n0", 100 + i) for i in range(3)]
    for raw in raws:
        book.addresses[(raw["actor_id"], raw["pid"])] = ["127.0.0.1", 20000 + raw["pid"]]
    nodes = ListingParser().nodes.parse([{"node_id": "n0", "node_ip": "10.0.0.1"}])
    reconciler = Reconciler(_config(), clock=lambda: 1000.0)
    before = reconciler.apply(ClusterSnapshot(parser.actors.parse(raws), nodes), book)
    assert before is not None and len(before.files["rollout.json"]) == 3
    told = ClusterSnapshot(parser.actors.parse(raws), nodes, session="session_1")
    after = reconciler.apply(told, book)
    assert after is not None and len(after.files["rollout.json"]) == 3


def test_renderer_gives_render_bytes_for_any_sequence() -> None:
    rng = random.Random(7)
    pool = [
        Target.of(f"10.0.{i % 7}.{i}:{8000 + i % 13}", {"a": str(i % 5), "b": "é\n", "c": ""})
        for i in range(600)
    ]
    renderer = Renderer()
    current: list[Target] = rng.sample(pool, 200)
    for _ in range(200):
        roll = rng.random()
        if roll < 0.4:
            current = current + rng.sample(pool, rng.randrange(6))
        elif roll < 0.8:
            for _ in range(rng.randrange(6)):
                if current:
                    current.pop(rng.randrange(len(current)))
        elif roll < 0.9:
            current = rng.sample(pool, rng.randrange(400))
        else:
            current = []
        assert renderer.render(current) == render(current)


def test_paused_gc_restores_the_collector_state() -> None:
    import gc

    from fsd_daemon.plumbing.gcpause import paused_gc

    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        assert not gc.isenabled()
        raise RuntimeError("inside")
    assert gc.isenabled()  # back on after an error
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # a collector someone else turned off stays off
    finally:
        gc.enable()
