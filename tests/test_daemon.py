"""The daemon loop against a described cluster (StaticCluster): writes, restores, reloads,
failures that keep the files, self-metrics and /healthz, signals and the systemd protocol."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fsd_daemon.config import load_config
from fsd_daemon.service.daemon import Service as Daemon
from fsd_daemon.sim.harness import healthz, targets_in
from fsd_daemon.sim.harness import wait_for as _wait_for
from tests.support.cli import run_cli
from tests.support.clusterfile import cluster, server

# This module's waits: 10 s at most, checked every 20 ms.
wait_for = functools.partial(_wait_for, timeout=10.0, step=0.02)


class Running:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.thread = threading.Thread(target=daemon.run, daemon=True)

    def __enter__(self) -> Daemon:
        self.thread.start()
        return self.daemon

    def __exit__(self, *exc: object) -> None:
        self.daemon.request_stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Path]]:
    paths = {
        "cluster": tmp_path / "cluster.json",
        "out": tmp_path / "targets",
        "config": tmp_path / "fsd.toml",
    }
    paths["cluster"].write_bytes(orjson.dumps(cluster(server(0), server(1))))
    paths["config"].write_text(
        f'[daemon]\noutput_dir = "{paths["out"]}"\npoll_interval_seconds = 0.1\n'
        f'grace_period_seconds = 0.5\nmax_backoff_seconds = 0.4\ncluster = "one"\n'
        f'metrics_listen = "127.0.0.1:0"\n[ray]\naddress = "file:{paths["cluster"]}"\n'
    )
    yield paths


def make_daemon(paths: dict[str, Path]) -> Daemon:
    def load() -> object:
        return load_config(paths["config"], environ={})

    return Daemon(load(), config_loader=load, config_path=str(paths["config"]))  # type: ignore[arg-type]


def polls_done(daemon: Daemon) -> float:
    """How many polls the daemon has finished, failed ones included."""
    count = daemon.metrics.registry.get_sample_value("fsd_daemon_poll_duration_seconds_count")
    return count or 0.0


def poll_errors(daemon: Daemon, kind: str) -> float:
    errors = daemon.metrics.registry.get_sample_value(
        "fsd_daemon_poll_errors_total", {"kind": kind}
    )
    return errors or 0.0


def test_unchanged_cluster_is_never_rewritten(env: dict[str, Path]) -> None:
    """Fifteen more polls of the same cluster: one write per file, same inode and mtime."""
    with Running(make_daemon(env)) as d:
        rollout = env["out"] / "rollout.json"
        wait_for(lambda: len(targets_in(rollout)) == 2)
        before = rollout.stat()
        seen = polls_done(d)
        wait_for(lambda: polls_done(d) >= seen + 15)
        after = rollout.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert d.metrics.writes.labels("rollout.json")._value.get() == 1


def test_deleted_or_edited_file_is_restored_within_a_second(env: dict[str, Path]) -> None:
    """Deleting, truncating or editing a target file from outside: restored at once."""
    with Running(make_daemon(env)):
        rollout = env["out"] / "rollout.json"
        wait_for(lambda: len(targets_in(rollout)) == 2)
        good = rollout.read_bytes()
        rollout.unlink()
        assert (
            wait_for(lambda: rollout.exists() and rollout.read_bytes() == good, timeout=1.0) < 1.0
        )
        rollout.write_bytes(b"")
        assert wait_for(lambda: rollout.read_bytes() == good, timeout=1.0) < 1.0
        rollout.write_bytes(b'[{"targets": ["6.6.6.6:1"], "labels": {}}]')
        assert wait_for(lambda: rollout.read_bytes() == good, timeout=1.0) < 1.0


def test_source_failure_keeps_files_and_reports_degraded(env: dict[str, Path]) -> None:
    """While the source fails the files stay byte-identical and /healthz says 503; then recovery."""
    with Running(make_daemon(env)) as d:
        rollout = env["out"] / "rollout.json"
        wait_for(lambda: len(targets_in(rollout)) == 2)
        good = rollout.read_bytes()
        port = d.metrics_port
        env["cluster"].write_bytes(b"{not json")
        wait_for(lambda: healthz(port)[0] == 503)
        # Failed polls for well past the 0.5 s grace period: a failure must not count as "left".
        failing_since, failed = time.monotonic(), poll_errors(d, "bad_response")
        wait_for(
            lambda: (
                poll_errors(d, "bad_response") >= failed + 3
                and time.monotonic() - failing_since > 1.0
            )
        )
        assert rollout.read_bytes() == good
        status, body = healthz(port)
        assert status == 503 and "ray" in body["problems"]
        env["cluster"].write_bytes(orjson.dumps(cluster(server(0))))
        wait_for(lambda: healthz(port)[0] == 200)
        wait_for(lambda: len(targets_in(rollout)) == 1)  # server 1 leaves after its grace

        def metrics() -> str:
            url = f"http://127.0.0.1:{port}/metrics"
            return str(urllib.request.urlopen(url, timeout=5).read().decode())

        # The gauge is set after the file is written: a scrape in between still says 2 (a CI
        # run under load caught that moment).
        wait_for(lambda: 'fsd_daemon_targets{file="rollout.json"} 1.0' in metrics())
        assert 'fsd_daemon_poll_errors_total{kind="bad_response"}' in metrics()


def test_config_edit_is_applied_and_broken_edit_refused(
    env: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Editing the config file relabels targets; a broken edit is refused, the daemon goes on."""
    with Running(make_daemon(env)) as d:
        rollout = env["out"] / "rollout.json"
        wait_for(lambda: len(targets_in(rollout)) == 2)
        text = env["config"].read_text()
        env["config"].write_text(text.replace('cluster = "one"', 'cluster = "two"'))
        wait_for(lambda: b'"two"' in rollout.read_bytes(), timeout=5)
        env["config"].write_text(
            text.replace('cluster = "one"', "cluster = 5\npoll_interval_seconds = -1")
        )
        wait_for(lambda: "config reload refused" in caplog.text)
        seen = polls_done(d)
        wait_for(lambda: polls_done(d) >= seen + 2)  # and polls went on after the refusal
        assert d.config.daemon.cluster == "two"
        assert d.config.daemon.poll_interval_seconds == 0.1
        env["cluster"].write_bytes(orjson.dumps(cluster(server(0), server(1), server(2))))
        wait_for(lambda: len(targets_in(rollout)) == 3)  # still polling with the old config


