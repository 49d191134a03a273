"""The fault suite: break the daemon on purpose and check that nothing is lost.

Every test here asserts the same three things about the target files, whatever the fault:
never invalid (Prometheus's own parser, promtool, accepts every version), never emptied by a
fault, and no temp file left behind once the daemon has run again.
"""

from __future__ import annotations

import logging
import os
import pwd
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsd_daemon.config import load_config
from fsd_daemon.discovery.static import StaticCluster
from fsd_daemon.pipeline.reconcile import Reconciler
from fsd_daemon.pipeline.render import render
from fsd_daemon.plumbing.atomic_files import AtomicFileWriter
from fsd_daemon.sim.harness import DaemonProcess, LocalRayCluster, read_groups, wait_for
from fsd_daemon.sim.launch import free_port, start_job
from tests.support.clusterfile import cluster, node, server
from tests.support.fs import fill, remount, small_tmpfs


def write_atomically(path: Path, data: Any) -> None:
    """How the tests change the described cluster: the daemon sees one version or the next."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, path)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def no_temp_file_stays(directory: Path) -> None:
    """While the daemon keeps retrying, a look at the directory can land between a write's
    open and its unlink (CI saw ``.rollout.json.<pid>.tmp`` so): the invariant is that no temp
    file *stays*. A leaked one is there at every look (each retry reuses the same name), so
    this still fails on a writer that does not unlink on error."""
    wait_for(lambda: leftovers(directory) == [], timeout=3, step=0.005)


def promtool_accepts(promtool: str, files_glob: str, tmp_path: Path) -> None:
    """``promtool check config`` parses every file_sd file the glob matches, as Prometheus would."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "scrape_configs:\n  - job_name: check\n    file_sd_configs:\n"
        f"      - files: ['{files_glob}']\n"
    )
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_rejects_a_bad_file(promtool: str, tmp_path: Path) -> None:
    """The checker above can fail: a label name Prometheus refuses makes promtool exit non-zero."""
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "bad.json").write_text(
        '[{"targets": ["127.0.0.1:1"], "labels": {"bad-name": "x"}}]'
    )
    with pytest.raises(AssertionError):
        promtool_accepts(promtool, str(tmp_path / "sd" / "*.json"), tmp_path)


# -- kill -9 at random moments -----------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_during_200_write_cycles_never_leaves_a_partial_file(tmp_path: Path) -> None:
    """Versions only grow (server k joins at version k), so "one complete version" is checkable:
    the file must hold exactly servers 0..k-1 for some k. The daemon is killed with SIGKILL a
    few milliseconds after a change, at random, many times; each restart sweeps its temp files."""
    rng = random.Random(20261129)
    described = tmp_path / "cluster.json"
    out = tmp_path / "out"
    rollout = out / "rollout.json"
    servers: list[dict[str, Any]] = []
    write_atomically(described, cluster())
    settings_ = {"daemon.poll_interval_seconds": 0.02}
    version = 0
    kills = 0
    seen_complete: set[int] = set()

    def check_complete() -> int:
        groups = orjson.loads(rollout.read_bytes())  # must parse: never a partial file
        ports = sorted(int(g["targets"][0].rsplit(":", 1)[1]) for g in groups)
        assert ports == [20000 + i for i in range(len(ports))], ports
        return len(ports)

    while version < 220:
        d = DaemonProcess(f"file:{described}", out, **settings_)
        try:
            if version:
                # A restart after a kill: the leftovers of the killed write are swept.
                wait_for(lambda v=version: rollout.exists() and check_complete() == v, timeout=30)
                assert leftovers(out) == []
            for _ in range(rng.randint(5, 15)):
                servers.append(server(version))
                version += 1
                write_atomically(described, cluster(*servers))
                wait_for(
                    lambda v=version: rollout.exists() and check_complete() == v,
                    timeout=30,
                    step=0.002,
                )
                seen_complete.add(version)
            servers.append(server(version))
            version += 1
            write_atomically(described, cluster(*servers))
            time.sleep(rng.uniform(0.0, 0.06))  # somewhere in poll, render, write or rename
            os.kill(d.pid, signal.SIGKILL)
            d.proc.wait(timeout=10)
            kills += 1
        finally:
            d.stop()
        if rollout.exists():
            assert check_complete() in (version - 1, version)
    print(
        f"{version} write cycles, {kills} kills with SIGKILL, {len(seen_complete)} versions checked"
    )
    assert kills >= 15 and version >= 200


# -- full disk, read-only, permission denied ---------------------------------------------------


SIZE = 256 * 1024


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", SIZE) as mount:
        yield mount


def _problems(d: DaemonProcess) -> str:
    status, body = d.health()
    return f"{status} {orjson.dumps(body).decode()}"


