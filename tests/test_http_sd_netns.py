"""A Prometheus that is not on the head node discovers the targets over HTTP SD.

Two network namespaces joined by a veth pair: the "head" runs fsd-daemon (a clean environment,
its listener on the head's address with TLS and basic auth from an exporter-toolkit web-config
file), two rollout servers, a Ray node metrics endpoint and fsd-gpu-exporter; the other runs a
real Prometheus (Debian's) whose config is what ``fsd-daemon prometheus-config --http-sd``
prints. Prometheus discovers and scrapes every target; a server that leaves the cluster is gone
from it after the grace period; with the daemon stopped it keeps its last targets (a refresh
that fails keeps them: Prometheus ``discovery/http``); a job with a wrong password discovers
nothing, and the daemon answers that password 401.

The cluster is described by a file (``ray.address = "file:..."``, the discovery seam): what is
under test is the path from the daemon's written lists to a remote Prometheus, which does not
depend on Ray; discovery from a real Ray cluster is tests/test_two_nodes.py.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from fsd_daemon.sim.harness import wait_for
from tests.support.clusterfile import cluster, node, server
from tests.support.netns import Namespace, NetnsPair, can_create_namespaces
from tests.support.tls import make_certs, write_web_config

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

BIN = Path(sys.executable).parent
DAEMON_PORT = 9848  # the namespaces are ours: fixed ports cannot collide with anyone's
ROLLOUT_PORTS = (21001, 21002)
RAY_METRICS_PORT = 21100
EXPORTER_PORT = 9847
PROMETHEUS_PORT = 26090
PASSWORD = "http-sd-pass"
GRACE_SECONDS = 2.0


@pytest.fixture
def netns() -> Iterator[NetnsPair]:
    why = can_create_namespaces()
    if why is not None:
        pytest.skip(why)
    with NetnsPair(f"sd{os.getpid() % 100000}", subnet=(os.getpid() + 7) % 250 + 1) as pair:
        yield pair


def serve_metrics(ns: Namespace, port: int, replica: str) -> Any:
    """A real /metrics endpoint on ``ns``'s address (created from a thread inside ``ns``)."""
    registry = CollectorRegistry()
    gauge = Gauge(
        "vllm:num_requests_running", "Running requests", ["model_name"], registry=registry
    )
    gauge.labels("m").set(int(replica or 0) + 1)
    httpd, _thread = ns.call(lambda: start_http_server(port, ns.address, registry))
    return httpd


def get_in(
    ns: Namespace, url: str, password: str = "", ca: Path | None = None
) -> tuple[int, bytes]:
    import ssl

    headers = {}
    if password:
        token = base64.b64encode(f"prometheus:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    context = ssl.create_default_context(cafile=str(ca)) if ca else None

    def fetch() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=5, context=context
            ) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    return ns.call(fetch, timeout=15)


def write_cluster(path: Path, head: str, replicas: int) -> None:
    servers = [server(i, address=[head, ROLLOUT_PORTS[i]]) for i in range(replicas)]
    nodes = [node("n0", ip=head, port=RAY_METRICS_PORT)]
    path.write_bytes(orjson.dumps(cluster(*servers, nodes=nodes)))


