"""Ray started the way users start it: ``ray start --head`` as a separate process.

The head runs with ``--block`` so that one PID owns every Ray process of the node: SIGTERM to
it ends them all (Ray's own shutdown at exit), and whatever survives is killed by the PIDs
recorded while it ran. Never Ray's own stop command: it ends every Ray process on the machine.

Its environment is built from nothing (``clean_env``): PATH, a HOME of its own (where a token
file may sit in ``.ray/auth_token``) and only what the caller adds, so that no Ray setting of
the calling process (``RAY_AUTH_MODE`` above all) leaks into it or into the commands it tests.

Used by the tests and the benches (a restart on the same ports: ``base_port``); it is here,
beside the simulated jobs, so that the benches never import the tests.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from fsd_daemon.sim.launch import free_port

RAY_BIN = str(Path(sys.executable).with_name("ray"))
TOKEN = "fsd-test-token-0123456789abcdef0123456789abcdef"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """What a user's fresh shell has: PATH and HOME, plus ``extra`` (nothing Ray-specific)."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        # Not a user setting but a machine one: no usage report from tests.
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.update(extra)
    return env


def write_token(home: Path, token: str = TOKEN) -> Path:
    """``~/.ray/auth_token`` as ``ray get-auth-token --generate`` leaves it (0600, newline)."""
    path = home / ".ray" / "auth_token"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


