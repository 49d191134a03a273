"""Two network namespaces joined by a veth pair: two "machines" with addresses of their own.

Used by the two-node test. Only what this module creates is touched: its two namespaces and
the veth pair inside them (the host's interfaces and routes are never changed). Every process
started in a namespace is stopped by its PID on :meth:`NetnsPair.close`, found through
``ip netns pids`` (a namespace that this module created holds only processes it started), so
nothing outlives the test even when Ray's own children were re-parented or the test failed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000


def can_create_namespaces() -> str | None:
    """None when this process can create network namespaces, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    return None


def _enter(netns_path: str) -> None:
    """Move the calling thread into the network namespace (setns(2) is per thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {netns_path}: {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespace:
    """One network namespace: run commands in it, and call Python code from a thread that
    lives in it (sockets created there belong to the namespace)."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.processes: list[subprocess.Popen[bytes]] = []
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def start(
        self, argv: Sequence[str], log_path: Path, env: dict[str, str], **popen: Any
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in this namespace with exactly ``env`` (nothing inherited), output
        appended to ``log_path``, in its own session."""
        log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - the child keeps its own copy
        try:
            proc = subprocess.Popen(
                self.argv(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]),
                stdout=popen.pop("stdout", log),
                stderr=log,
                stdin=popen.pop("stdin", subprocess.DEVNULL),
                start_new_session=True,
                **popen,
            )
        finally:
            log.close()
        self.processes.append(proc)
        return proc

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """``fn()`` run in a thread inside this namespace."""
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(
                1, initializer=_enter, initargs=(f"/run/netns/{self.name}",)
            )
        return self._thread.submit(fn).result(timeout)

    def pids(self) -> list[int]:
        done = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(p) for p in done.stdout.split() if p.isdigit()]

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM every process in the namespace by its PID, then SIGKILL what is left."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        for proc in self.processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._thread is not None:
            self._thread.shutdown(wait=False)


class NetnsPair:
    """``head`` and ``worker``: two namespaces on ``10.213.<subnet>.0/24`` joined by a veth."""

    def __init__(self, tag: str, subnet: int) -> None:
        self.tag = tag
        self.head = Namespace(f"fsd-{tag}-h", f"10.213.{subnet}.1")
        self.worker = Namespace(f"fsd-{tag}-w", f"10.213.{subnet}.2")
        self._created: list[str] = []

    def __enter__(self) -> NetnsPair:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    def _create(self) -> None:
        # Interface names are at most 15 characters and exist only inside our namespaces.
        veth_h, veth_w = f"{self.tag[:10]}h0", f"{self.tag[:10]}w0"
        for ns in (self.head, self.worker):
            self._ip("netns", "add", ns.name)
            self._created.append(ns.name)
        # Created inside the head namespace, so the pair never exists among the host's links.
        self._ip(
            "-n",
            self.head.name,
            "link",
            "add",
            veth_h,
            "type",
            "veth",
            "peer",
            "name",
            veth_w,
            "netns",
            self.worker.name,
        )
        for ns, dev in ((self.head, veth_h), (self.worker, veth_w)):
            self._ip("-n", ns.name, "addr", "add", f"{ns.address}/24", "dev", dev)
            self._ip("-n", ns.name, "link", "set", "lo", "up")
            self._ip("-n", ns.name, "link", "set", dev, "up")

    def close(self) -> None:
        for ns in (self.worker, self.head):
            if ns.name in self._created:
                ns.stop_all()
        for name in reversed(self._created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._created.clear()
