"""Who holds each GPU: title parsing, device naming, roles, names, and the tracker over real
processes that look like Ray's (a raylet stand-in, ``ray::`` titled actors with children).

Real Ray actors are in test_ray_ownership.py; here the processes are plain Python children
given Ray's titles and environment, so walking, reservation and name resolution run against
real /proc entries in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fsd_daemon.config import DEFAULT_GPU_ROLES, DEFAULT_PATTERNS
from fsd_daemon.gpu.ownership import (
    STATE_ACTIVE,
    STATE_RESERVED,
    NameFacts,
    NameMatcher,
    Owner,
    OwnershipTracker,
    RoleMap,
    resolve_device,
    settle_replicas,
    visible_devices,
)
from fsd_daemon.gpu.raylookup import (
    ActorKey,
    ActorListing,
    ActorNameResolver,
    NameLookupFailed,
    raylet_info,
    title_class,
)
from fsd_daemon.gpu.sampler import Sampler
from fsd_daemon.gpu.simulated import SimulatedNvml, simulated_uuid

# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["ray::vLLMHttpServer", "", ""], "vLLMHttpServer"),
        (["ray::vLLMHttpServer.generate"], "vLLMHttpServer"),
        (["ray::WorkerDict.actor_rollout_generate_sequences", ""], "WorkerDict"),
        (["ray::train_fn()"], "train_fn"),
        (["ray::IDLE"], None),
        (["ray::IDLE_SpillWorker"], None),
        (["/usr/bin/python", "-m", "vllm"], None),
        (["VLLM::EngineCore"], None),
        ([], None),
    ],
)
def test_title_class(cmdline: list[str], expected: str | None) -> None:
    assert title_class(cmdline) == expected


def test_raylet_info_from_its_command_line() -> None:
    cmd = [
        "/x/ray/core/src/ray/raylet/raylet",
        "--raylet_socket_name=/tmp/s",
        "--node_id=abc123",
        "--python_worker_command=/usr/bin/python default_worker.py --gcs-address=9.9.9.9:1",
        "--gcs-address=10.0.0.1:6379",
    ]
    info = raylet_info(cmd)
    assert info is not None and info.node_id == "abc123"
    # The first --gcs-address wins; the worker command's copy names the same cluster anyway.
    assert info.gcs_address in ("10.0.0.1:6379", "9.9.9.9:1")
    assert raylet_info(["/usr/bin/python", "--node_id=x"]) is None


def test_visible_devices() -> None:
    assert visible_devices(None) == ()
    assert visible_devices("") == ()
    assert visible_devices("0, 2") == ("0", "2")
    assert visible_devices("1,-1,2") == ("1",)  # CUDA stops at the first invalid index
    assert visible_devices("GPU-abc,3") == ("GPU-abc", "3")


def test_resolve_device_by_index_uuid_and_unique_prefix() -> None:
    uuids = {"GPU-aaaa-1111": 0, "GPU-aaab-2222": 1, "GPU-bbbb-3333": 2}
    assert resolve_device("1", uuids, 3) == 1
    assert resolve_device("3", uuids, 3) is None
    assert resolve_device("GPU-bbbb-3333", uuids, 3) == 2
    assert resolve_device("GPU-aaab", uuids, 3) == 1
    assert resolve_device("GPU-aaa", uuids, 3) is None  # ambiguous
    assert resolve_device("bbbb", uuids, 3) == 2  # CUDA accepts the UUID without "GPU-"
    assert resolve_device("MIG-aaaa-1111", uuids, 3) is None


def test_role_map_exact_first_then_regex_then_other() -> None:
    roles = RoleMap({**DEFAULT_GPU_ROLES, r"My\w+Server": "rollout", "WorkerDict": "train"})
    assert roles.for_class("vLLMHttpServer") == "rollout"
    assert roles.for_class("ActorRolloutRefWorker") == "train"
    assert roles.for_class("MyFancyServer") == "rollout"
    assert roles.for_class("WorkerDict") == "train"
    assert roles.for_class("JobSupervisor") == "other"


@pytest.mark.parametrize(
    ("actor_class", "name", "expected"),
    [
        ("vLLMHttpServer", "vllm_server_3_0", NameFacts("3")),
        ("vLLMHttpServer", "vllm_server_reward_1_0", NameFacts("1", "reward")),
        ("SGLangHttpServer", "sglang_server_2_1", NameFacts("2")),
        ("AsyncvLLMServer", "async_llm_server_5", NameFacts("5")),
        ("vLLMHttpServer", "something_else", NameFacts()),
        ("RewardModelWorker", "vllm_server_3_0", NameFacts()),
        ("vLLMHttpServer", "", NameFacts()),
        # verl main: vllm_async_server.py launch_servers, teacher with name_suffix "_" + key.
        ("vLLMHttpServer", "vllm_server_teacher_0_0_math_7b", NameFacts("0", "teacher", "math_7b")),
        # verl main 1dda039b replica.py init_standalone / init_colocated, named by
        # single_controller/ray/base.py _create_worker: {prefix}{Class}_{pg}:{rank}.
        (
            "CheckpointEngineWorker",
            "rollout_standalone_3CheckpointEngineWorker_0:1",
            NameFacts("3", "", "", "standalone"),
        ),
        (
            "CheckpointEngineWorker",
            "rollout_reward_colocate_0CheckpointEngineWorker_1:7",
            NameFacts("0", "reward", "", "colocated"),
        ),
        (
            "CheckpointEngineWorker",
            "rollout_teacher_standalone_2_org_math_7bCheckpointEngineWorker_0:0",
            NameFacts("2", "teacher", "org_math_7b", "standalone"),
        ),
        # verl 0.6.0 (vLLM) and 0.7.0 (SGLang): the same names, other classes.
        (
            "vLLMAsyncRollout",
            "rollout_standalone_4vLLMAsyncRollout_0:0",
            NameFacts("4", "", "", "standalone"),
        ),
        (
            "ServerAdapter",
            "rollout_colocate_1ServerAdapter_0:3",
            NameFacts("1", "", "", "colocated"),
        ),
        # Not a rollout worker group: the trainer's, a stranger's, a name of another class.
        ("CheckpointEngineWorker", "aB3dE9CheckpointEngineWorker_0:0", NameFacts()),
        ("CheckpointEngineWorker", "rollout_standalone_3WorkerDict_0:1", NameFacts()),
        (
            "CheckpointEngineWorker",
            "rollout_standalone_3\u0663CheckpointEngineWorker_0:1",
            NameFacts(),
        ),
        ("CheckpointEngineWorker", "rollout_standalone_3CheckpointEngineWorker_0:1\n", NameFacts()),
        ("CheckpointEngineWorker", "rollout_standalone_" + "9" * 600, NameFacts()),
    ],
)
def test_name_matcher(actor_class: str, name: str, expected: NameFacts) -> None:
    assert NameMatcher(DEFAULT_PATTERNS).match(actor_class, name) == expected


def test_worker_group_prefix_from_the_environment_until_the_name_is_known() -> None:
    """A worker's WG_PREFIX (its runtime_env, _create_worker) says what its name will."""
    matcher = NameMatcher(DEFAULT_PATTERNS)
    assert matcher.match("CheckpointEngineWorker", "", "rollout_reward_standalone_5") == NameFacts(
        "5", "reward", "", "standalone"
    )
    # The name wins where both are there; a server's WG_PREFIX-like variable counts for nothing.
    assert matcher.match(
        "CheckpointEngineWorker",
        "rollout_colocate_1CheckpointEngineWorker_0:0",
        "rollout_standalone_9",
    ) == NameFacts("1", "", "", "colocated")
    assert matcher.match("vLLMHttpServer", "", "rollout_standalone_5") == NameFacts()
    assert matcher.match("CheckpointEngineWorker", "", "x" * 10_000) == NameFacts()


