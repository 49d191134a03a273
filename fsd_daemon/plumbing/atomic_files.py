"""Atomic, change-only writes of target files.

The contract, each point tested on the filesystem:
- a reader (Prometheus) sees either the old file or the new one, never a mix: the bytes go to a
  temp file in the same directory, are fsynced, chmod 0644, renamed over the target, and the
  directory is fsynced so the rename survives a crash;
- the temp name never matches a ``*.json`` glob (``.rollout.json.<pid>.tmp``): Go's glob matches
  dot-files, so a temp file ending in ``.json`` would be read by Prometheus as a live target file;
- no temp file outlives an error (unlinked on every failure path) and none outlives a kill -9
  (swept at start-up);
- unchanged bytes mean no write at all: same inode, same mtime, no inotify event, no rescan.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
FILE_MODE = 0o644


class WriteError(OSError):
    """Writing a target file failed; the previous file is untouched."""

    def __init__(self, path: Path, cause: OSError) -> None:
        name = errno.errorcode.get(cause.errno or 0, "error")
        other = cause.filename and str(cause.filename) != str(path)
        where = f" ({cause.filename})" if other else ""
        super().__init__(
            cause.errno, f"writing {path} failed: {name}: {cause.strerror or cause}{where}"
        )
        self.path = path
        self.reason = name


@dataclass(frozen=True, slots=True)
class _Written:
    data: bytes
    # (inode, mtime_ns, size) right after our rename: any other value means someone else
    # touched the file since.
    signature: tuple[int, int, int]


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def temp_name(name: str) -> str:
    return f".{name}.{os.getpid()}{TEMP_SUFFIX}"


class AtomicFileWriter:
    """Writes files into one directory; remembers what it wrote to skip unchanged writes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._written: dict[str, _Written] = {}

    def prepare(self) -> None:
        """Create the directory if missing, prove it writable, and sweep temp files a killed
        process left behind. Raises :class:`WriteError` saying what is wrong (a file in the
        way, a read-only filesystem, no permission), so start-up can refuse in one line."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / temp_name("probe")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise WriteError(self.directory, exc) from exc
        for leftover in self.directory.glob(f".*.json.*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                log.info("removed leftover temp file %s", leftover)

    def is_current(self, name: str, data: bytes) -> bool:
        """True when the file on disk holds exactly ``data`` (cheap when we wrote it last)."""
        path = self.directory / name
        try:
            st = path.stat()
        except OSError:  # missing, or the directory is gone or replaced by a file
            return False
        known = self._written.get(name)
        if known is not None and known.data == data and known.signature == _signature(st):
            return True
        # Not written by us since start (a restart) or touched by someone else: compare bytes.
        if st.st_size != len(data):
            return False
        try:
            same = path.read_bytes() == data
        except OSError:
            return False
        if same:
            self._written[name] = _Written(data, _signature(st))
        return same

    def write(self, name: str, data: bytes, *, like: os.stat_result | None = None) -> bool:
        """Write ``data`` to ``name`` unless it is already there. True when a write happened.

        ``like``: give the new file this mode and owner (a file we patch, not one we own);
        when the owner cannot be kept, nothing is written (WriteError, EPERM)."""
        if self.is_current(name, data):
            return False
        path = self.directory / name
        tmp = self.directory / temp_name(name)
        try:
            create_mode = FILE_MODE if like is None else 0o600
            fd = self._create(tmp, create_mode, recreate=like is None)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
                if like is not None:
                    # Before the rename: the file must never be readable by more people than
                    # the one it replaces (it may hold a password).
                    os.fchmod(fd, stat.S_IMODE(like.st_mode))
                    if (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
                        os.fchown(fd, like.st_uid, like.st_gid)
                else:
                    # O_CREAT's mode is filtered by the umask; Prometheus may run as another
                    # user.
                    os.fchmod(fd, FILE_MODE)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException as exc:
            # Any failure, a KeyboardInterrupt included, leaves the old file and no temp file.
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise WriteError(path, exc) from exc
            raise
        self._fsync_directory()
        self._written[name] = _Written(data, _signature(path.stat()))
        return True

    def _create(self, tmp: Path, mode: int, *, recreate: bool) -> int:
        """Open ``tmp`` for writing. A directory of ours that someone removed (``rm -rf``, a
        tmp cleaner) is made again, as at start-up; anything else in the way stays an error."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            return os.open(tmp, flags, mode)
        except FileNotFoundError:
            if not recreate or self.directory.exists():
                raise
        self.directory.mkdir(parents=True, exist_ok=True)
        log.warning("output directory %s was gone; made it again", self.directory)
        return os.open(tmp, flags, mode)

    def written_names(self) -> list[str]:
        """The files written since start, sorted."""
        return sorted(self._written)

    def exists(self, name: str) -> bool:
        """Whether a regular file ``name`` is there now (whatever its content)."""
        try:
            return stat.S_ISREG((self.directory / name).stat().st_mode)
        except OSError:
            return False

    def last_written(self, name: str) -> bytes | None:
        known = self._written.get(name)
        return known.data if known else None

    def restore(self, name: str) -> bool:
        """Put back the last bytes we wrote if the file was deleted or changed by someone else."""
        data = self.last_written(name)
        if data is None:
            return False
        return self.write(name, data)

    def _fsync_directory(self) -> None:
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:  # pragma: no cover - the rename above already succeeded
            log.warning("cannot open %s to fsync it: %s", self.directory, exc)
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            # The rename happened; only its durability across a power cut is in doubt.
            log.warning("fsync of %s failed: %s", self.directory, exc)
        finally:
            os.close(fd)
