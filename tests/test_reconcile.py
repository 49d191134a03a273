"""Reconciliation: labels, grace periods, truncation, restarts, resolution retries, changes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fsd_daemon.config import load_config
from fsd_daemon.discovery.base import ActorRecord, Resolution
from fsd_daemon.discovery.static import StaticCluster
from fsd_daemon.reconcile import GPU_FILE, RAY_FILE, ROLLOUT_FILE, Reconciler, summarize_changes
from tests.support.clusterfile import cluster, node, server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(grace: float = 10.0) -> tuple[Reconciler, Clock]:
    clock = Clock()
    config = load_config(
        None, environ={}, overrides={"daemon.grace_period_seconds": grace, "daemon.cluster": "c1"}
    )
    return Reconciler(config, clock=clock), clock


def test_labels_of_a_rollout_target() -> None:
    """A server gets engine, role, replica, node, job, namespace, actor and cluster labels."""
    r, _ = make()
    c = StaticCluster.from_data(cluster(server(3, role="reward", engine="sglang")))
    desired = r.apply(c.snapshot(), c)
    assert desired is not None
    (t,) = desired.files[ROLLOUT_FILE]
    assert t.address == "127.0.0.1:20003"
    assert dict(t.labels) == {
        "engine": "sglang",
        "role": "reward",
        "replica": "3",
        "node_ip": "127.0.0.1",
        "node_id": "n0",
        "ray_job_id": "01000000",
        "ray_namespace": "ns-01000000",
        "actor_name": "sglang_server_reward_3_0",
        "cluster": "c1",
    }
    assert "model_name" not in dict(t.labels)
    (g,) = desired.files[GPU_FILE]
    assert g.address == "127.0.0.1:9847"
    assert dict(g.labels)["is_head_node"] == "true"
    (ray,) = desired.files[RAY_FILE]
    assert ray.address == "127.0.0.1:8080"


def test_unchanged_snapshot_returns_none() -> None:
    """Nothing can have changed: apply() says so without rebuilding anything."""
    r, _ = make()
    c = StaticCluster.from_data(cluster(server(0), server(1)))
    assert r.apply(c.snapshot(), c) is not None
    assert r.apply(c.snapshot(), c) is None


def test_grace_period_then_removal() -> None:
    """A server that left stays for the grace period, then goes; the timer wakes apply()."""
    r, clock = make(grace=10)
    both = StaticCluster.from_data(cluster(server(0), server(1)))
    one = StaticCluster.from_data(cluster(server(0)))
    r.apply(both.snapshot(), both)
    clock.now += 1
    desired = r.apply(one.snapshot(), one)
    assert desired is not None and len(desired.files[ROLLOUT_FILE]) == 2
    clock.now += 5
    assert r.apply(one.snapshot(), one) is None  # same snapshot, grace not over
    clock.now += 5
    desired = r.apply(one.snapshot(), one)
    assert desired is not None and len(desired.files[ROLLOUT_FILE]) == 1


def test_truncated_listing_removes_nothing() -> None:
    """When the actor list may be cut, absent servers are kept however long it lasts."""
    r, clock = make(grace=1)
    both = StaticCluster.from_data(cluster(server(0), server(1)))
    cut = StaticCluster.from_data({**cluster(server(0)), "truncated": True})
    r.apply(both.snapshot(), both)
    clock.now += 100
    desired = r.apply(cut.snapshot(), cut)
    assert desired is not None and len(desired.files[ROLLOUT_FILE]) == 2


class ScriptedResolver:
    """Answers from a script: error first, then an address (verl launches HTTP after start)."""

    def __init__(self, answers: list[Resolution]) -> None:
        self.answers = answers
        self.calls = 0

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else None
        return {a.actor_id: answer for a in actors if answer is not None}

    def metrics_ports(self, node_ids: Iterable[str]) -> Mapping[str, int]:
        return dict.fromkeys(node_ids, 8080)

    def close(self) -> None:
        pass


def test_unresolved_server_is_retried_until_it_answers() -> None:
    """get_server_address() failing (HTTP not up yet) is retried each poll, then listed."""
    r, _ = make()
    snap = StaticCluster.from_data(cluster(server(0))).snapshot()
    resolver = ScriptedResolver(
        [
            Resolution(None, "AssertionError: http server is not launched"),
            Resolution(None),
            Resolution(("127.0.0.1", 31000)),
        ]
    )
    assert r.apply(snap, resolver).files[ROLLOUT_FILE] == ()  # type: ignore[union-attr]
    assert r.has_unresolved()
    assert r.apply(snap, resolver).files[ROLLOUT_FILE] == ()  # type: ignore[union-attr]
    (t,) = r.apply(snap, resolver).files[ROLLOUT_FILE]  # type: ignore[union-attr]
    assert t.address == "127.0.0.1:31000"
    assert not r.has_unresolved()
    assert r.apply(snap, resolver) is None
    assert resolver.calls == 3


def test_bad_address_drops_the_target_with_a_counted_warning(caplog: object) -> None:
    """A server answering port 0 is left out, warned about once and counted once."""
    r, _ = make()
    c = StaticCluster.from_data(cluster(server(0), server(1, address=["127.0.0.1", 0])))
    desired = r.apply(c.snapshot(), c)
    assert desired is not None
    assert [t.label("replica") for t in desired.files[ROLLOUT_FILE]] == ["0"]
    r.apply(c.snapshot(), c)
    assert r.dropped_counts == {(ROLLOUT_FILE, "bad_port"): 1}


def test_restarted_actor_is_resolved_again() -> None:
    """Same actor id with a new pid (Ray restarted the actor): its address is asked anew."""
    r, _ = make()
    first = server(0, port=20000)
    restarted = {**first, "pid": 9999, "address": ["127.0.0.1", 20555]}
    c1, c2 = StaticCluster.from_data(cluster(first)), StaticCluster.from_data(cluster(restarted))
    r.apply(c1.snapshot(), c1)
    (t,) = r.apply(c2.snapshot(), c2).files[ROLLOUT_FILE]  # type: ignore[union-attr]
    assert t.address == "127.0.0.1:20555"


def test_two_jobs_are_told_apart_and_summarised() -> None:
    """Two jobs' servers coexist, labelled by job; the change log counts per job."""
    r, _ = make()
    c = StaticCluster.from_data(
        cluster(
            server(0, job="01000000"),
            server(0, job="02000000", port=21000),
            server(1, job="02000000", port=21001),
        )
    )
    desired = r.apply(c.snapshot(), c)
    assert desired is not None
    jobs = sorted(t.label("ray_job_id") for t in desired.files[ROLLOUT_FILE])
    assert jobs == ["01000000", "02000000", "02000000"]
    lines = summarize_changes((), desired.files[ROLLOUT_FILE], "rollout", "ray_job_id", "job")
    assert lines == ["+1 rollout target (job 01000000)", "+2 rollout targets (job 02000000)"]