# -- the resolver ---------------------------------------------------------------------------


class FakeLister:
    def __init__(self) -> None:
        self.actors: list[ActorListing] = []
        self.calls: list[tuple[str, str]] = []
        self.error: str | None = None

    def __call__(self, gcs: str, job: str, timeout: float) -> list[ActorListing]:
        self.calls.append((gcs, job))
        if self.error:
            raise NameLookupFailed(self.error)
        return list(self.actors)


def key(pid: int, job: str = "01000000", node: str = "n1") -> ActorKey:
    return ActorKey("127.0.0.1:6379", job, node, pid, 1.0)


def test_resolver_caches_names_and_forgets_processes_no_longer_wanted() -> None:
    """One listing per job; a found name is not asked again; dropped keys are forgotten."""
    lister, now = FakeLister(), [0.0]
    lister.actors = [ActorListing("vllm_server_0_0", "vLLMHttpServer", "n1", 10, "ALIVE")]
    resolver = ActorNameResolver(lister=lister, clock=lambda: now[0])
    resolver.want([key(10)])
    resolver.resolve_pending()
    assert resolver.names() == {key(10): "vllm_server_0_0"}
    resolver.resolve_pending()
    assert len(lister.calls) == 1
    resolver.want([])
    assert resolver.names() == {}