@pytest.mark.parametrize("fault", ["full_disk", "read_only"])
def test_unwritable_disk_keeps_old_file_and_health_says_why(
    tmp_path: Path, tiny_disk: Path, fault: str
) -> None:
    described = tmp_path / "cluster.json"
    write_atomically(described, cluster(server(0), server(1)))
    out = tiny_disk / "targets"
    with DaemonProcess(f"file:{described}", out, **{"daemon.poll_interval_seconds": 0.1}) as d:
        wait_for(lambda: len(d.rollout()) == 2)
        before = (out / "rollout.json").read_bytes()
        filler = None
        if fault == "full_disk":
            filler = fill(tiny_disk)
            why = "ENOSPC"
        else:
            remount(tiny_disk, read_only=True, size_bytes=SIZE)
            why = "EROFS"
        write_atomically(described, cluster(server(0), server(1), server(2)))
        wait_for(lambda: d.health()[0] == 503 and why in _problems(d), timeout=10)
        seen = d.polls()
        wait_for(lambda: d.polls() >= seen + 3, timeout=10)  # several retries
        assert (out / "rollout.json").read_bytes() == before
        no_temp_file_stays(out)
        assert d.proc.poll() is None
        assert why in d.output() and "retrying" in d.output()
        if filler is not None:
            filler.unlink()
        else:
            remount(tiny_disk, read_only=False, size_bytes=SIZE)
        wait_for(lambda: len(d.rollout()) == 3, timeout=10)
        wait_for(lambda: d.health()[0] == 200, timeout=10)
        no_temp_file_stays(out)


