"""The ``cluster`` label when nobody sets one: the Slurm job inside one, else the host name,
never one shared name ("default") for every cluster; and where the value came from, as
``check-config`` and ``doctor`` say it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from fsd_daemon.config import default_cluster, load_config
from tests.support.clusterfile import cluster, server


def test_derived_from_the_host_name_outside_slurm() -> None:
    config = load_config(None, environ={})
    assert config.daemon.cluster == socket.gethostname()
    assert config.cluster_origin.startswith("default: the host name")


def test_one_name_per_slurm_job() -> None:
    env = {"SLURM_JOB_ID": "4242", "SLURM_CLUSTER_NAME": "hpc"}
    assert default_cluster(env)[0] == "slurm-hpc-4242"
    assert default_cluster({"SLURM_JOB_ID": "4243"})[0] == "slurm-4243"
    # Values that are not a Slurm job id or cluster name are not trusted into the label.
    assert default_cluster({"SLURM_JOB_ID": "x; rm"})[0] == socket.gethostname()
    assert default_cluster({"SLURM_JOB_ID": "7", "SLURM_CLUSTER_NAME": "a b"})[0] == "slurm-7"


@pytest.mark.parametrize(
    ("file_line", "environ", "override", "value", "origin"),
    [
        ('cluster = "from-file"', {}, None, "from-file", "set in "),
        ('cluster = "from-file"', {"FSD_DAEMON_CLUSTER": "env"}, None, "env", "set by FSD_"),
        ("", {"FSD_DAEMON_CLUSTER": "env"}, "cli", "cli", "set on the command line"),
        ('cluster = ""', {}, None, socket.gethostname(), "default: the host name"),
    ],
)
def test_origin(
    file_line: str,
    environ: dict[str, str],
    override: str | None,
    value: str,
    origin: str,
    tmp_path: Path,
) -> None:
    path = tmp_path / "fsd.toml"
    path.write_text(f"[daemon]\n{file_line}\n")
    config = load_config(path, environ=environ, overrides={"daemon.cluster": override})
    assert config.daemon.cluster == value
    assert config.cluster_origin.startswith(origin), config.cluster_origin


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsd_daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env},
    )


def test_check_config_and_doctor_say_where_it_came_from(tmp_path: Path) -> None:
    described = tmp_path / "cluster.json"
    described.write_bytes(orjson.dumps(cluster(server(0))))
    env = {"HOME": str(tmp_path), "SLURM_JOB_ID": "77", "SLURM_CLUSTER_NAME": "hpc"}
    done = run("check-config", env=env)
    assert done.returncode == 0, done.stderr
    assert (
        "# daemon.cluster: default: the Slurm job (SLURM_CLUSTER_NAME, SLURM_JOB_ID)" in done.stdout
    )
    assert 'cluster = "slurm-hpc-77"' in done.stdout
    doctor = run("doctor", "--ray-address", f"file:{described}", "--json", env=env)
    report = json.loads(doctor.stdout)
    assert report["cluster"] == "slurm-hpc-77"
    assert report["cluster_origin"].startswith("default: the Slurm job")
    text = run("doctor", "--ray-address", f"file:{described}", env=env).stdout
    assert text.splitlines()[0].startswith("cluster label 'slurm-hpc-77': default: the Slurm job")
