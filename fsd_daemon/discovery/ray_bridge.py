"""Addresses and ports that only a Ray driver can learn, asked from a child process.

The state API lists actors but not their HTTP ports (verl binds port 0 and asks the actor), and
nodes but not their metrics export ports. Both need ``ray.init``. A Ray driver, though, is
fate-shared with the cluster: when the GCS goes away its core worker may end the process, and a
call into a hung actor blocks. So the driver lives in a child process (the bridge) that the
daemon can time out, kill by PID and start again, and the daemon itself never calls
``ray.init``.

Protocol over a ``multiprocessing`` pipe, one request and one reply at a time:
``("resolve", [(actor_id, name, namespace), ...], timeout)`` ->
``{actor_id: (value, error)}`` for the calls that finished (the others are still running in
the child and are collected by a later request); ``("ports", [node_id, ...])`` ->
``{node_id: metrics_export_port}``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Mapping
from multiprocessing.connection import Connection
from typing import Any

from fsd_daemon.discovery.base import ActorRecord, Resolution

log = logging.getLogger(__name__)

_START_TIMEOUT = 60.0  # importing ray and connecting takes seconds on a loaded head node
_REPLY_MARGIN = 3.0  # the child's own work beyond the call timeout (get_actor lookups)
_MAX_RESTART_DELAY = 30.0


class RayBridge:
    """The daemon's side of the bridge: starts, talks to, and replaces the child."""

    def __init__(self, address: str, *, timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self._ready = False
        self._started_at = 0.0
        self._restart_delay = 1.0
        self._next_start = 0.0
        self._problem: str | None = None

    # -- Resolver ------------------------------------------------------------------------------

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]:
        batch = [(a.actor_id, a.name, a.namespace) for a in actors if a.name]
        if not batch:
            return {}
        reply = self._ask(("resolve", batch, self.timeout), self.timeout + _REPLY_MARGIN)
        if reply is None:
            return {}
        return {
            actor_id: Resolution(address=value, error=error)
            for actor_id, (value, error) in reply.items()
        }

    def metrics_ports(self, node_ids: Iterable[str]) -> Mapping[str, int]:
        reply = self._ask(("ports", list(node_ids)), self.timeout + _REPLY_MARGIN)
        return reply or {}

    @property
    def ready(self) -> bool:
        """Whether requests can be answered now (starts the child if needed; never blocks)."""
        return self._ensure_ready()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the child is connected (one-shot commands only; the loop never waits)."""
        deadline = time.monotonic() + timeout
        while not self._ensure_ready():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def problem(self) -> str | None:
        """The last failure of the child (cannot connect, exited, timed out), until a request
        succeeds again."""
        return self._problem

    def close(self) -> None:
        self._stop_child()

    def restart(self) -> None:
        """Drop the child now (a new Ray session); the next request starts a fresh one."""
        self._stop_child()
        self._next_start = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- child management ----------------------------------------------------------------------

    def _ask(self, request: tuple[Any, ...], reply_timeout: float) -> Any:
        if not self._ensure_ready():
            return None
        assert self._conn is not None
        try:
            self._conn.send(request)
            if self._conn.poll(reply_timeout):
                kind, payload = self._conn.recv()
                if kind == "ok":
                    self._restart_delay = 1.0
                    self._problem = None
                    return payload
                self._problem = f"Ray bridge failed a request: {payload}"
                log.warning("Ray bridge failed a request: %s; restarting it", payload)
            else:
                self._problem = f"Ray bridge did not answer within {reply_timeout:.1f}s"
                log.warning(
                    "Ray bridge (pid %s) did not answer within %.1fs; restarting it",
                    self.pid,
                    reply_timeout,
                )
        except (EOFError, OSError) as exc:
            self._problem = f"Ray bridge is gone: {exc}"
            log.warning("Ray bridge (pid %s) is gone (%s); restarting it", self.pid, exc)
        self._fail()
        return None

    def _ensure_ready(self) -> bool:
        """True when a connected child is ready. Never blocks on a starting child."""
        if self._proc is not None and not self._proc.is_alive():
            self._problem = f"Ray bridge exited with {self._proc.exitcode}"
            log.warning("Ray bridge (pid %s) exited with %s", self._proc.pid, self._proc.exitcode)
            self._fail()
        if self._proc is None:
            if time.monotonic() < self._next_start:
                return False
            self._start_child()
            return False
        if self._ready:
            return True
        assert self._conn is not None
        try:
            if self._conn.poll(0):
                kind, payload = self._conn.recv()
                if kind == "ready":
                    self._ready = True
                    log.info("Ray bridge (pid %s) connected to %s", self.pid, payload)
                    return True
                self._problem = f"Ray bridge cannot connect: {payload}"
                log.warning("Ray bridge could not connect to Ray: %s", payload)
                self._fail()
                return False
        except (EOFError, OSError):
            self._fail()
            return False
        if time.monotonic() - self._started_at > _START_TIMEOUT:
            self._problem = f"Ray bridge did not connect within {_START_TIMEOUT:.0f}s"
            log.warning("Ray bridge did not connect within %.0fs; restarting it", _START_TIMEOUT)
            self._fail()
        return False

    def _start_child(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=bridge_main,
            args=(child_conn, self.address, os.getpid()),
            name="fsd-ray-bridge",
            daemon=True,
        )
        proc.start()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        self._ready = False
        self._started_at = time.monotonic()
        log.debug("started Ray bridge pid %s", proc.pid)

    def _fail(self) -> None:
        self._stop_child()
        self._next_start = time.monotonic() + self._restart_delay
        self._restart_delay = min(self._restart_delay * 2, _MAX_RESTART_DELAY)

    def _stop_child(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc, self._conn, self._ready = None, None, False
        if conn is not None:
            conn.close()
        if proc is not None and proc.is_alive():
            # SIGKILL: a driver stuck in a Ray call does not answer SIGTERM in time, and the
            # child holds nothing that needs a clean shutdown.
            proc.kill()
        if proc is not None:
            proc.join(timeout=5)


# -- the child -----------------------------------------------------------------------------------


def bridge_main(conn: Connection, address: str, parent_pid: int) -> None:
    """Entry point of the child process: connect as a Ray driver and answer requests."""
    logging.basicConfig(level=logging.WARNING, format="fsd-ray-bridge: %(levelname)s %(message)s")
    try:
        import ray

        ray.init(
            address=address,
            namespace="fsd_daemon",
            logging_level=logging.ERROR,
            log_to_driver=False,
            include_dashboard=False,
        )
    except Exception as exc:
        conn.send(("error", f"ray.init(address={address!r}) failed: {exc}"))
        return
    conn.send(("ready", ray.get_runtime_context().gcs_address))
    inflight: dict[str, Any] = {}
    while True:
        if not conn.poll(1.0):
            if os.getppid() != parent_pid:
                return  # the daemon is gone; so are we
            continue
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if request[0] == "resolve":
                conn.send(("ok", _resolve(ray, inflight, request[1], request[2])))
            elif request[0] == "ports":
                conn.send(("ok", _ports(ray, request[1])))
            else:
                conn.send(("error", f"unknown request {request[0]!r}"))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _resolve(
    ray: Any, inflight: dict[str, Any], batch: list[tuple[str, str, str]], timeout: float
) -> dict[str, tuple[Any, str | None]]:
    results: dict[str, tuple[Any, str | None]] = {}
    wanted = {actor_id for actor_id, _, _ in batch}
    # Calls for actors nobody asks about any more (gone) are forgotten, not awaited.
    for actor_id in list(inflight.keys() - wanted):
        del inflight[actor_id]
    older = list(inflight.values())  # calls still running from earlier requests
    issued: list[Any] = []
    for actor_id, name, namespace in batch:
        if actor_id in inflight:
            continue  # still running from an earlier request: one call per actor at a time
        try:
            handle = ray.get_actor(name, namespace=namespace or None)
            # A name is reused when a job restarts a replica: make sure it is the same actor.
            own_id = getattr(handle, "_actor_id", None)
            found = own_id.hex() if own_id is not None else actor_id
            if found != actor_id:
                results[actor_id] = (None, f"name {name!r} now belongs to another actor")
                continue
            inflight[actor_id] = handle.get_server_address.remote()
            issued.append(inflight[actor_id])
        except Exception as exc:
            results[actor_id] = (None, f"{type(exc).__name__}: {_last_line(exc)}")
    if inflight:
        # Only the calls made now are waited for (up to the timeout); calls still in flight
        # from earlier requests are only collected if done. So a hung actor costs the wait
        # once, when first asked, not at every poll while its call hangs.
        ready_set: set[Any] = set()
        for refs, wait in ((issued, timeout), (older, 0)):
            if refs:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=wait, fetch_local=True)
                ready_set.update(ready)
        for actor_id, ref in list(inflight.items()):
            if ref not in ready_set:
                continue
            del inflight[actor_id]
            try:
                value = ray.get(ref, timeout=0)
            except Exception as exc:
                results[actor_id] = (None, f"{type(exc).__name__}: {_last_line(exc)}")
                continue
            if isinstance(value, list):
                value = tuple(value)
            if not isinstance(value, (tuple, str)):
                results[actor_id] = (None, f"get_server_address() returned {type(value).__name__}")
                continue
            results[actor_id] = (value, None)
    return results


def _ports(ray: Any, node_ids: list[str]) -> dict[str, int]:
    wanted = set(node_ids)
    ports: dict[str, int] = {}
    for node in ray.nodes():
        node_id = node.get("NodeID")
        port = node.get("MetricsExportPort")
        if node_id in wanted and node.get("Alive") and isinstance(port, int) and port > 0:
            ports[node_id] = port
    return ports


def _last_line(exc: BaseException) -> str:
    # A RayTaskError's text is the remote traceback; its last line says what went wrong.
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else ""
