"""Addresses and ports that only a Ray driver can learn, asked from a child process.

The state API lists actors but not their HTTP ports (verl binds port 0 and asks the actor), and
nodes but not their metrics export ports. Both need ``ray.init``. A Ray driver, though, is
fate-shared with the cluster (its core worker may end the process when the GCS goes away), a
call into a hung actor blocks, and a driver costs about 100 MiB. So the driver lives in a child
process (the bridge) that the daemon starts when it first needs it, times out, kills by PID and
starts again. Kept connected (``keep_connected``, the daemon's default) it stays up while the
cluster is quiet, so that the first server after a quiet hour is resolved at once: a fresh child
takes seconds to import Ray and connect (measured 2.5 s for the first server after a quiet
minute, BENCHMARKS.md). Otherwise it is stopped once it has been idle for ``idle_seconds``.

A Ray driver that looks up and calls actors grows for as long as it lives, and nothing it
offers gives the memory back (its core worker keeps what it learnt of every actor it met:
ray-project/ray#9342; BENCHMARKS.md "Soak" and bench/driver_memory.py measure it). Under
steady churn the child is never idle long enough to be stopped, so it is stopped once it
has answered ``recycle_after`` lookups or has lived ``max_age_seconds``, at a moment when it
is not busy (the way gunicorn's ``max_requests`` and Celery's
``max_tasks_per_child`` bound a worker's growth). As after an idle stop, the next request
starts a fresh child and the warm-up gate stays open; a bridge kept connected starts the
replacement at once instead, and replaces a quiet child at ``max_age_seconds`` by itself.
A cold start with thousands of servers is never cut short: the child is busy until it has
worked through them, and is replaced after.

Protocol over a ``multiprocessing`` pipe, one request and one reply at a time:
``("resolve", [(actor_id, name, namespace), ...], timeout)`` -> ``("ok", ({actor_id: (value,
error)}, busy))`` with what finished within ``timeout``, and whether lookups, or calls still
within their first ``timeout``, are running; ``("ports", [node_id, ...], timeout)`` ->
``("ok", {node_id: port})``; ``("components", timeout)`` -> ``("ok", {component: address})``.
The child answers by its deadline whatever is still running:
lookups and calls go on in the child and are collected by later requests (progress is kept
across polls); an actor no longer asked about is forgotten. At most ``concurrency`` lookups
run at once, so 10,000 new servers are a queue the child works through, never 10,000 threads.
Errors: ``("error", text)``; before anything else the child sends ``("ready", description)``
or ``("error", text)`` when it cannot connect.

The child talks to Ray through a backend (``RayBackend``); tests give it another one by name
(``backend="module:Class"``) that answers like Ray, slowly on purpose, through this same
protocol.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from multiprocessing.connection import Connection
from typing import Any, Protocol

from fsd_daemon.discovery.base import ActorRecord, Resolution
from fsd_daemon.discovery.ray_auth import RayAuth, RayAuthError, is_rejection, load_auth
from fsd_daemon.mixin import names
from fsd_daemon.plumbing.backoff import Backoff
from fsd_daemon.plumbing.childlog import follow
from fsd_daemon.plumbing.periodic import PeriodicWorker

log = logging.getLogger(__name__)

_START_TIMEOUT = 60.0  # importing ray and connecting takes seconds on a loaded head node
_REPLY_MARGIN = 3.0  # pickling a large answer and scheduling, beyond the child's deadline
# A replacement costs one driver start (a few seconds of CPU and one driver job in the GCS);
# growth stays within what a busy driver gains in the time it takes to answer recycle_after
# lookups, and at most an hour. A child that is never quiet is replaced at twice the age.
RECYCLE_AFTER = 128
MAX_AGE_SECONDS = 3600.0
DEFAULT_BACKEND = "fsd_daemon.discovery.ray_bridge:RayBackend"
# A child kept connected is replaced for its age only after this long without a request, so
# that a replacement never lands in the middle of a wave of new servers.
_QUIET_BEFORE_REPLACING = 10.0


class RayBridge:
    """The daemon's side of the bridge: starts, talks to, stops and replaces the child."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 2.0,
        idle_seconds: float = 60.0,
        concurrency: int = 32,
        recycle_after: int = RECYCLE_AFTER,
        max_age_seconds: float = MAX_AGE_SECONDS,
        backend: str = DEFAULT_BACKEND,
        backend_options: Mapping[str, Any] | None = None,
        auth: RayAuth | None = None,
        keep_connected: bool = False,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.idle_seconds = idle_seconds
        self.keep_connected = keep_connected
        self.concurrency = concurrency
        self.recycle_after = recycle_after
        self.max_age_seconds = max_age_seconds
        self.backend = backend
        self.backend_options = dict(backend_options or {})
        self._auth = auth
        self._auth_given = auth is not None  # fixed by the caller: never read again
        self._rejected = False
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.RLock()  # the poll thread and the idle stopper
        self._proc: Any = None
        self._conn: Connection | None = None
        self._ready = False
        self._warm = False  # answered once: the warm-up gate stays open across idle stops
        self._started_at = 0.0
        self._last_used = 0.0
        self._backoff = Backoff(base=1.0, cap=30.0)
        self._next_start = 0.0
        self._problem: str | None = None
        self._answered = 0  # lookups the current child has answered (value or error)
        self.starts = 0
        self.recycles = 0
        self._idle = PeriodicWorker("ray-bridge-idle", self._tend, max(0.05, idle_seconds / 4))

    # -- Resolver ------------------------------------------------------------------------------

    def resolve_addresses(self, actors: Iterable[ActorRecord]) -> Mapping[str, Resolution]:
        batch = [(a.actor_id, a.name, a.namespace) for a in actors if a.name]
        if not batch:
            return {}
        reply = self._ask(("resolve", batch, self.timeout), self.timeout + _REPLY_MARGIN)
        if reply is None:
            return {}
        answers, busy = reply
        self._recycle_if_due(answered=len(answers), busy=busy)
        return {
            actor_id: Resolution(address=value, error=error)
            for actor_id, (value, error) in answers.items()
        }

    def metrics_ports(self, node_ids: Iterable[str]) -> Mapping[str, int]:
        wanted = list(node_ids)
        if not wanted:
            return {}
        reply = self._ask(("ports", wanted, self.timeout), self.timeout + _REPLY_MARGIN)
        return reply or {}

    def ray_components(self) -> Mapping[str, str]:
        reply = self._ask(("components", self.timeout), self.timeout + _REPLY_MARGIN)
        return reply or {}

    def problem(self) -> str | None:
        """None when fine; else one line saying what fails."""
        return self._problem

    @property
    def ready(self) -> bool:
        """Whether requests can be answered now, or were answered before the child was
        stopped for being idle (starts a child never connected yet; never blocks)."""
        with self._lock:
            if self._warm and self._proc is None:
                return True  # stopped while idle: it starts again when something needs it
            return self._ensure_ready()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the child is connected (one-shot commands only; the loop never waits)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._ensure_ready():
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def close(self) -> None:
        self._idle.stop()
        with self._lock:
            self._stop_child()

    def _child_said(self, summary: str) -> None:
        """An event in the child's output; a token rejection means the token may have been
        rotated: read it again before the next start."""
        if is_rejection(summary):
            self._rejected = True

    def reload_auth(self) -> bool:
        """Decide token mode and find the token again (SIGHUP, a rejection): a rotated token
        file is read anew. A change restarts the child with it. True when it changed."""
        with self._lock:
            self._rejected = False
            if self._auth_given:
                return False
            try:
                auth = load_auth()
            except RayAuthError:
                self._auth = None  # the next start says why, in one line
                return True
            if auth == self._auth:
                return False
            self._auth = auth
            self._stop_child()
            self._next_start = 0.0
            return True

    def restart(self) -> None:
        """Drop the child now (a new Ray session); the next request starts a fresh one.

        Not warm any more: nothing has been answered in the new session, so ``ready`` is false
        until the new child connects, and the daemon's warm-up gate holds the files meanwhile
        (else old servers expiring under grace emptied rollout.json while the new session's
        servers were not resolved yet: the soak bench saw it empty for 1.3 to 1.8 s)."""
        with self._lock:
            self._warm = False
            self._stop_child()
            self._next_start = 0.0
            self._backoff.succeeded()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    # -- child management ----------------------------------------------------------------------

    def _recycle_if_due(self, answered: int, busy: bool) -> None:
        """Stop the child once it has answered ``recycle_after`` lookups or lived
        ``max_age_seconds`` (see the module's docstring), when it is not ``busy``: nothing
        is lost, and the next request starts a fresh one."""
        with self._lock:
            self._answered += answered
            if self._proc is None or not self._ready:
                return
            age = time.monotonic() - self._started_at
            due = self._answered >= self.recycle_after or age >= self.max_age_seconds
            if not due or (busy and age < 2 * self.max_age_seconds):
                return
            log.info(
                "Ray bridge (pid %s) answered %d lookups in %.0f s: replacing it "
                "(a Ray driver grows with every actor it meets)",
                self.pid,
                self._answered,
                age,
            )
            self.recycles += 1
            self._stop_child()  # _warm stays: the next request starts a fresh child
            if self.keep_connected:
                self._start_child()  # connects in the background, before it is needed

    def _ask(self, request: tuple[Any, ...], reply_timeout: float) -> Any:
        with self._lock:
            self._last_used = time.monotonic()
            if not self._ensure_ready():
                return None
            assert self._conn is not None
            try:
                self._conn.send(request)
                if self._conn.poll(reply_timeout):
                    kind, payload = self._conn.recv()
                    self._last_used = time.monotonic()
                    if kind == "ok":
                        self._backoff.succeeded()
                        self._set_problem(None)
                        return payload
                    self._set_problem(f"Ray bridge failed a request: {payload}")
                else:
                    self._set_problem(
                        f"Ray bridge (pid {self.pid}) did not answer within {reply_timeout:.1f} s"
                    )
            except (EOFError, OSError) as exc:
                self._set_problem(f"Ray bridge (pid {self.pid}) is gone ({exc})")
            self._fail()
            return None

    def _ensure_ready(self) -> bool:
        """True when a connected child is ready. Never blocks on a starting child."""
        if self._proc is not None and not self._proc.is_alive():
            # A child that could not connect says why and exits: its last word may still be
            # in the pipe, and it says more than the exit code.
            self._set_problem(
                self._last_word()
                or (f"Ray bridge (pid {self._proc.pid}) exited with {self._proc.exitcode}")
            )
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
                    self._ready = self._warm = True
                    self._set_problem(None)
                    log.info("Ray bridge (pid %s) connected: %s", self.pid, payload)
                    return True
                if is_rejection(str(payload)):
                    self._rejected = True  # read the token again before the next start
                self._set_problem(f"Ray bridge cannot connect: {payload}")
                self._fail()
                return False
        except (EOFError, OSError):
            self._set_problem(f"Ray bridge (pid {self.pid}) exited while connecting")
            self._fail()
            return False
        if time.monotonic() - self._started_at > _START_TIMEOUT:
            self._set_problem(f"Ray bridge did not connect within {_START_TIMEOUT:.0f} s")
            self._fail()
        return False

    def _last_word(self) -> str | None:
        """The error an exited child sent before it went, if it is still unread."""
        try:
            if self._conn is not None and self._conn.poll(0):
                kind, payload = self._conn.recv()
                if kind == "error":
                    if is_rejection(str(payload)):
                        self._rejected = True  # read the token again before the next start
                    return f"Ray bridge cannot connect: {payload}"
        except (EOFError, OSError, ValueError, TypeError):
            pass
        return None

    def _set_problem(self, problem: str | None) -> None:
        """Log a problem when it starts or changes and when it ends; never every poll."""
        if problem == self._problem:
            return
        if problem is not None:
            log.warning("%s", problem)
        elif self._problem is not None:
            log.info("Ray bridge works again (was: %s)", self._problem)
        self._problem = problem

    def _child_env(self) -> dict[str, str] | str:
        """Token mode for the child, decided here as Ray's CLI would; or the error text."""
        auth = self._auth
        if auth is None:
            try:
                auth = load_auth()
            except RayAuthError as exc:
                return str(exc)
        self._auth = auth
        return auth.child_env()

    def _start_child(self) -> None:
        if self._rejected:
            self.reload_auth()
        env = self._child_env()
        if isinstance(env, str):
            self._set_problem(f"Ray bridge not started: {env}")
            self._next_start = time.monotonic() + self._backoff.failed()
            return
        hint = self._auth.rejected_hint() if self._auth is not None else ""
        parent_conn, child_conn = self._ctx.Pipe()
        output_read, output_write = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=bridge_main,
            args=(child_conn, self.address, os.getpid()),
            kwargs={
                "output": output_write,
                "env": env,
                "backend": self.backend,
                "backend_options": self.backend_options,
                "concurrency": self.concurrency,
                "auth_hint": hint,
            },
            name="fsd-ray-bridge",
            daemon=True,
        )
        proc.start()
        child_conn.close()
        output_write.close()
        # The child's stdout and stderr (Ray's driver: tracebacks, C++ stack dumps) reach our
        # log as one line per event.
        follow(os.dup(output_read.fileno()), f"Ray bridge (pid {proc.pid})", self._child_said)
        output_read.close()
        self._proc, self._conn = proc, parent_conn
        self._ready = False
        self._answered = 0
        self._started_at = self._last_used = time.monotonic()
        self.starts += 1
        if self.idle_seconds > 0 or self.keep_connected:
            self._idle.start()
        log.debug("started Ray bridge pid %s", proc.pid)

    def _tend(self) -> float | None:
        """Every ``idle_seconds / 4``: stop an idle child; or, kept connected, replace one
        that is due (quiet for a while and older than ``max_age_seconds``) and start one
        that is missing (exited, or stopped after a failure, once its backoff has passed)."""
        if self.keep_connected:
            self._keep_connected()
        else:
            self._stop_if_idle()
        return None

    def _keep_connected(self) -> None:
        with self._lock:
            if not self._warm:
                return  # never connected in this session: the poll's requests start it
            if self._proc is not None and self._ready:
                now = time.monotonic()
                quiet = now - self._last_used >= _QUIET_BEFORE_REPLACING
                if quiet and now - self._started_at >= self.max_age_seconds:
                    log.info(
                        "Ray bridge (pid %s) connected for %.0f s: replacing it "
                        "(a Ray driver grows while it lives)",
                        self.pid,
                        now - self._started_at,
                    )
                    self.recycles += 1
                    self._stop_child()
            # Starts a missing child (after its backoff) and notes when a starting one is
            # ready; never blocks.
            self._ensure_ready()

    def _stop_if_idle(self) -> None:
        with self._lock:
            if self._proc is not None and self._ready:
                idle = time.monotonic() - self._last_used
                if idle >= self.idle_seconds:
                    log.info("Ray bridge (pid %s) idle for %.0f s: stopping it", self.pid, idle)
                    self._stop_child()

    def _fail(self) -> None:
        self._stop_child()
        self._next_start = time.monotonic() + self._backoff.failed()

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


