"""``fsd-daemon assets``: the shipped rules and dashboards, installed where Prometheus and
Grafana read them, by the command a user runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fsd_daemon.assets import DASHBOARDS_DIR, RULES_DIR
from fsd_daemon.assets.install import dashboard_files, rule_files


def assets(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsd_daemon.cli", "assets", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_path_prints_the_package_directories() -> None:
    result = assets("path")
    assert result.returncode == 0, result.stderr
    assert str(RULES_DIR) in result.stdout and str(DASHBOARDS_DIR) in result.stdout
    assert RULES_DIR.is_dir() and DASHBOARDS_DIR.is_dir()


def test_install_rules_then_again_changes_nothing(tmp_path: Path, promtool: str) -> None:
    """The rule files (not their unit tests) land in DIR, promtool accepts them there, and a
    second install writes nothing."""
    target = tmp_path / "rules.d"
    result = assets("install", "--prometheus-rules", target)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in target.iterdir())
    assert names == [p.name for p in rule_files()] and names
    for path in rule_files():
        assert (target / path.name).read_bytes() == path.read_bytes()
        assert oct((target / path.name).stat().st_mode & 0o777) == oct(0o644)
    check = subprocess.run(
        [promtool, "check", "rules", *map(str, sorted(target.glob("*.yml")))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    inode = {p.name: p.stat().st_ino for p in target.iterdir()}
    again = assets("install", "--prometheus-rules", target)
    assert again.returncode == 0 and "wrote" not in again.stdout
    assert {p.name: p.stat().st_ino for p in target.iterdir()} == inode


def test_install_grafana_provisioning(tmp_path: Path) -> None:
    """Dashboards plus a provider that points at them, and with --prometheus-url a data
    source; the provider's path is absolute even when DIR was given relative."""
    provisioning = tmp_path / "provisioning"
    result = subprocess.run(
        [sys.executable, "-m", "fsd_daemon.cli", "assets", "install",
         "--grafana-provisioning", "provisioning",
         "--prometheus-url", "http://127.0.0.1:9090"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    provider = yaml.safe_load((provisioning / "dashboards" / "fsd-daemon.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    path = Path(entry["options"]["path"])
    assert path == provisioning / "dashboards" / "fsd-daemon"
    assert sorted(p.name for p in path.iterdir()) == [p.name for p in dashboard_files()]
    datasource = yaml.safe_load((provisioning / "datasources" / "fsd-daemon.yml").read_text())
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:9090"
    assert source["isDefault"] is False


@pytest.mark.parametrize(
    "args, message",
    [
        (["install"], "needs --prometheus-rules DIR"),
        (["install", "--prometheus-url", "http://x:9090", "--prometheus-rules", "d"], "goes with"),
        (["install", "--grafana-provisioning", "d", "--prometheus-url", "x:9090"], "http"),
    ],
)
def test_bad_arguments(args: list[str], message: str, tmp_path: Path) -> None:
    result = assets(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_unwritable_directory_is_one_line(tmp_path: Path) -> None:
    """A file where the directory should be: exit 1, one line, no traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = assets("install", "--prometheus-rules", blocker / "rules")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot install" in result.stderr
