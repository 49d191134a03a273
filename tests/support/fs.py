"""Small filesystems for fault tests: a tmpfs of a given size, mounted through libc (root)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MS_RDONLY = 1
MS_REMOUNT = 32

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


@contextmanager
def small_tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` at ``path``; skip the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        _mount("tmpfs", str(path), "tmpfs", 0, f"size={size_bytes},mode=0755")
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            pytest.skip(f"cannot mount a tmpfs here ({exc}); this fault test needs root")
        raise
    try:
        yield path
    finally:
        if _libc.umount2(str(path).encode(), 2) != 0:  # MNT_DETACH
            err = ctypes.get_errno()
            raise OSError(err, f"umount {path}: {os.strerror(err)}")


def remount(path: Path, *, read_only: bool, size_bytes: int) -> None:
    flags = MS_REMOUNT | (MS_RDONLY if read_only else 0)
    _mount("tmpfs", str(path), "tmpfs", flags, f"size={size_bytes},mode=0755")


def fill(path: Path) -> Path:
    """Fill the filesystem at ``path`` to the last byte; returns the filler file."""
    filler = path / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler
