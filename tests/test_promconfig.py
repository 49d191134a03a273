"""Prometheus configuration: the generated scrape jobs, patching an existing prometheus.yml
(Ray's generated one included), reloads, and following Ray's session_latest."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from fsd_daemon.demo import start_prometheus, wait_http_ok
from fsd_daemon.sim.launch import stop_process
from tests.support.cli import run_cli
from tests.support.clusterfile import cluster, server
from tests.support.daemonproc import DaemonProcess, wait_for
from tests.support.raycluster import free_port

REPO = Path(__file__).resolve().parent.parent
RULES = sorted(str(p) for p in (REPO / "fsd_daemon" / "assets" / "prometheus" / "rules").glob("*.yml"))


def ray_generated_prometheus_yml() -> str:
    """What Ray copies to <session>/metrics/prometheus/prometheus.yml (from the installed Ray)."""
    import ray

    path = Path(ray.__file__).parent / "dashboard/modules/metrics/export/prometheus/prometheus.yml"
    return path.read_text()


@pytest.fixture
def written(tmp_path: Path) -> Path:
    """A config file, and target files written by `fsd-daemon run --once`."""
    described = tmp_path / "cluster.json"
    described.write_bytes(orjson.dumps(cluster(server(0), server(1, engine="sglang"))))
    out = tmp_path / "targets"
    config = tmp_path / "fsd-daemon.toml"
    rules = ", ".join(f'"{r}"' for r in RULES)
    config.write_text(
        f'[daemon]\noutput_dir = "{out}"\nmetrics_listen = "127.0.0.1:9848"\n'
        f'[ray]\naddress = "file:{described}"\n[prometheus]\nrule_files = [{rules}]\n'
    )
    result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gpu.json", "ray.json", "rollout.json"]
    return config


def promtool_check(promtool: str, config: Path) -> str:
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_generated_config_globs_match_the_files_and_promtool_accepts_it(
    promtool: str, written: Path, tmp_path: Path
) -> None:
    result = run_cli("prometheus-config", "--config", str(written))
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert set(jobs) == {"rollout", "gpu", "ray", "fsd_daemon"}
    for job, file in (("rollout", "rollout.json"), ("gpu", "gpu.json"), ("ray", "ray.json")):
        (pattern,) = jobs[job]["file_sd_configs"][0]["files"]
        matched = [Path(p).name for p in glob.glob(pattern)]
        assert matched == [file], (pattern, matched)
    assert doc["rule_files"] == RULES
    config = tmp_path / "prometheus.yml"
    config.write_text(result.stdout)
    out = promtool_check(promtool, config)
    assert "SUCCESS" in out


def test_patch_of_ray_generated_config_keeps_the_rest_and_is_idempotent(
    promtool: str, written: Path, tmp_path: Path
) -> None:
    original = ray_generated_prometheus_yml()
    user_job = "- job_name: node\n  static_configs:\n  - targets: ['127.0.0.1:9100']\n"
    target = tmp_path / "session" / "prometheus.yml"
    target.parent.mkdir()
    target.write_text(original + user_job)
    before = yaml.safe_load(target.read_text())

    first = run_cli("prometheus-config", "--config", str(written), "--patch", str(target))
    assert first.returncode == 0, first.stderr
    assert "patched" in first.stderr
    doc = yaml.safe_load(target.read_text())
    assert doc["global"] == before["global"]
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert jobs["node"] == before["scrape_configs"][1]  # the user's job, untouched
    # Ray's own `ray` job (its stale, symlinked discovery file) is replaced by ours, in place.
    assert [j["job_name"] for j in doc["scrape_configs"]][:2] == ["ray", "node"]
    assert jobs["ray"]["file_sd_configs"][0]["files"][0].endswith("/targets/ray.json")
    assert {"rollout", "gpu", "fsd_daemon"} <= set(jobs)
    assert (tmp_path / "session" / "prometheus.yml.fsd-orig").read_text() == original + user_job
    promtool_check(promtool, target)

    st = target.stat()
    again = run_cli("prometheus-config", "--config", str(written), "--patch", str(target))
    assert again.returncode == 0 and "already up to date" in again.stderr
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_patch_of_a_broken_file_fails_clearly_and_changes_nothing(
    written: Path, tmp_path: Path
) -> None:
    target = tmp_path / "prometheus.yml"
    target.write_text("scrape_configs: [unclosed\n")
    result = run_cli("prometheus-config", "--config", str(written), "--patch", str(target))
    assert result.returncode == 1
    assert "not valid YAML" in result.stderr
    assert target.read_text() == "scrape_configs: [unclosed\n"


@pytest.fixture
def prometheus(prometheus_bin: str, tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A real Prometheus with the lifecycle API, on a config we then patch."""
    config = tmp_path / "prom" / "prometheus.yml"
    config.parent.mkdir()
    config.write_text(ray_generated_prometheus_yml())
    port = free_port()
    log = tmp_path / "prometheus.log"
    proc = start_prometheus(prometheus_bin, config, tmp_path / "prom-data", port, log)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/-/ready", 60, proc)
        yield port, config, log
    finally:
        stop_process(proc)


