"""The Ray bridge through its real protocol (a spawned child, the pipe, the child's deadline),
with a backend that answers like Ray, slowly on purpose (tests/support/slowray.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fsd_daemon.discovery import ray_bridge
from fsd_daemon.discovery.base import ActorRecord
from fsd_daemon.discovery.ray_bridge import RayBridge
from fsd_daemon.sim.launch import start_job
from fsd_daemon.sim.rayhead import RayHead
from tests.support.slowray import address_of

SLOW = "tests.support.slowray:SlowBackend"


def _actors(n: int, prefix: str = "vllm_server", first_id: int = 0) -> list[ActorRecord]:
    return [
        ActorRecord(
            actor_id=f"{first_id + i:032x}",
            class_name="vLLMHttpServer",
            name=f"{prefix}_{i}_0",
            job_id="01000000",
            namespace="ns",
            node_id="n" * 56,
            pid=1000 + i,
        )
        for i in range(n)
    ]


def _started(bridge: RayBridge) -> RayBridge:
    assert bridge.wait_ready(60), bridge.problem()
    return bridge


def test_2500_servers_resolve_in_bounded_polls_keeping_progress() -> None:
    """2,500 unresolved servers, each lookup a 20 ms GCS round trip and each call 50 ms: one
    lookup after another would need 175 s per batch and time out at every poll. In bounded
    concurrent work every poll hands back what finished, nothing is asked twice, the child is
    never restarted, and all are resolved within a bounded number of 1-second polls."""
    actors = _actors(2500)
    bridge = _started(
        RayBridge(
            "fake:1",
            timeout=1.0,
            concurrency=32,
            backend=SLOW,
            backend_options={"lookup_seconds": 0.02, "call_seconds": 0.05},
        )
    )
    try:
        resolved: dict[str, str | tuple[str, int]] = {}
        polls = 0
        started = time.monotonic()
        while len(resolved) < len(actors) and polls < 60:
            waiting = [a for a in actors if a.actor_id not in resolved]
            answers = bridge.resolve_addresses(waiting)
            polls += 1
            assert answers, f"poll {polls} handed back nothing ({bridge.problem()})"
            for actor_id, answer in answers.items():
                assert answer.error is None, answer.error
                assert answer.address is not None
                resolved[actor_id] = answer.address
        took = time.monotonic() - started
        print(f"2500 servers resolved in {polls} polls, {took:.1f} s")
        assert len(resolved) == len(actors)
        assert all(resolved[a.actor_id] == address_of(a.actor_id) for a in actors)
        # 2500 * 20 ms / 32 threads = 1.6 s of lookups: a few polls, not one per server.
        assert polls <= 15, polls
        assert bridge.starts == 1 and bridge.problem() is None
    finally:
        bridge.close()


def test_a_hung_call_costs_the_wait_once_and_lookups_fail_per_actor() -> None:
    """One server never answers, one name is unknown: the others are resolved in the first
    poll, the unknown one gets its own error, and later polls do not wait for the hung one."""
    actors = [*_actors(20), *_actors(1, "missing", first_id=100), _hung()]
    bridge = _started(
        RayBridge(
            "fake:1",
            timeout=1.0,
            backend=SLOW,
            backend_options={"hang_names": ("hung_0_0",)},
        )
    )
    try:
        first = bridge.resolve_addresses(actors)
        ok = {k for k, v in first.items() if v.address is not None}
        assert len(ok) == 20
        missing = first[actors[20].actor_id]
        assert missing.address is None and "Failed to look up actor" in (missing.error or "")
        assert actors[21].actor_id not in first  # still running: no answer, no error
        started = time.monotonic()
        again = bridge.resolve_addresses([actors[21]])
        assert time.monotonic() - started < 0.5, "a later poll waited for the hung call"
        assert again == {}
        assert bridge.problem() is None and bridge.starts == 1
    finally:
        bridge.close()


def _hung() -> ActorRecord:
    return ActorRecord(
        actor_id="f" * 32,
        class_name="vLLMHttpServer",
        name="hung_0_0",
        job_id="01000000",
        namespace="ns",
        node_id="n" * 56,
        pid=9,
    )


def test_child_runs_only_while_needed() -> None:
    """The child stops once idle (nothing unresolved asks for it) and comes back on demand;
    the warm-up gate (``ready``) stays open meanwhile."""
    bridge = _started(RayBridge("fake:1", timeout=1.0, idle_seconds=0.5, backend=SLOW))
    try:
        assert bridge.resolve_addresses(_actors(3))
        pid = bridge.pid
        assert pid is not None
        deadline = time.monotonic() + 10
        while bridge.pid is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bridge.pid is None, "the idle child was not stopped"
        assert bridge.ready  # idle, not broken: nothing to wait for
        assert bridge.wait_ready(60)
        assert len(bridge.resolve_addresses(_actors(2))) == 2
        assert bridge.starts == 2 and bridge.pid != pid
    finally:
        bridge.close()


def test_child_error_reaches_problem_and_log(caplog: pytest.LogCaptureFixture) -> None:
    """A driver that cannot connect: problem() names the child's own error in one line, the
    log says it once, and the next start waits (capped backoff), not a tight restart loop."""
    caplog.set_level(logging.INFO, logger="fsd_daemon.discovery.ray_bridge")
    bridge = RayBridge("fake:1", backend="tests.support.slowray:FailingBackend")
    try:
        assert not bridge.wait_ready(5)
        problem = bridge.problem()
        assert problem is not None and "\n" not in problem
        assert "cannot connect" in problem and "InvalidAuthToken" in problem
        assert sum("InvalidAuthToken" in r.getMessage() for r in caplog.records) == 1
        assert bridge.starts <= 4, f"{bridge.starts} starts in 5 s: no backoff"
    finally:
        bridge.close()


def _with_read_only(
    directory: Path | str, then: str, *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the shell command ``then`` in a mount namespace of its own in which ``directory`` is
    a read-only bind mount (what systemd's ProtectSystem=strict makes of /tmp); from the
    repository root, so ``tests.support`` imports. Needs root and unshare(1)."""
    script = (
        f"mount --bind {directory} {directory} && mount -o remount,ro,bind {directory} && {then}"
    )
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=Path(__file__).parent.parent,
    )


