"""Who holds each GPU: NVML's compute processes, walked up to the Ray actor that started them.

Every ``interval`` seconds, in its own thread, the tracker:

1. takes the holders of each GPU from the sampler's latest snapshot (the sampler is the only
   caller of the driver; this module never calls the backend);
2. walks each holder up its parents (psutil) to the nearest Ray worker titled
   ``ray::ClassName`` (vLLM's engine and TP worker processes are children of the server actor);
3. maps the class to a role (exact class name first, then the mapping's keys as regular
   expressions, else ``other``) and reads the replica, and where the name says so a role such as
   ``reward`` or ``teacher`` and the teacher key, from the actor name with the discovery
   patterns (``vllm_server_3_0``); a verl rollout worker group's actor
   (``CheckpointEngineWorker``; ``vLLMAsyncRollout`` and ``ServerAdapter`` in verl 0.6.0 to
   0.7.0) from its worker-group name (``rollout_reward_standalone_3CheckpointEngineWorker_0:1``,
   or ``WG_PREFIX`` in its environment while the name is not known yet), mode included;
4. finds GPUs *reserved* by rollout actors: a Ray actor of a rollout, reward or teacher class
   whose ``CUDA_VISIBLE_DEVICES`` (its own, or that of a process it started) names a GPU, by
   index or UUID, on which neither it nor its descendants hold memory; and a GPU that a
   replica's worker group holds while no other process of that replica (its server's engine)
   does: given to the replica, not used by it yet;
5. labels every owner of a replica with verl's rollout mode: the mode its worker group's name
   says (colocated, standalone), else hybrid where the replica's GPU is also held by the
   trainer's ``WorkerDict``.

A GPU is therefore owned once per (Ray job, role, replica, teacher key) whatever the number of
processes of that replica on it: the rules count ``max by`` those labels.

The result is an immutable :class:`Ownership` replaced whole, like the sampler's snapshot.

Limits, by design: ``CUDA_VISIBLE_DEVICES`` is read from ``/proc/<pid>/environ``, the
environment a process was started with. Ray sets it for a GPU actor (verl's worker groups)
inside the process after start, and verl's server assigns it to its own ``os.environ``: a GPU
given to a replica whose worker group has not touched CUDA and whose server has not started
its engine yet is seen by no process on the node, and shows no owner until then. A variable
set through ``runtime_env`` or inherited by a child is seen; one that a process assigns to
``os.environ`` after it started is not, until it starts a child. Indices in the variable are
taken as NVML indices (nvidia-smi's numbering, the one Ray uses);
``CUDA_DEVICE_ORDER=FASTEST_FIRST`` on a mixed-model node would number differently. Holders
in another pid namespace (an exporter in a container without the host's pids) cannot be walked
and show as role ``other``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import psutil

from fsd_daemon.config import RecognitionPattern
from fsd_daemon.gpu.proctable import Proc, ProcessTable, read_cmdline
from fsd_daemon.gpu.raylookup import ActorKey, ActorNameResolver, raylet_info, title_class
from fsd_daemon.gpu.sampler import Snapshot
from fsd_daemon.plumbing.periodic import PeriodicWorker
from fsd_daemon.recognition.recognise import MAX_ACTOR_NAME_LENGTH, Recogniser
from fsd_daemon.recognition.verl import (
    GROUP_MODE,
    GROUP_REPLICA,
    GROUP_ROLE,
    GROUP_SUFFIX,
    HYBRID_TRAINER_CLASS,
    MODE_HYBRID,
    ROLE_TEACHER,
    ROLLOUT_WORKER_GROUP_PREFIX,
    SERVING_ROLES,
    WORKER_GROUP_FORMS,
    WORKER_GROUP_MODES,
    WORKER_GROUP_PREFIX_ENV,
    WORKER_RANK_SUFFIX,
)

log = logging.getLogger(__name__)

STATE_ACTIVE = "active"
STATE_RESERVED = "reserved"
ROLE_OTHER = "other"
# Roles whose actors are given GPUs ahead of use (rollout, reward and teacher servers): only
# their CUDA_VISIBLE_DEVICES counts as a reservation. A training worker always holds its GPU.
RESERVING_ROLES = frozenset(SERVING_ROLES)
# Roles an actor's name may give (verl's reward and teacher servers are vLLMHttpServer actors
# named ..._server_reward_... and ..._server_teacher_...); "prefill" or "decode" in a name are
# kinds of rollout, not roles.
NAME_ROLES = RESERVING_ROLES
WORKER_GROUP_CLASSES = frozenset(form.class_name for form in WORKER_GROUP_FORMS)
# How far up from a holder to look for its Ray actor (engine core -> worker -> actor is 2).
_MAX_DEPTH = 16


# (Ray job, role, replica, teacher key): one replica, whatever the number of its processes.
ReplicaKey = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True, order=True)
class Owner:
    """One process that holds (``active``) or was given (``reserved``) one GPU.

    ``pid`` is the holder (an engine or TP worker process) for ``active``, the actor process
    for ``reserved``. Empty strings mean "not known" (Prometheus drops empty labels).
    """

    gpu: int
    state: str
    pid: int
    role: str
    replica: str = ""
    actor_class: str = ""
    actor_name: str = ""
    ray_job_id: str = ""
    teacher: str = ""  # the teacher key, on role="teacher" only
    mode: str = ""  # verl's rollout mode of the replica (verl.ROLLOUT_MODES), "" unknown

    @property
    def replica_key(self) -> ReplicaKey:
        """Which replica this is one process of: (Ray job, role, replica, teacher key)."""
        return (self.ray_job_id, self.role, self.replica, self.teacher)


@dataclass(frozen=True, slots=True)
class Ownership:
    owners: tuple[Owner, ...] = ()
    refreshed_at: float | None = None  # wall clock of the last refresh
    duration_seconds: float | None = None
    name_lookup_failures: int = 0


class RoleMap:
    """Ray actor class name -> role: exact key first, then keys as whole-name regexes in order."""

    def __init__(self, roles: Mapping[str, str]) -> None:
        self._exact = dict(roles)
        self._regexes: list[tuple[re.Pattern[str], str]] = []
        for key, role in roles.items():
            # A plain class name that happens not to be a regex is matched exactly only.
            with contextlib.suppress(re.error):
                self._regexes.append((re.compile(key), role))
        self.roles = frozenset(roles.values())
        self._cache: dict[str, str] = {}

    def for_class(self, actor_class: str) -> str:
        cached = self._cache.get(actor_class)
        if cached is not None:
            return cached
        role = self._exact.get(actor_class)
        if role is None:
            role = next((r for rx, r in self._regexes if rx.fullmatch(actor_class)), ROLE_OTHER)
        if len(self._cache) < 10_000:
            self._cache[actor_class] = role
        return role


@dataclass(frozen=True, slots=True)
class NameFacts:
    """What an actor's name says; empty strings where it says nothing."""

    replica: str = ""
    role: str = ""
    teacher: str = ""
    mode: str = ""


