"""The node's process table (pid -> parent, name, start time), kept up to date cheaply.

A node running RL training has thousands of processes (dataloader workers, compile workers,
shells), and reading ``/proc/<pid>/stat`` costs about 15 us of kernel time each: 2,000 of them
every 5 s is most of a percent of a core for nothing, since almost none of them change.

So :class:`ProcessTable` lists ``/proc`` (one getdents pass, about 2 ms for 2,000 pids) and
re-reads ``stat`` only for the entries that may have changed:

- a pid it has not seen, or whose ``/proc/<pid>`` inode number changed: procfs gives each
  process's directory a fresh inode, so a reused pid (or an evicted dentry) is read again;
- a process whose parent is gone (it was re-parented);
- a Ray worker (a child of a ``raylet``) or a process titled ``ray::...``: Ray retitles its
  workers (``ray::IDLE``, ``ray::ClassName``, ``ray::ClassName.method``), and the title is
  what makes a process an actor here.

Everything else (a process's parent and name, as ``stat`` says) is taken from the last read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

RAYLET = "raylet"
RAY_TITLE_PREFIX = "ray::"


@dataclass(frozen=True, slots=True)
class Proc:
    ppid: int
    name: str  # the kernel's comm: at most 15 characters of the title
    create_time: float  # clock ticks since boot (procfs) or seconds since the epoch (psutil)


class ProcessTable:
    """``read()`` returns every process of the machine; see the module doc for what is re-read."""

    def __init__(self, proc_dir: str = "/proc") -> None:
        self._proc = proc_dir
        # pid -> (inode of /proc/<pid>, what its stat said)
        self._known: dict[int, tuple[int, Proc]] = {}
        self.stat_reads = 0  # since start: what the cache saves is visible in tests and benches

    def read(self) -> dict[int, Proc]:
        if not os.path.isdir(self._proc):
            return _psutil_table()
        listed: dict[int, int] = {}
        with os.scandir(self._proc) as entries:
            for entry in entries:
                if entry.name.isdigit():
                    listed[int(entry.name)] = entry.inode()
        known = self._known
        raylets = {pid for pid, (_, p) in known.items() if p.name == RAYLET and pid in listed}
        fresh: dict[int, tuple[int, Proc]] = {}
        for pid, inode in listed.items():
            cached = known.get(pid)
            if cached is not None and cached[0] == inode:
                proc = cached[1]
                if (proc.ppid in listed or proc.ppid <= 1) and not (
                    proc.ppid in raylets or proc.name.startswith(RAY_TITLE_PREFIX)
                ):
                    fresh[pid] = cached
                    continue
            read = self._read_stat(pid)
            if read is not None:
                fresh[pid] = (inode, read)
        self._known = fresh
        return {pid: proc for pid, (_, proc) in fresh.items()}

    def _read_stat(self, pid: int) -> Proc | None:
        self.stat_reads += 1
        try:
            fd = os.open(f"{self._proc}/{pid}/stat", os.O_RDONLY)
        except OSError:
            return None  # exited while we listed
        try:
            stat = os.read(fd, 4096)
        except OSError:
            return None
        finally:
            os.close(fd)
        return parse_stat(stat)


def parse_stat(stat: bytes) -> Proc | None:
    """``pid (comm) state ppid ... starttime``: comm may hold spaces and parentheses."""
    open_at, close_at = stat.find(b"("), stat.rfind(b")")
    if open_at < 0 or close_at < 0:
        return None
    fields = stat[close_at + 2 :].split(None, 20)
    if len(fields) < 20:
        return None
    comm = stat[open_at + 1 : close_at].decode("utf-8", "replace")
    # Field 22 (starttime, clock ticks since boot) is fields[19] after the comm.
    return Proc(int(fields[1]), comm, float(fields[19]))


def read_cmdline(pid: int, proc_dir: str = "/proc") -> list[str]:
    """A process's argv (or its title: setproctitle writes over argv). Raises OSError or
    psutil.Error when it is gone or not readable."""
    if not os.path.isdir(proc_dir):
        return list(psutil.Process(pid).cmdline())
    with open(f"{proc_dir}/{pid}/cmdline", "rb") as f:
        data = f.read()
    if data.endswith(b"\0"):
        data = data[:-1]
    return [part.decode("utf-8", "replace") for part in data.split(b"\0")] if data else []


def _psutil_table() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    for p in psutil.process_iter(["ppid", "name", "create_time"]):
        info = p.info
        if info.get("create_time") is None:
            continue  # gone or unreadable while iterating
        table[p.pid] = Proc(int(info["ppid"] or 0), str(info["name"] or ""), info["create_time"])
    return table
