"""Install the shipped rules and dashboards where Prometheus and Grafana read them.

Every file is written atomically and only when its bytes differ (:class:`AtomicFileWriter`):
Prometheus globs ``*.yml`` and Grafana ``*.json``, and the writer's temp names
(``.NAME.PID.tmp``) match neither, so a reader never sees half a file. Installing twice changes
nothing. Files this package never shipped are left alone (a directory may hold other rules).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fsd_daemon.assets import DASHBOARDS_DIR, RULES_DIR
from fsd_daemon.plumbing.atomic_files import AtomicFileWriter

# The provider and data source file names in Grafana's provisioning directories.
# JSON strings are YAML strings: a path or URL with any character stays one YAML scalar.
PROVIDER_FILE = "fsd-daemon.yml"
DATASOURCE_FILE = "fsd-daemon.yml"
# Below <provisioning>/dashboards/: the dashboards' own directory, which the provider names.
DASHBOARDS_SUBDIR = "fsd-daemon"
DATASOURCE_UID = "fsd-prometheus"


@dataclass
class Installed:
    """What an install wrote (``changed``) and what was already in place (``unchanged``)."""

    changed: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)

    def add(self, writer: AtomicFileWriter, name: str, data: bytes) -> None:
        path = writer.directory / name
        (self.changed if writer.write(name, data) else self.unchanged).append(path)


def rule_files() -> list[Path]:
    """The shipped Prometheus rule files (not their promtool unit tests)."""
    return sorted(RULES_DIR.glob("*.yml"))


def dashboard_files() -> list[Path]:
    """The shipped Grafana dashboards (JSON)."""
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def install_files(sources: list[Path], directory: Path, into: Installed | None = None) -> Installed:
    """Copy ``sources`` into ``directory`` (created if missing), keeping their names."""
    result = into if into is not None else Installed()
    writer = AtomicFileWriter(directory)
    writer.directory.mkdir(parents=True, exist_ok=True)
    for source in sources:
        result.add(writer, source.name, source.read_bytes())
    return result


def install_prometheus_rules(directory: Path) -> Installed:
    """The rule files, for a prometheus.yml ``rule_files: [DIRECTORY/*.yml]``."""
    return install_files(rule_files(), directory)


def provider_yaml(dashboards_path: Path) -> str:
    """A Grafana dashboard provider that loads every JSON file in ``dashboards_path``."""
    return f"""# Written by `fsd-daemon assets install --grafana-provisioning`.
# Grafana rereads the directory every updateIntervalSeconds; the dashboards keep their uids, so
# links and bookmarks survive updates. Edits made in the UI are not saved back to the files.
apiVersion: 1

providers:
  - name: fsd-daemon
    orgId: 1
    folder: fsd-daemon
    folderUid: fsd-daemon
    type: file
    disableDeletion: false
    allowUiUpdates: false
    updateIntervalSeconds: 30
    options:
      path: {json.dumps(str(dashboards_path))}
      foldersFromFilesStructure: false
"""


def datasource_yaml(prometheus_url: str) -> str:
    """A Grafana data source for ``prometheus_url`` (not the default one: an organisation with
    a default already would refuse a second)."""
    return f"""# Written by `fsd-daemon assets install --grafana-provisioning --prometheus-url`.
# The dashboards pick their data source through their ${{datasource}} variable; this one is
# only there so that a fresh Grafana has a Prometheus to pick.
apiVersion: 1

datasources:
  - name: Prometheus (fsd-daemon)
    uid: {DATASOURCE_UID}
    type: prometheus
    access: proxy
    url: {json.dumps(prometheus_url)}
    isDefault: false
    editable: false
    jsonData:
      timeInterval: 15s
      httpMethod: POST
"""


def install_grafana_provisioning(provisioning: Path, prometheus_url: str = "") -> Installed:
    """Into Grafana's provisioning directory ``provisioning`` (e.g. /etc/grafana/provisioning):
    ``dashboards/fsd-daemon/*.json``, the provider ``dashboards/fsd-daemon.yml`` that loads
    them, and with ``prometheus_url`` a data source ``datasources/fsd-daemon.yml``."""
    provisioning = provisioning.absolute()
    dashboards = provisioning / "dashboards" / DASHBOARDS_SUBDIR
    result = install_files(dashboard_files(), dashboards)
    writer = AtomicFileWriter(provisioning / "dashboards")
    result.add(writer, PROVIDER_FILE, provider_yaml(dashboards).encode())
    if prometheus_url:
        writer = AtomicFileWriter(provisioning / "datasources")
        writer.directory.mkdir(parents=True, exist_ok=True)
        result.add(writer, DATASOURCE_FILE, datasource_yaml(prometheus_url).encode())
    return result


def install_dashboards(directory: Path) -> Installed:
    """Only the dashboard JSON files, into a directory some provider already reads."""
    return install_files(dashboard_files(), directory)