def test_permission_denied_keeps_old_file_and_health_says_why(tmp_path: Path) -> None:
    """The daemon runs without capabilities (util-linux's setpriv drops them all, so even root
    obeys file permissions) on a directory owned by someone else: it says EACCES, keeps the old
    file, and writes as soon as the directory is given to it."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and util-linux's setpriv to run the daemon without privileges")
    nobody = pwd.getpwnam("nobody")
    described = tmp_path / "cluster.json"
    write_atomically(described, cluster(server(0)))
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    (out / "rollout.json").write_bytes(b"[]\n")
    for path in (out, out / "rollout.json"):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    before = (out / "rollout.json").read_bytes()
    no_privileges = [setpriv, "--bounding-set=-all", "--inh-caps=-all"]
    with DaemonProcess(
        f"file:{described}", out, wrapper=no_privileges, **{"daemon.poll_interval_seconds": 0.1}
    ) as d:
        wait_for(lambda: d.health()[0] == 503 and "EACCES" in _problems(d), timeout=20)
        assert (out / "rollout.json").read_bytes() == before
        assert d.proc.poll() is None
        assert "EACCES" in d.output()
        os.chown(out, 0, 0)
        wait_for(lambda: len(d.rollout()) == 1, timeout=10)
        wait_for(lambda: d.health()[0] == 200, timeout=10)
        assert leftovers(out) == []


# -- a target file changed from outside ----------------------------------------------------------


# A poll every 5 minutes, fast polls after a change included (the first poll is one, and the
# fast polls of the next 10 s put a file back too): within a test's wait only the watcher can
# restore a file, however slow the machine.
_ONLY_THE_WATCHER = {
    "daemon.poll_interval_seconds": 300.0,
    "daemon.fast_poll_interval_seconds": 300.0,
}


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage", "other_targets"])
def test_damaged_target_file_is_restored(tmp_path: Path, damage: str) -> None:
    described = tmp_path / "cluster.json"
    write_atomically(described, cluster(server(0), server(1)))
    out = tmp_path / "out"
    with DaemonProcess(f"file:{described}", out, **_ONLY_THE_WATCHER) as d:
        wait_for(lambda: len(d.rollout()) == 2, timeout=20)
        path = out / "rollout.json"
        good = path.read_bytes()
        if damage == "delete":
            path.unlink()
        elif damage == "truncate":
            path.write_bytes(b"")
        elif damage == "garbage":
            path.write_bytes(b'[{"targets": ["127.0.0.1:1"], "labels": {"a-b": "x"}}')
        else:
            path.write_bytes(b'[{"targets": ["10.0.0.1:9"], "labels": {}}]\n')
        took = wait_for(lambda: path.exists() and path.read_bytes() == good, timeout=10, step=0.01)
        print(f"{damage}: restored in {took * 1000:.0f} ms")


# -- hostile actor data ----------------------------------------------------------------------------

_weird_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=3000),
    st.sampled_from(
        ["", "\x00", "\n\t\r", "\u202e", "é🙂", "a\ud800b", "\x7f", "${x}", '"quoted"']
    ),
)
_hosts = st.one_of(
    st.sampled_from(
        ["127.0.0.1", "10.1.2.3", "::1", "fe80::1", "[::1]", "2001:db8::7", "node-1.local"]
    ),
    st.text(max_size=30),
)
_ports = st.one_of(st.sampled_from([0, 1, 65535, 65536, -1, 8000]), st.integers(-10, 70_000))
_addresses = st.one_of(
    st.tuples(_hosts, _ports).map(list),
    st.builds(lambda h, p: f"{h}:{p}", _hosts, _ports),
    st.text(max_size=30),
    st.sampled_from([None, 12, ["a"], ["127.0.0.1", "80"], ["127.0.0.1", True]]),
)


@st.composite
def _actors(draw: st.DrawFn) -> list[dict[str, Any]]:
    actors = []
    for i in range(draw(st.integers(1, 8))):
        engine = draw(st.sampled_from(["vllm", "sglang"]))
        role = draw(st.sampled_from(["", "reward_", "teacher_", "décode_", "x-y_"]))
        name = draw(st.one_of(st.just(f"{engine}_server_{role}{i}_0"), _weird_text))
        actors.append(
            {
                "actor_id": draw(st.one_of(st.just(f"a{i}"), st.just("a0"))),  # duplicates too
                "class_name": {"vllm": "vLLMHttpServer", "sglang": "SGLangHttpServer"}[engine],
                "name": name,
                "job_id": draw(st.one_of(st.just("01000000"), _weird_text)),
                "namespace": draw(_weird_text),
                "node_id": draw(st.one_of(st.just("n0"), _weird_text)),
                "pid": 1,
                "address": draw(_addresses),
            }
        )
    return actors


@pytest.mark.slow
def test_hostile_actor_data_never_makes_prometheus_reject_a_file(
    promtool: str, tmp_path: Path
) -> None:
    """Unicode, control characters, huge values, IPv6, ports 0 and 65536, duplicates: every file
    written is accepted by promtool, and every target dropped was logged, naming the actor."""
    out = tmp_path / "sd"
    writer = AtomicFileWriter(out)
    writer.prepare()
    config = load_config(None, environ={}, overrides={"daemon.output_dir": str(out)})
    counter = {"examples": 0, "written": 0, "dropped": 0}
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("fsd_daemon")
    logger.addHandler(handler)

    @settings(
        max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(actors=_actors(), ip=_hosts)
    def one_cluster(actors: list[dict[str, Any]], ip: str) -> None:
        records.clear()
        source = StaticCluster.from_data(
            {"actors": actors, "nodes": [node("n0", ip=ip, port=8080)]}
        )
        reconciler = Reconciler(config)
        desired = reconciler.apply(source.snapshot(), source)
        assert desired is not None
        n = counter["examples"] = counter["examples"] + 1
        for name, targets in desired.files.items():
            writer.write(f"{n:04d}-{name}", render(targets))
            counter["written"] += len(targets)
        logged = "\n".join(r.getMessage() for r in records if r.levelno >= logging.WARNING)
        for dropped in desired.dropped:
            counter["dropped"] += 1
            assert dropped.who in logged, f"{dropped} was dropped without a warning"

    try:
        one_cluster()
    finally:
        logger.removeHandler(handler)
    assert leftovers(out) == []
    promtool_accepts(promtool, str(out / "*.json"), tmp_path)
    print(counter)
    assert counter["dropped"] > 0 and counter["written"] > 0


# -- Ray restarted: a new session with new actors -----------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_ray_restart_replaces_old_targets_with_new_ones(tmp_path: Path) -> None:
    """The same address, a new Ray session (new head node, new job and actor ids): the daemon
    notices, starts over, and the file holds exactly the new session's servers."""
    port = free_port()
    first = LocalRayCluster(gcs_port=port).start()
    out = tmp_path / "out"
    settings_ = {
        "daemon.poll_interval_seconds": 0.5,
        "ray.request_timeout_seconds": 2.0,
        "daemon.max_backoff_seconds": 2.0,
    }
    d_address = first.address
    d = DaemonProcess(d_address, out, **settings_)
    second: LocalRayCluster | None = None
    try:
        job = start_job(first.address, "--vllm", "2")
        wait_for(lambda: len(d.rollout()) == 2, timeout=60)
        old = {g["targets"][0] for g in d.rollout()}
        job.stop()
        first.stop()
        second = LocalRayCluster(gcs_port=port).start()
        assert second.address == d_address
        job2 = start_job(second.address, "--vllm", "0", "--sglang", "1")
        try:
            new = set(job2.addresses.values())
            try:
                wait_for(
                    lambda: {g["targets"][0] for g in read_groups(out / "rollout.json")} == new,
                    timeout=90,
                )
            except AssertionError:
                print(d.output()[-6000:])
                raise
            assert "Ray restarted" in d.output()
            assert not old & {g["targets"][0] for g in d.rollout()}
            assert leftovers(out) == []
        finally:
            job2.stop()
    finally:
        d.stop()
        if second is not None:
            second.stop()
        first.stop()
