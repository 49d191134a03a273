"""The fault suite, continued: what an operator does by hand to the daemon's surroundings.

Its output directory removed or replaced by a file, its config rewritten in place, its token
rotated: the daemon runs as a real process from a clean environment, notices each within one
poll, says what is true at that moment, and puts back what it owns.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from fsd_daemon.sim.harness import DaemonProcess, healthz, polls_done, remove_tree, wait_for
from fsd_daemon.sim.launch import free_port, stop_process
from tests.support.clusterfile import cluster, server


def _described(tmp_path: Path, count: int = 2) -> Path:
    path = tmp_path / "cluster.json"
    path.write_bytes(orjson.dumps(cluster(*(server(i) for i in range(count)))))
    return path


def _metric(d: DaemonProcess, line_start: str) -> float:
    for line in d.metrics().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not exposed")


def test_removed_output_directory_is_made_again_within_one_poll(tmp_path: Path) -> None:
    """``rm -rf`` of the output directory (a tmp cleaner): made again and every file put back
    by the next polls, with the watcher off (the poll notices, not the next cluster change), and
    again after a second removal."""
    out = tmp_path / "out"
    settings = {"daemon.poll_interval_seconds": 1.0, "daemon.watch_output_dir": "false"}
    with DaemonProcess(f"file:{_described(tmp_path)}", out, clean_env=True, **settings) as d:
        wait_for(lambda: len(d.rollout()) == 2, timeout=20)
        good = (out / "rollout.json").read_bytes()
        for _ in range(2):
            remove_tree(out)
            took = wait_for(
                lambda: (
                    (out / "rollout.json").exists() and (out / "rollout.json").read_bytes() == good
                ),
                timeout=5,  # a few 1 s polls: a loaded CI machine lags, a missed restore never ends
                step=0.01,
            )
            print(f"directory and rollout.json back in {took * 1000:.0f} ms")
            wait_for(lambda: d.health()[0] == 200, timeout=5)
        assert "Traceback" not in d.output()


def test_removed_output_directory_is_watched_again(tmp_path: Path) -> None:
    """With the watcher on (the default), the removal is seen at once, and the new directory is
    watched: a file deleted in it afterwards is restored. A poll every 5 minutes (fast polls
    after a change included): only the watcher can do either within the test's waits."""
    out = tmp_path / "out"
    settings = {"daemon.poll_interval_seconds": 300.0, "daemon.fast_poll_interval_seconds": 300.0}
    with DaemonProcess(f"file:{_described(tmp_path)}", out, clean_env=True, **settings) as d:
        wait_for(lambda: len(d.rollout()) == 2, timeout=20)
        good = (out / "rollout.json").read_bytes()
        remove_tree(out)
        wait_for(lambda: (out / "rollout.json").exists(), timeout=10, step=0.01)
        (out / "rollout.json").unlink()
        took = wait_for(
            lambda: (out / "rollout.json").exists() and (out / "rollout.json").read_bytes() == good,
            timeout=10,
            step=0.01,
        )
        print(f"file deleted in the new directory restored in {took * 1000:.0f} ms")
        assert "Traceback" not in d.output()


def _replace_directory_by_a_file(out: Path) -> None:
    """``rm -rf out; echo ... > out``, as an operator retries it: the daemon watches its output
    directory and may make it again between the two (CI saw IsADirectoryError), so the file
    is created exclusively and the pair is repeated until the file wins."""
    for _ in range(100):
        remove_tree(out)
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except (FileExistsError, IsADirectoryError):
            continue
        with os.fdopen(fd, "w") as f:
            f.write("not a directory\n")
        return
    raise AssertionError(f"{out} was made a directory again 100 times in a row")


def _health_names(d: DaemonProcess, status: int, word: str) -> bool:
    code, body = d.health()
    return code == status and word in orjson.dumps(body).decode()


def test_output_directory_replaced_by_a_file_is_reported_then_restored(tmp_path: Path) -> None:
    """The directory replaced by a regular file: within one poll /healthz is 503 naming
    ENOTDIR, the write errors are counted, the targets gauge says 0 (Prometheus reads no
    targets), the log says no file is there (not that "the previous file stays"), with no
    traceback; once the file is removed the directory and the files come back."""
    out = tmp_path / "out"
    described = _described(tmp_path)
    settings = {"daemon.poll_interval_seconds": 1.0}
    with DaemonProcess(f"file:{described}", out, clean_env=True, **settings) as d:
        wait_for(lambda: len(d.rollout()) == 2, timeout=20)
        good = (out / "rollout.json").read_bytes()
        _replace_directory_by_a_file(out)
        wait_for(lambda: _health_names(d, 503, "ENOTDIR"), timeout=4.0, step=0.02)
        wait_for(lambda: _metric(d, 'fsd_daemon_poll_errors_total{kind="write"}') > 0, timeout=5)
        assert _metric(d, 'fsd_daemon_targets{file="rollout.json"}') == 0
        # A cluster change meanwhile: still no traceback, still counted.
        described.write_bytes(orjson.dumps(cluster(server(0), server(1), server(2))))
        wait_for(lambda: "no file is there now" in d.output(), timeout=5)
        assert "Traceback" not in d.output()
        assert "unexpected error" not in d.output()
        assert "the previous file stays" not in d.output()
        os.unlink(out)
        wait_for(lambda: len(d.rollout()) == 3, timeout=5)
        assert (out / "rollout.json").read_bytes() != good
        wait_for(lambda: d.health()[0] == 200, timeout=5)
        assert _metric(d, 'fsd_daemon_targets{file="rollout.json"}') == 3


