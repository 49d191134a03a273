"""The run's metrics outlive the cluster: the head-node Prometheus streams to a long-term store.

The store is VictoriaMetrics (Debian's ``victoria-metrics`` package, Apache-2.0) receiving
Prometheus remote write. ``fsd-daemon demo --remote-write URL`` runs the whole path (a local
Ray cluster, a verl-like job with the scripted long-tail load, the simulated-GPU exporter, the
daemon, and Prometheus with the config that ``prometheus-config --remote-write`` prints and the
shipped rules). While it runs, ``fsd-daemon report`` is made against the head-node Prometheus;
then the demo stops (Ray, Prometheus, daemon, exporter: all gone), and the same report against
the store gives the same figures, and every query of the shipped dashboards and rules returns
data from the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsd_daemon.sim.harness import wait_for
from fsd_daemon.sim.launch import free_port
from tests.promql import all_expressions
from tests.support.store import answers, query, running_victoria_metrics

pytestmark = [pytest.mark.prometheus, pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent
SCRAPE_SECONDS = 2
# Two steps of the long-tail scenario (20 s each) and the rules' one-minute windows.
RUN_SECONDS = 75


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[str]:
    with running_victoria_metrics(tmp_path) as url:
        yield url


def report(prometheus: str, start: float, end: float, out: Path, env: dict[str, str]) -> Any:
    done = subprocess.run(
        [str(BIN / "fsd-daemon"), "report", "--prometheus", prometheus, "--from", f"{start:.0f}",
         "--to", f"{end:.0f}", "--resolution", "1", "--output", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads((out / "summary.json").read_text())


def test_report_and_dashboards_from_the_store_after_the_cluster_is_gone(
    victoria_metrics: str, tmp_path: Path, prometheus_bin: str
) -> None:
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    workdir = tmp_path / "demo"
    demo_log = tmp_path / "demo.log"
    with open(demo_log, "wb") as log:
        demo = subprocess.Popen(
            [str(BIN / "fsd-daemon"), "demo", "--scenario", "long-tail", "--gpus", "6",
             "--scrape-interval", str(SCRAPE_SECONDS), "--prometheus-port", str(free_port()),
             "--workdir", str(workdir), "--remote-write", f"{victoria_metrics}/api/v1/write"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: (workdir / "demo.json").exists() or demo.poll() is not None, 300, 0.5)
        assert demo.poll() is None, demo_log.read_text()[-4000:]
        state = json.loads((workdir / "demo.json").read_text())
        head_prometheus = f"http://127.0.0.1:{state['ports']['prometheus']}"
        printed = (workdir / "prometheus.yml").read_text()
        assert f"{victoria_metrics}/api/v1/write" in printed and "external_labels" in printed
        start = time.time() + 5
        time.sleep(RUN_SECONDS)
        end = time.time() - 3
        before = report(head_prometheus, start, end, tmp_path / "report-head", env)
        # The shipped dashboards' and rules' queries that have data on the head (the scripted
        # job is vLLM only: SGLang's panels are empty there too).
        expressions = [e for e in all_expressions() if e.kind != "alert"]
        answered = {e.expr: len(query(head_prometheus, e.expr, end)) for e in expressions}
        answered = {expr: n for expr, n in answered.items() if n}
        assert len(answered) > 20, answered

        # Everything of the cluster stops: Ray, its job, the exporter, the daemon, Prometheus.
        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(timeout=180) == 0, demo_log.read_text()[-4000:]
        assert not answers(f"{head_prometheus}/-/ready")
        for pid in [*state["pids"].values(), *(j["pid"] for j in state["jobs"])]:
            assert not _alive(pid), pid
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()

    after = report(victoria_metrics, start, end, tmp_path / "report-store", env)
    print("head:", json.dumps(_figures(before)), "\nstore:", json.dumps(_figures(after)))
    assert after["jobs"] == before["jobs"] and before["jobs"]
    assert after["gpu_rate_window"] == before["gpu_rate_window"]
    assert len(after["steps"]) == len(before["steps"]) >= 1
    for a, b in zip(after["steps"], before["steps"], strict=True):
        assert (a["job"], a["replicas"], a["slowest_replica"]) == (
            b["job"],
            b["replicas"],
            b["slowest_replica"],
        )
        assert abs(a["tail_seconds"] - b["tail_seconds"]) <= 2 * SCRAPE_SECONDS
    assert after["never_busy_replicas"] == before["never_busy_replicas"]
    # GPU time: VictoriaMetrics' rate() does not extrapolate to the window's edges as
    # Prometheus' does, so the shares agree closely, not exactly.
    for state in ("busy", "idle", "asleep"):
        assert abs(after["states"][state] - before["states"][state]) <= 0.05, state

    # Two runs side by side from the store: the run's first steps (A) against the others (B),
    # this cluster's series only, split where a step starts (a split at a fixed time can cut the
    # only step of A in two on a loaded machine). The scripted load is the same in both: so are
    # the figures.
    steps = before["steps"]
    assert len(steps) >= 2, steps
    # Midway between a step's end and the next one's start: whole seconds either side of it
    # (the report's --from/--to) still hold each step whole.
    last_of_a, first_of_b = steps[len(steps) // 2 - 1], steps[len(steps) // 2]
    middle = (last_of_a["start"] + last_of_a["seconds"] + first_of_b["start"]) / 2
    compared = tmp_path / "compare"
    done = subprocess.run(
        [str(BIN / "fsd-daemon"), "report", "--prometheus", victoria_metrics, "--cluster", "demo",
         "--from", f"{start:.0f}", "--to", f"{middle:.0f}", "--compare-from", f"{middle:.0f}",
         "--compare-to", f"{end:.0f}", "--resolution", "1", "--output", str(compared)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "run B against run A: median tail" in done.stdout, done.stdout
    runs = json.loads((compared / "compare.json").read_text())["runs"]
    assert [r["cluster"] for r in runs] == ["demo", "demo"]
    assert all(r["steps"] for r in runs), runs
    tails = [s["tail_seconds"] for r in runs for s in r["steps"]]
    assert max(tails) - min(tails) <= 2 * SCRAPE_SECONDS, tails
    # Another cluster's name selects nothing of this run.
    other = subprocess.run(
        [str(BIN / "fsd-daemon"), "report", "--prometheus", victoria_metrics, "--cluster",
         "another", "--from", f"{start:.0f}", "--to", f"{end:.0f}", "--output",
         str(tmp_path / "other")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert other.returncode == 1 and "no data in the range" in other.stderr, other.stderr

    # The same queries against the store, at the same time: as many series each.
    differ = {
        expr: (n, len(query(victoria_metrics, expr, end)))
        for expr, n in answered.items()
        if len(query(victoria_metrics, expr, end)) != n
    }
    assert not differ, "head vs store series counts:\n" + "\n".join(
        f"{counts}: {expr}" for expr, counts in differ.items()
    )
    print(f"{len(answered)} dashboard and rule queries answer the same from the store")
    # The external label keeps this cluster apart from others in the store.
    assert query(victoria_metrics, 'count(up{cluster="demo"})', end)


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "jobs": summary["jobs"],
        "window": summary["gpu_rate_window"],
        "steps": [(s["replicas"], round(s["tail_seconds"], 1)) for s in summary["steps"]],
        "states": summary.get("states"),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_agent_mode_streams_everything_and_keeps_nothing(
    victoria_metrics: str, tmp_path: Path, prometheus_bin: str
) -> None:
    """``prometheus-config --remote-write URL --agent`` run by a real Prometheus in agent mode:
    the rollout servers it finds through the daemon's files reach the store with the cluster
    label and the external labels, the agent itself answers no queries (nothing kept to
    query), and the store still has the series after the agent is stopped.
    The cluster is described by a file (the discovery seam): what is under test is the path
    from the files to the store."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from tests.support.clusterfile import cluster, node, server

    servers = []
    ports = [free_port(), free_port()]
    for replica, port in enumerate(ports):
        registry = CollectorRegistry()
        gauge = Gauge("vllm:num_requests_running", "running", ["model_name"], registry=registry)
        gauge.labels("m").set(replica + 1)
        servers.append(start_http_server(port, "127.0.0.1", registry)[0])
    described = tmp_path / "cluster.json"
    described.write_bytes(
        orjson.dumps(cluster(*(server(r, port=p) for r, p in enumerate(ports)), nodes=[node()]))
    )
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "FSD_DAEMON_CLUSTER": "agent-run",
        "FSD_PROMETHEUS_SCRAPE_INTERVAL_SECONDS": "1",
    }
    out = tmp_path / "targets"
    common = ["--ray-address", f"file:{described}", "--output-dir", str(out)]
    printed = subprocess.run(
        [str(BIN / "fsd-daemon"), "prometheus-config", *common,
         "--remote-write", f"{victoria_metrics}/api/v1/write", "--agent",
         "--external-label", "site=lab"],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    ).stdout  # fmt: skip
    assert "rule_files" not in printed and "cluster: agent-run" in printed
    (tmp_path / "agent.yml").write_text(printed)
    daemon = subprocess.Popen(
        [str(BIN / "fsd-daemon"), "run", *common, "--no-watch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    agent_port = free_port()
    agent = None
    try:
        wait_for(lambda: (out / "rollout.json").exists(), 60, 0.2)
        agent = subprocess.Popen(
            [prometheus_bin, "--enable-feature=agent", f"--config.file={tmp_path / 'agent.yml'}",
             f"--storage.agent.path={tmp_path / 'wal'}",
             f"--web.listen-address=127.0.0.1:{agent_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        expr = 'vllm:num_requests_running{cluster="agent-run", job="rollout"}'

        def in_store() -> set[str]:
            return {r["metric"]["replica"] for r in query(victoria_metrics, expr, time.time())}

        wait_for(lambda: in_store() == {"0", "1"}, 90, 1)
        # An agent keeps no queryable storage: its query API is not there.
        url = f"http://127.0.0.1:{agent_port}/api/v1/query?query=up"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url, timeout=5).read()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
        # The external labels are on what was streamed.
        assert query(victoria_metrics, 'count(up{cluster="agent-run", site="lab"})', time.time())
        assert in_store() == {"0", "1"}
    finally:
        for proc in (agent, daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        for httpd in servers:
            httpd.shutdown()
            httpd.server_close()
