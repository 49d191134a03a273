"""A Ray driver of a test's own, as a separate process: a short script run with the cluster's
address, talking over its stdin and stdout (pipes, text), stopped by closing its stdin."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def scripted_driver(script: str, address: str) -> Iterator[subprocess.Popen[str]]:
    """``python -c script address``; on exit its stdin is closed and it is waited for."""
    driver = subprocess.Popen(
        [sys.executable, "-c", script, address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert driver.stdin is not None and driver.stdout is not None
    try:
        yield driver
    finally:
        driver.stdin.close()
        driver.wait(timeout=60)
