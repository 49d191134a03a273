"""Reconciliation: labels, grace periods, truncation, restarts, resolution retries, changes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsd_daemon.config import load_config
from fsd_daemon.discovery.base import ActorRecord, Resolution, SourceError
from fsd_daemon.discovery.static import StaticCluster
from fsd_daemon.pipeline.reconcile import (
    GPU_FILE,
    RAY_FILE,
    ROLLOUT_FILE,
    Reconciler,
    summarize_changes,
)
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

    def ray_components(self) -> Mapping[str, str] | None:
        return None  # a described cluster: no Ray components

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


def test_grace_counts_from_the_last_poll_even_when_nothing_changed() -> None:
    """A server that leaves after a quiet spell (polls whose listing did not
    change) still gets the whole grace period, counted from the last poll that saw it."""
    r, clock = make(grace=10)
    both = StaticCluster.from_data(cluster(server(0), server(1)))
    one = StaticCluster.from_data(cluster(server(0)))
    assert r.apply(both.snapshot(), both) is not None
    for _ in range(11):  # 22 quiet seconds of polls every 2 s, listing unchanged
        clock.now += 2
        assert r.apply(both.snapshot(), both) is None
    clock.now += 2
    desired = r.apply(one.snapshot(), one)
    assert desired is not None and len(desired.files[ROLLOUT_FILE]) == 2  # main removed it here
    clock.now += 7.9  # 9.9 s after the last poll that listed it: still within grace
    assert r.apply(one.snapshot(), one) is None
    clock.now += 0.2
    desired = r.apply(one.snapshot(), one)
    assert desired is not None
    assert [t.label("replica") for t in desired.files[ROLLOUT_FILE]] == ["0"]


def _labels(desired: object, file: str = ROLLOUT_FILE) -> dict[str, dict[str, str]]:
    assert desired is not None
    return {t.label("actor_name"): dict(t.labels) for t in desired.files[file]}  # type: ignore[attr-defined]


def named(replica: int, name: str, class_name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        **server(replica, port=port),
        "actor_id": f"id-{name}",
        "name": name,
        "class_name": class_name,
        **extra,
    }


def test_prefill_decode_teacher_trtllm_and_legacy_labels() -> None:
    """A disaggregated replica's servers are role="rollout" with
    disaggregation="prefill"|"decode" (vllm_pd_replica.py: the prefill server keeps the plain
    name); a teacher's key is its own label; TRT-LLM targets carry __metrics_path__; verl <=
    0.5 servers carry metrics_route="absent"."""
    r, _ = make()
    c = StaticCluster.from_data(
        cluster(
            named(0, "vllm_server_0_0", "vLLMHttpServer", 20000),  # prefill of replica 0
            named(0, "vllm_server_decode_0_0", "vLLMHttpServer", 20001),
            named(0, "vllm_server_decode_0_1", "vLLMHttpServer", 20002),
            named(1, "vllm_server_1_0", "vLLMHttpServer", 20003),  # not disaggregated
            named(0, "vllm_server_teacher_0_0_Qwen_Qwen3-8B", "vLLMHttpServer", 20004),
            named(0, "vllm_server_teacher_0_0_math", "vLLMHttpServer", 20005),
            named(2, "trtllm_server_2", "TRTLLMHttpServer", 20006),
            named(3, "async_llm_server_3", "AsyncvLLMServer", 20007),
        )
    )
    labels = _labels(r.apply(c.snapshot(), c))
    assert labels["vllm_server_0_0"]["disaggregation"] == "prefill"
    assert labels["vllm_server_decode_0_1"]["disaggregation"] == "decode"
    for name in ("vllm_server_0_0", "vllm_server_decode_0_0", "vllm_server_decode_0_1"):
        assert labels[name]["role"] == "rollout" and labels[name]["replica"] == "0"
    assert "disaggregation" not in labels["vllm_server_1_0"]
    assert labels["vllm_server_teacher_0_0_Qwen_Qwen3-8B"]["teacher"] == "Qwen_Qwen3-8B"
    assert labels["vllm_server_teacher_0_0_math"]["teacher"] == "math"
    assert labels["vllm_server_teacher_0_0_math"]["role"] == "teacher"
    assert labels["trtllm_server_2"]["__metrics_path__"] == "/prometheus/metrics"
    assert labels["trtllm_server_2"]["engine"] == "trtllm"
    assert "__metrics_path__" not in labels["vllm_server_1_0"]
    assert labels["async_llm_server_3"]["metrics_route"] == "absent"
    assert "metrics_route" not in labels["vllm_server_1_0"]


def test_hostile_actor_names_are_dropped_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server-class actor named with 4,301 digits (int() would raise) or a
    crafted 18,000-character name is dropped and logged once; every other server is listed."""
    r, _ = make()
    hostile = [
        named(9, "vllm_server_0_" + "1" * 4301, "vLLMHttpServer", 20009),
        named(8, "server_1_" * 2000 + "!", "vLLMHttpServer", 20008),
        named(7, "vllm_server_\u0663_0", "vLLMHttpServer", 20007),
    ]
    c = StaticCluster.from_data(cluster(server(0), *hostile))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            desired = r.apply(c.snapshot(), c)
            r._last_snapshot = None  # force a full fold each time
    assert desired is not None
    assert [t.label("replica") for t in desired.files[ROLLOUT_FILE]] == ["0"]
    assert r.dropped_counts == {(ROLLOUT_FILE, "name_too_long"): 2}
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(warnings) == 2 and all(len(w) < 400 for w in warnings)