class Backend(Protocol):
    """How the child reaches Ray. ``start_call`` runs in worker threads, the rest in the
    child's main thread."""

    def connect(self, address: str) -> str: ...

    def start_call(self, actor_id: str, name: str, namespace: str) -> Any: ...

    def wait(self, calls: list[Any], timeout: float) -> list[Any]: ...

    def result(self, call: Any) -> Any: ...

    def ports(self, node_ids: list[str], timeout: float) -> dict[str, int]: ...

    def components(self, timeout: float) -> dict[str, str]: ...


class ActorReplaced(Exception):
    """The name now belongs to another actor (a job restarted the replica)."""


class RayBackend:
    """The real one: a Ray driver connected to the cluster."""

    def __init__(self) -> None:
        self._ray: Any = None

    def connect(self, address: str) -> str:
        temp_dir = private_temp_dir()
        if temp_dir is not None:
            # Ray's temp dir is read-only here (systemd's ProtectSystem=strict). The driver's
            # own log files would go to the cluster's session dir in it (Ray 2.54+ aborts
            # when spdlog cannot open them): send them to our stderr, warnings only.
            os.environ.setdefault("RAY_LOG_TO_STDERR", "1")
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "warning")
        import ray

        self._ray = ray
        options: dict[str, Any] = {}
        if temp_dir is not None and _version(ray.__version__) < _CONNECT_CREATES_NO_DIRS:
            # Up to Ray 2.53 a connecting driver creates and chmods <temp>/<session>/...
            # (python/ray/_private/node.py _init_temp): give it a writable one. Later
            # releases create nothing when connecting, and wait forever for port files in
            # a temp dir that is not the cluster's, so they keep the default.
            options["_temp_dir"] = temp_dir
            _seed_session_dir(ray, address, temp_dir)
        ray.init(
            address=address,
            namespace="fsd_daemon",
            logging_level=logging.ERROR,
            log_to_driver=False,
            include_dashboard=False,
            **options,
        )
        where = f" (temp dir {temp_dir}, logs to stderr)" if temp_dir else ""
        return f"{ray.get_runtime_context().gcs_address}, Ray {ray.__version__}{where}"

    def start_call(self, actor_id: str, name: str, namespace: str) -> Any:
        handle = self._ray.get_actor(name, namespace=namespace or None)
        # A name is reused when a job restarts a replica: make sure it is the same actor.
        own_id = getattr(handle, "_actor_id", None)
        if own_id is not None and own_id.hex() != actor_id:
            raise ActorReplaced(f"name {name!r} now belongs to another actor")
        return handle.get_server_address.remote()

    def wait(self, calls: list[Any], timeout: float) -> list[Any]:
        if not calls:
            return []
        ready, _ = self._ray.wait(
            calls, num_returns=len(calls), timeout=max(0.0, timeout), fetch_local=True
        )
        return list(ready)

    def result(self, call: Any) -> Any:
        return self._ray.get(call, timeout=0)

    def ports(self, node_ids: list[str], timeout: float) -> dict[str, int]:
        wanted = set(node_ids)
        found: dict[str, int] = {}
        for node in self._ray.nodes():
            node_id = node.get("NodeID")
            port = node.get("MetricsExportPort")
            if node_id in wanted and node.get("Alive") and isinstance(port, int) and port > 0:
                found[node_id] = port
        return found

    def components(self, timeout: float) -> dict[str, str]:
        """The addresses Ray's own service-discovery writer adds to the nodes' ports
        (PrometheusServiceDiscoveryWriter.get_file_discovery_content, Ray 2.44.1 and 2.60):
        GCS key-value entries in namespace None, written by the dashboard and the autoscaler
        at their start. Unvalidated and bounded here; the reconciler validates them."""
        from ray.experimental.internal_kv import _internal_kv_get

        found: dict[str, str] = {}
        for component, key in names.RAY_COMPONENT_KV_KEYS.items():
            value = _internal_kv_get(key.encode(), namespace=None)
            if isinstance(value, bytes) and value:
                found[component] = value[:_MAX_COMPONENT_ADDRESS].decode("utf-8", "replace")
        return found


