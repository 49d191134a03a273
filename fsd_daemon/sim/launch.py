"""Start and stop the simulated pieces as separate processes (demo, tests, benches).

Every process started here is stopped by its PID: SIGTERM, a wait, then SIGKILL. Children get
their own session so that a Ctrl-C in the terminal reaches only the demo, which then stops them
in order (jobs before the daemon, so the daemon sees them leave).
"""

from __future__ import annotations

import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now on ``host`` (the usual bind-to-0 race applies)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20.0) -> int:
    """SIGTERM ``proc`` by its PID, wait, SIGKILL if it does not go; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)


def start_logged(
    argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path``, in its own session."""
    log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - the child keeps it; closed below
    try:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own copy of the descriptor


@dataclass
class Job:
    """A verl-like job (``python -m fsd_daemon.sim.job``): its driver process and servers."""

    proc: subprocess.Popen[bytes]
    info: dict[str, Any]

    @property
    def job_id(self) -> str:
        return str(self.info["job_id"])

    @property
    def addresses(self) -> dict[str, str]:
        """Actor name -> "host:port" (verl returns a tuple or, before 0.6, a string)."""
        out = {}
        for a in self.info["actors"]:
            value = a["address"]
            out[a["name"]] = value if isinstance(value, str) else f"{value[0]}:{value[1]}"
        return out

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.proc, timeout)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def start_job(
    address: str,
    *args: str,
    timeout: float = 120.0,
    new_session: bool = False,
    env: dict[str, str] | None = None,
) -> Job:
    """Start a simulated job on the Ray cluster at ``address``; return once all servers serve.

    The job lives while its stdin stays open (and until SIGTERM), like a driver in a terminal.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsd_daemon.sim.job", "--address", address, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=new_session,
        env=env,
        # Unbuffered: a readline never takes more than its line from the pipe, so select()
        # sees the next line (Ray 2.44's raylet warnings come before the job's JSON line).
        bufsize=0,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    # The job's one JSON line; anything Ray's driver prints on stdout before it is skipped.
    while True:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(max(0.0, deadline - time.monotonic()))
        if not ready:
            Job(proc, {}).stop(timeout=5)
            raise RuntimeError(f"simulated job did not start within {timeout:g} s")
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            raise RuntimeError(f"simulated job exited with {proc.returncode} before it was ready")
        if line.startswith(b"{"):
            return Job(proc, orjson.loads(line))
        sys.stderr.write(f"simulated job said: {line.decode(errors='replace').rstrip()}\n")
