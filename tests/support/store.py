"""A long-term store for the remote-write tests: VictoriaMetrics from Debian's
``victoria-metrics`` package (Apache-2.0), on 127.0.0.1 and a free port, its data in the
test's directory, stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsd_daemon.sim.harness import wait_for
from fsd_daemon.sim.launch import free_port


@contextlib.contextmanager
def running_victoria_metrics(directory: Path) -> Iterator[str]:
    """Its base URL (remote write at ``/api/v1/write``, Prometheus' query API at ``/api/v1``)."""
    binary = shutil.which("victoria-metrics")
    if binary is None:
        pytest.fail("victoria-metrics is missing: scripts/setup --test installs Debian's package")
    port = free_port()
    log = open(directory / "victoria-metrics.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary,
            f"-storageDataPath={directory / 'vm-data'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=1d",
            # Serve the newest samples too (the default hides the last 30 s).
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{url}/health") or proc.poll() is not None, 60, 0.2)
        assert proc.poll() is None, (directory / "victoria-metrics.log").read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def query(base: str, expr: str, at: float) -> list[dict[str, Any]]:
    """An instant query's result (Prometheus' API, which the store speaks too)."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])