# Longer is no address (a host name is at most 253 characters, a port 5 digits).
_MAX_COMPONENT_ADDRESS = 512


# The first Ray release whose connecting driver creates no temp dirs (connect_only nodes).
_CONNECT_CREATES_NO_DIRS = (2, 54)


def _version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (999, 0)  # a development build: assume the newest behaviour


def _seed_session_dir(ray: Any, address: str, temp_dir: str) -> None:
    """Copy the cluster session's small JSON files (``node_ip_address.json``,
    ``ports_by_node.json``) into ``temp_dir``'s session dir of the same name.

    Up to Ray 2.53 a connecting driver given a temp dir reads its node's IP from there and
    waits for the file forever when it is missing (python/ray/_private/node.py,
    get_cached_node_ip_address); the cluster's own copy is readable, only not writable.
    """
    import glob
    import shutil

    from ray._private.services import canonicalize_bootstrap_address_or_die
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    gcs = GcsClient(address=canonicalize_bootstrap_address_or_die(address))
    session_dir = gcs.internal_kv_get(b"session_dir", b"session").decode()
    own = os.path.join(temp_dir, os.path.basename(session_dir))
    os.makedirs(own, exist_ok=True)
    for path in glob.glob(os.path.join(session_dir, "*.json")):
        shutil.copy(path, own)


