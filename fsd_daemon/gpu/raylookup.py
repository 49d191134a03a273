"""What a Ray worker process says about itself, and the one thing it does not: its actor name.

Local facts, read from ``/proc`` through psutil, cost nothing and need no Ray connection:

- the process title: Ray retitles every worker ``ray::ClassName`` (``ray::ClassName.method``
  while a method runs, ``ray::IDLE`` between tasks);
- ``RAY_JOB_ID`` in its environment: the Ray job that owns it;
- its raylet (``RAY_RAYLET_PID``, else its parent): the raylet's command line names the node
  (``--node_id``) and the GCS of the cluster the process belongs to (``--gcs-address``), so no
  configured address is needed and two clusters on one machine are never confused.

The actor *name* (``vllm_server_3_0``: replica 3) is known only to Ray's GCS. It is asked of
Ray's state API, per (GCS, job), in a child process (``python -m fsd_daemon.gpu.raylookup``):
the exporter never imports Ray (about 65 MB of RSS) and a hung Ray call is ended by killing the
child at its timeout. Answers are cached for the life of the process (an actor's name never
changes); a process whose actor is not found yet (still in ``__init__``) is asked again with a
growing delay. All of this runs in the resolver's own thread, never on the sampling thread or a
scrape.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from fsd_daemon.discovery.ray_auth import RayAuthError, RayChildFailed, load_auth, run_ray_child
from fsd_daemon.plumbing.backoff import Backoff
from fsd_daemon.plumbing.periodic import PeriodicWorker

log = logging.getLogger(__name__)

# "ray::vLLMHttpServer", "ray::vLLMHttpServer.generate", "ray::train_fn()" (older titles).
_TITLE_RE = re.compile(r"^ray::(?P<cls>[A-Za-z_][A-Za-z0-9_]*)(?:$|[.\s(])")
# Titles of workers that run no actor: idle pool workers, spill/restore workers.
_NOT_AN_ACTOR = re.compile(r"^IDLE(?:_\w+)?$")


def title_class(cmdline: Sequence[str]) -> str | None:
    """The class (or task) name in a Ray worker's title, None for any other process.

    setproctitle writes the title over argv, so psutil returns it as one element followed by
    empty ones, or, where the title ran past the original argv, as space-separated words.
    """
    title = " ".join(part for part in cmdline if part).strip()
    m = _TITLE_RE.match(title)
    if m is None or _NOT_AN_ACTOR.match(m.group("cls")):
        return None
    return m.group("cls")


@dataclass(frozen=True, slots=True)
class RayletInfo:
    gcs_address: str  # "" when the raylet's command line does not say
    node_id: str


def raylet_info(cmdline: Sequence[str]) -> RayletInfo | None:
    """The node id and GCS address on a raylet's command line; None if it is not a raylet."""
    if not cmdline or not cmdline[0].endswith("raylet"):
        return None
    values: dict[str, str] = {}
    for arg in cmdline:
        for word in arg.split(" "):
            key, sep, value = word.partition("=")
            if sep and key in ("--gcs-address", "--gcs_address", "--node_id", "--node-id"):
                values.setdefault(key.replace("_", "-"), value)
    return RayletInfo(
        gcs_address=values.get("--gcs-address", ""), node_id=values.get("--node-id", "")
    )


@dataclass(frozen=True, slots=True)
class ActorKey:
    """Identifies one Ray worker process for a name lookup (``create_time`` guards pid reuse)."""

    gcs_address: str
    job_id: str
    node_id: str
    pid: int
    create_time: float


@dataclass(frozen=True, slots=True)
class ActorListing:
    """One actor of a job as the state API lists it."""

    name: str
    class_name: str
    node_id: str
    pid: int
    state: str


class NameLookupFailed(Exception):
    """A listing failed (Ray unreachable, timed out, bad answer). Retried later."""


def list_job_actors(gcs_address: str, job_id: str, timeout: float) -> list[ActorListing]:
    """The actors of ``job_id`` per Ray's state API, asked in a child process killed at
    ``timeout``. Raises :class:`NameLookupFailed`."""
    args = ["--gcs-address", gcs_address, "--job-id", job_id]
    args += ["--timeout", f"{max(1.0, timeout * 0.7):.3g}"]
    # Token auth decided as Ray's CLI decides it (the child's explicit GCS address would not
    # turn it on by itself); only the token's source is logged, once.
    try:
        auth = load_auth()
    except RayAuthError as exc:
        raise NameLookupFailed(str(exc)) from None
    try:
        done = run_ray_child("fsd_daemon.gpu.raylookup", args, auth, timeout)
    except RayChildFailed as exc:
        if exc.kind == "timeout":
            raise NameLookupFailed(f"Ray state API did not answer within {timeout:.3g} s") from None
        raise NameLookupFailed(f"cannot run the lookup: {exc}") from exc
    if done.rejected:
        raise NameLookupFailed(f"Ray rejected the lookup: {auth.rejected_hint()}")
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["?"]
        raise NameLookupFailed(f"lookup exited {done.returncode}: {last[0][:300]}")
    try:
        rows = orjson.loads(done.stdout)
        return [
            ActorListing(
                name=str(r.get("name") or ""),
                class_name=str(r.get("class_name") or ""),
                node_id=str(r.get("node_id") or ""),
                pid=int(r.get("pid") or 0),
                state=str(r.get("state") or ""),
            )
            for r in rows
        ]
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise NameLookupFailed(f"unexpected lookup answer: {exc}") from exc


