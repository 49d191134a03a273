"""The labels written into rollout.json, gpu.json and ray.json are the names module's, and they
are the labels the shipped rules and dashboards read.

The cluster holds a server of every form verl's table knows (fsd_daemon/recognition/verl.py:
vLLM, SGLang, TRT-LLM, Dynamo and the verl <= 0.5 servers), in every role its names may carry
(rollout, reward, teacher with a teacher key, disaggregated decode beside its prefill server),
a head and a worker node, and Ray's dashboard and autoscaler: every label a target can carry is
written at least once. (verl's rollout modes, hybrid, colocated and standalone, name and place
the servers alike; they change the GPU exporter's labels, not the target files.)

A builder that spells a label by hand (``"ray_jobid"`` for ``names.RAY_JOB_ID``) writes a name
the names module does not hold, and leaves a label the rules group by unwritten: both fail here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from fsd_daemon.config import load_config
from fsd_daemon.discovery.base import ActorRecord, Resolution
from fsd_daemon.discovery.static import StaticCluster
from fsd_daemon.mixin import names
from fsd_daemon.pipeline.reconcile import GPU_FILE, RAY_FILE, ROLLOUT_FILE, Desired, Reconciler
from fsd_daemon.pipeline.render import render
from fsd_daemon.recognition import verl
from tests import promql

HEAD_IP, WORKER_IP = "10.0.0.1", "10.0.0.2"
TEACHER_KEY = "math_teacher"

# Labels the rules and dashboards read that no target file carries: Prometheus adds instance
# and job; the engines export the rest of the first group; fsd-gpu-exporter the second.
NOT_FROM_TARGET_FILES = {
    names.INSTANCE,
    names.JOB,
    names.HISTOGRAM_BOUND,
    names.MODEL_NAME,
    names.FINISHED_REASON,
    names.SLEEP_STATE,
    names.SGLANG_TP_RANK,
    names.SGLANG_PP_RANK,
    names.SGLANG_MOE_EP_RANK,
} | {
    names.GPU,
    names.GPU_UUID,
    names.OWNER_STATE,
    names.BUSY_SOURCE_METHOD,
    names.NVML_FUNCTION,
    names.ROLLOUT_MODE,
}


def _every_server() -> list[dict[str, Any]]:
    """One replica per form and role, each form in a Ray job of its own."""
    actors = []
    for number, form in enumerate(verl.SERVER_FORMS):
        job = f"{number + 1:02d}000000"
        for replica, role in enumerate(("", *form.name_roles)):
            if role == verl.DECODE:
                replica = 0  # the decode half of replica 0, whose plain server is its prefill
            suffix = TEACHER_KEY if role == verl.ROLE_TEACHER else ""
            actors.append(
                {
                    "actor_id": f"{job}-{len(actors)}",
                    "class_name": form.class_name,
                    "name": form.actor_name(replica, 0, role=role, suffix=suffix),
                    "job_id": job,
                    "namespace": f"ns-{job}",
                    "node_id": "worker" if replica % 2 else "head",
                    "pid": 1000 + len(actors),
                    "address": [WORKER_IP if replica % 2 else HEAD_IP, 20000 + len(actors)],
                }
            )
    return actors


class WithRayComponents:
    """The described cluster's answers, plus Ray's dashboard and autoscaler on the head node
    (a described cluster has no Ray of its own)."""

    def __init__(self, inner: StaticCluster) -> None:
        self.inner = inner

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]:
        return self.inner.resolve_addresses(actors)

    def metrics_ports(self, node_ids: Iterable[str]) -> Mapping[str, int]:
        return self.inner.metrics_ports(node_ids)

    def ray_components(self) -> Mapping[str, str] | None:
        return {
            names.RAY_COMPONENT_DASHBOARD: f"{HEAD_IP}:44227",
            names.RAY_COMPONENT_AUTOSCALER: f"{HEAD_IP}:44217",
        }


def _written() -> tuple[Desired, dict[str, set[str]]]:
    described = StaticCluster.from_data(
        {
            "session": "session_2026-01-01_00-00-00_000000_1",
            "actors": _every_server(),
            "nodes": [
                {
                    "node_id": "head",
                    "node_ip": HEAD_IP,
                    "node_name": "h",
                    "is_head": True,
                    "metrics_port": 8080,
                },
                {
                    "node_id": "worker",
                    "node_ip": WORKER_IP,
                    "node_name": "w",
                    "is_head": False,
                    "metrics_port": 8080,
                },
            ],
        }
    )
    config = load_config(None, environ={}, overrides={"daemon.cluster": "c1"})
    desired = Reconciler(config).apply(described.snapshot(), WithRayComponents(described))
    assert desired is not None
    labels = {}
    for name, targets in desired.files.items():
        groups = orjson.loads(render(targets))
        labels[name] = {label for group in groups for label in group["labels"]}
    return desired, labels


def _named() -> set[str]:
    return {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}


_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(rf"({_LABEL})\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")


def labels_read() -> set[str]:
    """Every label a shipped rule, alert, panel or dashboard variable matches or groups by."""
    read: set[str] = set()
    for expression in promql.all_expressions():
        for matchers in _MATCHERS.findall(expression.expr):
            read |= set(_MATCHER_LABEL.findall(matchers))
        for grouping in _GROUPING.findall(expression.expr):
            read |= {label.strip() for label in grouping.split(",") if label.strip()}
    return read


def unnamed(labels: Iterable[str]) -> set[str]:
    return set(labels) - _named()


def test_every_form_is_written_and_nothing_dropped() -> None:
    desired, _ = _written()
    assert desired.dropped == ()
    assert len(desired.files[ROLLOUT_FILE]) == len(_every_server())
    engines = {t.label(names.ENGINE) for t in desired.files[ROLLOUT_FILE]}
    assert engines == set(names.ENGINES)
    assert len(desired.files[GPU_FILE]) == 2
    assert len(desired.files[RAY_FILE]) == 4  # two nodes, the dashboard, the autoscaler


def test_every_label_written_is_a_names_constant() -> None:
    _, written = _written()
    for file, labels in written.items():
        assert unnamed(labels) == set(), file
    # Every optional rollout label is there once: the cluster exercises each one.
    assert {
        names.DISAGGREGATION,
        names.TEACHER,
        names.METRICS_ROUTE,
        names.METRICS_PATH,
        names.RAY_SESSION,
    } <= written[ROLLOUT_FILE]
    assert {names.RAY_COMPONENT, names.IS_HEAD_NODE} <= written[RAY_FILE]


def test_the_labels_rules_and_dashboards_read_are_written() -> None:
    """Each label a rule or panel reads comes from a target file, or from Prometheus, an
    engine or the GPU exporter (NOT_FROM_TARGET_FILES); none is spelt apart from names."""
    _, written = _written()
    read = labels_read()
    assert {names.RAY_JOB_ID, names.REPLICA, names.CLUSTER} <= read  # the parser found them
    from_targets = (read & _named()) - NOT_FROM_TARGET_FILES
    missing = from_targets - set().union(*written.values())
    assert missing == set()
    # The rollout rules group by these; each is on rollout.json.
    for grouping in (names.REPLICA_LABELS, names.ROLLOUT_REPLICA_LABELS, names.GPU_OWNER_JOIN):
        assert set(grouping) - NOT_FROM_TARGET_FILES <= written[ROLLOUT_FILE], grouping


def test_a_hand_spelled_label_is_caught() -> None:
    """The check itself: a label spelt apart from the names module is reported."""
    _, written = _written()
    misspelt = {*(written[ROLLOUT_FILE] - {names.RAY_JOB_ID}), "ray_jobid"}
    assert unnamed(misspelt) == {"ray_jobid"}
