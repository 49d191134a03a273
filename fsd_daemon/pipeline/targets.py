"""What one entry of each target file is: pure functions of records and the cluster label.

- rollout.json: one target per rollout server (:func:`rollout_target`);
- gpu.json: one per node, its GPU exporter (:func:`gpu_target`);
- ray.json: one per node, Ray's metrics export port (:func:`ray_node_target`), and one per Ray
  component with a metrics address of its own (:func:`ray_component_target`).

The reconciler (:mod:`fsd_daemon.pipeline.reconcile`) decides which entries exist, keeps them
between polls and validates what these return; nothing here holds state. Every label name is a
constant of :mod:`fsd_daemon.mixin.names`, and tests/test_target_labels.py checks that the labels
written are those the rules and dashboards read. A new label on rollout.json is one line here
(and its constant in names).
"""

from __future__ import annotations

from typing import NamedTuple

from fsd_daemon.discovery.base import ActorRecord, NodeRecord
from fsd_daemon.mixin import names
from fsd_daemon.pipeline.render import Target, format_address
from fsd_daemon.recognition.recognise import ServerIdentity


class RolloutInputs(NamedTuple):
    """Everything one rollout target is made of, besides the cluster label: equal inputs give
    an equal target, which is what lets the reconciler keep a built target between polls."""

    address: str  # validated "host:port" (render.parse_address)
    identity: ServerIdentity
    actor: ActorRecord
    node_ip: str  # "" while the server's node is not listed
    session: str  # the Ray session the actor id belongs to


def rollout_target(inputs: RolloutInputs, cluster: str) -> Target:
    """One server's target. Labels that do not apply are empty, hence left out of the file."""
    ident, actor = inputs.identity, inputs.actor
    return Target.of(
        inputs.address,
        {
            names.ENGINE: ident.engine,
            names.ROLE: ident.role,
            names.DISAGGREGATION: ident.disaggregation,
            names.TEACHER: ident.teacher,
            names.REPLICA: ident.replica,
            names.NODE_IP: inputs.node_ip,
            names.NODE_ID: actor.node_id,
            names.RAY_JOB_ID: actor.job_id,
            names.RAY_NAMESPACE: actor.namespace,
            names.RAY_SESSION: inputs.session,
            names.ACTOR_NAME: actor.name,
            names.CLUSTER: cluster,
            # verl <= 0.5 servers have no metrics route: rules tell them from a server down.
            names.METRICS_ROUTE: "" if ident.has_metrics_route else names.METRICS_ROUTE_ABSENT,
            names.METRICS_PATH: (
                "" if ident.metrics_path == names.DEFAULT_METRICS_PATH else ident.metrics_path
            ),
        },
    )


def _node_labels(record: NodeRecord, cluster: str) -> dict[str, str]:
    return {
        names.NODE_ID: record.node_id,
        names.NODE_IP: record.node_ip,
        names.NODE_NAME: record.node_name,
        names.IS_HEAD_NODE: "true" if record.is_head else "false",
        names.CLUSTER: cluster,
    }


def gpu_target(record: NodeRecord, port: int, cluster: str) -> Target:
    """A node's fsd-gpu-exporter (the same port on every node)."""
    return Target.of(format_address(record.node_ip, port), _node_labels(record, cluster))


def ray_node_target(record: NodeRecord, port: int, cluster: str) -> Target:
    """A node's Ray metrics export port (as the resolver found it)."""
    labels = _node_labels(record, cluster)
    labels[names.RAY_COMPONENT] = names.RAY_COMPONENT_NODE
    return Target.of(format_address(record.node_ip, port), labels)


def ray_component_target(
    component: str, value: str, head: NodeRecord | None, cluster: str
) -> Target:
    """The target of Ray's dashboard or autoscaler, written as Ray's own file lists it
    ("host:port", from the GCS): labelled with its component and, where it runs on the head
    node's address (as Ray starts both), with the head node's labels."""
    labels = {names.RAY_COMPONENT: component, names.CLUSTER: cluster}
    host = value.rpartition(":")[0].strip("[]")
    if host:
        labels[names.NODE_IP] = host
    if head is not None and host == head.node_ip:
        labels.update(
            {
                names.NODE_ID: head.node_id,
                names.NODE_NAME: head.node_name,
                names.IS_HEAD_NODE: "true",
            }
        )
    return Target.of(value, labels)


__all__ = [
    "RolloutInputs",
    "gpu_target",
    "ray_component_target",
    "ray_node_target",
    "rollout_target",
]