_WORKER_GROUP_PREFIX_RE = re.compile(ROLLOUT_WORKER_GROUP_PREFIX + r"\Z", re.ASCII)
_WORKER_RANK_RE = re.compile(WORKER_RANK_SUFFIX + r"\Z", re.ASCII)


def worker_group_facts(prefix: str) -> NameFacts:
    """What a rollout worker group's name prefix (``WG_PREFIX``) says, or nothing."""
    if len(prefix) > MAX_ACTOR_NAME_LENGTH:
        return NameFacts()
    m = _WORKER_GROUP_PREFIX_RE.match(prefix)
    if m is None:
        return NameFacts()
    role = m.group(GROUP_ROLE) or ""
    return NameFacts(
        replica=m.group(GROUP_REPLICA),
        role=role,
        teacher=(m.group(GROUP_SUFFIX) or "") if role == ROLE_TEACHER else "",
        mode=WORKER_GROUP_MODES[m.group(GROUP_MODE)],
    )


def worker_group_prefix(actor_class: str, name: str) -> str | None:
    """The worker-group prefix of a worker named ``{prefix}{actor_class}_{pg}:{rank}``."""
    if len(name) > MAX_ACTOR_NAME_LENGTH:
        return None
    m = _WORKER_RANK_RE.search(name)
    if m is None or not name[: m.start()].endswith(actor_class):
        return None
    return name[: m.start() - len(actor_class)]