def test_node_without_metrics_port_is_left_out_of_ray_json_until_known() -> None:
    """A node whose metrics port is not known yet is in gpu.json but not yet in ray.json."""
    r, _ = make()
    c = StaticCluster.from_data(
        cluster(nodes=[node("n0"), {**node("n1", ip="127.0.0.2", head=False), "metrics_port": 0}])
    )
    desired = r.apply(c.snapshot(), c)
    assert desired is not None
    assert len(desired.files[GPU_FILE]) == 2
    assert [t.label("node_id") for t in desired.files[RAY_FILE]] == ["n0"]
    assert r.has_unresolved()


def test_cached_targets_follow_every_change_they_are_made_of() -> None:
    """Targets are cached per server between polls; a new node IP, address or config (cluster
    label, label length limit) must still reach the file, and a dropped one stays dropped."""
    r, _ = make()
    bad = {**server(1), "namespace": "n" * 2000}  # label_too_long: dropped when rendered
    c = StaticCluster.from_data(cluster(server(0), bad, nodes=[node("n0", ip="10.0.0.1")]))
    first = r.apply(c.snapshot(), c)
    assert first is not None and len(first.dropped) == 1
    assert [t.label("node_ip") for t in first.files[ROLLOUT_FILE]] == ["10.0.0.1"]
    c = StaticCluster.from_data(cluster(server(0), bad, nodes=[node("n0", ip="10.0.0.2")]))
    second = r.apply(c.snapshot(), c)
    assert second is not None and len(second.dropped) == 1  # still dropped, from the cache
    assert [t.label("node_ip") for t in second.files[ROLLOUT_FILE]] == ["10.0.0.2"]
    r.reconfigure(
        load_config(
            None, environ={}, overrides={"daemon.cluster": "c2", "daemon.grace_period_seconds": 10}
        )
    )
    third = r.apply(c.snapshot(), c)
    assert third is not None
    assert [t.label("cluster") for t in third.files[ROLLOUT_FILE]] == ["c2"]