def test_private_temp_dir_under_a_read_only_tmp(tmp_path: Path) -> None:
    """Ray's default temp root writable: Ray's own choice (None). Read-only, as systemd's
    ProtectSystem=strict makes /tmp (here a read-only bind mount in a mount namespace of
    our own): a directory of our own in RUNTIME_DIRECTORY, else None is never returned."""
    from fsd_daemon.discovery.ray_bridge import private_temp_dir

    assert private_temp_dir({"RAY_TMPDIR": str(tmp_path)}) is None
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("needs root and unshare(1) for a mount namespace (CI has both)")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    runtime = tmp_path / "run"
    runtime.mkdir()
    probe = (
        "from fsd_daemon.discovery.ray_bridge import private_temp_dir; import os; "
        f"print(private_temp_dir({{'RAY_TMPDIR': {str(readonly)!r}, "
        f"'RUNTIME_DIRECTORY': {str(runtime)!r}}}))"
    )
    done = _with_read_only(
        readonly,
        f'touch {readonly}/x 2>/dev/null && echo WRITABLE; {sys.executable} -c "{probe}"',
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "WRITABLE" not in done.stdout
    assert done.stdout.strip().splitlines()[-1] == str(runtime / "ray")


@pytest.mark.ray
def test_real_bridge_resolves_under_a_read_only_tmp(tmp_path: Path) -> None:
    """systemd's ProtectSystem=strict makes /tmp read-only: Ray's driver then fails (EROFS when
    it creates its temp dir up to Ray 2.53; an abort when spdlog cannot open its log file in
    the cluster's session dir in 2.54+). The real bridge, in a mount namespace whose /tmp is a
    read-only bind mount, with systemd's RUNTIME_DIRECTORY writable, still resolves a real
    server of a real ``ray start --head`` cluster."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("needs root and unshare(1) for a mount namespace (CI has both)")
    runtime = Path(tempfile.mkdtemp(prefix="fsd-run-", dir="/var/tmp"))
    try:
        with RayHead(tmp_path) as head:
            job = start_job(head.address, "--vllm", "1")
            try:
                env = {k: v for k, v in os.environ.items() if k not in ("RAY_TMPDIR", "TMPDIR")}
                env["RUNTIME_DIRECTORY"] = str(runtime)
                done = _with_read_only(
                    "/tmp",
                    "! touch /tmp/fsd-ro-probe 2>/dev/null && "
                    f"exec {sys.executable} -m tests.support.bridge_probe "
                    f"{head.address} {head.dashboard_url}",
                    timeout=240,
                    env=env,
                )
            finally:
                job.stop()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, (lines, done.stderr[-3000:])
    assert lines == [{"name": "vllm_server_0_0", "address": list(job.info["actors"][0]["address"])}]


def test_a_new_session_is_not_warm_until_the_new_child_connects() -> None:
    """After ``restart()`` (a new Ray session) ``ready`` is false until a fresh child has
    connected, even when the old child had been stopped for being idle: the daemon's warm-up
    gate must hold the files until the new session's servers can be resolved."""
    slow_connect = "tests.support.slowray:SlowBackend"
    bridge = _started(
        RayBridge(
            "fake:1",
            timeout=1.0,
            idle_seconds=0.5,
            backend=slow_connect,
            backend_options={"connect_seconds": 1.5},
        )
    )
    try:
        deadline = time.monotonic() + 10
        while bridge.pid is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bridge.pid is None and bridge.ready  # idle-stopped, still warm
        bridge.restart()
        assert not bridge.ready  # a new session: nothing answered there yet
        assert bridge.wait_ready(30)
    finally:
        bridge.close()


def _rss_mib(pid: int | None) -> float:
    import psutil

    assert pid is not None
    return psutil.Process(pid).memory_info().rss / 2**20


def test_steady_churn_keeps_the_child_bounded_and_loses_no_answer() -> None:
    """A Ray driver keeps every actor it looked up (ray-project/ray#9342); the soak measured the
    bridge child growing 34 MiB an hour under steady churn, never idle long enough to stop.
    Here the fake driver keeps 1 MiB per lookup, and 30 new servers come per poll as a daemon
    under churn sees them: the child is replaced after ``recycle_after`` answers, its RSS
    stays bounded (it grew past 250 MiB before), and every server is resolved, once, right."""
    arrivals = _actors(300)
    bridge = _started(
        RayBridge(
            "fake:1",
            timeout=1.0,
            recycle_after=50,
            backend=SLOW,
            backend_options={"retain_bytes_per_lookup": 2**20},
        )
    )
    try:
        base = _rss_mib(bridge.pid)
        resolved: dict[str, object] = {}
        peak = base
        polls = 0
        while len(resolved) < len(arrivals) and polls < 200:
            listed = arrivals[: 30 * (polls + 1)]
            waiting = [a for a in listed if a.actor_id not in resolved]
            for actor_id, answer in bridge.resolve_addresses(waiting).items():
                assert answer.error is None, answer.error
                assert actor_id not in resolved, "answered twice"
                resolved[actor_id] = answer.address
            assert bridge.problem() is None, bridge.problem()
            polls += 1
            if bridge.pid is not None:
                peak = max(peak, _rss_mib(bridge.pid))
            if not bridge.wait_ready(60):
                break
        print(f"{polls} polls, {bridge.recycles} replacements, RSS {base:.0f} -> peak {peak:.0f}")
        assert all(resolved.get(a.actor_id) == address_of(a.actor_id) for a in arrivals)
        assert bridge.recycles >= 4 and bridge.starts in (bridge.recycles, bridge.recycles + 1)
        # At most about 2 * recycle_after lookups live in one child (one batch past the bound).
        assert peak - base < 130, f"the child grew {peak - base:.0f} MiB"
    finally:
        bridge.close()


def test_a_busy_child_is_replaced_only_once_its_work_is_done() -> None:
    """600 servers from cold, each lookup 50 ms on 4 threads (7.5 s of work) and one server
    whose call hangs: the child answers far more than ``recycle_after`` while lookups are
    still queued, and is not replaced then (that would throw away the work in flight at every
    poll of a cold start); once everything but the hung call is answered it is."""
    actors = [*_actors(600), _hung()]
    bridge = _started(
        RayBridge(
            "fake:1",
            timeout=0.5,
            concurrency=4,
            recycle_after=20,
            backend=SLOW,
            backend_options={"lookup_seconds": 0.05, "hang_names": ("hung_0_0",)},
        )
    )
    try:
        resolved: set[str] = set()
        polls = 0
        while len(resolved) < 600 and polls < 100:
            answers = bridge.resolve_addresses([a for a in actors if a.actor_id not in resolved])
            resolved.update(answers)
            polls += 1
            if len(resolved) < 600:
                assert bridge.recycles == 0, f"replaced while busy, after {len(resolved)}"
        assert len(resolved) == 600 and polls > 5
        if bridge.recycles == 0:  # the last answers came with the hung call still in its window
            assert bridge.resolve_addresses([_hung()]) == {}
        assert bridge.recycles == 1 and bridge.starts == 1 and bridge.pid is None
        assert bridge.ready  # stopped, still warm: the next request starts a fresh child
        assert bridge.problem() is None
    finally:
        bridge.close()


def test_a_hung_call_does_not_hold_off_the_replacement() -> None:
    """A call that never ends (a hung server asked about at every poll) is waited for in its
    first window only, and does not make the child busy for good: it is replaced when due."""
    bridge = _started(
        RayBridge(
            "fake:1",
            timeout=0.5,
            recycle_after=25,
            backend=SLOW,
            backend_options={"hang_names": ("hung_0_0",)},
        )
    )
    try:
        first = bridge.resolve_addresses([*_actors(20), _hung()])
        assert len(first) == 20 and bridge.recycles == 0  # 20 answered: not due yet
        again = bridge.resolve_addresses([*_actors(10, first_id=500), _hung()])
        assert len(again) == 10  # 30 answered, the hung call past its window: replaced
        assert bridge.recycles == 1 and bridge.pid is None
        assert bridge.wait_ready(60) and bridge.starts == 2
        assert len(bridge.resolve_addresses(_actors(3, first_id=900))) == 3
    finally:
        bridge.close()


@pytest.mark.ray
def test_real_bridge_replaced_between_polls_still_resolves_real_servers(tmp_path: Path) -> None:
    """The replacement against a real ``ray start --head``: a driver killed after one answer and
    a new one connected at once; every real server is resolved to its own address."""
    from fsd_daemon.discovery.ray_state import RayStateSource

    with RayHead(tmp_path) as head:
        job = start_job(head.address, "--vllm", "3")
        bridge = RayBridge(head.address, timeout=5.0, recycle_after=1)
        try:
            actors = [
                a
                for a in RayStateSource(head.dashboard_url, timeout=5).snapshot().actors
                if a.name.startswith("vllm_server")
            ]
            assert len(actors) == 3
            resolved: dict[str, object] = {}
            deadline = time.monotonic() + 180
            while len(resolved) < 3 and time.monotonic() < deadline:
                bridge.wait_ready(90)
                waiting = [a for a in actors if a.name not in resolved]
                for answer in bridge.resolve_addresses(waiting[:1]).values():
                    assert answer.error is None, answer.error
                    resolved[waiting[0].name] = answer.address
            expected = {a["name"]: tuple(a["address"]) for a in job.info["actors"]}
            assert {k: tuple(v) for k, v in resolved.items()} == expected  # type: ignore[arg-type]
            assert bridge.recycles >= 2 and bridge.problem() is None
        finally:
            bridge.close()
            job.stop()


def test_child_output_reaches_the_log_one_line_per_event(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """The bridge child writes a C++ stack dump and a Python traceback to its stderr: nothing
    of it reaches the daemon's own stderr raw; the log has one WARNING line for each event,
    naming the child, the traceback's line being its exception."""
    caplog.set_level(logging.INFO, logger="fsd_daemon")
    bridge = RayBridge("fake:1", backend="tests.support.slowray:NoisyFailingBackend")
    try:
        assert not bridge.wait_ready(5)
        time.sleep(1.5)  # the reader's quiet time: the last event is complete
    finally:
        bridge.close()
    raw = capfd.readouterr()
    assert "Traceback" not in raw.err and "StackTrace" not in raw.err, raw.err
    events = [
        r.getMessage()
        for r in caplog.records
        if r.name == "fsd_daemon.plumbing.childlog" and r.levelno == logging.WARNING
    ]
    assert any("global_state_accessor.cc:111" in e and "lines at DEBUG" in e for e in events)
    assert any("ConnectionError: InvalidAuthToken" in e for e in events), events


def test_a_child_kept_connected_stays_up_when_quiet_and_is_replaced_ahead_of_need(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kept connected, the child is not stopped for being idle (a fresh one takes seconds to
    import Ray and connect: the first server after a quiet minute waited 2.5 s for it); one
    that has lived ``max_age_seconds`` is replaced while quiet, and one that exits is started
    again, both without waiting for a request; the replacement answers at once."""
    monkeypatch.setattr(ray_bridge, "_QUIET_BEFORE_REPLACING", 0.5)
    bridge = _started(
        RayBridge(
            "fake:1",
            timeout=1.0,
            idle_seconds=0.4,
            max_age_seconds=3.0,
            backend=SLOW,
            keep_connected=True,
        )
    )
    try:
        assert bridge.resolve_addresses(_actors(3))
        first = bridge.pid
        time.sleep(1.5)  # idle for well over idle_seconds
        assert bridge.pid == first, "the quiet child was stopped"
        deadline = time.monotonic() + 20
        while (bridge.pid in (None, first) or bridge.recycles < 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = bridge.pid
        assert bridge.recycles == 1 and second not in (None, first), "not replaced by age"
        os.kill(second, signal.SIGKILL)  # a child that dies while the cluster is quiet
        deadline = time.monotonic() + 20
        while bridge.pid in (None, second) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bridge.pid not in (None, second), "the dead child was not started again"
        assert bridge.wait_ready(60)
        assert len(bridge.resolve_addresses(_actors(2))) == 2
    finally:
        bridge.close()
