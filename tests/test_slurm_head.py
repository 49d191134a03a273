"""deploy/slurm/fsd-head.sh, the head-node part of a Slurm job script, run as a job runs it.

No Slurm here: the script is given what a job has (``SLURM_JOB_ID``, ``SLURM_CLUSTER_NAME``,
``RAY_ADDRESS`` of the head that ``ray start --head`` started; a clean environment otherwise)
and, as its training command, a verl-like job that serves for 40 s. While it runs, fsd-daemon
and Prometheus are its children; Prometheus streams to VictoriaMetrics. When the command ends
the script stops both and exits with the command's status; the store keeps the run under the
Slurm job's cluster name. A bad store URL is one line and exit 2, before anything starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsd_daemon.sim.harness import LocalRayCluster
from fsd_daemon.sim.launch import free_port
from tests.support.store import query, running_victoria_metrics

pytestmark = [pytest.mark.ray, pytest.mark.prometheus, pytest.mark.slow]

BIN = Path(sys.executable).parent
SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "slurm" / "fsd-head.sh"
SERVE_SECONDS = 40


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    with running_victoria_metrics(tmp_path) as url:
        yield url


def job_env(tmp_path: Path, ray_address: str) -> dict[str, str]:
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp_path),
        "SLURM_JOB_ID": "4242",
        "SLURM_CLUSTER_NAME": "testhpc",
        "RAY_ADDRESS": ray_address,
        # The test's Ray listens on 127.0.0.1 only (tests/conftest.py).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "FSD_PROMETHEUS_SCRAPE_INTERVAL_SECONDS": "2",
    }


def script_options(tmp_path: Path) -> list[str]:
    return ["--work-dir", str(tmp_path / "fsd"), "--prometheus-port", str(free_port())]


def test_the_job_script_streams_the_run_and_ends_with_it(
    ray_cluster: LocalRayCluster, store: str, tmp_path: Path, prometheus_bin: str
) -> None:
    env = job_env(tmp_path, ray_cluster.address)
    # The training command: a verl-like job whose stdin closes after SERVE_SECONDS.
    training = (
        f"sleep {SERVE_SECONDS} | {BIN / 'python'} -m fsd_daemon.sim.job "
        f"--address {ray_cluster.address} --vllm 2 --step-seconds 10 > /dev/null"
    )
    started = time.time()
    done = subprocess.run(
        ["bash", str(SCRIPT), *script_options(tmp_path), "--remote-write",
         f"{store}/api/v1/write", "--", "sh", "-c", training],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert time.time() - started >= SERVE_SECONDS
    # Its children are gone with it.
    pids = [int(p) for p in (tmp_path / "fsd" / "pids").read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # The store has the run under the Slurm job's cluster name.
    expr = 'count by (ray_job_id) (vllm:num_requests_running{cluster="slurm-testhpc-4242"})'
    rows = query(store, expr, time.time())
    assert [int(r["value"][1]) for r in rows] == [2], rows


def test_a_bad_store_url_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    env = job_env(tmp_path, "127.0.0.1:1")
    done = subprocess.run(
        ["bash", str(SCRIPT), *script_options(tmp_path), "--remote-write", "ftp://store/write",
         "--", "true"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "fsd-daemon: --remote-write must be an http:// or https:// URL (got 'ftp://store/write')"
    ]
    assert not (tmp_path / "fsd" / "pids").exists()
