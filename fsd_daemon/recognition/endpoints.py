"""The other metric endpoints of a verl run (beyond the rollout servers): where they are.

The endpoints are entries of the table of what verl creates (:data:`fsd_daemon.recognition.verl
.METRICS_ENDPOINTS`: the Ray actor that serves each (class, anchored name pattern, namespace),
the port when upstream fixes one, and what a user sets where the address cannot be known or
reached). ``fsd-daemon doctor`` finds them here (:func:`locate`, then a probe where the port is
known); the daemon writes no targets for these endpoints, because neither address can be known
safely from Ray:

- TransferQueue (pip ``transferqueue`` 0.1.11): ``transfer_queue/interface.py`` ``init`` creates
  the controller as ``TransferQueueController.options(name="TransferQueueController",
  namespace="transfer_queue")`` and, with ``metrics.enabled``, ``controller.py``
  ``start_metrics`` serves ``/metrics`` on the controller's node IP at ``metrics.port`` (0, the
  default, = a port chosen at run time, kept only in the controller's config); its storage
  units always take a run-time port. verl passes ``transfer_queue.metrics.enabled`` (default
  false) and ``.port`` (default 0) from ``verl/trainer/config/transfer_queue/
  transfer_queue.yaml`` (verl 0.9.1).
- verl-recipe AsyncFlow (``async_flow/utils/metric/prometheus_metrics_server.py`` at
  48ea0a79): ``start_prometheus_servers`` (only with ``AF_PROMETHEUS_METRICS_ENABLE=true``)
  starts one detached ``PrometheusMetricsServer`` per node named
  ``prometheus_server_{node_id[:8]}``, port 9400, bound to 127.0.0.1 unless
  ``AF_PROMETHEUS_METRICS_BIND_ALL=true`` (0.0.0.0) or ``AF_PROMETHEUS_METRICS_BIND=<addr>``
  is set in the environment that starts them: Ray does not say which.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fsd_daemon.discovery.base import ClusterSnapshot
from fsd_daemon.recognition.verl import METRICS_ENDPOINTS, EndpointKind

_NAME_LIMIT = 256  # longer names are not one of these actors; never matched


@dataclass(frozen=True)
class Located:
    kind: EndpointKind
    actor_name: str
    node_ip: str  # "" when the actor's node is not listed

    @property
    def address(self) -> str | None:
        """``node_ip:port`` where both are known, else None."""
        if not self.node_ip or not self.kind.port:
            return None
        host = f"[{self.node_ip}]" if ":" in self.node_ip else self.node_ip
        return f"{host}:{self.kind.port}"


def locate(
    snapshot: ClusterSnapshot, kinds: Iterable[EndpointKind] = METRICS_ENDPOINTS
) -> list[Located]:
    """The actors of ``snapshot`` that serve one of ``kinds``, sorted by kind and name."""
    compiled = [(k, re.compile(k.name + r"\Z", re.ASCII)) for k in kinds]
    ips = {node.node_id: node.node_ip for node in snapshot.nodes}
    found = []
    for actor in snapshot.actors:
        if len(actor.name) > _NAME_LIMIT:
            continue
        for kind, name_re in compiled:
            if (
                actor.class_name == kind.class_name
                and name_re.match(actor.name)
                and (not kind.namespace or actor.namespace == kind.namespace)
            ):
                found.append(Located(kind, actor.name, ips.get(actor.node_id, "")))
    return sorted(found, key=lambda f: (f.kind.component, f.actor_name))
