"""Two Ray clusters feeding one long-term store, kept apart by their default cluster names.

Two "machines": network namespaces joined by a veth pair, each with a host name of its own
(a UTS namespace, ``unshare --uts``), as two head nodes have. On each: ``ray start --head``
(a separate process, a clean environment), a verl-like job with two vLLM replicas, fsd-daemon
with no ``cluster`` set, and a Prometheus with the config ``fsd-daemon prometheus-config
--remote-write`` prints there, streaming to one VictoriaMetrics (on the first machine's
address). Both jobs have the same Ray job id (each cluster numbers its jobs from 01000000):
only the cluster label tells them apart. In the store: two clusters named after the two hosts,
each with its own two replicas; ``fsd-daemon report --cluster`` gives each run its own, and
``--compare-cluster`` puts one against the other.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsd_daemon.sim.harness import wait_for
from tests.support.netns import Namespace, NetnsPair, can_create_namespaces
from tests.support.raynodes import get_in, short_tmp

pytestmark = [pytest.mark.ray, pytest.mark.prometheus, pytest.mark.slow]

BIN = Path(sys.executable).parent
GCS_PORT = 27379  # the namespaces are ours: fixed ports cannot collide with anyone's
DASHBOARD_PORT = 27265
PROMETHEUS_PORT = 27090
STORE_PORT = 27428
HOSTS = ("rl-head-a", "rl-head-b")
STEP_SECONDS = 20


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    with short_tmp() as path:
        yield path


@pytest.fixture
def netns(ray_tmp: Path) -> Iterator[NetnsPair]:
    """Torn down before ``ray_tmp``: Ray's processes stop before their temp dir goes."""
    why = can_create_namespaces()
    if why is not None:
        pytest.skip(why)
    if shutil.which("unshare") is None or shutil.which("victoria-metrics") is None:
        pytest.fail("needs unshare (util-linux) and victoria-metrics (scripts/setup --test)")
    with NetnsPair(f"mc{os.getpid() % 100000}", subnet=(os.getpid() + 13) % 250 + 1) as pair:
        yield pair


def on_host(host: str, argv: list[str]) -> list[str]:
    """``argv`` on a machine called ``host``: a UTS namespace of its own with that host name."""
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *argv]