def private_temp_dir(env: Mapping[str, str] | None = None) -> str | None:
    """A writable temp dir for the driver when Ray's default one is not writable, else None.

    A connecting driver creates and chmods ``<temp>/ray/<session>/...`` (Ray 2.44 to 2.53,
    python/ray/_private/node.py ``_init_temp``); under systemd's ``ProtectSystem=strict`` /tmp
    is read-only and that fails with EROFS. The driver then gets a directory of its own, in
    the first writable of systemd's RuntimeDirectory, CacheDirectory, StateDirectory and the
    system temp dir; sockets of the cluster are only connected to, never created, so they
    may stay on a read-only /tmp.
    """
    env = os.environ if env is None else env
    base = env.get("RAY_TMPDIR") or env.get("TMPDIR") or "/tmp"
    default = os.path.join(base, "ray")
    probe = default if os.path.isdir(default) else base
    if os.access(probe, os.W_OK):
        return None
    candidates = [
        env.get(v, "") for v in ("RUNTIME_DIRECTORY", "CACHE_DIRECTORY", "STATE_DIRECTORY")
    ]
    for directory in (c.split(":")[0] for c in candidates if c):
        if os.path.isdir(directory) and os.access(directory, os.W_OK):
            return os.path.join(directory, "ray")
    try:
        return os.path.join(tempfile.gettempdir(), f"fsd-ray-{os.getuid()}")
    except FileNotFoundError:
        return None