class NameMatcher:
    """What an actor name says (:class:`NameFacts`).

    Servers: the discovery's own :class:`Recogniser` does the matching, so the exporter reads
    names exactly as ``rollout.json`` does (node ranks other than 0 included: they hold GPUs
    too). verl's rollout worker groups: the worker-group prefix of the name, else the
    ``WG_PREFIX`` the worker was started with (known before Ray lists the name).
    """

    def __init__(self, patterns: Iterable[RecognitionPattern]) -> None:
        self._recogniser = Recogniser(tuple(patterns))

    def match(self, actor_class: str, name: str, wg_prefix: str = "") -> NameFacts:
        if actor_class in WORKER_GROUP_CLASSES:
            prefix = worker_group_prefix(actor_class, name) if name else None
            return worker_group_facts(prefix if prefix is not None else wg_prefix)
        groups = self._recogniser.name_groups(actor_class, name) if name else {}
        role = groups.get(GROUP_ROLE, "")
        return NameFacts(
            replica=groups.get(GROUP_REPLICA, ""),
            role=role,
            teacher=groups.get(GROUP_SUFFIX, "") if role == ROLE_TEACHER else "",
        )


@dataclass(frozen=True, slots=True)
class _Actor:
    """A Ray worker process running an actor (or a task), as read once from /proc."""

    pid: int
    actor_class: str
    key: ActorKey  # for the name lookup; gcs_address "" when the raylet is unknown
    visible_devices: tuple[str, ...]
    wg_prefix: str = ""  # verl's WG_PREFIX: the worker group's name prefix


@dataclass(frozen=True, slots=True)
class _Env:
    """What a Ray worker's start-up environment and raylet say (fixed for its lifetime)."""

    job_id: str
    gcs_address: str
    node_id: str
    devices: tuple[str, ...]
    wg_prefix: str


def visible_devices(value: str | None) -> tuple[str, ...]:
    """``CUDA_VISIBLE_DEVICES`` entries; () when unset, empty or ``-1``/``NoDevFiles``."""
    if not value:
        return ()
    entries = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if part.lstrip("-").isdigit() and int(part) < 0:
            break  # CUDA stops at the first invalid index
        entries.append(part)
    return tuple(entries)


def resolve_device(entry: str, uuids: Mapping[str, int], count: int) -> int | None:
    """The NVML index an entry names: an index, a full UUID or a unique UUID prefix."""
    if entry.isdigit():
        index = int(entry)
        return index if index < count else None
    if entry.startswith("MIG-"):
        return None  # a MIG instance is not a whole GPU of ours
    candidates = [i for u, i in uuids.items() if u == entry or u.startswith(entry)]
    if not entry.startswith("GPU-"):
        candidates += [i for u, i in uuids.items() if u.startswith("GPU-" + entry)]
    unique = set(candidates)
    return unique.pop() if len(unique) == 1 else None


