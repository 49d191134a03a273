"""The Ray token rotated under a running daemon: ``ray start --head`` with token auth (its own
process), the daemon from a clean environment with ``RAY_AUTH_TOKEN_PATH``. A token written to
that file is read again when Ray rejects the one in use and on SIGHUP; every message about the
token is true when it is written; the bridge child's output reaches the log one line per event.
Ray decides token mode as in ray-project/ray python/ray/scripts/scripts.py (``ray start``:
maybe_enable_token_auth_if_token_available).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fsd_daemon.sim.harness import healthz, read_groups, wait_for
from fsd_daemon.sim.launch import free_port, stop_process
from fsd_daemon.sim.rayhead import RayHead, clean_env, ray_has_token_auth, write_token

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(not ray_has_token_auth(), reason="this Ray has no token auth"),
]

OLD = "fsd-rotation-old-0123456789abcdef0123456789abcdef"
NEW = "fsd-rotation-new-fedcba9876543210fedcba9876543210"


def _head_node_id(head: RayHead, token: str) -> str:
    """The one node's id, once it has registered (the dashboard answers before that)."""
    found: list[str] = []

    def listed() -> bool:
        request = urllib.request.Request(
            f"{head.dashboard_url}/api/v0/nodes?limit=10",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            nodes = json.loads(reply.read())["data"]["result"]["result"]
        found.extend(str(n["node_id"]) for n in nodes)
        return bool(found)

    wait_for(listed, timeout=60, step=0.5)
    return found[0]


def _node_ids(path: Path) -> set[str]:
    return {g["labels"].get("node_id", "") for g in read_groups(path)}


def test_rotated_token_is_read_again(tmp_path: Path) -> None:
    """Ray restarted with a new token written to the daemon's token file: the rejection makes
    the daemon read the file again, and both the state API (gpu.json) and the bridge
    (ray.json, which needs a Ray driver) follow the new session. Then a wrong token written
    there and SIGHUP: read again at once, /healthz names that file's token as rejected (true
    now); the right one back and SIGHUP: healthy again. No traceback or stack dump line
    reaches the log."""
    token_file = tmp_path / "ray-token"
    token_file.write_text(OLD + "\n")
    write_token(tmp_path / "first" / "home", OLD)
    first = RayHead(tmp_path / "first").start()
    second: RayHead | None = None
    out = tmp_path / "out"
    port = free_port()
    log_path = tmp_path / "daemon.log"
    env = clean_env(tmp_path / "daemon-home", RAY_AUTH_TOKEN_PATH=str(token_file))
    env["FSD_DAEMON_POLL_INTERVAL_SECONDS"] = "0.5"
    env["FSD_DAEMON_GRACE_PERIOD_SECONDS"] = "1"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fsd_daemon.cli", "run", "--ray-address", first.address,
             "--output-dir", str(out), "--metrics-listen", f"127.0.0.1:{port}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        old_id = _head_node_id(first, OLD)
        wait_for(lambda: _node_ids(out / "ray.json") == {old_id}, timeout=90)
        first.stop()
        token_file.write_text(NEW + "\n")
        write_token(tmp_path / "second" / "home", NEW)
        second = RayHead(tmp_path / "second")
        second.gcs_port = first.gcs_port
        second.start()
        new_id = _head_node_id(second, NEW)
        for name in ("gpu.json", "ray.json"):
            wait_for(lambda n=name: new_id in _node_ids(out / n), timeout=120)
        wait_for(lambda: healthz(port)[0] == 200, timeout=30)

        token_file.write_text("not-the-cluster-token\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "Ray's token read again: it changed" in log_path.read_text(), 10)
        wait_for(lambda: healthz(port)[0] == 503, timeout=30)
        assert f"rejected the token from RAY_AUTH_TOKEN_PATH ({token_file})" in str(
            healthz(port)[1]
        )
        token_file.write_text(NEW + "\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: healthz(port)[0] == 200, timeout=30)
        time.sleep(1.0)
    finally:
        stop_process(proc)
        if second is not None:
            second.stop()
        first.stop()
    text = log_path.read_text()
    assert proc.returncode == 0, text[-3000:]
    for token in (OLD, NEW):
        assert token not in text
    raw = [
        line
        for line in text.splitlines()
        if line.startswith(("Traceback", "/", "*** ", "  File ", "["))
        or ("StackTrace" in line and "fsd_daemon" not in line)
    ]
    assert not raw, raw[:10]
