"""Prometheus configuration: the generated scrape jobs, patching an existing prometheus.yml
(Ray's generated one included), reloads, and following Ray's session_latest."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from fsd_daemon.config import load_config
from fsd_daemon.demo import start_prometheus, wait_http_ok
from fsd_daemon.service.daemon import Service
from fsd_daemon.sim.harness import DaemonProcess, wait_for
from fsd_daemon.sim.launch import free_port, stop_process
from tests.support.cli import run_cli
from tests.support.clusterfile import cluster, server

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "fsd_daemon" / "assets" / "prometheus" / "rules"
RULES = sorted(str(p) for p in RULES_DIR.glob("*.yml"))


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


# -- a patch keeps the file's mode, owner and comments ---------------------------------------------

USER_FILE = """\
# Prometheus for the training cluster. Ask ops before changing the auth below.
global:
  scrape_interval: 15s  # our SLO needs 15s
scrape_configs:
  # the node exporters, behind basic auth
  - job_name: node
    basic_auth:
      username: prom
      password: s3cret
    static_configs:
      - targets: ['127.0.0.1:9100']
"""


def test_patch_keeps_mode_owner_and_comments(written: Path, tmp_path: Path, promtool: str) -> None:
    """A 0600 prometheus.yml with a password, owned by another user: after the patch it is
    still 0600 and still theirs (the backup too), and every comment of the user is kept."""
    target = tmp_path / "prom" / "prometheus.yml"
    target.parent.mkdir()
    target.write_text(USER_FILE)
    target.chmod(0o600)
    other = 65534 if os.geteuid() == 0 else os.geteuid()  # nobody, where we may chown
    os.chown(target, other, other)
    result = run_cli("prometheus-config", "--config", str(written), "--patch", str(target))
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert "job_name: rollout" in text
    for comment in ("# Prometheus for the training cluster", "# our SLO needs 15s",
                    "# the node exporters, behind basic auth"):  # fmt: skip
        assert comment in text, text
    for path in (target, target.with_name("prometheus.yml.fsd-orig")):
        st = path.stat()
        assert oct(st.st_mode & 0o777) == oct(0o600), path
        assert (st.st_uid, st.st_gid) == (other, other), path
    assert yaml.safe_load(text)["scrape_configs"][0]["basic_auth"]["password"] == "s3cret"
    promtool_check(promtool, target)


# -- verl's own prometheus.yml rewrite, side by side -----------------------------------------------


def verl_update_prometheus_config(
    config_file: Path, server_addresses: list[str], port: int, *, stall_after: int = 0
) -> None:
    """A faithful re-creation of verl's ``update_prometheus_config``
    (verl-project/verl, verl/workers/rollout/utils.py, read at commit 180ce198): the same
    document (jobs ``ray`` with Ray's discovery file and ``rollout`` with static, unlabelled
    targets), written the same way (``open(path, "w")`` + ``yaml.dump(..., indent=2)``: truncate,
    then write, not atomic), then ``POST /-/reload``. Ray remote tasks (one per node) become a
    plain call: this is one node. ``stall_after`` bytes: the write pauses there for a moment, as
    a large file written in buffered chunks does, so a reader can see it half-written."""
    prometheus_config_json = {
        "global": {"scrape_interval": "10s", "evaluation_interval": "10s"},
        "scrape_configs": [
            {
                "job_name": "ray",
                "file_sd_configs": [{"files": ["/tmp/ray/prom_metrics_service_discovery.json"]}],
            },
            {"job_name": "rollout", "static_configs": [{"targets": server_addresses}]},
        ],
    }
    os.makedirs(os.path.dirname(config_file), exist_ok=True)
    with open(config_file, "w") as f:
        text = yaml.dump(prometheus_config_json, default_flow_style=False, indent=2)
        if stall_after:
            f.write(text[:stall_after])
            f.flush()
            time.sleep(0.25)
            text = text[stall_after:]
        f.write(text)
    subprocess.run(
        ["curl", "-s", "-X", "POST", f"http://127.0.0.1:{port}/-/reload"],
        capture_output=True,
        text=True,
        timeout=10,
    )


def _active_rollout_targets(port: int) -> list[dict[str, str]]:
    url = f"http://127.0.0.1:{port}/api/v1/targets?state=active"
    with urllib.request.urlopen(url, timeout=5) as r:
        targets = orjson.loads(r.read())["data"]["activeTargets"]
    return [t["labels"] for t in targets if t["labels"].get("job") == "rollout"]


def _loaded_config(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status/config", timeout=5) as r:
        return dict(yaml.safe_load(orjson.loads(r.read())["data"]["yaml"]))


def test_daemon_wins_back_verls_rewrite_without_a_fight(
    prometheus: tuple[int, Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    promtool: str,
) -> None:
    """Prometheus runs with the daemon's patched prometheus.yml; verl then rewrites the whole
    file (caught half-written by the keeper's first look) and reloads. The daemon patches the
    complete file once it has settled, reloads once, and Prometheus ends with exactly the
    labelled rollout targets: verl's unlabelled static duplicates are gone."""
    port, prom_yml, _ = prometheus
    addresses = ["127.0.0.1:21011", "127.0.0.1:21012"]
    described = tmp_path / "cluster.json"
    described.write_bytes(orjson.dumps(cluster(server(0, port=21011), server(1, port=21012))))
    config = tmp_path / "fsd.toml"
    config.write_text(
        f'[daemon]\noutput_dir = "{tmp_path / "targets"}"\npoll_interval_seconds = 0.1\n'
        f'[ray]\naddress = "file:{described}"\n'
        f'[prometheus]\nconfig_file = "{prom_yml}"\nreload_url = "http://127.0.0.1:{port}"\n'
    )
    caplog.set_level(logging.INFO, logger="fsd_daemon")
    service = Service(load_config(config, environ={}))
    thread = threading.Thread(target=service.run, kwargs={"watch": False}, daemon=True)
    thread.start()

    def labelled_only() -> bool:
        targets = _active_rollout_targets(port)
        return sorted(t["instance"] for t in targets) == addresses and all(
            t.get("replica") and t.get("actor_name") for t in targets
        )

    try:
        wait_for(labelled_only, timeout=30)
        caplog.clear()
        # Stalls right after "evaluation_interval: 1": valid YAML, and garbage to patch.
        verl_update_prometheus_config(prom_yml, addresses, port, stall_after=32)
        wait_for(lambda: "job_name: rollout" in prom_yml.read_text()
                 and "static_configs" not in prom_yml.read_text(), timeout=10)  # fmt: skip
        wait_for(labelled_only, timeout=30)
        time.sleep(1.0)  # a few more polls: no further patch, no further reload
    finally:
        service.request_stop()
        thread.join(timeout=10)
    loaded = _loaded_config(port)
    rollout_jobs = [j for j in loaded["scrape_configs"] if j["job_name"] == "rollout"]
    assert len(rollout_jobs) == 1 and "static_configs" not in rollout_jobs[0]
    assert "file_sd_configs" in rollout_jobs[0]
    reloads = [r for r in caplog.records if "Prometheus reloaded its config" in r.getMessage()]
    patches = [r for r in caplog.records if r.getMessage().startswith("patched ")]
    assert len(reloads) == 1 and len(patches) == 1, [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    promtool_check(promtool, prom_yml)


# -- the patch owns only its keys, follows symlinks, and leaves the rest byte for byte ---------

TLS_USER_FILE = """\
# Prometheus for the training cluster
global:
    scrape_interval: "15s"
scrape_configs:
    # the GPU exporters behind TLS and basic auth, as systemd/README.md says
    - job_name: "gpu"
      scheme: https
      tls_config:
          ca_file: "/etc/prometheus/fsd-ca.crt"
      basic_auth:
          username: "prometheus"
          password_file: "/etc/prometheus/gpu.pass"
      file_sd_configs:
          - files: ["/old/place/gpu.json"]
    - job_name: 'rollout'
      basic_auth:
          username: "prometheus"
          password: 's3cret'
      relabel_configs:
          - source_labels: ["replica"]
            target_label: "rollout_replica"
      static_configs:
          - targets: ['127.0.0.1:8000']   # verl's static, unlabelled target
    - job_name: "node"
      static_configs:
          - targets: ['127.0.0.1:9100']
"""


def _jobs(text: str) -> dict[str, dict[str, Any]]:
    return {j["job_name"]: j for j in yaml.safe_load(text)["scrape_configs"]}


def test_patch_keeps_the_users_keys_of_our_jobs(
    written: Path, tmp_path: Path, promtool: str
) -> None:
    """A ``gpu`` job with scheme https, tls_config and basic_auth, a ``rollout`` job with its
    own basic_auth and relabel_configs: the patch sets the target discovery (verl's static
    target goes) and adds its relabelling, and keeps every other key; the untouched ``node``
    job and the file's indentation and quoting stay byte for byte; a second patch changes
    nothing."""
    target = tmp_path / "prometheus.yml"
    target.write_text(TLS_USER_FILE)
    result = run_cli("prometheus-config", "--config", str(written), "--patch", str(target))
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    jobs = _jobs(text)
    before = _jobs(TLS_USER_FILE)
    gpu, rollout = jobs["gpu"], jobs["rollout"]
    for key in ("scheme", "tls_config", "basic_auth"):
        assert gpu[key] == before["gpu"][key], key
    assert gpu["file_sd_configs"][0]["files"][0].endswith("/targets/gpu.json")
    assert rollout["basic_auth"] == before["rollout"]["basic_auth"]
    assert rollout["relabel_configs"] == before["rollout"]["relabel_configs"]
    assert "static_configs" not in rollout
    assert rollout["file_sd_configs"][0]["files"][0].endswith("/targets/rollout.json")
    assert rollout["metric_relabel_configs"][0]["target_label"] == "__name__"
    assert jobs["node"] == before["node"]
    for line in (
        "    # the GPU exporters behind TLS and basic auth, as systemd/README.md says",
        '          ca_file: "/etc/prometheus/fsd-ca.crt"',
        "          password: 's3cret'",
        "    - job_name: 'rollout'",
        '    - job_name: "node"',
        "          - targets: ['127.0.0.1:9100']",
    ):
        assert line in text.splitlines(), line
    promtool_check(promtool, target)
    again = run_cli("prometheus-config", "--config", str(written), "--patch", str(target))
    assert again.returncode == 0 and "already up to date" in again.stderr
    assert target.read_text() == text


def test_running_keeper_keeps_a_tls_gpu_job(written: Path, tmp_path: Path) -> None:
    """The daemon as a process, keeping a prometheus.yml whose gpu job the user secured: after
    its patch and many polls, scheme, tls_config and basic_auth are still there."""
    target = tmp_path / "prometheus.yml"
    target.write_text(TLS_USER_FILE)
    settings = {
        "daemon.poll_interval_seconds": 0.2,
        "prometheus.config_file": str(target),
    }
    described = tmp_path / "cluster.json"
    with DaemonProcess(f"file:{described}", tmp_path / "targets", clean_env=True, **settings) as d:
        wait_for(lambda: "patched" in d.output(), timeout=20)
        time.sleep(2.0)  # ten more polls
        gpu = _jobs(target.read_text())["gpu"]
        assert gpu["scheme"] == "https" and "tls_config" in gpu and "basic_auth" in gpu
        assert d.output().count("patched ") == 1


def test_patch_follows_a_symlink(written: Path, tmp_path: Path) -> None:
    """prometheus.yml a symlink (config management links it): the link stays a link, the
    file it points to is patched, its backup is made next to it."""
    real = tmp_path / "managed" / "prometheus.yml"
    real.parent.mkdir()
    real.write_text(TLS_USER_FILE)
    link = tmp_path / "etc" / "prometheus.yml"
    link.parent.mkdir()
    link.symlink_to(real)
    result = run_cli("prometheus-config", "--config", str(written), "--patch", str(link))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and link.resolve() == real
    assert "job_name: ray" in real.read_text()
    assert (real.parent / "prometheus.yml.fsd-orig").read_text() == TLS_USER_FILE
    assert not (link.parent / "prometheus.yml.fsd-orig").exists()


def test_large_prometheus_yml_does_not_hold_up_the_polls(tmp_path: Path) -> None:
    """A 2 MB prometheus.yml to keep: the patch leaves every line of the user's jobs as it
    was (only additions), and while it works the polls go on: a cluster change is written
    within a couple of seconds, and /healthz answers."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from promconfig_patch import synthetic
    finally:
        sys.path.remove(str(REPO / "bench"))
    target = tmp_path / "prometheus.yml"
    original = synthetic(2 * 1024 * 1024).replace('  - job_name: "gpu"', '  - job_name: "gpu-old"')
    target.write_text(original)
    described = tmp_path / "cluster.json"
    described.write_bytes(orjson.dumps(cluster(server(0))))
    settings = {"daemon.poll_interval_seconds": 0.2, "prometheus.config_file": str(target)}
    with DaemonProcess(f"file:{described}", tmp_path / "targets", clean_env=True, **settings) as d:
        wait_for(lambda: len(d.rollout()) == 1, timeout=20)
        for count in (2, 3, 4):
            described.write_bytes(orjson.dumps(cluster(*(server(i) for i in range(count)))))
            took = wait_for(lambda c=count: len(d.rollout()) == c, timeout=3.0, step=0.02)
            print(f"{count} servers written {took:.2f} s after the change")
            assert d.health()[0] == 200
        wait_for(lambda: "patched" in d.output(), timeout=120)
    text = target.read_text()
    assert text.startswith(original.rstrip("\n"))  # ours are added after the user's jobs
    assert {"rollout", "gpu", "ray"} <= set(_jobs(text))
