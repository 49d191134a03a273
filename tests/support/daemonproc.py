"""Run fsd-daemon as a real process and read what it writes and serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from tests.support.raycluster import free_port


def wait_for(check: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> float:
    """Wait until ``check()`` is truthy; returns the seconds it took, raises on timeout."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def read_groups(path: Path) -> list[dict[str, Any]]:
    try:
        data = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return []
    return list(data)


class DaemonProcess:
    """``fsd-daemon run`` in a subprocess; stopped by its PID."""

    def __init__(
        self,
        ray_address: str,
        out_dir: Path,
        *,
        wrapper: Sequence[str] = (),
        **settings: Any,
    ) -> None:
        self.out_dir = out_dir
        self.metrics_port = free_port()
        env = {**os.environ}
        defaults = {"daemon.poll_interval_seconds": 2.0, "daemon.grace_period_seconds": 1.0}
        for key, value in {**defaults, **settings}.items():
            env["FSD_" + key.replace(".", "_").upper()] = str(value)
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix="fsd-daemon-", suffix=".log", delete=False
        )
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
                "--metrics-listen",
                f"127.0.0.1:{self.metrics_port}",
                "--log-level",
                "debug",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rollout(self) -> list[dict[str, Any]]:
        return read_groups(self.out_dir / "rollout.json")

    def by_actor(self) -> dict[str, dict[str, Any]]:
        return {g["labels"]["actor_name"]: g for g in self.rollout()}

    def health(self) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())
        except (urllib.error.URLError, OSError) as exc:  # not listening yet, or gone
            return 0, {"error": str(exc)}

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        return int(self.proc.returncode)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        if exc[0] is None:
            assert code == 0, f"fsd-daemon exited with {code}:\n{self.output()[-3000:]}"
        Path(self.log.name).unlink(missing_ok=True)
