"""The write contract, on a real filesystem: atomic, change-only, canonical, never half-written."""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path

import pytest

from fsd_daemon.plumbing.atomic_files import AtomicFileWriter, WriteError, temp_name
from tests.support.fs import fill, remount, small_tmpfs


def test_temp_name_matches_no_json_glob() -> None:
    """The temp file never matches a *.json glob (Go's glob, like fnmatch, matches dot-files)."""
    name = temp_name("rollout.json")
    assert name.startswith(".")
    assert not fnmatch.fnmatch(name, "*.json")
    assert not fnmatch.fnmatch(name, "rollout*.json")


def test_write_creates_0644_file_whatever_the_umask(tmp_path: Path) -> None:
    """A new file gets mode 0644 even under umask 077, so a Prometheus user can read it."""
    old = os.umask(0o077)
    try:
        w = AtomicFileWriter(tmp_path / "out")
        w.prepare()
        assert w.write("rollout.json", b"[]\n")
    finally:
        os.umask(old)
    st = (tmp_path / "out" / "rollout.json").stat()
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert (tmp_path / "out" / "rollout.json").read_bytes() == b"[]\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rollout.json"]


def test_unchanged_bytes_mean_no_write(tmp_path: Path) -> None:
    """Writing the same bytes again keeps inode and mtime, here and after a restart."""
    w = AtomicFileWriter(tmp_path)
    assert w.write("gpu.json", b"[1]\n")
    before = (tmp_path / "gpu.json").stat()
    for _ in range(50):
        assert not w.write("gpu.json", b"[1]\n")
    restarted = AtomicFileWriter(tmp_path)  # a new process: compares the bytes on disk
    assert not restarted.write("gpu.json", b"[1]\n")
    after = (tmp_path / "gpu.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert w.write("gpu.json", b"[2]\n")
    assert (tmp_path / "gpu.json").stat().st_ino != before.st_ino  # a rename, not an overwrite


def test_outside_edit_is_detected_and_restored(tmp_path: Path) -> None:
    """A file changed or deleted by someone else is rewritten by restore()."""
    w = AtomicFileWriter(tmp_path)
    w.write("ray.json", b"[]\n")
    (tmp_path / "ray.json").write_bytes(b"garbage")
    assert w.restore("ray.json")
    assert (tmp_path / "ray.json").read_bytes() == b"[]\n"
    (tmp_path / "ray.json").unlink()
    assert w.restore("ray.json")
    assert (tmp_path / "ray.json").read_bytes() == b"[]\n"
    assert not w.restore("ray.json")


def test_prepare_sweeps_leftover_temp_files(tmp_path: Path) -> None:
    """Temp files left by a killed process are removed at start; other files are not."""
    (tmp_path / ".rollout.json.12345.tmp").write_bytes(b"half")
    (tmp_path / "rollout.json").write_bytes(b"[]\n")
    (tmp_path / "notes.txt").write_bytes(b"keep")
    AtomicFileWriter(tmp_path).prepare()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "rollout.json"]


def test_interrupt_during_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt between write and rename keeps the old file and removes the temp."""
    w = AtomicFileWriter(tmp_path)
    w.write("rollout.json", b"[old]\n")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        w.write("rollout.json", b"[new]\n")
    assert (tmp_path / "rollout.json").read_bytes() == b"[old]\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rollout.json"]


def test_full_disk_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    """ENOSPC on a full tmpfs: WriteError naming it, old file intact, no temp file left."""
    size = 256 * 1024
    with small_tmpfs(tmp_path / "small", size) as mnt:
        w = AtomicFileWriter(mnt)
        w.write("rollout.json", b"[old]\n")
        filler = fill(mnt)
        with pytest.raises(WriteError) as info:
            w.write("rollout.json", b"[" + b"x" * 100_000 + b"]\n")
        assert info.value.reason == "ENOSPC"
        assert (mnt / "rollout.json").read_bytes() == b"[old]\n"
        assert sorted(p.name for p in mnt.iterdir()) == ["filler.bin", "rollout.json"]
        filler.unlink()
        assert w.write("rollout.json", b"[new]\n")


def test_read_only_filesystem_keeps_old_file(tmp_path: Path) -> None:
    """EROFS: WriteError, the old file is still there and readable."""
    size = 64 * 1024
    with small_tmpfs(tmp_path / "ro", size) as mnt:
        w = AtomicFileWriter(mnt)
        w.write("gpu.json", b"[old]\n")
        remount(mnt, read_only=True, size_bytes=size)
        with pytest.raises(WriteError) as info:
            w.write("gpu.json", b"[new]\n")
        assert info.value.reason == "EROFS"
        assert (mnt / "gpu.json").read_bytes() == b"[old]\n"
        remount(mnt, read_only=False, size_bytes=size)