def test_patch_then_reload_is_checked_and_logged(
    prometheus: tuple[int, Path, Path], written: Path
) -> None:
    port, config, _ = prometheus
    env = {"FSD_PROMETHEUS_RELOAD_URL": f"http://127.0.0.1:{port}"}
    result = run_cli("prometheus-config", "--config", str(written), "--patch", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert "reloaded its config" in result.stderr and "HTTP 200" in result.stderr
    # Prometheus really runs the patched config now.
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status/config") as r:
        loaded = orjson.loads(r.read())["data"]["yaml"]
    assert "job_name: rollout" in loaded


def test_reload_without_lifecycle_api_says_so(
    prometheus_bin: str, written: Path, tmp_path: Path
) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(ray_generated_prometheus_yml())
    port = free_port()
    proc = start_prometheus(
        prometheus_bin, config, tmp_path / "data", port, tmp_path / "prometheus.log",
        lifecycle=False,
    )  # fmt: skip
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/-/ready", 60, proc)
        env = {"FSD_PROMETHEUS_RELOAD_URL": f"http://127.0.0.1:{port}"}
        result = run_cli(
            "prometheus-config", "--config", str(written), "--patch", str(config), env=env
        )
        assert result.returncode == 1
        assert "--web.enable-lifecycle" in result.stderr
    finally:
        stop_process(proc)


def test_daemon_follows_session_latest_to_a_new_ray_session(tmp_path: Path) -> None:
    """Ray restarted: session_latest points at a new session whose prometheus.yml is Ray's
    unpatched one; the running daemon patches the new file."""
    ray_dir = tmp_path / "ray"
    sessions = []
    for name in ("session_2026-11-29_10-00-00_000001_1", "session_2026-11-29_11-00-00_000002_2"):
        path = ray_dir / name / "metrics" / "prometheus" / "prometheus.yml"
        path.parent.mkdir(parents=True)
        path.write_text(ray_generated_prometheus_yml())
        sessions.append(path)
    (ray_dir / "session_latest").symlink_to(ray_dir / sessions[0].parents[2].name)
    described = tmp_path / "cluster.json"
    described.write_bytes(orjson.dumps(cluster(server(0))))
    settings = {
        "daemon.poll_interval_seconds": 1.0,
        "prometheus.patch_ray_config": "true",
        "prometheus.ray_temp_dir": str(ray_dir),
    }
    with DaemonProcess(f"file:{described}", tmp_path / "out", **settings) as d:
        wait_for(lambda: "job_name: rollout" in sessions[0].read_text(), timeout=20)
        assert "job_name: rollout" not in sessions[1].read_text()
        link = ray_dir / "session_latest.new"
        link.symlink_to(ray_dir / sessions[1].parents[2].name)
        os.replace(link, ray_dir / "session_latest")  # how Ray moves it: atomically
        took = wait_for(lambda: "job_name: rollout" in sessions[1].read_text(), timeout=20)
        print(f"new session patched {took:.2f} s after session_latest moved")
        assert "patched" in d.output()


def test_promtool_is_the_real_one(promtool: str) -> None:
    out = subprocess.run([promtool, "--version"], capture_output=True, text=True).stdout
    assert "promtool, version" in out
    assert shutil.which("prometheus") is not None