def test_remote_prometheus_discovers_over_http_sd_with_tls_and_basic_auth(
    netns: NetnsPair, tmp_path: Path, prometheus_bin: str
) -> None:
    head, monitor = netns.head, netns.worker
    certs = make_certs(tmp_path, head.address)
    web = write_web_config(tmp_path / "web.yml", certs, "prometheus", PASSWORD)
    (tmp_path / "password").write_text(PASSWORD)
    (tmp_path / "wrong").write_text("not-the-password")
    cluster_file = tmp_path / "cluster.json"
    write_cluster(cluster_file, head.address, 2)
    config = tmp_path / "fsd.toml"
    config.write_text(
        "[daemon]\n"
        f'output_dir = "{tmp_path / "targets"}"\n'
        'cluster = "remote-sd"\n'
        "poll_interval_seconds = 0.5\n"
        f"grace_period_seconds = {GRACE_SECONDS}\n"
        f'metrics_listen = "{head.address}:{DAEMON_PORT}"\n'
        f'web_config_file = "{web}"\n'
        "[ray]\n"
        f'address = "file:{cluster_file}"\n'
        "[prometheus]\n"
        "scrape_interval_seconds = 1\n"
    )
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}

    servers = [serve_metrics(head, port, str(i)) for i, port in enumerate(ROLLOUT_PORTS)]
    servers.append(serve_metrics(head, RAY_METRICS_PORT, ""))
    try:
        head.start(
            [str(BIN / "fsd-gpu-exporter"), "--simulate", "1", "--listen",
             f"{head.address}:{EXPORTER_PORT}"],
            tmp_path / "exporter.log",
            env,
        )  # fmt: skip
        daemon = head.start(
            [str(BIN / "fsd-daemon"), "run", "--config", str(config)], tmp_path / "daemon.log", env
        )

        # The config a user prints for a Prometheus elsewhere, plus one job with a wrong password.
        printed = subprocess.run(
            [str(BIN / "fsd-daemon"), "prometheus-config", "--config", str(config),
             "--http-sd", f"https://{head.address}:{DAEMON_PORT}",
             "--sd-username", "prometheus", "--sd-password-file", str(tmp_path / "password"),
             "--sd-ca-file", str(certs / "ca.crt")],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        doc = yaml.safe_load(printed)
        jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
        assert set(jobs) == {"rollout", "gpu", "ray", "fsd_daemon"}
        assert "file_sd_configs" not in printed
        wrong = json.loads(json.dumps(jobs["rollout"]))
        wrong["job_name"] = "wrong_password"
        wrong["http_sd_configs"][0]["basic_auth"]["password_file"] = str(tmp_path / "wrong")
        doc["scrape_configs"].append(wrong)
        prom_config = tmp_path / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump(doc))
        monitor.start(
            [prometheus_bin, f"--config.file={prom_config}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={monitor.address}:{PROMETHEUS_PORT}"],
            tmp_path / "prometheus.log",
            env,
        )  # fmt: skip
        prom = f"http://{monitor.address}:{PROMETHEUS_PORT}"

        def active() -> dict[str, dict[str, str]]:
            """job -> {instance: health}"""
            try:
                status, body = get_in(monitor, f"{prom}/api/v1/targets?state=active")
            except OSError:
                return {}
            found: dict[str, dict[str, str]] = {}
            for t in json.loads(body)["data"]["activeTargets"] if status == 200 else []:
                found.setdefault(t["labels"]["job"], {})[t["labels"]["instance"]] = t["health"]
            return found

        def sd_failures() -> float:
            _status, body = get_in(monitor, f"{prom}/metrics")
            for line in body.decode().splitlines():
                if line.startswith("prometheus_sd_http_failures_total "):
                    return float(line.split()[1])
            return 0.0

        rollout = {f"{head.address}:{p}": "up" for p in ROLLOUT_PORTS}
        want = {
            "rollout": rollout,
            "ray": {f"{head.address}:{RAY_METRICS_PORT}": "up"},
            "gpu": {f"{head.address}:{EXPORTER_PORT}": "up"},
            "fsd_daemon": {f"{head.address}:{DAEMON_PORT}": "up"},
        }
        try:
            wait_for(lambda: active() == want, 90, 0.5)
        except AssertionError:
            pytest.fail(f"targets: {active()}\n{(tmp_path / 'daemon.log').read_text()[-3000:]}")
        # Scraped, with the labels of the lists: the series are in Prometheus.
        _status, body = get_in(
            monitor,
            f"{prom}/api/v1/query?query=vllm:num_requests_running%7Bcluster%3D%22remote-sd%22%7D",
        )
        assert {r["metric"]["replica"] for r in json.loads(body)["data"]["result"]} == {"0", "1"}

        # A wrong password: refused by the daemon, so that job discovers nothing.
        assert get_in(monitor, f"https://{head.address}:{DAEMON_PORT}/sd/rollout",
                      "not-the-password", certs / "ca.crt")[0] == 401  # fmt: skip
        wait_for(lambda: sd_failures() >= 3, 30, 0.5)
        assert "wrong_password" not in active()

        # A server leaves: gone from the remote Prometheus once the grace period has passed.
        left = time.monotonic()
        write_cluster(cluster_file, head.address, 1)
        wait_for(lambda: set(active().get("rollout", {})) == {f"{head.address}:{ROLLOUT_PORTS[0]}"},
                 30, 0.2)  # fmt: skip
        took = time.monotonic() - left
        assert took >= GRACE_SECONDS, took
        print(f"server gone from the remote Prometheus {took:.1f}s after it left the cluster")

        # The daemon stops: refreshes fail, and Prometheus keeps scraping its last targets.
        os.kill(daemon.pid, signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        before = sd_failures()
        wait_for(lambda: sd_failures() >= before + 5, 30, 0.5)  # 5 failed refreshes at least
        kept = active()
        assert kept["rollout"] == {f"{head.address}:{ROLLOUT_PORTS[0]}": "up"}
        assert kept["ray"] == want["ray"] and kept["gpu"] == want["gpu"]
    finally:
        for httpd in servers:
            httpd.shutdown()
            httpd.server_close()