def test_process_signals_and_systemd_notify(tmp_path: Path, env: dict[str, Path]) -> None:
    """As a real process: READY/STATUS/WATCHDOG over NOTIFY_SOCKET, SIGHUP reloads, SIGTERM
    exits 0."""
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    environ = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fsd_daemon.cli",
            "run",
            "--config",
            str(env["config"]),
            "--no-watch",
        ],
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            any("READY=1" in m for m in seen)
            and any("WATCHDOG=1" in m for m in seen)
            and any("STATUS=ok" in m for m in seen)
        ):
            seen.append(sock.recv(4096).decode())
        assert any("READY=1" in m for m in seen)
        assert any("STATUS=ok; targets:" in m and "2 rollout" in m for m in seen), seen
        # Read on as systemd does: a unix datagram queue holds 10 messages by default
        # (net.unix.max_dgram_qlen), and the daemon's sd_notify blocks as libsystemd's does.
        rest: list[str] = []
        sock.settimeout(0.5)

        def drain() -> None:
            while proc.poll() is None or rest[-1:] != ["done"]:
                try:
                    rest.append(sock.recv(4096).decode())
                except TimeoutError:
                    if proc.poll() is not None:
                        rest.append("done")
                except OSError:
                    return

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        text = env["config"].read_text()
        env["config"].write_text(text.replace('cluster = "one"', 'cluster = "hup"'))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: b'"hup"' in (env["out"] / "rollout.json").read_bytes(), timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        reader.join(timeout=5)
        assert any("STOPPING=1" in m for m in rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "received SIGHUP" in stderr and "config reloaded" in stderr
    assert "rollout.json: +2 rollout targets (job 01000000)" in stderr


def test_run_once_exit_codes(tmp_path: Path, env: dict[str, Path]) -> None:
    """run --once writes and exits 0; with an unreachable source it exits 1 and writes nothing."""
    ok = run_cli("run", "--once", "--config", str(env["config"]))
    assert ok.returncode == 0, ok.stderr
    assert len(targets_in(env["out"] / "rollout.json")) == 2
    out2 = tmp_path / "out2"
    bad = run_cli(
        "run",
        "--once",
        "--output-dir",
        str(out2),
        "--ray-address",
        f"file:{tmp_path / 'missing.json'}",
    )
    assert bad.returncode == 1
    assert "could not be reached" in bad.stderr
    assert not (out2 / "rollout.json").exists()
