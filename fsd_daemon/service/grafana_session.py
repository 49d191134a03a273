"""Keep the project's dashboards in the current Ray session's Grafana dashboards directory.

Ray's dashboard writes ``<ray temp dir>/session_<...>/metrics/grafana/grafana.ini`` and a
provisioning file whose dashboard provider reads ``metrics/grafana/dashboards`` of that session
(``ray/dashboard/modules/metrics/metrics_head.py``: ``_create_default_grafana_configs``).
verl's guide starts Grafana with that ``grafana.ini``; so dashboards copied into that directory
show up in the guide's Grafana with no import step. Every Ray restart makes a new session
directory, and ``session_latest`` is a symlink to the current one: :meth:`check` follows it.

:meth:`check` is cheap enough to run after every poll: a readlink, a stat of the directory, and
only when the session or the directory changed, change-only writes of the dashboards.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from fsd_daemon.assets.install import dashboard_files
from fsd_daemon.config import Config
from fsd_daemon.plumbing.atomic_files import AtomicFileWriter, WriteError

log = logging.getLogger(__name__)

# Below a session directory: Ray's dashboard provider file, and the dashboards directory it names
# unless RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR moved it (metrics_head.py reads that variable).
SESSION_PROVIDER = Path("metrics") / "grafana" / "provisioning" / "dashboards" / "default.yml"
SESSION_DASHBOARDS = Path("metrics") / "grafana" / "dashboards"


def keeper_from_config(config: Config) -> RaySessionDashboardsKeeper | None:
    """The keeper the daemon runs when ``prometheus.ray_grafana_dashboards`` is on."""
    if not config.prometheus.ray_grafana_dashboards:
        return None
    return RaySessionDashboardsKeeper(config.prometheus.ray_temp_dir)


class RaySessionDashboardsKeeper:
    """Installs the shipped dashboards into ``<ray_temp_dir>/session_latest``'s Grafana
    dashboards directory, again after each Ray restart and whenever one goes missing."""

    def __init__(self, ray_temp_dir: str | Path) -> None:
        self.latest = Path(ray_temp_dir) / "session_latest"
        self._writer: AtomicFileWriter | None = None
        # (directory, its mtime_ns) after our last successful install.
        self._done: tuple[Path, int] | None = None

    def target(self) -> Path | None:
        """The current session's dashboards directory, once Ray's dashboard created it."""
        try:
            session = self.latest.resolve(strict=True)
        except OSError:
            return None  # no Ray session on this machine (yet)
        directory = _provider_path(session / SESSION_PROVIDER) or session / SESSION_DASHBOARDS
        return directory if directory.is_dir() else None

    def check(self) -> bool:
        """Install when the session or its dashboards directory changed since the last
        install. True when a file was written. Never raises for a filesystem problem: it logs
        it and tries again once the directory changes."""
        directory = self.target()
        if directory is None:
            return False
        try:
            mtime = directory.stat().st_mtime_ns
        except OSError:
            return False
        if self._done == (directory, mtime):
            return False
        if self._writer is None or self._writer.directory != directory:
            self._writer = AtomicFileWriter(directory)
        wrote = False
        try:
            for source in dashboard_files():
                wrote |= self._writer.write(source.name, source.read_bytes())
            mtime = directory.stat().st_mtime_ns
        except (WriteError, OSError) as exc:
            log.warning("cannot install the dashboards into %s: %s", directory, exc)
            self._done = (directory, mtime)  # not again until the directory changes
            return False
        if wrote:
            log.info("installed the fsd-daemon dashboards into %s", directory)
        self._done = (directory, mtime)
        return wrote


def _provider_path(provider_file: Path) -> Path | None:
    """The directory that Ray's dashboard provider file loads, or None when unreadable."""
    try:
        data = yaml.safe_load(provider_file.read_text(encoding="utf-8")[:65536])
        path = data["providers"][0]["options"]["path"]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 4096:
        return None
    return Path(path)
