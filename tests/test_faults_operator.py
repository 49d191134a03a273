"""The fault suite, continued: what an operator does by hand to the daemon's surroundings.

Its output directory removed or replaced by a file, its config rewritten in place, its token
rotated: the daemon runs as a real process from a clean environment, notices each within one
poll, says what is true at that moment, and puts back what it owns.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson

from tests.support.clusterfile import cluster, server
from tests.support.daemonproc import DaemonProcess, wait_for


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
    within one poll, with the watcher off (the poll notices, not the next cluster change), and
    again after a second removal."""
    out = tmp_path / "out"
    settings = {"daemon.poll_interval_seconds": 1.0, "daemon.watch_output_dir": "false"}
    with DaemonProcess(f"file:{_described(tmp_path)}", out, clean_env=True, **settings) as d:
        wait_for(lambda: len(d.rollout()) == 2, timeout=20)
        good = (out / "rollout.json").read_bytes()
        for _ in range(2):
            shutil.rmtree(out)
            took = wait_for(
                lambda: (
                    (out / "rollout.json").exists() and (out / "rollout.json").read_bytes() == good
                ),
                timeout=2.5,
                step=0.01,
            )
            print(f"directory and rollout.json back in {took * 1000:.0f} ms")
            wait_for(lambda: d.health()[0] == 200, timeout=5)
        assert "Traceback" not in d.output()


def test_removed_output_directory_is_watched_again(tmp_path: Path) -> None:
    """With the watcher on (the default), the removal is seen at once, and the new directory is
    watched: a file deleted in it afterwards is restored well inside the 5 s poll."""
    out = tmp_path / "out"
    settings = {"daemon.poll_interval_seconds": 5.0}
    with DaemonProcess(f"file:{_described(tmp_path)}", out, clean_env=True, **settings) as d:
        wait_for(lambda: len(d.rollout()) == 2, timeout=20)
        good = (out / "rollout.json").read_bytes()
        shutil.rmtree(out)
        wait_for(lambda: (out / "rollout.json").exists(), timeout=2.5, step=0.01)
        (out / "rollout.json").unlink()
        took = wait_for(
            lambda: (out / "rollout.json").exists() and (out / "rollout.json").read_bytes() == good,
            timeout=2.5,
            step=0.01,
        )
        print(f"file deleted in the new directory restored in {took * 1000:.0f} ms")
        assert "Traceback" not in d.output()


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
        shutil.rmtree(out)
        out.write_text("not a directory\n")
        wait_for(lambda: d.health()[0] == 503, timeout=2.5, step=0.02)
        _, body = d.health()
        assert "ENOTDIR" in orjson.dumps(body).decode()
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
