"""Ray's actor export events as the daemon's doorbell.

A cluster started with ``RAY_enable_export_api_write_config=EXPORT_ACTOR`` in ``ray start``'s
environment (ray-project/ray ``python/ray/_private/ray_constants.py``) has its GCS append a line
to ``<session>/logs/export_events/event_EXPORT_ACTOR.log`` at each actor state change
(``python/ray/_private/event/export_event_logger.py`` names the directory). The daemon, run from
a clean environment with a 30 s quiet poll, puts a new server in rollout.json within seconds
of it serving; without the doorbell it would wait for the next quiet poll.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsd_daemon.discovery.ray_events import ACTOR_EVENTS_FILE, EVENTS_DIR, ActorEventWatch
from fsd_daemon.sim.rayhead import RayHead, clean_env
from tests.support.pickup import QUIET_POLL_SECONDS, pickup_after_quiet


def _session(temp_dir: Path, name: str, *, events: bool = True) -> Path:
    session = temp_dir / name
    (session / EVENTS_DIR).mkdir(parents=True)
    if events:
        (session / EVENTS_DIR / ACTOR_EVENTS_FILE).touch()
    link = temp_dir / "session_latest"
    link.unlink(missing_ok=True)
    link.symlink_to(session)
    return session


def test_the_watch_rings_on_actor_events_and_follows_a_new_session(tmp_path: Path) -> None:
    """A Ray temp dir as Ray lays it out: a line appended to the actor events file rings;
    other export files (tasks, nodes) do not; a new session without export events is not
    watched; one with them is watched again after refresh()."""
    rings = threading.Semaphore(0)
    watch = ActorEventWatch(tmp_path, rings.release)
    first = _session(tmp_path, "session_a")
    watch.refresh()
    try:
        assert watch.watched == first / EVENTS_DIR
        with open(first / EVENTS_DIR / "event_EXPORT_TASK_1.log", "a") as other:
            other.write('{"x": 1}\n')
        assert not rings.acquire(timeout=0.5)
        with open(first / EVENTS_DIR / ACTOR_EVENTS_FILE, "a") as events:
            events.write('{"event_data": {"state": "ALIVE"}}\n')
        assert rings.acquire(timeout=5)
        _session(tmp_path, "session_b", events=False)
        watch.refresh()
        assert watch.watched is None
        third = _session(tmp_path, "session_c")
        watch.refresh()
        assert watch.watched == third / EVENTS_DIR
        while rings.acquire(timeout=0.2):
            pass
        with open(third / EVENTS_DIR / ACTOR_EVENTS_FILE, "a") as events:
            events.write("not even JSON\n")  # a doorbell: the line is never read
        assert rings.acquire(timeout=5)
    finally:
        watch.stop()


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    root = tmp_path_factory.mktemp("rayhead-events")
    env = clean_env(root / "home", RAY_enable_export_api_write_config="EXPORT_ACTOR")
    with RayHead(root, env=env) as started:
        yield started


@pytest.mark.ray
@pytest.mark.slow
def test_a_new_server_is_in_the_file_long_before_the_next_quiet_poll(
    head: RayHead, tmp_path: Path
) -> None:
    seen, log = pickup_after_quiet(head, tmp_path)
    assert "watching Ray's actor export events" in log
    assert seen < QUIET_POLL_SECONDS / 3, f"picked up {seen:.1f} s after it served"


def test_no_export_events_changes_nothing(tmp_path: Path) -> None:
    """A temp dir without Ray (or without export events): nothing watched, no thread left."""
    before = threading.active_count()
    watch = ActorEventWatch(tmp_path / "absent", lambda: None)
    watch.refresh()
    assert watch.watched is None
    watch.stop()
    assert threading.active_count() == before
    assert os.listdir(tmp_path) == []


def test_an_empty_events_file_is_no_doorbell(tmp_path: Path) -> None:
    """Ray 2.60 creates event_EXPORT_ACTOR.log, empty, in every session whether or not export
    events are on: only a file Ray has written to says that they ring (the change probe is
    left out only then)."""
    session = _session(tmp_path, "session_a")
    watch = ActorEventWatch(tmp_path, lambda: None)
    try:
        watch.refresh()
        assert watch.watched is not None and not watch.ringing
        (session / EVENTS_DIR / ACTOR_EVENTS_FILE).write_text('{"event_id": "x"}\n')
        assert watch.ringing
    finally:
        watch.stop()
    assert not watch.ringing