def test_resolver_matches_node_and_pid_and_backs_off_on_misses_and_failures() -> None:
    """A pid on another node is not ours; a miss or a failure waits a doubling delay."""
    lister, now = FakeLister(), [0.0]
    lister.actors = [ActorListing("vllm_server_0_0", "vLLMHttpServer", "other-node", 10, "ALIVE")]
    resolver = ActorNameResolver(lister=lister, retry=5.0, max_retry=20.0, clock=lambda: now[0])
    resolver.want([key(10)])
    assert resolver.resolve_pending() == pytest.approx(5.0)
    assert resolver.names() == {}
    now[0] = 4.0
    resolver.resolve_pending()
    assert len(lister.calls) == 1  # still backing off
    lister.error = "Ray state API did not answer within 10 s"
    now[0] = 5.0
    assert resolver.resolve_pending() == pytest.approx(10.0)
    assert resolver.failures == 1
    lister.error = None
    lister.actors.append(ActorListing("vllm_server_1_0", "vLLMHttpServer", "n1", 10, "ALIVE"))
    now[0] = 15.0
    resolver.resolve_pending()
    assert resolver.names() == {key(10): "vllm_server_1_0"}


def test_resolver_ignores_processes_outside_any_ray_job() -> None:
    lister = FakeLister()
    resolver = ActorNameResolver(lister=lister)
    resolver.want([ActorKey("", "01000000", "n1", 1, 1.0), ActorKey("g:1", "", "n1", 2, 1.0)])
    resolver.resolve_pending()
    assert lister.calls == []


# -- the tracker over real processes ----------------------------------------------------------

_SLEEP = "import time\nwhile True: time.sleep(1)"
_ACTOR = """
import ctypes, subprocess, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode()[:15], 0, 0, 0)  # PR_SET_NAME, as Ray does
worker = None
if sys.argv[2] == "worker":
    # sys.executable is unknown under a ray:: argv[0]; the test passes the interpreter.
    worker = subprocess.Popen([sys.argv[3], "-c", "import time\\nwhile True: time.sleep(1)"])
print(worker.pid if worker else 0, flush=True)
try:
    sys.stdin.read()
finally:
    if worker:
        worker.kill()
        worker.wait()
"""


@dataclass
class FakeActor:
    proc: subprocess.Popen[str]
    worker_pid: int

    @property
    def pid(self) -> int:
        return self.proc.pid


