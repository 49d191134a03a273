"""A real local Ray cluster and ``fsd-daemon run`` as a subprocess, for the tests and benches.

In the package beside the simulated jobs so that the tests and the benches import the same
code (the benches never import the tests); nothing in the commands uses it.

The cluster is started through Ray's own library (``ray.cluster_utils.Cluster``), bound to
127.0.0.1, with the dashboard (the state API needs it) on a free port; ``stop()`` ends every
process it started (Ray's node.kill_all_processes, by PID). The daemon is stopped by its PID
(``launch.stop_process``). Ray is imported only in ``start()``: whoever imports this module can
still set Ray's environment variables first.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from fsd_daemon.sim.launch import free_port, stop_process

__all__ = [
    "TEST_DEFAULTS",
    "DaemonProcess",
    "LocalRayCluster",
    "healthz",
    "polls_done",
    "read_groups",
    "remove_tree",
    "targets_in",
    "wait_for",
]

# The daemon's own poll-duration histogram (fsd_daemon.service.selfmetrics).
POLL_DURATION = "fsd_daemon_poll_duration_seconds"

# Settings a DaemonProcess gets unless the caller passes others: a short grace period, so that
# removals show within seconds of a server going.
TEST_DEFAULTS: Mapping[str, Any] = {
    "daemon.poll_interval_seconds": 2.0,
    "daemon.grace_period_seconds": 1.0,
}


def wait_for(check: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> float:
    """Wait until ``check()`` is truthy; returns the seconds it took, raises on timeout."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def targets_in(path: Path) -> list[str]:
    """The sorted targets of a file_sd file; [] while it is missing or half-written."""
    try:
        return sorted(t for g in orjson.loads(path.read_bytes()) for t in g["targets"])
    except (FileNotFoundError, orjson.JSONDecodeError):
        return []


def remove_tree(path: Path, tries: int = 20) -> None:
    """``rm -rf`` until the directory is gone: a daemon that puts its files back may write one
    between the unlinks and the rmdir (the directory is then not empty), so an operator's
    ``rm -rf`` can fail once; again, and it goes."""
    for _ in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
    raise AssertionError(f"{path} came back {tries} times in a row")


def healthz(port: int, host: str = "127.0.0.1") -> tuple[int, dict[str, Any]]:
    """The daemon's ``/healthz``: its status and JSON body; ``(0, {"error": ...})`` while
    nothing answers there (not listening yet, or gone)."""
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read()
        try:
            return exc.code, orjson.loads(body)
        except orjson.JSONDecodeError:
            # Seen once in CI under load (a 503 whose body read back empty; 20,000 requests
            # against a daemon in the same state never showed it again): the status is still
            # the daemon's answer, the body is said to be unreadable and the caller asks again.
            return exc.code, {"error": f"body not JSON: {body[:80]!r}"}
    except OSError as exc:
        return 0, {"error": str(exc)}


def polls_done(port: int, host: str = "127.0.0.1") -> float:
    """How many polls the daemon serving its self-metrics at ``port`` has finished, failed
    ones included (its poll-duration histogram's count); 0 while nothing answers there.

    What a test waits on to know the daemon has looked again, instead of sleeping."""
    url = f"http://{host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    for family in text_string_to_metric_families(text):
        if family.name == POLL_DURATION:
            return sum(s.value for s in family.samples if s.name == POLL_DURATION + "_count")
    return 0.0


def read_groups(path: Path) -> list[dict[str, Any]]:
    """The target groups of a file_sd file; ``[]`` while it is missing or not valid JSON."""
    try:
        data = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return []
    return list(data)


