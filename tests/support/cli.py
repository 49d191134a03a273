"""Run the ``fsd-daemon`` command line as a real process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``fsd-daemon ARGS`` with this environment plus ``env``; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "fsd_daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