def start_machine(
    ns: Namespace, host: str, tmp: Path, ray_tmp: Path, env: dict[str, str], store: str, seed: int
) -> dict[str, Any]:
    work = tmp / host
    work.mkdir()
    ray_dir = ray_tmp / host[-1]  # Ray's socket paths must stay under 108 bytes
    ray_dir.mkdir()
    ray = ns.start(
        on_host(host, [str(BIN / "ray"), "start", "--head", f"--node-ip-address={ns.address}",
                       f"--port={GCS_PORT}", f"--dashboard-host={ns.address}",
                       f"--dashboard-port={DASHBOARD_PORT}", f"--temp-dir={ray_dir}",
                       "--num-cpus=2", "--num-gpus=0", "--block"]),
        work / "ray.log",
        {**env, "RAY_TMPDIR": str(ray_dir)},
    )  # fmt: skip
    dashboard = f"http://{ns.address}:{DASHBOARD_PORT}/api/v0/nodes?limit=10"

    def ray_up() -> bool:
        if ray.poll() is not None:
            pytest.fail(f"ray start exited on {host}: {(work / 'ray.log').read_text()[-2000:]}")
        try:
            return bool(json.loads(get_in(ns, dashboard))["data"]["result"]["result"])
        except (OSError, KeyError, ValueError):
            return False

    wait_for(ray_up, 120, 0.5)
    gcs = f"{ns.address}:{GCS_PORT}"
    job = ns.start(
        on_host(host, [str(BIN / "python"), "-m", "fsd_daemon.sim.job", "--address", gcs,
                       "--vllm", "5", "--scenario", "long-tail", "--seed", str(seed)]),
        work / "job.log",
        env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert job.stdout is not None
    line = job.stdout.readline()
    assert line, (work / "job.log").read_text()
    info = json.loads(line)
    settings = {
        "FSD_DAEMON_POLL_INTERVAL_SECONDS": "1",
        "FSD_TARGETS_WRITE_GPU": "false",
        "FSD_PROMETHEUS_SCRAPE_INTERVAL_SECONDS": "2",
    }
    out = work / "targets"
    ns.start(
        on_host(host, [str(BIN / "fsd-daemon"), "run", "--ray-address", gcs,
                       "--output-dir", str(out), "--no-watch"]),
        work / "daemon.log",
        {**env, **settings},
    )  # fmt: skip
    # Prometheus watches the targets directory only if it exists when it starts.
    wait_for(lambda: (out / "rollout.json").exists(), 60, 0.2)
    # The Prometheus config, printed on this machine: its default cluster is this host's.
    printed = subprocess.run(
        ns.argv(on_host(host, ["env", "-i", *(f"{k}={v}" for k, v in {**env, **settings}.items()),
                               str(BIN / "fsd-daemon"), "prometheus-config", "--output-dir",
                               str(out), "--remote-write", f"{store}/api/v1/write"])),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f"cluster: {host}" in printed, printed
    (work / "prometheus.yml").write_text(printed)
    prometheus = ns.start(
        [shutil.which("prometheus") or "prometheus", f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
        work / "prometheus.log",
        env,
    )  # fmt: skip
    return {"job": info, "prometheus": prometheus, "work": work}


def test_two_clusters_one_store_kept_apart_by_default(
    netns: NetnsPair, ray_tmp: Path, tmp_path: Path, prometheus_bin: str
) -> None:
    head_a, head_b = netns.head, netns.worker
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp_path),
        "RAY_USAGE_STATS_ENABLED": "0",
        "MPLBACKEND": "Agg",
    }
    store = f"http://{head_a.address}:{STORE_PORT}"
    head_a.start(
        ["victoria-metrics", f"-storageDataPath={tmp_path / 'store'}",
         f"-httpListenAddr={head_a.address}:{STORE_PORT}", "-retentionPeriod=1d",
         "-search.latencyOffset=0s", "-search.disableCache"],
        tmp_path / "store.log",
        env,
    )  # fmt: skip
    machines = [
        start_machine(ns, host, tmp_path, ray_tmp, env, store, seed)
        for ns, host, seed in ((head_a, HOSTS[0], 1), (head_b, HOSTS[1], 2))
    ]
    # Each cluster numbers its jobs itself: the same job id on both.
    job_ids = {m["job"]["job_id"] for m in machines}
    assert len(job_ids) == 1, job_ids

    def store_query(expr: str) -> list[dict[str, Any]]:
        url = f"{store}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            return list(json.loads(get_in(head_a, url))["data"]["result"])
        except (OSError, KeyError, ValueError):
            return []

    def replicas_per_cluster() -> dict[str, int]:
        rows = store_query("count by (cluster) (vllm:num_requests_running)")
        return {r["metric"].get("cluster", ""): int(r["value"][1]) for r in rows}

    # The scripted long tail (fsd_daemon/sim/scenario.py): five replicas, 20 s steps, the
    # replicas busy for 3, 5, 7, 13 and 0 s of each. Two whole steps, and a scrape after.
    wait_for(lambda: replicas_per_cluster() == {HOSTS[0]: 5, HOSTS[1]: 5}, 180, 1)
    start = time.time()
    time.sleep(2 * STEP_SECONDS + 10)
    end = time.time()

    # The clusters' Prometheus servers flush and stop; the store keeps both clusters.
    for m in machines:
        m["prometheus"].send_signal(signal.SIGTERM)
        assert m["prometheus"].wait(timeout=60) == 0

    def report(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            head_a.argv(["env", "-i", *(f"{k}={v}" for k, v in env.items()),
                         str(BIN / "fsd-daemon"), "report", "--prometheus", store,
                         "--from", f"{start:.0f}", "--to", f"{end:.0f}",
                         "--resolution", "1", *args]),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    for host in HOSTS:
        done = report("--cluster", host, "--output", str(tmp_path / f"report-{host}"))
        assert done.returncode == 0, done.stderr + done.stdout
        summary = json.loads((tmp_path / f"report-{host}" / "summary.json").read_text())
        assert summary["jobs"] == sorted(job_ids)
        # This cluster's four working replicas per step, with the scripted tail (13 s against
        # a median of 6 s); the other cluster's replicas of the same job id are not in it.
        assert summary["steps"], summary
        for step in summary["steps"]:
            assert step["replicas"] == 4 and abs(step["tail_seconds"] - 7) <= 2, step
    done = report("--cluster", HOSTS[0], "--compare-from", f"{start:.0f}", "--compare-to",
                  f"{end:.0f}", "--compare-cluster", HOSTS[1], "--output",
                  str(tmp_path / "compare"))  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    runs = json.loads((tmp_path / "compare" / "compare.json").read_text())["runs"]
    assert [r["cluster"] for r in runs] == list(HOSTS)
    assert all(r["steps"] for r in runs), runs
    print("\n".join(line for line in done.stdout.splitlines() if line.startswith("run ")))