class OwnershipTracker:
    """Keeps :attr:`ownership` up to date every ``interval`` seconds (see the module doc)."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        *,
        roles: Mapping[str, str],
        patterns: Iterable[RecognitionPattern] = (),
        interval: float = 5.0,
        resolver: ActorNameResolver | None = None,
        wall_clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        proc_dir: str = "/proc",
        on_refresh: Callable[[], None] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._on_refresh = on_refresh  # on the tracker's thread, after each refresh
        self._proc = proc_dir
        self._processes = ProcessTable(proc_dir)
        self.roles = RoleMap(roles)
        self.names = NameMatcher(patterns)
        self.interval = interval
        self.resolver = resolver
        self._wall_clock = wall_clock
        self._timer = timer
        # Environments are read once per (pid, create_time): what a process was started with
        # never changes, and a reused pid has another create_time.
        self._envs: dict[tuple[int, float], _Env] = {}
        # A descendant's devices, with its name when read: a child read between fork and exec
        # shows its parent's start environment, and is read again once its name changes.
        self._env_devices: dict[tuple[int, float], tuple[str, tuple[str, ...]]] = {}
        self._raylets: dict[tuple[int, float], tuple[str, str]] = {}
        # pid -> what its title says, for the current refresh only: a holder's actor is met by
        # the walk up from the holder and again by the reservation scan, read once.
        self._scanned: dict[int, _Actor | None] = {}
        self.ownership = Ownership()
        self._worker = PeriodicWorker("gpu-ownership", self._tick, interval)

    # -- thread -------------------------------------------------------------------------------

    def start(self) -> OwnershipTracker:
        if self.resolver is not None:
            self.resolver.start()
        self._worker.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)
        if self.resolver is not None:
            self.resolver.stop(timeout)

    def wake(self) -> None:
        """Refresh now (names arrived), not at the next interval."""
        self._worker.wake()

    def _tick(self) -> None:
        self.refresh()
        if self._on_refresh is not None:
            self._on_refresh()

    # -- one refresh --------------------------------------------------------------------------

    def refresh(self) -> Ownership:
        started = self._timer()
        snap = self._snapshot()
        # No GPU to own (driver down, none installed): no scan, no lookups.
        owners, keys = self._scan(snap) if snap.gpus else ([], set())
        if self.resolver is not None:
            self.resolver.want(keys)
        self.ownership = Ownership(
            owners=tuple(sorted(set(owners))),
            refreshed_at=self._wall_clock(),
            duration_seconds=self._timer() - started,
            name_lookup_failures=self.resolver.failures if self.resolver is not None else 0,
        )
        return self.ownership

    def _scan(self, snap: Snapshot) -> tuple[list[Owner], set[ActorKey]]:
        """The owners of the snapshot's GPUs, and the actors whose names they need."""
        table = self._processes.read()
        self._forget_gone(table)
        self._scanned.clear()
        owners: list[Owner] = []
        keys: set[ActorKey] = set()
        names = self.resolver.names() if self.resolver is not None else {}
        previous = self.ownership.owners
        uuids = {g.identity.uuid: g.identity.index for g in snap.gpus if g.identity.uuid}
        count = max((g.identity.index + 1 for g in snap.gpus), default=0)
        # GPU -> actor pids that hold memory on it (directly or through a child).
        holding: dict[int, set[int]] = {}
        for reading in snap.gpus:
            gpu = reading.identity.index
            if reading.processes is None:
                # Unknown this tick (call failed, GPU lost): keep the last known holders that
                # still run, rather than report the GPU as released.
                kept = [
                    o
                    for o in previous
                    if o.gpu == gpu and o.state == STATE_ACTIVE and o.pid in table
                ]
                owners.extend(kept)
                holding.setdefault(gpu, set()).update(self._actor_pids_of(kept, table))
                continue
            for proc in reading.processes:
                actor = self._actor_above(proc.pid, table)
                if actor is None:
                    owners.append(Owner(gpu=gpu, state=STATE_ACTIVE, pid=proc.pid, role=ROLE_OTHER))
                    continue
                holding.setdefault(gpu, set()).add(actor.pid)
                keys.add(actor.key)
                owners.append(self._owner(gpu, STATE_ACTIVE, proc.pid, actor, names))
        for actor, devices in self._reserving_actors(table):
            keys.add(actor.key)
            for entry in devices:
                given = resolve_device(entry, uuids, count)
                if given is None or actor.pid in holding.get(given, set()):
                    continue
                owners.append(self._owner(given, STATE_RESERVED, actor.pid, actor, names))
        return settle_replicas(owners, self._worker_group_modes(names)), keys

    def _worker_group_modes(self, names: Mapping[ActorKey, str]) -> dict[ReplicaKey, str]:
        """The mode of every replica whose worker group runs on this node, whether or not its
        workers hold a GPU (verl's checkpoint-engine workers often hold none): every Ray
        actor process was read by this refresh's reservation scan."""
        modes: dict[ReplicaKey, str] = {}
        for actor in self._scanned.values():
            if actor is None or actor.actor_class not in WORKER_GROUP_CLASSES:
                continue
            owner = self._owner(-1, STATE_ACTIVE, actor.pid, actor, names)
            if owner.replica and owner.mode:
                modes.setdefault(owner.replica_key, owner.mode)
        return modes

    def _owner(
        self, gpu: int, state: str, pid: int, actor: _Actor, names: Mapping[ActorKey, str]
    ) -> Owner:
        name = names.get(actor.key, "")
        facts = self.names.match(actor.actor_class, name, actor.wg_prefix)
        role = self.roles.for_class(actor.actor_class)
        # A name can say more than the class: verl's reward servers are vLLMHttpServer actors
        # named vllm_server_reward_<r>_<n>.
        if facts.role in NAME_ROLES:
            role = facts.role
        return Owner(
            gpu=gpu,
            state=state,
            pid=pid,
            role=role,
            replica=facts.replica,
            actor_class=actor.actor_class,
            actor_name=name,
            ray_job_id=actor.key.job_id,
            teacher=facts.teacher,
            mode=facts.mode,
        )

    # -- processes ----------------------------------------------------------------------------

    def _forget_gone(self, table: Mapping[int, Proc]) -> None:
        live = {(pid, p.create_time) for pid, p in table.items()}
        for cache in (self._envs, self._env_devices, self._raylets):
            for key in cache.keys() - live:
                del cache[key]

    def _actor_above(self, pid: int, table: Mapping[int, Proc]) -> _Actor | None:
        current = pid
        for _ in range(_MAX_DEPTH):
            proc = table.get(current)
            if proc is None:
                return None
            if proc.name.startswith("ray::"):
                actor = self._actor(current, proc, table)
                if actor is not None:
                    return actor
            if proc.ppid <= 1 or proc.ppid == current:
                return None
            current = proc.ppid
        return None

    def _actor(self, pid: int, proc: Proc, table: Mapping[int, Proc]) -> _Actor | None:
        if pid not in self._scanned:
            self._scanned[pid] = self._read_actor(pid, proc, table)
        return self._scanned[pid]

    def _read_actor(self, pid: int, proc: Proc, table: Mapping[int, Proc]) -> _Actor | None:
        # The title is read every refresh (a pooled task worker is retitled for each task and
        # ray::IDLE between them); what the environment says is read once per process.
        try:
            actor_class = title_class(read_cmdline(pid, self._proc))
        except (psutil.Error, OSError):
            return None  # gone, or not ours to read: asked again next refresh
        if actor_class is None:
            return None
        cache_key = (pid, proc.create_time)
        env = self._envs.get(cache_key)
        if env is None:
            try:
                environ = read_environ(pid, self._proc)
            except (psutil.Error, OSError):
                return None
            gcs, node = self._raylet(environ, proc, table)
            env = _Env(
                job_id=environ.get("RAY_JOB_ID", ""),
                gcs_address=gcs,
                node_id=node,
                devices=visible_devices(environ.get("CUDA_VISIBLE_DEVICES")),
                # Bounded here; matched (anchored) only for worker-group classes.
                wg_prefix=environ.get(WORKER_GROUP_PREFIX_ENV, "")[: MAX_ACTOR_NAME_LENGTH + 1],
            )
            self._envs[cache_key] = env
        return _Actor(
            pid=pid,
            actor_class=actor_class,
            key=ActorKey(env.gcs_address, env.job_id, env.node_id, pid, proc.create_time),
            visible_devices=env.devices,
            wg_prefix=env.wg_prefix,
        )

    def _raylet(
        self, env: Mapping[str, str], proc: Proc, table: Mapping[int, Proc]
    ) -> tuple[str, str]:
        text = env.get("RAY_RAYLET_PID", "")
        raylet_pid = int(text) if text.isdigit() else proc.ppid
        raylet = table.get(raylet_pid)
        if raylet is None:
            return "", ""
        cache_key = (raylet_pid, raylet.create_time)
        if cache_key not in self._raylets:
            try:
                info = raylet_info(read_cmdline(raylet_pid, self._proc))
            except (psutil.Error, OSError):
                return "", ""
            self._raylets[cache_key] = (info.gcs_address, info.node_id) if info else ("", "")
        return self._raylets[cache_key]

    def _actor_pids_of(self, owners: Iterable[Owner], table: Mapping[int, Proc]) -> set[int]:
        pids = set()
        for o in owners:
            actor = self._actor_above(o.pid, table)
            if actor is not None:
                pids.add(actor.pid)
        return pids

    def _reserving_actors(self, table: Mapping[int, Proc]) -> list[tuple[_Actor, tuple[str, ...]]]:
        """Actors of reserving roles with the devices named by them or their descendants."""
        children: dict[int, list[int]] = {}
        for pid, proc in table.items():
            children.setdefault(proc.ppid, []).append(pid)
        found = []
        for pid, proc in table.items():
            if not proc.name.startswith("ray::"):
                continue
            actor = self._actor(pid, proc, table)
            if actor is None or self.roles.for_class(actor.actor_class) not in RESERVING_ROLES:
                continue
            devices = list(actor.visible_devices)
            stack = list(children.get(pid, ()))
            seen = 0
            while stack and seen < 256:
                child = stack.pop()
                seen += 1
                devices.extend(self._devices_of(child, table[child]))
                stack.extend(children.get(child, ()))
            if devices:
                found.append((actor, tuple(dict.fromkeys(devices))))
        return found

    def _devices_of(self, pid: int, proc: Proc) -> tuple[str, ...]:
        cache_key = (pid, proc.create_time)
        cached = self._env_devices.get(cache_key)
        if cached is None or cached[0] != proc.name:
            try:
                devices = visible_devices(read_environ(pid, self._proc).get("CUDA_VISIBLE_DEVICES"))
            except (psutil.Error, OSError):
                return ()
            cached = (proc.name, devices)
            self._env_devices[cache_key] = cached
        return cached[1]


