"""Ray's own targets kept: ``ray.json`` lists every target that Ray's own service-discovery file
lists (every alive node's metrics export port, the dashboard's and the autoscaler's metrics
addresses: ``PrometheusServiceDiscoveryWriter.get_file_discovery_content`` in
``ray/_private/metrics_agent.py``, Ray 2.44.1 and 2.60), each labelled with its component; and
Prometheus run on Ray's own ``prometheus.yml`` (written by a real ``ray start --head`` into its
session directory, as verl's monitoring guide runs it), patched by ``fsd-daemon
prometheus-config --patch``, scrapes in job ``ray`` every target it scraped before the patch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsd_daemon.demo import start_prometheus, wait_http_ok
from fsd_daemon.mixin import names
from fsd_daemon.sim.launch import free_port, stop_process
from fsd_daemon.sim.rayhead import RayHead, clean_env

pytestmark = [pytest.mark.ray, pytest.mark.slow]

_FSD = (sys.executable, "-m", "fsd_daemon.cli")
SD_FILE = "prom_metrics_service_discovery.json"


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    with RayHead(tmp_path_factory.mktemp("rayhead")) as started:
        yield started


def ray_listed(head: RayHead, timeout: float = 60.0) -> list[str]:
    """The targets of Ray's own file, once it lists the node and both components (the
    dashboard and the autoscaler register their addresses a little after start). Ray 2.57+
    writes it in the session directory (a symlink in the temp root); 2.44.1 in the root."""
    deadline = time.monotonic() + timeout
    last: list[str] = []
    while time.monotonic() < deadline:
        for path in (head.temp_dir / "session_latest" / SD_FILE, head.temp_dir / SD_FILE):
            try:
                groups = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            last = [t for g in groups for t in g["targets"]]
            if len(last) >= 3:
                return sorted(last)
        time.sleep(0.5)
    raise AssertionError(f"Ray's {SD_FILE} did not list 3 targets in {timeout}s: {last}")


def write_config(head: RayHead, root: Path) -> Path:
    out = root / "targets"
    config = root / "fsd-daemon.toml"
    config.write_text(f'[daemon]\noutput_dir = "{out}"\n[ray]\naddress = "{head.address}"\n')
    return config


def run_once(head: RayHead, config: Path) -> dict[str, dict[str, str]]:
    """``fsd-daemon run --once`` in a user's clean environment; ray.json as target -> labels."""
    result = subprocess.run(
        [*_FSD, "run", "--once", "--config", str(config)],
        env=clean_env(head.home),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = config.parent / "targets" / "ray.json"
    return {t: g["labels"] for g in json.loads(out.read_text()) for t in g["targets"]}


def test_ray_json_lists_every_target_of_rays_own_file_with_its_component(
    head: RayHead, tmp_path: Path
) -> None:
    listed = ray_listed(head)
    written = run_once(head, write_config(head, tmp_path))
    assert sorted(written) == listed
    by_component = {labels[names.RAY_COMPONENT]: t for t, labels in written.items()}
    assert sorted(by_component) == sorted(
        [names.RAY_COMPONENT_NODE, names.RAY_COMPONENT_DASHBOARD, names.RAY_COMPONENT_AUTOSCALER]
    )
    node = written[by_component[names.RAY_COMPONENT_NODE]]
    assert node["is_head_node"] == "true" and node["node_id"]
    for component in (names.RAY_COMPONENT_DASHBOARD, names.RAY_COMPONENT_AUTOSCALER):
        labels = written[by_component[component]]
        assert labels["node_ip"] == by_component[component].rsplit(":", 1)[0]
        assert labels["cluster"] == node["cluster"]


def _scraped(port: int, job: str, label: str = "", timeout: float = 60.0) -> set[str]:
    """The addresses Prometheus scrapes in ``job`` (those carrying ``label`` if given), once
    it has at least three."""
    deadline = time.monotonic() + timeout
    found: set[str] = set()
    while time.monotonic() < deadline:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v1/targets?state=active", timeout=10
        ) as r:
            data: Any = json.loads(r.read())
        found = {
            t["discoveredLabels"]["__address__"]
            for t in data["data"]["activeTargets"]
            if t["labels"].get("job") == job and (not label or label in t["labels"])
        }
        if len(found) >= 3:
            return found
        time.sleep(0.5)
    return found


@pytest.mark.prometheus
def test_patched_ray_prometheus_yml_scrapes_all_that_ray_scraped(
    head: RayHead, tmp_path: Path, prometheus_bin: str
) -> None:
    """Prometheus on a copy of Ray's generated prometheus.yml scrapes Ray's file in job ray;
    after the patch (job ray on ray.json) and a reload it scrapes at least those targets."""
    ray_config = head.temp_dir / "session_latest" / "metrics" / "prometheus" / "prometheus.yml"
    config = tmp_path / "prom" / "prometheus.yml"
    config.parent.mkdir()
    # Ray's file points job ray at its discovery file by absolute path: kept as it is.
    shutil.copy(ray_config, config)
    ray_listed(head)
    port = free_port()
    proc = start_prometheus(
        prometheus_bin, config, tmp_path / "data", port, tmp_path / "prometheus.log"
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/-/ready", 60, proc)
        before = _scraped(port, names.JOB_RAY)
        assert len(before) >= 3, before
        fsd_config = write_config(head, tmp_path)
        run_once(head, fsd_config)
        env = {**clean_env(head.home), "FSD_PROMETHEUS_RELOAD_URL": f"http://127.0.0.1:{port}"}
        result = subprocess.run(
            [*_FSD, "prometheus-config", "--config", str(fsd_config), "--patch", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "ray.json" in config.read_text()
        deadline = time.monotonic() + 60
        after: set[str] = set()
        while time.monotonic() < deadline:
            # Only ray.json's targets carry the component: the reload has happened.
            after = _scraped(port, names.JOB_RAY, names.RAY_COMPONENT, timeout=5)
            if before <= after:
                break
            time.sleep(0.5)
        assert before <= after, (before, after)
    finally:
        stop_process(proc)
