"""The process table re-reads only what may have changed, and still sees every change that
matters: new and gone processes, Ray workers retitled, re-parented processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from fsd_daemon.gpu.proctable import RAY_TITLE_PREFIX, RAYLET, ProcessTable
from fsd_daemon.sim.harness import wait_for

# A process that names itself (comm, as Ray's setproctitle does), optionally starts one child
# that later renames itself, prints the child's pid and sleeps.
_NAMED = """
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
child = None
if len(sys.argv) > 2:
    child = subprocess.Popen([sys.executable, "-c", '''
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, b"python3", 0, 0, 0)
print("x", flush=True)
sys.stdin.readline()
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
print("y", flush=True)
time.sleep(120)
''', sys.argv[2]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    print(child.pid, flush=True)
    sys.stdin.readline()
    child.stdin.write("go\\n"); child.stdin.flush()
    child.stdout.readline()
    print("renamed", flush=True)
else:
    print(os.getpid(), flush=True)
time.sleep(120)
"""


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
    for pid in _grandchildren:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _grandchildren.clear()


# Children of the named processes, stopped by PID too (a killed parent leaves them behind).
_grandchildren: list[int] = []


def start_named(
    procs: list[subprocess.Popen[str]], *names: str
) -> tuple[subprocess.Popen[str], int]:
    p = subprocess.Popen(
        [sys.executable, "-c", _NAMED, *names],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    procs.append(p)
    assert p.stdout is not None
    pid = int(p.stdout.readline())
    if pid != p.pid:
        _grandchildren.append(pid)
    return p, pid


def test_steady_reads_skip_unchanged_processes(spawned: list[subprocess.Popen[str]]) -> None:
    """With 100 quiet processes, a second read re-reads almost nothing; a new process is found
    and a gone one dropped."""
    for _ in range(100):
        spawned.append(
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], text=True)
        )
    table = ProcessTable()
    first = table.read()
    assert all(p.pid in first for p in spawned)
    # Ray workers are re-read by design (they retitle): on a machine that runs Ray clusters
    # (the suite's own, anyone's) they are not what this test counts.
    raylets = {pid for pid, p in first.items() if p.name == RAYLET}
    ray_workers = sum(
        1 for p in first.values() if p.ppid in raylets or p.name.startswith(RAY_TITLE_PREFIX)
    )
    before = table.stat_reads
    table.read()
    # Only processes that appeared meanwhile (the machine is shared) or are Ray workers.
    assert table.stat_reads - before < ray_workers + 30, (table.stat_reads - before, ray_workers)
    gone = spawned.pop()
    gone.kill()
    gone.wait()
    _, new_pid = start_named(spawned, "fsd-newcomer")
    third = table.read()
    assert gone.pid not in third
    assert third[new_pid].name == "fsd-newcomer"


def test_a_raylet_child_retitled_is_seen(spawned: list[subprocess.Popen[str]]) -> None:
    """A Ray worker (a child of a process named raylet) renamed ray::ClassName after the first
    read is seen under its new name at the next one."""
    raylet, worker_pid = start_named(spawned, "raylet", "ray::vLLMHttpSe")
    table = ProcessTable()
    assert table.read()[worker_pid].name == "python3"
    assert raylet.stdin is not None and raylet.stdout is not None
    raylet.stdin.write("go\n")
    raylet.stdin.flush()
    assert raylet.stdout.readline().strip() == "renamed"
    assert table.read()[worker_pid].name == "ray::vLLMHttpSe"


def test_a_reparented_process_is_read_again(spawned: list[subprocess.Popen[str]]) -> None:
    """When a process's parent exits, its new parent is what the table says."""
    parent, child_pid = start_named(spawned, "fsd-parent", "fsd-child")
    table = ProcessTable()
    assert table.read()[child_pid].ppid == parent.pid
    parent.kill()
    parent.wait()
    try:
        wait_for(lambda: table.read()[child_pid].ppid != parent.pid, 10, 0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child_pid, signal.SIGKILL)
