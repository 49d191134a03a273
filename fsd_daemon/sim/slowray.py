"""Backends for the Ray bridge child that answer like Ray, slowly on purpose.

Loaded by name in the bridge's child process (``RayBridge(backend="fsd_daemon.sim.slowray:
SlowBackend", backend_options=...)``), so requests and answers go through the real bridge
protocol: the pipe, pickling, the child's deadline, its thread pool and in-flight calls.

``SlowBackend`` models a remote GCS: each ``get_actor`` takes ``lookup_seconds`` (a GCS round
trip) and each ``get_server_address`` call ``call_seconds`` (an actor method call), with the
actor's address derived from its id. Lookups block a worker thread, as Ray's do; calls run
concurrently, as Ray's remote calls do. With ``retain_bytes_per_lookup`` it also keeps that
much memory for every actor it looked up, for as long as it lives, as a Ray driver keeps its
actor handles (ray-project/ray#9342), only more, so that the growth is plain to see.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any


def address_of(actor_id: str) -> tuple[str, int]:
    """The (ip, port) the fake actor ``actor_id`` serves at (tests compute it too)."""
    return ("127.0.0.1", 10_000 + int(actor_id[-6:], 16) % 50_000)


class SlowBackend:
    def __init__(
        self,
        lookup_seconds: float = 0.01,
        call_seconds: float = 0.02,
        connect_seconds: float = 0.0,
        hang_names: tuple[str, ...] = (),
        retain_bytes_per_lookup: int = 0,
    ) -> None:
        self.lookup_seconds = lookup_seconds
        self.call_seconds = call_seconds
        self.connect_seconds = connect_seconds
        self.hang_names = set(hang_names)
        self._calls = concurrent.futures.ThreadPoolExecutor(max_workers=64)
        self._lock = threading.Lock()
        self.lookups = 0
        self.retain_bytes_per_lookup = retain_bytes_per_lookup
        self._retained: list[bytes] = []

    def connect(self, address: str) -> str:
        time.sleep(self.connect_seconds)
        return f"fake Ray at {address}"

    def start_call(self, actor_id: str, name: str, namespace: str) -> Any:
        time.sleep(self.lookup_seconds)
        with self._lock:
            self.lookups += 1
            if self.retain_bytes_per_lookup:
                # Written, not only reserved: pages a driver really uses count in its RSS.
                self._retained.append(b"h" * self.retain_bytes_per_lookup)
        if name.startswith("missing"):
            raise ValueError(f"Failed to look up actor with name '{name}'.")
        hang = name in self.hang_names
        return self._calls.submit(self._serve, actor_id, hang)

    def _serve(self, actor_id: str, hang: bool) -> tuple[str, int]:
        time.sleep(3600 if hang else self.call_seconds)
        return address_of(actor_id)

    def wait(self, calls: list[Any], timeout: float) -> list[Any]:
        if not calls:
            return []
        done, _ = concurrent.futures.wait(calls, timeout=max(0.0, timeout))
        return list(done)

    def result(self, call: Any) -> Any:
        return call.result(timeout=0)

    def ports(self, node_ids: list[str], timeout: float) -> dict[str, int]:
        return {node_id: 9000 + i for i, node_id in enumerate(sorted(node_ids))}

    def components(self, timeout: float) -> dict[str, str]:
        return {}


class FailingBackend:
    """A driver that cannot connect, with Ray's own words."""

    def __init__(self, message: str = "InvalidAuthToken: Authentication token is missing") -> None:
        self.message = message

    def connect(self, address: str) -> str:
        raise ConnectionError(self.message)

    def start_call(self, actor_id: str, name: str, namespace: str) -> Any:
        raise AssertionError("never connected")

    def wait(self, calls: list[Any], timeout: float) -> list[Any]:
        return []

    def result(self, call: Any) -> Any:
        raise AssertionError("never connected")

    def ports(self, node_ids: list[str], timeout: float) -> dict[str, int]:
        return {}

    def components(self, timeout: float) -> dict[str, str]:
        return {}


class NoisyFailingBackend(FailingBackend):
    """A driver that writes what Ray's does when the GCS turns it away before it fails: a
    glog C++ stack dump (ray/_raylet.so, global_state_accessor.cc, as seen after a GCS restart)
    and a Python traceback, on its stderr, at the file descriptor."""

    def connect(self, address: str) -> str:
        import os
        import traceback

        dump = (
            "[2026-12-04 07:37:55,508 C 28146 28160] global_state_accessor.cc:111:  An "
            "unexpected system state has occurred.\n*** StackTrace Information ***\n"
            "/x/ray/_raylet.so(+0x1812b9a) [0x7f2170412b9a] ray::operator<<()\n"
            "/lib/x86_64-linux-gnu/libc.so.6(+0x891f5) [0x7f21716a71f5]\n\n"
        )
        os.write(2, dump.encode())
        try:
            raise ConnectionError(self.message)
        except ConnectionError:
            traceback.print_exc()
        raise ConnectionError(self.message)