def _load_backend(spec: str, options: Mapping[str, Any]) -> Backend:
    module, _, name = spec.partition(":")
    backend: Backend = getattr(importlib.import_module(module), name)(**options)
    return backend


def bridge_main(
    conn: Connection,
    address: str,
    parent_pid: int,
    *,
    env: Mapping[str, str] | None = None,
    output: Connection | None = None,
    backend: str = DEFAULT_BACKEND,
    backend_options: Mapping[str, Any] | None = None,
    concurrency: int = 32,
    auth_hint: str = "",
) -> None:
    """Entry point of the child process: connect to Ray and answer requests."""
    if output is not None:  # everything written to stdout or stderr goes to the parent's log
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        output.close()
    # Before Ray is imported: Ray reads its auth mode from the environment once.
    os.environ.update(env or {})
    logging.basicConfig(level=logging.WARNING, format="fsd-ray-bridge: %(levelname)s %(message)s")
    try:
        impl = _load_backend(backend, backend_options or {})
        description = impl.connect(address)
    except Exception as exc:
        text = f"{type(exc).__name__}: {_last_line(exc)}"
        if auth_hint and is_rejection(str(exc)):
            text = f"Ray rejected the bridge's connection (InvalidAuthToken): {auth_hint}"
        conn.send(("error", f"ray.init(address={address!r}) failed: {text}"))
        return
    conn.send(("ready", description))
    work = _Resolutions(impl, concurrency)
    try:
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
                    conn.send(("ok", work.resolve(request[1], request[2])))
                elif request[0] == "ports":
                    conn.send(("ok", impl.ports(request[1], request[2])))
                elif request[0] == "components":
                    conn.send(("ok", impl.components(request[1])))
                else:
                    conn.send(("error", f"unknown request {request[0]!r}"))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {_last_line(exc)}"))
    finally:
        work.close()


