"""The output directory's watcher (fsd_daemon/service/watch.py) against the real inotify."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fsd_daemon.service.watch import Watcher, WatchPlan
from fsd_daemon.sim.harness import wait_for


class _Calls:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, name: str) -> None:
        with self.lock:
            self.names.append(name)

    def count(self, name: str) -> int:
        with self.lock:
            return self.names.count(name)


def test_a_directory_made_again_with_the_same_inode_is_watched_again(tmp_path: Path) -> None:
    """``rm -rf out; mkdir out``: ext4 hands the freed inode number straight back, so the new
    directory has the old one's (device, inode). refresh() must still watch it anew, or a
    file deleted in it afterwards goes unseen until the next poll (CI saw the daemon miss it
    with fast polls off)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "rollout.json").write_text("[]")
    calls = _Calls()
    plan = WatchPlan(output_dir=out, managed_files=frozenset({"rollout.json"}))
    watcher = Watcher(
        plan, on_target_file=calls, on_config=lambda: None, on_ray_session=lambda: None
    )
    watcher.start()
    try:
        before = os.stat(out).st_ino
        (out / "rollout.json").unlink()
        out.rmdir()
        out.mkdir()
        if os.stat(out).st_ino != before:
            # Another file system: the stat alone tells the directories apart there, and this
            # test would prove nothing. It does prove something on ext4, where CI runs.
            print("the new directory got a new inode number here")
        # The deletion is reported (the daemon restores every file from it) ...
        wait_for(lambda: calls.count("rollout.json") >= 1, timeout=10)
        # ... and the next loop step's refresh watches the new directory.
        wait_for(watcher.refresh, timeout=10, step=0.05)
        (out / "rollout.json").write_text("[]")
        seen = calls.count("rollout.json")
        (out / "rollout.json").unlink()
        wait_for(lambda: calls.count("rollout.json") > seen, timeout=10)
    finally:
        watcher.stop()


def test_an_unchanged_directory_is_not_watched_again(tmp_path: Path) -> None:
    """refresh() is called every loop step: on a directory nobody touched it says no."""
    out = tmp_path / "out"
    out.mkdir()
    plan = WatchPlan(output_dir=out, managed_files=frozenset({"rollout.json"}))
    watcher = Watcher(
        plan, on_target_file=lambda _: None, on_config=lambda: None, on_ray_session=lambda: None
    )
    watcher.start()
    try:
        (out / "rollout.json").write_text("[]")
        (out / "rollout.json").unlink()
        assert not watcher.refresh()
    finally:
        watcher.stop()
