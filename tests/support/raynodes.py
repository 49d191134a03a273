"""Ray nodes started the way users start them, in network namespaces of the test's own.

``ray start ... --block`` as a separate process with a clean environment (nothing of the test's
Ray settings inherited), one per namespace, its children found by PID (never Ray's own stop
command, which ends every Ray process).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from fsd_daemon.sim.harness import wait_for
from tests.support.netns import Namespace

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def short_tmp() -> Iterator[Path]:
    """Ray's socket paths (under its temp dir) must stay under 108 bytes: pytest's tmp_path
    is too deep."""
    path = Path(tempfile.mkdtemp(prefix="fsd2n-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class RayNode:
    ns: Namespace
    proc: subprocess.Popen[bytes]  # `ray start --block`: its children are the node

    def raylet(self) -> psutil.Process | None:
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        return next((c for c in children if c.name() == "raylet"), None)

    def node_id(self) -> str | None:
        raylet = self.raylet()
        if raylet is None:
            return None
        for arg in raylet.cmdline():
            if arg.startswith("--node_id="):
                return arg.partition("=")[2]
        return None


def base_env(home: Path, tmp: Path) -> dict[str, str]:
    """What a login shell would give: PATH with the venv first, HOME, nothing of Ray's."""
    return {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def auth_env(home: Path) -> dict[str, str]:
    """Ray's token mode and file, given explicitly: Ray turns token mode on by itself only
    for ``ray start --head``, so a worker's ``ray start`` and a job driver need them."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(home / ".ray" / "auth_token")}


def start_ray(ns: Namespace, env: dict[str, str], tmp: Path, temp_dir: Path, *args: str) -> RayNode:
    temp_dir.mkdir()
    proc = ns.start(
        [
            str(BIN / "ray"),
            "start",
            f"--node-ip-address={ns.address}",
            f"--temp-dir={temp_dir}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--block",
            *args,
        ],
        tmp / f"{ns.name}-ray.log",
        {**env, "RAY_TMPDIR": str(temp_dir)},
    )
    node = RayNode(ns, proc)

    def started() -> bool:
        if proc.poll() is not None:
            log = (tmp / f"{ns.name}-ray.log").read_text(errors="replace")
            pytest.fail(f"ray start exited {proc.returncode} in {ns.name}: {log[-2000:]}")
        return node.node_id() is not None

    wait_for(started, 90, 0.5)
    return node


def get_in(ns: Namespace, url: str, timeout: float = 5.0, token: str = "") -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def fetch() -> bytes:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as resp:
            return bytes(resp.read())

    return ns.call(fetch, timeout=timeout + 5)
