"""The dashboards kept installed in a real Ray session's Grafana dashboards directory.

Ray is started as a user starts it (``ray start --head --block``, a separate process, a clean
environment, its own --temp-dir, fixed ports from this test's range 25000-25999), and stopped by
its PID (``--block`` makes that process stop the others). Ray's dashboard writes the session's
Grafana provisioning; its provider file names the dashboards directory
(ray/dashboard/modules/metrics/metrics_head.py, ``_create_default_grafana_configs``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsd_daemon.assets.install import dashboard_files
from fsd_daemon.service.grafana_session import RaySessionDashboardsKeeper, _provider_path
from fsd_daemon.sim.rayhead import RayHead

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# A port range of this test's own, so that Ray comes back on the same ports after a restart.
BASE_PORT = 25001


def wait_for_target(
    keeper: RaySessionDashboardsKeeper, other_than: Path | None, head: RayHead, timeout: float = 120
) -> Path:
    deadline = time.monotonic() + timeout
    while True:
        target = keeper.target()
        if target is not None and target != other_than:
            return target
        assert head.proc is not None and head.proc.poll() is None, "ray start exited"
        assert time.monotonic() < deadline, "Ray's dashboard wrote no Grafana provisioning"
        time.sleep(0.5)


@pytest.fixture
def ray_temp_dir() -> Iterator[Path]:
    # Short: Ray's socket paths must stay under 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="fsdg-", dir="/tmp"))
    yield base / "ray"
    shutil.rmtree(base, ignore_errors=True)


def installed(directory: Path) -> dict[str, bytes]:
    """The shipped dashboards' names found in ``directory``, with their bytes there."""
    return {n: (directory / n).read_bytes() for n in shipped() if (directory / n).is_file()}


def shipped() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in dashboard_files()}


def test_dashboards_follow_the_ray_session(ray_temp_dir: Path) -> None:
    """Installed into the session's directory that Ray's provider reads; put back when one is
    deleted; installed again into the new session after a Ray restart; nothing written when
    nothing changed."""
    keeper = RaySessionDashboardsKeeper(ray_temp_dir)
    assert keeper.target() is None and keeper.check() is False  # no session yet
    head = RayHead(ray_temp_dir.parent, base_port=BASE_PORT, temp_dir=ray_temp_dir, num_cpus=1)
    ray_temp_dir.mkdir(parents=True)
    head.start()
    try:
        first = wait_for_target(keeper, None, head)
        session = (ray_temp_dir / "session_latest").resolve()
        provider = session / "metrics/grafana/provisioning/dashboards/default.yml"
        assert _provider_path(provider) == first  # what Ray's Grafana loads
        assert keeper.check() is True
        assert installed(first) == shipped()
        # Ray's own dashboards stay.
        assert any(p.name not in shipped() for p in first.glob("*.json"))
        assert keeper.check() is False
        victim = sorted(shipped())[0]
        (first / victim).unlink()
        assert keeper.check() is True
        assert installed(first) == shipped()

        head.stop()
        head.start()
        second = wait_for_target(keeper, first, head)
        assert second != first
        assert keeper.check() is True
        assert installed(second) == shipped()
    finally:
        head.stop()


def test_config_key_turns_the_keeper_on(tmp_path: Path) -> None:
    """Off by default; ``[prometheus] ray_grafana_dashboards = true`` gives a keeper that
    follows ``ray_temp_dir``."""
    from fsd_daemon.config import load_config
    from fsd_daemon.service.grafana_session import keeper_from_config

    assert keeper_from_config(load_config(None, environ={})) is None
    config_file = tmp_path / "fsd-daemon.toml"
    config_file.write_text(
        f'[prometheus]\nray_grafana_dashboards = true\nray_temp_dir = "{tmp_path}"\n'
    )
    keeper = keeper_from_config(load_config(str(config_file), environ={}))
    assert keeper is not None and keeper.latest == tmp_path / "session_latest"


def test_running_daemon_keeps_the_dashboards_in_the_ray_session(tmp_path: Path) -> None:
    """``fsd-daemon run`` with ``ray_grafana_dashboards`` on installs the dashboards into the
    current session's Grafana directory after its polls, and follows session_latest when it
    moves to a new session (as after a Ray restart)."""
    import orjson

    from fsd_daemon.sim.harness import DaemonProcess, wait_for
    from tests.support.clusterfile import cluster, server

    ray_dir = tmp_path / "ray"
    sessions = [ray_dir / f"session_2026-12-01_1{i}-00-00_00000{i}_1" for i in (0, 1)]
    for session in sessions:
        (session / "metrics" / "grafana" / "dashboards").mkdir(parents=True)
    (ray_dir / "session_latest").symlink_to(sessions[0].name)
    described = tmp_path / "cluster.json"
    described.write_bytes(orjson.dumps(cluster(server(0))))
    wanted = {p.name for p in dashboard_files()}

    def installed(session: Path) -> set[str]:
        return {p.name for p in (session / "metrics" / "grafana" / "dashboards").iterdir()}

    settings = {
        "daemon.poll_interval_seconds": 0.5,
        "prometheus.ray_grafana_dashboards": "true",
        "prometheus.ray_temp_dir": str(ray_dir),
    }
    with DaemonProcess(f"file:{described}", tmp_path / "out", **settings):
        wait_for(lambda: wanted <= installed(sessions[0]), timeout=20)
        assert not installed(sessions[1])
        link = ray_dir / "session_latest.new"
        link.symlink_to(sessions[1].name)
        link.replace(ray_dir / "session_latest")
        wait_for(lambda: wanted <= installed(sessions[1]), timeout=20)