Lister = Callable[[str, str, float], list[ActorListing]]


class ActorNameResolver:
    """Finds the Ray actor name of worker processes, in a thread of its own.

    :meth:`want` says which processes matter now (it never blocks); :meth:`names` returns what
    is known. Invariants: a key is looked up at most once per ``retry`` delay (doubling up to
    ``max_retry`` while it stays unknown); keys no longer wanted are forgotten, so the cache
    never outgrows the node's live processes.
    """

    def __init__(
        self,
        *,
        timeout: float = 15.0,
        retry: float = 5.0,
        max_retry: float = 120.0,
        lister: Lister = list_job_actors,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.timeout = timeout
        self._retry = retry
        self._max_retry = max_retry
        self._lister = lister
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._names: dict[ActorKey, str] = {}
        self._wanted: set[ActorKey] = set()
        # Per (gcs, job) that missed: when it may be asked again, and its failure count.
        # Absent: ask at once.
        self._backoff_until: dict[tuple[str, str], tuple[float, Backoff]] = {}
        self.failures = 0  # listings that failed, since start (a metric)
        self._stopping = threading.Event()
        # A step that raises is retried after ``retry`` (PeriodicWorker's interval).
        self._worker = PeriodicWorker("gpu-ray-names", self.resolve_pending, retry)

    def names(self) -> Mapping[ActorKey, str]:
        with self._lock:
            return dict(self._names)

    def want(self, keys: Iterable[ActorKey]) -> None:
        wanted = {k for k in keys if k.gcs_address and k.job_id}
        with self._lock:
            self._wanted = wanted
            for gone in self._names.keys() - wanted:
                del self._names[gone]
            pending = bool(wanted - self._names.keys())
        if pending:
            self._worker.wake()

    def start(self) -> ActorNameResolver:
        self._stopping.clear()
        self._worker.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._worker.stop(timeout)

    def resolve_pending(self) -> float:
        """One pass over the unknown keys whose delay has passed; returns seconds until the
        next one is due (or a long wait when nothing is pending)."""
        with self._lock:
            pending = self._wanted - self._names.keys()
        groups: dict[tuple[str, str], list[ActorKey]] = {}
        for key in pending:
            groups.setdefault((key.gcs_address, key.job_id), []).append(key)
        now = self._clock()
        found_any = False
        for group, keys in sorted(groups.items()):
            if self._stopping.is_set():
                break
            if group in self._backoff_until and self._backoff_until[group][0] > now:
                continue
            try:
                listing = self._lister(group[0], group[1], self.timeout)
            except NameLookupFailed as exc:
                self.failures += 1
                log.info("actor names of Ray job %s unknown for now: %s", group[1], exc)
                self._backoff(group)
                continue
            # An actor is found by node and pid; the job already narrows it to one cluster.
            by_process = {(a.node_id, a.pid): a for a in listing if a.pid and a.state != "DEAD"}
            resolved = {}
            for key in keys:
                actor = by_process.get((key.node_id, key.pid))
                if actor is None and not key.node_id:
                    actor = next((a for (_, pid), a in by_process.items() if pid == key.pid), None)
                if actor is not None:
                    resolved[key] = actor.name
            with self._lock:
                for key, name in resolved.items():
                    if key in self._wanted:
                        self._names[key] = name
            found_any |= bool(resolved)
            if len(resolved) < len(keys):
                self._backoff(group)  # some are still in __init__ (not yet listed with a pid)
            else:
                self._backoff_until.pop(group, None)
        for stale in self._backoff_until.keys() - groups.keys():
            del self._backoff_until[stale]
        if found_any and self._on_change is not None:
            self._on_change()
        due = [t for t, _ in self._backoff_until.values()]
        return max(0.05, min(due) - self._clock()) if due else 3600.0

    def _backoff(self, group: tuple[str, str]) -> None:
        _, backoff = self._backoff_until.get(
            group, (0.0, Backoff(self._retry, self._max_retry, jitter=False))
        )
        self._backoff_until[group] = (self._clock() + backoff.failed(), backoff)


# -- the child process ------------------------------------------------------------------------


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fsd_daemon.gpu.raylookup",
        description="Print the actors of one Ray job as JSON (name, class_name, node_id, pid, "
        "state), from Ray's state API. Used by fsd-gpu-exporter.",
    )
    p.add_argument("--gcs-address", required=True)
    p.add_argument("--job-id", required=True)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--limit", type=int, default=10_000)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    from ray.dashboard.utils import ray_address_to_api_server_url

    from fsd_daemon.discovery.ray_http import DashboardClient

    # The dashboard's URL is kept in the GCS; the listing itself is plain HTTP with the auth
    # header (and the timeout clamp) of fsd_daemon's own state client.
    client = DashboardClient(ray_address_to_api_server_url(args.gcs_address), load_auth())
    # The job_id filter runs inside the GCS (dead actors of other jobs are never sent); the
    # state is not filtered, so that actors still in __init__ are listed too.
    data = client.list_state(
        "actors",
        filters=[("job_id", "=", args.job_id)],
        limit=args.limit,
        timeout=args.timeout,
    )
    rows = [
        {k: r.get(k) for k in ("name", "class_name", "node_id", "pid", "state")}
        for r in data["result"]
    ]
    sys.stdout.write(orjson.dumps(rows).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
