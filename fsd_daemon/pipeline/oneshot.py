"""Discover once: list the cluster, resolve for a bounded while, return what would be written.

The one pass that ``fsd-daemon run --once`` (which then writes it), ``fsd-daemon targets``
(which prints it) and ``fsd-daemon doctor`` (which checks it) share. One listing: an
unreachable Ray fails within ``ray.request_timeout_seconds`` (:class:`SourceError`). Then rounds
of resolution on that listing until every recognised server has its address (and every node
its metrics port, where ray.json is written) or :func:`resolve_budget` has passed; servers that
never answered are left out, and ``unresolved`` says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fsd_daemon.config import Config
from fsd_daemon.discovery.base import ClusterSnapshot, ClusterSource, Resolver
from fsd_daemon.pipeline.reconcile import Desired, Reconciler

# Beyond the resolver's own timeout: starting the Ray bridge (importing ray, connecting to the
# GCS) takes seconds on a loaded head node.
RESOLVE_MARGIN_SECONDS = 10.0
# Between two rounds of resolution: a server that is starting gets time to answer.
ROUND_PAUSE_SECONDS = 0.2


def resolve_budget(config: Config) -> float:
    """Seconds a one-shot command gives address resolution after the listing."""
    return config.ray.resolve_timeout_seconds + RESOLVE_MARGIN_SECONDS


@dataclass(frozen=True)
class Discovered:
    """What one pass saw and what the files would hold."""

    snapshot: ClusterSnapshot
    desired: Desired
    # Recognised servers (or node ports) that did not answer within the budget.
    unresolved: bool


def discover_once(
    config: Config,
    source: ClusterSource,
    resolver: Resolver,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Discovered:
    """List once, resolve until done or out of time. Raises SourceError when Ray cannot be
    listed; the caller owns (and closes) ``source`` and ``resolver``."""
    snapshot = source.snapshot()
    deadline = clock() + resolve_budget(config)
    reconciler = Reconciler(config, clock=clock)
    desired = reconciler.apply(snapshot, resolver)
    # A fresh reconciler's first apply always answers (it has no previous result to keep).
    assert desired is not None
    waited = False
    while reconciler.has_unresolved() and clock() < deadline:
        if waited:
            sleep(ROUND_PAUSE_SECONDS)
        else:  # the Ray bridge may still be starting: the first wait is for it
            resolver.wait_ready(max(0.0, deadline - clock()))
            waited = True
        desired = reconciler.apply(snapshot, resolver) or desired
    return Discovered(snapshot, desired, reconciler.has_unresolved())


__all__ = ["Discovered", "discover_once", "resolve_budget"]