# -- the config file rewritten in place ------------------------------------------------------------


class ConfiguredDaemon:
    """``fsd-daemon run --config PATH`` and nothing else on its command line, in a clean
    environment: every setting comes from the file, so a reload of the wrong bytes shows.
    The output directory and Ray address are also in its environment, so that a bad reload
    (the old behaviour) cannot create the built-in default directory on this machine."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.log_path = config.with_suffix(".log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fsd_daemon.cli", "run", "--config", str(config)],
            env={"PATH": os.environ["PATH"], "HOME": str(config.parent), "LANG": "C.UTF-8", **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        code = stop_process(self.proc)
        self._log.close()
        return code


def _rewrite_in_place(path: Path, parts: list[bytes], pause: float) -> None:
    """What ``cat new > file`` or an editor saving in place does: truncate, then write, here
    with a stall between the steps (a loaded machine, a slow disk)."""
    with open(path, "wb") as f:  # O_TRUNC: the file is empty from here
        for part in parts:
            f.flush()
            time.sleep(pause)
            f.write(part)
    # closed: the last event


def test_config_rewritten_in_place_is_never_read_half_written(tmp_path: Path) -> None:
    """The same config rewritten in place 12 times, stalling between the truncate and the
    write, or after a first part that is itself valid TOML (without the listener): no reload
    ever takes the empty or the partial file (the listener never goes dark, "config reloaded"
    is never logged), and a real edit afterwards is reloaded once."""
    port = free_port()
    out = tmp_path / "out"
    config = tmp_path / "fsd-daemon.toml"
    head = (
        f'[daemon]\noutput_dir = "{out}"\npoll_interval_seconds = 0.2\n'
        f'[ray]\naddress = "file:{_described(tmp_path)}"\n'
    ).encode()
    listen = f'metrics_listen = "127.0.0.1:{port}"\n'.encode()
    full = head.replace(b"[ray]", listen + b"[ray]")
    config.write_bytes(full)
    env = {
        "FSD_DAEMON_OUTPUT_DIR": str(out),
        "FSD_RAY_ADDRESS": f"file:{tmp_path / 'cluster.json'}",
    }
    d = ConfiguredDaemon(config, env)
    dark: list[float] = []
    stop = threading.Event()

    def watch_health() -> None:
        while not stop.is_set():
            if healthz(port)[0] == 0:
                dark.append(time.monotonic())
            time.sleep(0.05)

    try:
        wait_for(lambda: healthz(port)[0] == 200, timeout=20)
        watcher = threading.Thread(target=watch_health, daemon=True)
        watcher.start()
        cut = full.index(listen)
        for i in range(12):
            if i % 2:
                _rewrite_in_place(config, [full], pause=0.4)
            else:  # a first part without the listener, itself a valid config
                _rewrite_in_place(config, [full[:cut], full[cut:]], pause=0.4)
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        watcher.join(timeout=5)
        assert "config reloaded" not in d.output()
        assert not dark, f"the metrics listener went dark {len(dark)} times"
        # A real edit is still a reload, once.
        config.write_bytes(
            full.replace(b"poll_interval_seconds = 0.2", b"poll_interval_seconds = 0.3")
        )
        wait_for(lambda: "config reloaded" in d.output(), timeout=5)
        seen = polls_done(port)
        wait_for(lambda: polls_done(port) >= seen + 3, timeout=10)  # a second reload had time
        assert d.output().count("config reloaded") == 1
        assert healthz(port)[0] == 200
        assert "Traceback" not in d.output()
    finally:
        stop.set()
        assert d.stop() == 0, d.output()[-3000:]


def test_emptied_config_file_keeps_the_running_config(tmp_path: Path) -> None:
    """``: > fsd-daemon.toml``: a file that held a config holds none; the running config stays
    (the listener keeps answering) and the log says why; writing a config back reloads it."""
    port = free_port()
    out = tmp_path / "out"
    config = tmp_path / "fsd-daemon.toml"
    full = (
        f'[daemon]\noutput_dir = "{out}"\npoll_interval_seconds = 0.2\n'
        f'metrics_listen = "127.0.0.1:{port}"\n'
        f'[ray]\naddress = "file:{_described(tmp_path)}"\n'
    ).encode()
    config.write_bytes(full)
    env = {
        "FSD_DAEMON_OUTPUT_DIR": str(out),
        "FSD_RAY_ADDRESS": f"file:{tmp_path / 'cluster.json'}",
    }
    d = ConfiguredDaemon(config, env)
    try:
        wait_for(lambda: healthz(port)[0] == 200, timeout=20)
        config.write_bytes(b"")
        wait_for(lambda: "holds no settings" in d.output(), timeout=5)
        os.kill(d.proc.pid, signal.SIGHUP)  # a SIGHUP does not take it either
        seen = polls_done(port)
        wait_for(lambda: polls_done(port) >= seen + 3, timeout=10)  # the SIGHUP was handled
        assert healthz(port)[0] == 200
        assert "config reloaded" not in d.output()
        config.write_bytes(full.replace(b"0.2", b"0.3"))
        wait_for(lambda: "config reloaded" in d.output(), timeout=5)
        assert healthz(port)[0] == 200
    finally:
        assert d.stop() == 0, d.output()[-3000:]