def settle_replicas(
    owners: list[Owner], worker_group_modes: Mapping[ReplicaKey, str] | None = None
) -> list[Owner]:
    """Replica-wide facts that no single process tells (see the module doc, steps 4 and 5).

    - A GPU that a replica's worker group holds while no other process of that replica holds
      it (its engine not started, or stopped) is reserved by the replica, not in use.
    - Every owner of a replica gets the mode of the replica's worker group (an owner, or one
      of ``worker_group_modes``: groups seen on the node that hold no GPU); a replica without
      one whose GPU the trainer's WorkerDict of the same job holds is in hybrid mode.
    """
    engine_on: set[tuple[int, ReplicaKey]] = set()
    modes: dict[ReplicaKey, str] = dict(worker_group_modes or {})
    trainer_gpus: set[tuple[int, str]] = set()
    for o in owners:
        if not o.replica:
            if o.actor_class == HYBRID_TRAINER_CLASS:
                trainer_gpus.add((o.gpu, o.ray_job_id))
            continue
        if o.actor_class in WORKER_GROUP_CLASSES:
            if o.mode:
                modes.setdefault(o.replica_key, o.mode)
        elif o.state == STATE_ACTIVE:
            engine_on.add((o.gpu, o.replica_key))
    settled = []
    for o in owners:
        if o.replica:
            state = o.state
            if o.actor_class in WORKER_GROUP_CLASSES and (o.gpu, o.replica_key) not in engine_on:
                state = STATE_RESERVED
            mode = o.mode or modes.get(o.replica_key, "")
            if not mode and (o.gpu, o.ray_job_id) in trainer_gpus:
                mode = MODE_HYBRID
            o = dataclasses.replace(o, state=state, mode=mode)
        settled.append(o)
    return settled


def read_environ(pid: int, proc_dir: str = "/proc") -> Mapping[str, str]:
    """The environment ``pid`` was started with; {} where it is not ours to read. Raises
    OSError (or psutil.Error) when the process is gone.

    One read of ``/proc/<pid>/environ``, parsed as psutil parses it (entries end in NUL; an
    empty one ends the block), without psutil.Process's extra read of the stat file.
    """
    try:
        with open(f"{proc_dir}/{pid}/environ", "rb") as f:
            data = f.read()
    except PermissionError:
        return {}  # another user's process: no job id, no devices, but still its class
    except FileNotFoundError:
        if os.path.isdir(proc_dir):
            raise  # the process is gone
        # No procfs here: psutil knows the platform's way.
        try:
            return psutil.Process(pid).environ()
        except psutil.AccessDenied:
            return {}
    environ: dict[str, str] = {}
    for entry in os.fsdecode(data).split("\0")[:-1]:
        if not entry:
            break
        key, sep, value = entry.partition("=")
        if key and sep:
            environ[key] = value
    return environ
