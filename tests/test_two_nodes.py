"""Two real Ray nodes, each in a network namespace of its own, joined by a veth pair.

The way users run it: ``ray start --head`` on the head, ``ray start --address=HEAD`` on the
worker (separate processes, each with its own node address and temp dir); a verl-like job
(a separate driver on the head) with replica 0 spanning both nodes (node rank 0 on the head,
node rank 1 headless on the worker) and replica 1 wholly on the worker; fsd-daemon on the head
with a clean environment; an fsd-gpu-exporter per node, with its default listener; a
real Prometheus on the head scraping everything over the veth. Then the worker's raylet is
killed: its servers and node targets leave after the grace period, the head's stay unchanged.

Token auth: the cluster runs with a token (``ray get-auth-token --generate`` in the test's
HOME, which ``ray start`` then uses, as Ray 2.5x+ does for a user who has one). The job driver
and the worker's ``ray start`` are given ``RAY_AUTH_MODE=token`` (Ray turns token mode on by
itself only for ``ray start --head``); the daemon gets nothing Ray-specific and finds the
token in its HOME itself, as a user's would.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsd_daemon.sim.harness import read_groups, wait_for
from fsd_daemon.sim.rayhead import ray_has_token_auth
from tests.support.netns import Namespace, NetnsPair, can_create_namespaces
from tests.support.raynodes import BIN, base_env, get_in, short_tmp, start_ray


def _ray_version() -> tuple[int, ...]:
    return tuple(int(x) for x in importlib.metadata.version("ray").split(".")[:2])


pytestmark = [
    pytest.mark.ray,
    pytest.mark.prometheus,
    # On Ray 2.44.1 (CI's oldest-Ray run) creating the node-affined actors across the two
    # namespaces was cancelled intermittently ("Actor creation cancelled"); not yet explained.
    # The single-node Ray-marked tests cover 2.44; this one runs on the current Ray.
    pytest.mark.skipif(_ray_version() < (2, 52), reason="two-node test runs on Ray >= 2.52"),
]

GCS_PORT = 26379  # the namespaces are ours: fixed ports cannot collide with anyone's
DASHBOARD_PORT = 26265
EXPORTER_PORT = 9847  # the default: the exporter listens on it, gpu.json names it
PROMETHEUS_PORT = 26090
GRACE_SECONDS = 6.0


def _active_targets(ns: Namespace, prometheus: str) -> list[dict[str, Any]]:
    try:
        body = get_in(ns, f"{prometheus}/api/v1/targets?state=active")
    except OSError:
        return []
    return list(json.loads(body)["data"]["activeTargets"])


def _by_job(targets: list[dict[str, Any]], job: str) -> dict[str, str]:
    """scrape address -> health, for one scrape job."""
    return {t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] == job}


def _targets(path: Path) -> dict[str, dict[str, str]]:
    """address -> labels, for a file_sd file."""
    return {t: g["labels"] for g in read_groups(path) for t in g["targets"]}


def _prometheus_config(out: Path, tmp: Path) -> Path:
    config = tmp / "prometheus.yml"
    jobs = []
    for job, name in (("rollout", "rollout.json"), ("fsd_gpu", "gpu.json"), ("ray", "ray.json")):
        jobs.append(
            f"  - job_name: {job}\n"
            f"    scrape_interval: 1s\n"
            f"    scrape_timeout: 1s\n"
            f"    file_sd_configs:\n"
            f"      - files: ['{out / name}']\n"
            f"        refresh_interval: 1s\n"
        )
    config.write_text("scrape_configs:\n" + "".join(jobs), encoding="utf-8")
    return config


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    with short_tmp() as path:
        yield path


@pytest.fixture
def netns(ray_tmp: Path) -> Iterator[NetnsPair]:
    """Torn down before ``ray_tmp`` (it depends on it): Ray's processes are stopped before
    their temp dir is removed."""
    why = can_create_namespaces()
    if why is not None:
        pytest.skip(why)
    # The pid makes the names unique on a machine shared with other test runs.
    with NetnsPair(f"t{os.getpid() % 100000}", subnet=os.getpid() % 250 + 1) as pair:
        yield pair


def test_two_nodes_discovery_scrape_and_worker_death(
    netns: NetnsPair, ray_tmp: Path, tmp_path: Path, prometheus_bin: str
) -> None:
    """Every serving address is found with its node's ip and id, gpu.json and ray.json list
    both nodes, Prometheus on the head scrapes both exporters over the veth; after the
    worker's raylet is killed, the worker's servers and node targets leave once the grace
    period has passed, and the head's targets stay as they were."""
    head_ns, worker_ns = netns.head, netns.worker
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "targets"
    env = base_env(home, tmp_path)
    token_auth = ray_has_token_auth()  # Ray 2.52+; CI's oldest-Ray run has none
    if token_auth:
        subprocess.run(
            [str(BIN / "ray"), "get-auth-token", "--generate"],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert (home / ".ray" / "auth_token").is_file()
    token_mode = {"RAY_AUTH_MODE": "token"} if token_auth else {}

    # The GCS notices a dead raylet within about 3 s rather than Ray's default 15 s or more.
    fast_death = {
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    head = start_ray(
        head_ns,
        {**env, **fast_death},
        tmp_path,
        ray_tmp / "h",
        "--head",
        f"--port={GCS_PORT}",
        f"--dashboard-host={head_ns.address}",
        f"--dashboard-port={DASHBOARD_PORT}",
    )
    gcs = f"{head_ns.address}:{GCS_PORT}"
    # Ray's CLI turns token mode on by itself only for `ray start --head`; a joining node is
    # told so, as Ray's token-auth guide says for every node of a remote cluster.
    worker = start_ray(
        worker_ns, {**env, **token_mode}, tmp_path, ray_tmp / "w", f"--address={gcs}"
    )
    head_id, worker_id = head.node_id(), worker.node_id()
    assert head_id and worker_id and head_id != worker_id
    token = (home / ".ray" / "auth_token").read_text().strip() if token_auth else ""

    def both_alive() -> bool:
        url = f"http://{head_ns.address}:{DASHBOARD_PORT}/api/v0/nodes?limit=10"
        try:
            rows = json.loads(get_in(head_ns, url, token=token))["data"]["result"]["result"]
        except (OSError, KeyError, ValueError):
            return False
        return {r["node_id"] for r in rows if r["state"] == "ALIVE"} == {head_id, worker_id}

    wait_for(both_alive, 60, 0.5)

    # Each exporter with its default listener: Prometheus must reach it at the <node_ip>:port
    # that the daemon writes into gpu.json (a loopback default would leave every GPU target
    # down, even the head's).
    for ns in (head_ns, worker_ns):
        ns.start(
            [str(BIN / "fsd-gpu-exporter"), "--simulate", "2"],
            tmp_path / f"{ns.name}-exporter.log",
            env,
        )

    # The verl-like job: a driver on the head. Replica 0 spans both nodes, replica 1 is wholly
    # on the worker.
    placement = {
        "vllm_server_0_0": head_id,
        "vllm_server_0_1": worker_id,
        "vllm_server_1_0": worker_id,
        "vllm_server_1_1": worker_id,
    }
    job = head_ns.start(
        [
            str(BIN / "python"),
            "-m",
            "fsd_daemon.sim.job",
            "--address",
            gcs,
            "--vllm",
            "2",
            "--nodes-per-replica",
            "2",
            "--place",
            ",".join(f"{k}={v}" for k, v in placement.items()),
        ],
        tmp_path / "job.log",
        {**env, **token_mode},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert job.stdout is not None
    line = job.stdout.readline()
    assert line, (tmp_path / "job.log").read_text()
    served = {a["name"]: a["address"] for a in json.loads(line)["actors"]}
    assert served["vllm_server_0_0"][0] == head_ns.address
    assert served["vllm_server_1_0"][0] == worker_ns.address

    daemon = head_ns.start(
        [
            str(BIN / "fsd-daemon"),
            "run",
            "--ray-address",
            gcs,
            "--output-dir",
            str(out),
            "--no-watch",
        ],
        tmp_path / "daemon.log",
        {
            # No RAY_AUTH_MODE: the daemon turns token mode on from ~/.ray/auth_token itself,
            # as Ray's CLI does.
            **env,
            "FSD_DAEMON_POLL_INTERVAL_SECONDS": "1",
            "FSD_DAEMON_GRACE_PERIOD_SECONDS": str(GRACE_SECONDS),
        },
    )
    prometheus = head_ns.start(
        [
            prometheus_bin,
            f"--config.file={_prometheus_config(out, tmp_path)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
        ],
        tmp_path / "prometheus.log",
        env,
    )
    prom_url = f"http://127.0.0.1:{PROMETHEUS_PORT}"

    def rollout_addr(name: str) -> str:
        host, port = served[name]
        return f"{host}:{port}"

    expected_rollout = {
        rollout_addr("vllm_server_0_0"): (head_ns.address, head_id, "0"),
        rollout_addr("vllm_server_1_0"): (worker_ns.address, worker_id, "1"),
    }
    gpu_head, gpu_worker = (f"{ns.address}:{EXPORTER_PORT}" for ns in (head_ns, worker_ns))

    def all_found() -> bool:
        rollout = _targets(out / "rollout.json")
        gpu = _targets(out / "gpu.json")
        ray_nodes = {
            labels.get("node_id")
            for labels in _targets(out / "ray.json").values()
            if labels.get("ray_component") == "node"  # Ray's dashboard and autoscaler too
        }
        return (
            set(rollout) == set(expected_rollout)
            and set(gpu) == {gpu_head, gpu_worker}
            and ray_nodes == {head_id, worker_id}
        )

    try:
        wait_for(all_found, 90, 0.5)
    except AssertionError:
        pytest.fail(
            f"daemon did not find both nodes: {_targets(out / 'rollout.json')} "
            f"{_targets(out / 'gpu.json')}\n" + (tmp_path / "daemon.log").read_text()[-3000:]
        )
    rollout = _targets(out / "rollout.json")
    for address, (node_ip, node_id, replica) in expected_rollout.items():
        labels = rollout[address]
        assert (labels["node_ip"], labels["node_id"], labels["replica"]) == (
            node_ip,
            node_id,
            replica,
        ), labels
    gpu = _targets(out / "gpu.json")
    assert gpu[gpu_head]["node_id"] == head_id and gpu[gpu_worker]["node_id"] == worker_id

    # Prometheus on the head reaches every exporter and server, the worker's over the veth.
    def all_up() -> bool:
        active = _active_targets(head_ns, prom_url)
        gpus, servers = _by_job(active, "fsd_gpu"), _by_job(active, "rollout")
        return gpus == {gpu_head: "up", gpu_worker: "up"} and servers == dict.fromkeys(
            expected_rollout, "up"
        )

    try:
        wait_for(all_up, 60, 0.5)
    except AssertionError:
        pytest.fail(f"not every target is up: {_active_targets(head_ns, prom_url)}")
    before = {name: _targets(out / name) for name in ("rollout.json", "gpu.json", "ray.json")}

    # The worker node dies: its raylet is killed (its workers, our servers, go with it).
    raylet = worker.raylet()
    assert raylet is not None
    killed_at = time.monotonic()
    os.kill(raylet.pid, signal.SIGKILL)

    head_rollout = rollout_addr("vllm_server_0_0")

    def only_head_left() -> bool:
        return (
            set(_targets(out / "rollout.json")) == {head_rollout}
            and set(_targets(out / "gpu.json")) == {gpu_head}
            and {
                v["node_id"]
                for v in _targets(out / "ray.json").values()
                if v["ray_component"] == "node"
            }
            == {head_id}
        )

    first_change: list[float] = []

    def worker_gone() -> bool:
        if not first_change and any(
            _targets(out / name) != targets for name, targets in before.items()
        ):
            first_change.append(time.monotonic() - killed_at)
        return only_head_left()

    wait_for(worker_gone, 90, 0.1)
    # Nothing left before the grace period had passed since the node died.
    assert first_change[0] >= GRACE_SECONDS, first_change
    after = {name: _targets(out / name) for name in ("rollout.json", "gpu.json", "ray.json")}
    # The head's targets, labels included, are exactly as they were.
    assert after["rollout.json"] == {head_rollout: before["rollout.json"][head_rollout]}
    assert after["gpu.json"] == {gpu_head: before["gpu.json"][gpu_head]}
    assert after["ray.json"] == {
        a: labels
        for a, labels in before["ray.json"].items()
        if labels["ray_component"] != "node" or labels["node_id"] == head_id
    }
    assert daemon.poll() is None and prometheus.poll() is None
    # The job's driver, on the head, lives on.
    assert job.poll() is None
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()
