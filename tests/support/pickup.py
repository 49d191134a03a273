"""The measurement both doorbell tests make (Ray's actor export events in test_ray_events, the
change probe in test_change_probe): how long after a new server serves it is in rollout.json,
while the daemon's own polls come every 30 s."""

from __future__ import annotations

import time
from pathlib import Path

from fsd_daemon.sim.harness import read_groups, wait_for
from fsd_daemon.sim.launch import start_job, stop_process
from fsd_daemon.sim.rayhead import RayHead

QUIET_POLL_SECONDS = 30.0


def pickup_after_quiet(head: RayHead, tmp_path: Path) -> tuple[float, str]:
    """Runs the daemon against ``head`` from a clean environment with a 30 s quiet poll, waits
    out the first poll's fast-poll window, starts one vLLM server and returns the seconds until
    rollout.json lists it (a quiet poll at most), with the daemon's whole log. The daemon must
    have exited 0 without a traceback."""
    out = tmp_path / "targets"
    log_path = tmp_path / "daemon.log"
    quiet = {"FSD_DAEMON_POLL_INTERVAL_SECONDS": str(QUIET_POLL_SECONDS)}
    daemon = head.start_daemon(out, log_path, quiet)
    job = None
    try:
        wait_for(lambda: (out / "rollout.json").exists(), timeout=60)
        # Past the fast-poll window of the first poll: from here the daemon polls every 30 s.
        time.sleep(11)
        job = start_job(head.address, "--vllm", "1")
        serving = time.monotonic()
        wait_for(lambda: read_groups(out / "rollout.json"), timeout=QUIET_POLL_SECONDS)
        seen = time.monotonic() - serving
    finally:
        if job is not None:
            job.stop()
        stop_process(daemon)
    log = log_path.read_text()
    assert daemon.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    return seen, log
