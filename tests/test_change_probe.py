"""The change probe between quiet polls, on a real Ray without export events.

A cluster started without ``RAY_enable_export_api_write_config`` rings no doorbell. The daemon,
run from a clean environment with a 30 s quiet poll, asks Ray's state API every
``ray.change_probe_interval_seconds`` (0.5 s by default) how many actors are ALIVE
(``/api/v0/actors`` with ``limit=1``: python/ray/dashboard/state_aggregator.py list_actors) and
polls as soon as that count moves: a new server is in rollout.json within seconds of serving,
not at the next quiet poll.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsd_daemon.sim.harness import read_groups, wait_for
from fsd_daemon.sim.launch import start_job, stop_process
from fsd_daemon.sim.rayhead import RayHead
from tests.support.pickup import QUIET_POLL_SECONDS, pickup_after_quiet

_QUIET = {"FSD_DAEMON_POLL_INTERVAL_SECONDS": str(QUIET_POLL_SECONDS)}


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    root = tmp_path_factory.mktemp("rayhead-probe")
    with RayHead(root) as started:
        yield started


@pytest.mark.ray
@pytest.mark.slow
def test_a_new_server_is_seen_long_before_the_next_quiet_poll_without_export_events(
    head: RayHead, tmp_path: Path
) -> None:
    seen, log = pickup_after_quiet(head, tmp_path)
    assert seen < QUIET_POLL_SECONDS / 3, f"picked up {seen:.1f} s after it served"
    assert "change probe: the actors changed" in log


@pytest.mark.ray
@pytest.mark.slow
def test_a_dashboard_that_stops_answering_between_polls_changes_no_file(
    head: RayHead, tmp_path: Path
) -> None:
    """A probe that fails (a stopped dashboard: each one times out) decides nothing: no poll
    is brought forward by it, and the file keeps its servers."""
    out = tmp_path / "targets"
    log_path = tmp_path / "daemon.log"
    job = start_job(head.address, "--vllm", "2")
    daemon = head.start_daemon(out, log_path, _QUIET)
    try:
        wait_for(lambda: len(read_groups(out / "rollout.json")) == 2, timeout=60)
        before = (out / "rollout.json").read_bytes()
        time.sleep(11)  # past the fast-poll window: only probes until the next quiet poll
        head.pause_dashboard()
        try:
            time.sleep(8)
            assert (out / "rollout.json").read_bytes() == before
            assert "change probe failed" in log_path.read_text()
        finally:
            head.resume_dashboard()
    finally:
        job.stop()
        stop_process(daemon)
    assert daemon.returncode == 0, log_path.read_text()[-3000:]
    assert "Traceback" not in log_path.read_text()
