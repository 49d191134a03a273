"""Running the demo and the installed commands as a user would: separate processes, a clean
environment (nothing Ray-specific inherited from the test process), stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsd_daemon.sim.launch import free_port, stop_process


def clean_env(**extra: str) -> dict[str, str]:
    """What a user's login shell has, and nothing else: no RAY_*, no test-process state."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        # Ray puts its session under this directory: a short private one, so that this test
        # never reads or writes another cluster's session_latest (and Ray's socket paths stay
        # under the 107-byte limit).
        "RAY_TMPDIR": tempfile.mkdtemp(prefix="fsdr-", dir="/tmp"),
    }
    env.update(extra)
    return env


class DemoProcess:
    """``fsd-daemon demo`` in its own session; its ``demo.json`` names ports and PIDs."""

    def __init__(self, argv: Sequence[str], workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.log = workdir.parent / f"{workdir.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [*argv, "--workdir", str(workdir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=env.get("HOME", "/"),
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        state_file = self.workdir / "demo.json"
        while not state_file.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"the demo exited with {self.proc.returncode}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the demo was not ready within {timeout:g} s:\n{self.log_text()}")
            time.sleep(0.5)
        time.sleep(0.2)  # written in one go, but let the writer finish
        state: dict[str, Any] = orjson.loads(state_file.read_bytes())
        return state

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-6000:]

    def stop(self) -> int:
        """Ctrl-C, as a user stops it (Ray's driver logs a SIGTERM as a crash); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                return stop_process(self.proc, timeout=10)
        return int(self.proc.returncode)


def run_command(
    argv: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


def prometheus_api(base: str, path: str) -> Any:
    with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
        return orjson.loads(response.read())


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (and proof that it is a PNG)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR", f"{path} has no IHDR first"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def distinct_colours(path: Path) -> int:
    """How many colours the image has: a blank or one-colour image has one or two."""
    from PIL import Image

    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    return len(colours) if colours is not None else 1 << 20


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is missing: `apt-get install chromium` (scripts/setup does)")


def screenshot(page: Path, out: Path, width: int = 1300, height: int = 2600) -> None:
    """A headless Chromium screenshot of a local page, with the network switched off."""
    profile = tempfile.mkdtemp(prefix="fsd-chromium-")
    try:
        result = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",  # root in CI containers
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--proxy-server=127.0.0.1:9",  # any fetch from the network would fail
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                f"--screenshot={out}",
                page.absolute().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert out.is_file(), f"chromium wrote no screenshot: {result.stderr[-2000:]}"


def fsd_daemon_cli() -> list[str]:
    return [sys.executable, "-m", "fsd_daemon.cli"]


__all__ = ["free_port"]