class RayHead:
    """``ray start --head --block`` on 127.0.0.1 with its own temp dir, HOME and ports.

    ``base_port``: every port Ray opens is fixed from it (GCS ``base_port``, dashboard
    ``base_port + 1``, ..., workers from ``base_port + 100``), so that a restart comes back on
    the same ports; else free ports. ``temp_dir``: Ray's ``--temp-dir``, kept by the caller;
    else a short one of its own, removed at :meth:`stop`.
    """

    def __init__(
        self,
        root: Path,
        *,
        env: Mapping[str, str] | None = None,
        num_cpus: int = 4,
        num_gpus: int = 0,
        base_port: int | None = None,
        temp_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self._own_temp_dir = temp_dir is None
        # Short: Ray's socket paths live under it and a Unix socket path has 107 bytes at most
        # (pytest's tmp_path is too long for that).
        self.temp_dir = temp_dir or Path(
            tempfile.mkdtemp(prefix="rh-", dir=os.environ.get("RAY_TMPDIR"))
        )
        self.env = dict(env) if env is not None else clean_env(self.home)
        self.num_cpus = num_cpus
        # GPUs Ray schedules (a logical resource: no GPU needs to be there), for jobs that
        # place GPU actors as verl does; the simulated NVML stands for the devices.
        self.num_gpus = num_gpus
        self.base_port = base_port
        self.gcs_port = base_port if base_port is not None else free_port()
        self.dashboard_port = base_port + 1 if base_port is not None else free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._pids: set[int] = set()
        # Processes of the head that outlived ``ray start`` and were killed by PID.
        self.leftovers_killed: list[int] = []
        self.log_path = root / "ray-start.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout: float = 90.0) -> RayHead:
        argv = [
            RAY_BIN,
            "start",
            "--head",
            "--block",
            "--temp-dir",
            str(self.temp_dir),
            "--port",
            str(self.gcs_port),
            "--node-ip-address",
            "127.0.0.1",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(self.dashboard_port),
            "--num-cpus",
            str(self.num_cpus),
            "--num-gpus",
            str(self.num_gpus),
            *self._port_flags(),
            "--disable-usage-stats",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_for_dashboard(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _port_flags(self) -> list[str]:
        # Ray's fixed default ports would clash with other clusters on the machine.
        b = self.base_port
        if b is None:
            return [
                f"--ray-client-server-port={free_port()}",
                "--min-worker-port=0",
                "--max-worker-port=0",
            ]
        return [
            f"--ray-client-server-port={b + 2}",
            f"--node-manager-port={b + 3}",
            f"--object-manager-port={b + 4}",
            f"--metrics-export-port={b + 5}",
            f"--dashboard-agent-listen-port={b + 6}",
            f"--dashboard-agent-grpc-port={b + 7}",
            f"--runtime-env-agent-port={b + 8}",
            f"--min-worker-port={b + 100}",
            f"--max-worker-port={b + 299}",
        ]

    def generate_token(self) -> None:
        """``ray get-auth-token --generate``: a token in this HOME, so that Ray starts with
        token authentication on (Ray 2.52+)."""
        subprocess.run(
            [RAY_BIN, "get-auth-token", "--generate"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            check=True,
            timeout=120,
        )

    def _wait_for_dashboard(self, timeout: float) -> None:
        """Until the state API answers: 200, or 401/403 under token auth (it is up then)."""
        deadline = time.monotonic() + timeout
        url = f"{self.dashboard_url}/api/v0/nodes?limit=1&timeout=5"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited: {self.log_path.read_text()[-3000:]}")
            self._record_pids()
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    # Up means the head's raylet is registered too: a driver started before
                    # that fails ("have not registered with GCS") on a loaded machine.
                    if reply.status == 200 and _lists_a_node(reply.read()):
                        return
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"Ray's dashboard did not answer within {timeout:g} s")

    def _record_pids(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(psutil.Error):
            self._pids.update(c.pid for c in psutil.Process(self.proc.pid).children(True))

    def process_pids(self, name_part: str) -> list[int]:
        """PIDs of this head's processes whose command line contains ``name_part``."""
        self._record_pids()
        found = []
        for pid in sorted(self._pids):
            try:
                if name_part in " ".join(psutil.Process(pid).cmdline()):
                    found.append(pid)
            except psutil.Error:
                continue
        return found

    def pause_dashboard(self) -> None:
        for pid in self.process_pids("dashboard/dashboard.py"):
            os.kill(pid, signal.SIGSTOP)

    def resume_dashboard(self) -> None:
        for pid in self.process_pids("dashboard/dashboard.py"):
            os.kill(pid, signal.SIGCONT)

    def start_daemon(
        self, out: Path, log_path: Path, settings: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``fsd-daemon run`` against this head as a user starts it: a fresh shell's
        environment (nothing inherited from the test), debug logs to ``log_path``, Ray's temp
        directory where this head keeps it, and ``settings`` (``FSD_*`` variables) on top. The
        caller stops it by its PID."""
        env = clean_env(
            self.home, FSD_PROMETHEUS_RAY_TEMP_DIR=str(self.temp_dir), **dict(settings or {})
        )
        command = [sys.executable, "-m", "fsd_daemon.cli", "run", "--ray-address", self.address]
        command += ["--output-dir", str(out), "--log-level", "debug"]
        with open(log_path, "w") as log:
            return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """SIGTERM the ``ray start --block`` process, then SIGKILL what is left, by PID."""
        if self.proc is None:
            return
        self._record_pids()
        for pid in self.process_pids("dashboard/dashboard.py"):
            os.kill(pid, signal.SIGCONT)  # a paused dashboard cannot exit
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        for pid in sorted(self._pids):
            try:
                proc = psutil.Process(pid)
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except psutil.TimeoutExpired:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
                    self.leftovers_killed.append(pid)
            except psutil.Error:
                continue
        self.proc = None
        self._pids.clear()
        if self._own_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayHead:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def ray_has_token_auth() -> bool:
    """Whether this Ray has token authentication (2.52+; the oldest supported Ray has none)."""
    try:
        return importlib.util.find_spec("ray._private.authentication") is not None
    except ModuleNotFoundError:
        return False


def _lists_a_node(body: bytes) -> bool:
    try:
        return bool(json.loads(body)["data"]["result"]["result"])
    except (ValueError, KeyError, TypeError):
        return False