class FakeRay:
    """A raylet stand-in and ``ray::`` titled actors, stopped by PID on close."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        # The actors' worker children: a SIGKILLed actor leaves its worker behind.
        self.worker_pids: list[int] = []
        self.raylet = self._spawn(
            [
                "/opt/ray/core/src/ray/raylet/raylet",
                "-c",
                _SLEEP,
                "--node_id=node-abc",
                "--gcs-address=127.0.0.1:1",
            ],
            env={},
        )

    def _spawn(self, argv: list[str], env: dict[str, str], **kw: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv,
            executable=sys.executable,
            env={**os.environ, **env},
            text=True,
            **kw,  # type: ignore[call-overload]
        )
        self.procs.append(proc)
        return proc

    def actor(
        self,
        actor_class: str,
        *,
        cvd: str | None,
        worker: bool,
        job: str = "05000000",
        env: dict[str, str] | None = None,
    ) -> FakeActor:
        env = {**(env or {}), "RAY_JOB_ID": job, "RAY_RAYLET_PID": str(self.raylet.pid)}
        if cvd is not None:
            env["CUDA_VISIBLE_DEVICES"] = cvd
        title = f"ray::{actor_class}"
        proc = self._spawn(
            [title, "-c", _ACTOR, title, "worker" if worker else "none", sys.executable],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        worker_pid = int(proc.stdout.readline())
        if worker_pid:
            self.worker_pids.append(worker_pid)
        return FakeActor(proc, worker_pid)

    def close(self) -> None:
        for pid in self.worker_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


@pytest.fixture
def fake_ray() -> Iterator[FakeRay]:
    ray = FakeRay()
    try:
        yield ray
    finally:
        ray.close()


def stop(actor: FakeActor) -> None:
    assert actor.proc.stdin is not None
    actor.proc.stdin.close()  # the actor kills its worker, then exits
    actor.proc.wait(timeout=10)


def ours(owners: tuple[Owner, ...], *pids: int) -> set[Owner]:
    # Other test runs may have Ray processes on this machine: look only at our pids.
    return {o for o in owners if o.pid in pids}


def test_tracker_walks_holders_up_to_their_actor_and_finds_reservations(fake_ray: FakeRay) -> None:
    """GPU 0: held by a vLLMHttpServer's worker child (active, replica from the name).
    GPU 2: given by UUID to a second server that holds nothing (reserved).
    GPU 1: given to a training worker, which is not a reservation. GPU 3: a process outside
    Ray (role other). Then the worker exits (GPU 0 becomes reserved) and the actor exits
    (its series go)."""
    sim = SimulatedNvml(4)
    a = fake_ray.actor("vLLMHttpServer", cvd="0", worker=True)
    b = fake_ray.actor("vLLMHttpServer", cvd=simulated_uuid(2), worker=False)
    c = fake_ray.actor("ActorRolloutRefWorker", cvd="1", worker=False)
    outsider = fake_ray._spawn([sys.executable, "-c", _SLEEP], env={})
    sim.set_holder(0, a.worker_pid, 2**30)
    sim.set_holder(3, outsider.pid, 2**29)
    lister = FakeLister()
    lister.actors = [
        ActorListing("vllm_server_0_0", "vLLMHttpServer", "node-abc", a.pid, "ALIVE"),
        ActorListing("vllm_server_1_0", "vLLMHttpServer", "node-abc", b.pid, "ALIVE"),
    ]
    resolver = ActorNameResolver(lister=lister)
    sampler = Sampler(sim)
    tracker = OwnershipTracker(
        lambda: sampler.snapshot,
        roles=DEFAULT_GPU_ROLES,
        patterns=DEFAULT_PATTERNS,
        resolver=resolver,
    )
    sampler.sample_once()
    tracker.refresh()  # names not known yet: owners already there, without names
    pids = (a.pid, a.worker_pid, b.pid, c.pid, outsider.pid)
    first = ours(tracker.ownership.owners, *pids)
    assert (
        Owner(0, STATE_ACTIVE, a.worker_pid, "rollout", "", "vLLMHttpServer", "", "05000000")
        in first
    )
    resolver.resolve_pending()
    # Only our fake cluster's lookups: another run's Ray-like processes on this machine are
    # looked up too (this session's CI saw two from a concurrent run), but at their own address.
    assert [c for c in lister.calls if c[0] == "127.0.0.1:1"] == [("127.0.0.1:1", "05000000")]
    tracker.refresh()
    assert ours(tracker.ownership.owners, *pids) == {
        Owner(
            0,
            STATE_ACTIVE,
            a.worker_pid,
            "rollout",
            "0",
            "vLLMHttpServer",
            "vllm_server_0_0",
            "05000000",
        ),
        Owner(
            2,
            STATE_RESERVED,
            b.pid,
            "rollout",
            "1",
            "vLLMHttpServer",
            "vllm_server_1_0",
            "05000000",
        ),
        Owner(3, STATE_ACTIVE, outsider.pid, "other"),
    }

    os.kill(a.worker_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sampler.sample_once()
        tracker.refresh()
        owned = ours(tracker.ownership.owners, *pids)
        if not any(o.pid == a.worker_pid for o in owned):
            break
        time.sleep(0.05)
    assert (
        Owner(
            0,
            STATE_RESERVED,
            a.pid,
            "rollout",
            "0",
            "vLLMHttpServer",
            "vllm_server_0_0",
            "05000000",
        )
        in owned
    )

    stop(a)
    stop(b)
    sampler.sample_once()
    tracker.refresh()
    assert ours(tracker.ownership.owners, *pids) == {Owner(3, STATE_ACTIVE, outsider.pid, "other")}
    assert resolver.names() == {}  # forgotten with their processes


def test_tracker_keeps_last_known_holders_while_the_process_call_fails(fake_ray: FakeRay) -> None:
    """processes() failing is "unknown", not "released": the owner series stays while its
    process runs."""
    sim = SimulatedNvml(1)
    holder = fake_ray._spawn([sys.executable, "-c", _SLEEP], env={})
    sim.set_holder(0, holder.pid, 1)
    sampler = Sampler(sim)
    tracker = OwnershipTracker(lambda: sampler.snapshot, roles=DEFAULT_GPU_ROLES)
    sampler.sample_once()
    tracker.refresh()
    assert ours(tracker.ownership.owners, holder.pid) == {
        Owner(0, STATE_ACTIVE, holder.pid, "other")
    }

    from fsd_daemon.gpu.backend import CallFailed, GpuProcess

    def broken(index: int) -> list[GpuProcess]:
        raise CallFailed("nvmlDeviceGetComputeRunningProcesses", "timeout")

    sim.processes = broken  # type: ignore[method-assign]
    sampler.sample_once()
    assert sampler.snapshot.gpus[0].processes is None
    tracker.refresh()
    assert ours(tracker.ownership.owners, holder.pid) == {
        Owner(0, STATE_ACTIVE, holder.pid, "other")
    }

    holder.kill()  # a holder that exits meanwhile is not kept
    holder.wait(timeout=10)
    sampler.sample_once()
    tracker.refresh()
    assert ours(tracker.ownership.owners, holder.pid) == set()


def test_proc_stat_table_reads_parent_and_name_even_with_odd_names(fake_ray: FakeRay) -> None:
    """The lean /proc reader agrees with the kernel on ppid and comm, parentheses included."""
    from fsd_daemon.gpu.proctable import ProcessTable

    odd = fake_ray._spawn(
        [
            sys.executable,
            "-c",
            "import ctypes, sys, time\n"
            "ctypes.CDLL(None).prctl(15, b'ray::a) (b c', 0, 0, 0)\n"
            "print(1, flush=True)\n"
            "time.sleep(60)",
        ],
        env={},
        stdout=subprocess.PIPE,
    )
    assert odd.stdout is not None and odd.stdout.readline().strip() == "1"
    table = ProcessTable("/proc").read()
    assert table[os.getpid()].ppid == os.getppid()
    assert table[odd.pid].ppid == os.getpid()
    assert table[odd.pid].name == "ray::a) (b c"


# -- verl's rollout modes ---------------------------------------------------------------------

J = "02000000"


def _o(gpu: int, pid: int, role: str, replica: str, cls: str, **kw: str) -> Owner:
    return Owner(gpu, STATE_ACTIVE, pid, role, replica, cls, kw.pop("name", ""), J, **kw)


def test_settle_standalone_replica_reserved_until_its_engine_holds_the_gpu() -> None:
    """verl main, standalone (replica.py init_standalone): replica 0's GPUs 0 and 1 are held
    by its CheckpointEngineWorkers; the engine (a child of vllm_server_0_0) holds GPU 0 only,
    so GPU 1 is reserved by replica 0 and every owner says mode standalone."""
    cew = "CheckpointEngineWorker"
    settled = set(
        settle_replicas(
            [
                _o(0, 11, "rollout", "0", cew, mode="standalone"),
                _o(1, 12, "rollout", "0", cew, mode="standalone"),
                _o(0, 20, "rollout", "0", "vLLMHttpServer", name="vllm_server_0_0"),
            ]
        )
    )
    assert settled == {
        Owner(0, STATE_ACTIVE, 11, "rollout", "0", cew, "", J, mode="standalone"),
        Owner(1, STATE_RESERVED, 12, "rollout", "0", cew, "", J, mode="standalone"),
        Owner(
            0, STATE_ACTIVE, 20, "rollout", "0", "vLLMHttpServer", "vllm_server_0_0", J,
            mode="standalone",
        ),
    }  # fmt: skip


def test_settle_colocated_reward_and_hybrid_rollout_side_by_side() -> None:
    """GPU 0: the trainer's WorkerDict, rollout replica 0's engine (hybrid: no worker group of
    its own, init_hybrid) and reward replica 0's worker group and engine (init_colocated, in
    the trainer's placement group). Each replica is labelled with its own mode; the trainer
    with none."""
    owners = settle_replicas(
        [
            _o(0, 1, "train", "", "WorkerDict", name="aB3dE9WorkerDict_0:0"),
            _o(0, 2, "rollout", "0", "vLLMHttpServer"),
            _o(0, 3, "reward", "0", "CheckpointEngineWorker", mode="colocated"),
            _o(0, 4, "reward", "0", "vLLMHttpServer"),
        ]
    )
    assert {(o.pid, o.state, o.mode) for o in owners} == {
        (1, STATE_ACTIVE, ""),
        (2, STATE_ACTIVE, "hybrid"),
        (3, STATE_ACTIVE, "colocated"),
        (4, STATE_ACTIVE, "colocated"),
    }
    # Counted once per replica: the distinct (role, replica) owners of the GPU.
    assert {(o.role, o.replica) for o in owners} == {
        ("train", ""),
        ("rollout", "0"),
        ("reward", "0"),
    }


def test_tracker_reads_a_checkpoint_engine_worker_as_its_replica(fake_ray: FakeRay) -> None:
    """A CheckpointEngineWorker holding GPU 0 (started with WG_PREFIX=rollout_standalone_3,
    as verl's _create_worker starts it) and no engine on it: reserved by rollout replica 3,
    standalone, before Ray lists its name; never role "other". Once the engine's process
    (a child of vllm_server_3_0, given GPU 0) holds GPU 0 too, both are active."""
    sim = SimulatedNvml(2)
    cew = fake_ray.actor(
        "CheckpointEngineWorker", cvd=None, worker=False, env={"WG_PREFIX": "rollout_standalone_3"}
    )
    server = fake_ray.actor("vLLMHttpServer", cvd=None, worker=True, env={})
    sim.set_holder(0, cew.pid, 2**29)
    lister = FakeLister()
    lister.actors = [
        ActorListing("vllm_server_3_0", "vLLMHttpServer", "node-abc", server.pid, "ALIVE"),
    ]
    resolver = ActorNameResolver(lister=lister)
    sampler = Sampler(sim)
    tracker = OwnershipTracker(
        lambda: sampler.snapshot, roles=DEFAULT_GPU_ROLES, patterns=DEFAULT_PATTERNS,
        resolver=resolver,
    )  # fmt: skip
    sampler.sample_once()
    tracker.refresh()
    pids = (cew.pid, server.pid, server.worker_pid)
    assert ours(tracker.ownership.owners, *pids) == {
        Owner(
            0, STATE_RESERVED, cew.pid, "rollout", "3", "CheckpointEngineWorker", "", "05000000",
            mode="standalone",
        )
    }  # fmt: skip
    sim.set_holder(0, server.worker_pid, 2**33)
    sampler.sample_once()
    tracker.refresh()  # the server is wanted now: its name is looked up
    resolver.resolve_pending()
    tracker.refresh()
    assert {
        (o.pid, o.state, o.role, o.replica, o.mode) for o in ours(tracker.ownership.owners, *pids)
    } == {
        (cew.pid, STATE_ACTIVE, "rollout", "3", "standalone"),
        (server.worker_pid, STATE_ACTIVE, "rollout", "3", "standalone"),
    }


def test_tracker_takes_the_mode_of_a_worker_group_that_holds_no_gpu(fake_ray: FakeRay) -> None:
    """verl's default (naive) checkpoint engine never touches CUDA: the colocated reward
    replica's CheckpointEngineWorker holds nothing, yet its WG_PREFIX says the replica is
    colocated, not hybrid, though the trainer's WorkerDict shares its GPU."""
    sim = SimulatedNvml(1)
    trainer = fake_ray.actor("WorkerDict", cvd=None, worker=False, env={"WG_PREFIX": "aB3dE9"})
    fake_ray.actor(
        "CheckpointEngineWorker",
        cvd=None,
        worker=False,
        env={"WG_PREFIX": "rollout_reward_colocate_0"},
    )
    server = fake_ray.actor("vLLMHttpServer", cvd=None, worker=True)
    sim.set_holder(0, trainer.pid, 2**34)
    sim.set_holder(0, server.worker_pid, 2**33)
    lister = FakeLister()
    lister.actors = [
        ActorListing("vllm_server_reward_0_0", "vLLMHttpServer", "node-abc", server.pid, "ALIVE")
    ]
    resolver = ActorNameResolver(lister=lister)
    sampler = Sampler(sim)
    tracker = OwnershipTracker(
        lambda: sampler.snapshot, roles=DEFAULT_GPU_ROLES, patterns=DEFAULT_PATTERNS,
        resolver=resolver,
    )  # fmt: skip
    sampler.sample_once()
    tracker.refresh()
    resolver.resolve_pending()
    tracker.refresh()
    owned = ours(tracker.ownership.owners, trainer.pid, server.worker_pid)
    assert {(o.pid, o.role, o.replica, o.mode) for o in owned} == {
        (trainer.pid, "train", "", ""),
        (server.worker_pid, "reward", "0", "colocated"),
    }
