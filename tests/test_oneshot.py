"""discover_once, the one pass of ``run --once``, ``targets`` and ``doctor``: one listing, then
resolution rounds on it until every server answered or the budget (ray.resolve_timeout_seconds
plus a margin for the bridge's start) has passed; the budget holds on a clock the test drives."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

from fsd_daemon.config import load_config
from fsd_daemon.discovery.base import (
    ActorRecord,
    ClusterSnapshot,
    Resolution,
    SourceError,
)
from fsd_daemon.discovery.static import StaticCluster
from fsd_daemon.pipeline.oneshot import ROUND_PAUSE_SECONDS, discover_once, resolve_budget
from fsd_daemon.pipeline.reconcile import ROLLOUT_FILE
from tests.support.clusterfile import cluster, server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class CountingSource(StaticCluster):
    """The described cluster, counting its listings."""

    listings = 0

    def snapshot(self) -> ClusterSnapshot:
        self.listings += 1
        return super().snapshot()


class LateResolver(StaticCluster):
    """The described cluster's answers from the ``answers_from``-th round on (a server still
    starting: verl creates the actor first and launches HTTP later)."""

    answers_from = 1
    rounds = 0

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]:
        self.rounds += 1
        if self.rounds < self.answers_from:
            return {a.actor_id: Resolution(None, "connection refused") for a in actors}
        return super().resolve_addresses(actors)

    def wait_ready(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return super().wait_ready(timeout)


def _parts(answers_from: int) -> tuple[CountingSource, LateResolver]:
    data = cluster(server(0), server(1))
    resolver = LateResolver.from_data(data)
    resolver.answers_from, resolver.waits = answers_from, []
    return CountingSource.from_data(data), resolver


CONFIG = load_config(None, environ={}, overrides={"ray.resolve_timeout_seconds": 2.0})


def test_lists_once_and_resolves_until_every_server_answered() -> None:
    clock = Clock()
    source, resolver = _parts(answers_from=4)
    found = discover_once(CONFIG, source, resolver, clock=clock, sleep=clock.sleep)
    assert source.listings == 1
    assert resolver.rounds == 4
    assert len(found.desired.files[ROLLOUT_FILE]) == 2 and not found.unresolved
    # One wait for the resolver (the bridge starting), with the whole budget, then pauses.
    assert resolver.waits == [resolve_budget(CONFIG)]
    assert clock.now - 1000.0 == pytest.approx(2 * ROUND_PAUSE_SECONDS)


def test_a_server_that_never_answers_ends_at_the_budget() -> None:
    clock = Clock()
    source, resolver = _parts(answers_from=10**9)
    found = discover_once(CONFIG, source, resolver, clock=clock, sleep=clock.sleep)
    assert found.unresolved and found.desired.files[ROLLOUT_FILE] == ()
    budget = resolve_budget(CONFIG)
    assert budget == 2.0 + 10.0
    assert budget <= clock.now - 1000.0 < budget + ROUND_PAUSE_SECONDS + 1e-9
    assert source.listings == 1


def test_an_unreachable_ray_raises_without_asking_the_resolver() -> None:
    class Down:
        def snapshot(self) -> ClusterSnapshot:
            raise SourceError("unreachable", "connection refused")

    _, resolver = _parts(answers_from=1)
    with pytest.raises(SourceError):
        discover_once(CONFIG, Down(), resolver)
    assert resolver.rounds == 0 and resolver.waits == []