class _Resolutions:
    """The child's work in progress: lookups (``start_call``, in ``concurrency`` threads) and
    the calls they started, kept across requests until their answer is handed out."""

    def __init__(self, backend: Backend, concurrency: int) -> None:
        self.backend = backend
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, concurrency), thread_name_prefix="lookup"
        )
        self.lookups: dict[str, concurrent.futures.Future[Any]] = {}
        self.calls: dict[str, Any] = {}
        self.call_started: dict[str, float] = {}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def resolve(
        self, batch: list[tuple[str, str, str]], timeout: float
    ) -> tuple[dict[str, tuple[Any, str | None]], bool]:
        deadline = time.monotonic() + timeout
        wanted = {actor_id for actor_id, _, _ in batch}
        # Work for actors nobody asks about any more (gone, or resolved) is dropped.
        for actor_id in list(self.lookups.keys() - wanted):
            self.lookups.pop(actor_id).cancel()
        for actor_id in list(self.calls.keys() - wanted):
            del self.calls[actor_id], self.call_started[actor_id]
        for actor_id, name, namespace in batch:
            if actor_id not in self.lookups and actor_id not in self.calls:
                self.lookups[actor_id] = self.pool.submit(
                    self.backend.start_call, actor_id, name, namespace
                )
        results: dict[str, tuple[Any, str | None]] = {}
        while True:
            self._start_calls(results)
            now = time.monotonic()
            remaining = deadline - now
            # A call is waited for during its first ``timeout`` seconds only: a hung actor
            # costs the wait once, when first asked, not at every poll while its call hangs.
            windows = {i: t + timeout for i, t in self.call_started.items() if t + timeout > now}
            waitable = [self.calls[i] for i in windows]
            if remaining <= 0 or (not self.lookups and not waitable):
                break
            # A little at a time while lookups run, so that their calls start within this
            # request too; never past the last window.
            step = min(remaining, 0.05) if self.lookups else remaining
            if waitable:
                step = min(step, max(windows.values()) - now)
                done = self.backend.wait(waitable, step)
                if done:
                    self._collect(set(done), results)
                elif not self.lookups:
                    break  # waited the whole remaining time
            else:
                self._wait_lookups(step)
        # Calls past their window are collected if done, never waited for.
        done = self.backend.wait(list(self.calls.values()), 0)
        if done:
            self._collect(set(done), results)
        # Busy: lookups running or calls still in their window (a hung call is not business).
        now = time.monotonic()
        busy = bool(self.lookups) or any(t + timeout > now for t in self.call_started.values())
        return results, busy

    def _start_calls(self, results: dict[str, tuple[Any, str | None]]) -> None:
        """Calls for the lookups that finished; a failed lookup is that actor's answer."""
        for actor_id, lookup in list(self.lookups.items()):
            if not lookup.done():
                continue
            del self.lookups[actor_id]
            try:
                call = lookup.result()
            except Exception as exc:
                results[actor_id] = (None, f"{type(exc).__name__}: {_last_line(exc)}")
                continue
            self.calls[actor_id] = call
            self.call_started[actor_id] = time.monotonic()

    def _wait_lookups(self, timeout: float) -> None:
        concurrent.futures.wait(
            list(self.lookups.values()),
            timeout=timeout,
            return_when=concurrent.futures.FIRST_COMPLETED,
        )

    def _collect(self, done: set[Any], results: dict[str, tuple[Any, str | None]]) -> None:
        for actor_id, call in list(self.calls.items()):
            if call not in done:
                continue
            del self.calls[actor_id], self.call_started[actor_id]
            try:
                value = self.backend.result(call)
            except Exception as exc:
                results[actor_id] = (None, f"{type(exc).__name__}: {_last_line(exc)}")
                continue
            if isinstance(value, list):
                value = tuple(value)
            if not isinstance(value, (tuple, str)):
                results[actor_id] = (None, f"get_server_address() returned {type(value).__name__}")
                continue
            results[actor_id] = (value, None)


def _last_line(exc: BaseException) -> str:
    # A RayTaskError's text is the remote traceback; its last line says what went wrong.
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else ""