def test_addresses_that_prometheus_would_fail_are_dropped() -> None:
    """A host with a trailing newline, a float port and non-ASCII digits
    never reach the file."""
    r, _ = make()
    c = StaticCluster.from_data(
        cluster(
            server(0),
            server(1, address=["127.0.0.1\n", 20001]),
            server(2, address=["127.0.0.1", 80.9]),
            server(3, address="127.0.0.1:\u0668\u0660"),
            server(4, address="node-4\n:80"),
        )
    )
    desired = r.apply(c.snapshot(), c)
    assert desired is not None
    assert [t.address for t in desired.files[ROLLOUT_FILE]] == ["127.0.0.1:20000"]


def _session(data: dict[str, Any], session: str) -> StaticCluster:
    return StaticCluster.from_data({**data, "session": session})


def test_ray_session_label_and_a_restart_that_reuses_job_and_actor_ids() -> None:
    """Targets carry ray_session; a new session that reuses the
    job id and actor id is another server: its address is asked anew, the old target stays
    until the new one answers or grace passes, and session_changed says so for that poll."""
    r, clock = make(grace=10)
    old = _session(cluster(server(0, port=20000), server(1, port=20001)), "session_a")
    desired = r.apply(old.snapshot(), old)
    assert {t.label("ray_session") for t in desired.files[ROLLOUT_FILE]} == {"session_a"}  # type: ignore[union-attr]
    assert not r.session_changed
    clock.now += 2
    # Ray restarted: same job id and actor id for server 0, nothing resolvable yet.
    new = ScriptedResolver([Resolution(None, "not launched")])
    snap = _session(cluster(server(0, port=20100)), "session_b").snapshot()
    desired = r.apply(snap, new)
    assert r.session_changed
    assert r.unresolved_names() == {("ns-01000000", "vllm_server_0_0")}
    assert r.has_unresolved()
    addresses = sorted(t.address for t in desired.files[ROLLOUT_FILE])
    assert addresses == ["127.0.0.1:20000", "127.0.0.1:20001"]  # old targets kept
    clock.now += 2
    new.answers = [Resolution(("127.0.0.1", 20100))]
    desired = r.apply(snap, new)
    assert not r.session_changed
    got = sorted((t.address, t.label("ray_session")) for t in desired.files[ROLLOUT_FILE])
    # Server 0 replaced by its new self; server 1 (gone) kept within grace.
    assert got == [("127.0.0.1:20001", "session_a"), ("127.0.0.1:20100", "session_b")]
    assert r.unresolved_names() == set()
    clock.now += 7  # 11 s after the old session was last seen
    desired = r.apply(snap, new)
    assert [t.address for t in desired.files[ROLLOUT_FILE]] == ["127.0.0.1:20100"]