class LocalRayCluster:
    """A one-node Ray cluster on 127.0.0.1 (``gcs_port``: a fixed GCS port, for restarts)."""

    def __init__(self, num_cpus: int = 8, gcs_port: int | None = None) -> None:
        self.num_cpus = num_cpus
        self.gcs_port = gcs_port
        self.cluster: Any = None
        self.dashboard_port = 0

    def start(self, timeout: float = 60.0) -> LocalRayCluster:
        """Start the head node; return once the state API answers (within ``timeout`` s)."""
        from ray.cluster_utils import Cluster

        self.dashboard_port = free_port()
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "node_ip_address": "127.0.0.1",
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": self.dashboard_port,
                "num_cpus": self.num_cpus,
                **({"gcs_server_port": self.gcs_port} if self.gcs_port else {}),
            },
        )
        self.wait_for_dashboard(timeout)
        return self

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    @property
    def head(self) -> Any:
        return self.cluster.head_node

    def process_pids(self) -> dict[str, list[int]]:
        """Ray's own processes on the head node, by type (gcs_server, dashboard, raylet, ...)."""
        return {
            kind: [int(i.process.pid) for i in infos]
            for kind, infos in self.head.all_processes.items()
        }

    def dashboard_pid(self) -> int:
        from ray._private import ray_constants

        return self.process_pids()[ray_constants.PROCESS_TYPE_DASHBOARD][0]

    def wait_for_dashboard(self, timeout: float = 60.0) -> None:
        from ray.util.state import StateApiClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                client = StateApiClient(address=self.address)
                client._make_http_get_request("/api/v0/nodes", {"limit": 10}, timeout=5)
                return
            except Exception as exc:  # the dashboard takes a few seconds to serve
                last = exc
                time.sleep(0.5)
        raise RuntimeError(f"Ray dashboard did not come up: {last}")

    def pause_dashboard(self) -> None:
        """Make the state API unreachable (requests time out) without stopping Ray."""
        os.kill(self.dashboard_pid(), signal.SIGSTOP)

    def resume_dashboard(self) -> None:
        os.kill(self.dashboard_pid(), signal.SIGCONT)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None


class DaemonProcess:
    """``fsd-daemon run`` in a subprocess; stopped by its PID.

    ``settings`` (``{"daemon.poll_interval_seconds": 2}`` -> FSD_DAEMON_POLL_INTERVAL_SECONDS)
    go on top of ``defaults``; pass ``defaults={}`` for the daemon's built-in defaults.
    ``clean_env`` drops inherited FSD_* variables and RAY_ADDRESS, so that only ``settings``
    configure it. Output goes to ``log_path``, else to a temp file that leaving the context
    removes. Self-metrics are served on a free 127.0.0.1 port (``metrics_port``; 0 when
    ``serve_metrics`` is False). ``wrapper`` prefixes the command (e.g. a resource limit).
    """

    def __init__(
        self,
        ray_address: str,
        out_dir: Path,
        *,
        wrapper: Sequence[str] = (),
        defaults: Mapping[str, Any] = TEST_DEFAULTS,
        clean_env: bool = False,
        log_path: Path | None = None,
        log_level: str = "debug",
        serve_metrics: bool = True,
        cwd: Path | None = None,
        **settings: Any,
    ) -> None:
        self.out_dir = out_dir
        self.metrics_port = free_port() if serve_metrics else 0
        env = {
            k: v
            for k, v in os.environ.items()
            if not (clean_env and (k.startswith("FSD_") or k == "RAY_ADDRESS"))
        }
        for key, value in {**defaults, **settings}.items():
            env["FSD_" + key.replace(".", "_").upper()] = str(value)
        self._temp_log = log_path is None
        self.log: IO[bytes]
        if log_path is None:
            self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
                prefix="fsd-daemon-", suffix=".log", delete=False
            )
        else:
            self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        listen = ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"] if serve_metrics else []
        self.proc = subprocess.Popen(
            [
                *wrapper,
                sys.executable,
                "-m",
                "fsd_daemon.cli",
                "run",
                "--ray-address",
                ray_address,
                "--output-dir",
                str(out_dir),
                *listen,
                "--log-level",
                log_level,
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rollout(self) -> list[dict[str, Any]]:
        return read_groups(self.out_dir / "rollout.json")

    def by_actor(self) -> dict[str, dict[str, Any]]:
        return {g["labels"]["actor_name"]: g for g in self.rollout()}

    def health(self) -> tuple[int, dict[str, Any]]:
        return healthz(self.metrics_port)

    def polls(self) -> float:
        """Polls finished so far (see :func:`polls_done`)."""
        return polls_done(self.metrics_port)

    def metrics(self) -> str:
        """The /metrics exposition text."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM by PID, SIGKILL after 20 s; returns the exit code."""
        code = stop_process(self.proc, timeout=20)
        self.log.close()
        return code

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        if exc[0] is None:
            assert code == 0, f"fsd-daemon exited with {code}:\n{self.output()[-3000:]}"
        if self._temp_log:
            Path(self.log.name).unlink(missing_ok=True)
