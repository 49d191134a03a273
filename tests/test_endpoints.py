"""The other metric endpoints of a verl run: found in Ray's actor list, probed where the port is
known, and ``fsd-daemon doctor`` saying what to set where it is not.

Upstream (fsd_daemon/recognition/endpoints.py cites the files): TransferQueue's controller is the
actor
``TransferQueueController`` in namespace ``transfer_queue`` and serves ``/metrics`` on its node
IP at ``transfer_queue.metrics.port`` (0 by default: a run-time port); verl-recipe AsyncFlow's
``PrometheusMetricsServer`` actors are named ``prometheus_server_{node_id[:8]}`` and listen on
port 9400, bound to 127.0.0.1 unless AF_PROMETHEUS_METRICS_BIND_ALL / _BIND say otherwise.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsd_daemon import doctor
from fsd_daemon.discovery.base import ActorRecord, ClusterSnapshot, NodeRecord
from fsd_daemon.recognition import endpoints, verl
from fsd_daemon.sim.harness import LocalRayCluster
from fsd_daemon.sim.launch import free_port, stop_process
from tests.support.cli import run_cli

JOB = Path(__file__).parent / "support" / "endpoints_job.py"


def actor(class_name: str, name: str, namespace: str = "ns", node: str = "n1") -> ActorRecord:
    return ActorRecord(
        f"id-{class_name}-{name}"[:60], class_name, name, "01000000", namespace, node, 1
    )


SNAPSHOT = ClusterSnapshot(
    actors=(
        actor("TransferQueueController", "TransferQueueController", "transfer_queue"),
        actor("TransferQueueController", "TransferQueueController", "elsewhere"),
        actor("PrometheusMetricsServer", "prometheus_server_ab12cd34", node="n2"),
        actor("PrometheusMetricsServer", "prometheus_server_AB12CD34"),
        actor("PrometheusMetricsServer", "prometheus_server_ab12cd34\n"),
        actor("PrometheusMetricsServer", "prometheus_server_" + "a" * 5000),
        actor("SomethingElse", "prometheus_server_ab12cd35"),
    ),
    nodes=(NodeRecord("n1", "10.0.0.1", "a", True), NodeRecord("n2", "10.0.0.2", "b", False)),
)


def test_locate_matches_class_name_and_namespace_exactly() -> None:
    """Only the controller in namespace transfer_queue and the lower-hex AsyncFlow name count;
    a trailing newline, upper case, an unbounded name or another class do not."""
    found = endpoints.locate(SNAPSHOT)
    assert [(f.kind.component, f.actor_name, f.node_ip) for f in found] == [
        ("AsyncFlow", "prometheus_server_ab12cd34", "10.0.0.2"),
        ("TransferQueue", "TransferQueueController", "10.0.0.1"),
    ]
    assert found[0].address == "10.0.0.2:9400"
    assert found[1].address is None  # the port is chosen at run time


class _Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"# TYPE af_train_steps_total counter\naf_train_steps_total 3\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_doctor_probes_a_known_port_and_says_what_to_set(metrics_server: int) -> None:
    """An AsyncFlow server answering at NODE_IP:PORT passes (and is named as a static target to
    add); one that does not answer fails with the bind variables to set; TransferQueue with a
    run-time port fails with the verl keys to set."""
    answering = dataclasses.replace(verl.ASYNC_FLOW, port=metrics_server)
    silent = dataclasses.replace(verl.ASYNC_FLOW, port=free_port())
    located = [
        endpoints.Located(answering, "prometheus_server_00000001", "127.0.0.1"),
        endpoints.Located(silent, "prometheus_server_00000002", "127.0.0.1"),
        endpoints.Located(verl.TRANSFER_QUEUE, "TransferQueueController", "127.0.0.1"),
    ]
    ok, down, tq = doctor.endpoint_findings(located, timeout=5)
    assert ok.ok and f"127.0.0.1:{metrics_server}" in ok.detail
    assert ok.check == doctor.ENDPOINTS
    assert not down.ok and "no answer" in down.detail
    assert "AF_PROMETHEUS_METRICS_BIND_ALL=true" in down.fix
    assert "AF_PROMETHEUS_METRICS_BIND=127.0.0.1" in down.fix
    assert not tq.ok and "port chosen at run time" in tq.detail
    assert "transfer_queue.metrics.port=PORT" in tq.fix
    assert "transfer_queue.metrics.enabled=True" in tq.fix


@pytest.mark.ray
def test_doctor_on_a_real_cluster_finds_both(ray_cluster: LocalRayCluster) -> None:
    """Actors placed and named as upstream does, on a real `ray start --head`: doctor lists
    the TransferQueue controller and the AsyncFlow server of the node, each with what to set."""
    proc = subprocess.Popen(
        [sys.executable, str(JOB), "--address", ray_cluster.address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        # Ray's raylet warns on stdout about a detached actor in an anonymous namespace.
        lines = [proc.stdout.readline() for _ in range(1)]
        while lines[-1] and not lines[-1].startswith(b"{") and len(lines) < 20:
            lines.append(proc.stdout.readline())
        assert lines[-1].startswith(b"{"), lines
        info = json.loads(lines[-1])
        result = run_cli(
            "doctor", "--ray-address", ray_cluster.address, "--timeout", "5", "--json", timeout=180
        )
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    assert "Traceback" not in result.stderr, result.stderr
    found = [f for f in json.loads(result.stdout)["findings"] if f["check"] == doctor.ENDPOINTS]
    tq = [f for f in found if f["subject"].startswith("TransferQueue TransferQueueController")]
    af = [f for f in found if info["async_flow"] in f["subject"]]
    assert len(tq) == 1 and len(af) == 1, found
    assert not tq[0]["ok"] and "transfer_queue.metrics.port" in tq[0]["fix"]
    assert info["node_ip"] in af[0]["subject"] and ":9400/metrics" in af[0]["subject"]
    with socket.socket() as probe:
        taken = probe.connect_ex((info["node_ip"], 9400)) == 0
    if not taken:  # nothing answers on 9400 here: the server is out of Prometheus' reach
        assert not af[0]["ok"] and "AF_PROMETHEUS_METRICS_BIND_ALL=true" in af[0]["fix"]