def test_a_session_first_told_late_is_not_a_change() -> None:
    """A source that could not tell the session at first: the session it tells later is the
    same cluster, so nothing is re-resolved and session_changed stays False."""
    r, _ = make()
    data = cluster(server(0))
    plain = StaticCluster.from_data(data)
    r.apply(plain.snapshot(), plain)
    told = _session(data, "session_a")
    resolver = ScriptedResolver([])
    desired = r.apply(told.snapshot(), resolver)
    assert not r.session_changed and resolver.calls == 0
    assert [t.label("ray_session") for t in desired.files[ROLLOUT_FILE]] == ["session_a"]  # type: ignore[union-attr]


def test_static_cluster_file_carries_the_session(tmp_path: Path) -> None:
    """The static source reads "session" from its file; a malformed one is a SourceError
    (the poll fails, the files stay as they are), never a crash."""
    path = tmp_path / "cluster.json"
    path.write_bytes(orjson.dumps({**cluster(server(0)), "session": "session_x"}))
    assert StaticCluster(path).snapshot().session == "session_x"
    for bad in (42, "s" * 300):
        path.write_bytes(orjson.dumps({**cluster(server(0)), "session": bad}))
        with pytest.raises(SourceError):
            StaticCluster(path).snapshot()


class ComponentsResolver:
    """The static cluster's addresses and ports, and Ray's components as scripted answers
    (what Ray's GCS key-value store holds: the dashboard's address is there before the
    autoscaler's)."""

    def __init__(self, inner: StaticCluster, answers: list[dict[str, str]]) -> None:
        self.inner = inner
        self.answers = answers
        self.asked = 0

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]:
        return self.inner.resolve_addresses(actors)

    def metrics_ports(self, node_ids: Iterable[str]) -> Mapping[str, int]:
        return self.inner.metrics_ports(node_ids)

    def ray_components(self) -> Mapping[str, str]:
        self.asked += 1
        return self.answers.pop(0) if self.answers else {}

    def problem(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def test_ray_json_carries_rays_dashboard_and_autoscaler_with_their_component() -> None:
    """ray.json lists what Ray's own discovery file lists (metrics_agent.py
    PrometheusServiceDiscoveryWriter: nodes, DashboardMetricsAddress, AutoscalerMetricsAddress),
    each labelled ray_component; a component not known yet is asked again after a delay, never
    at every poll, and a bad address from the cluster is dropped, not written."""
    r, clock = make()
    c = StaticCluster.from_data(cluster(server(0)))
    resolver = ComponentsResolver(
        c, [{"dashboard": "127.0.0.1:44227"}, {"autoscaler": "127.0.0.1:44217"}]
    )
    desired = r.apply(c.snapshot(), resolver)
    assert desired is not None
    by_component = {t.label("ray_component"): t for t in desired.files[RAY_FILE]}
    assert sorted(by_component) == ["dashboard", "node"]
    assert by_component["node"].address == "127.0.0.1:8080"
    assert dict(by_component["dashboard"].labels) == {
        "ray_component": "dashboard",
        "cluster": "c1",
        "node_ip": "127.0.0.1",
        "node_id": "n0",
        "node_name": "127.0.0.1",
        "is_head_node": "true",
    }
    # The same snapshot within the delay: nothing to do, nothing asked.
    assert r.apply(c.snapshot(), resolver) is None and resolver.asked == 1
    clock.now += 1.5
    desired = r.apply(c.snapshot(), resolver)
    assert desired is not None and resolver.asked == 2
    assert sorted(t.label("ray_component") for t in desired.files[RAY_FILE]) == [
        "autoscaler",
        "dashboard",
        "node",
    ]
    # Both known: never asked again in this session.
    clock.now += 100
    r.apply(c.snapshot(), resolver)
    assert resolver.asked == 2

    hostile, _ = make()
    bad = ComponentsResolver(c, [{"dashboard": "evil host:1\n", "autoscaler": "10.0.0.9:44217"}])
    desired = hostile.apply(c.snapshot(), bad)
    assert desired is not None
    assert sorted(t.label("ray_component") for t in desired.files[RAY_FILE]) == [
        "autoscaler",
        "node",
    ]
