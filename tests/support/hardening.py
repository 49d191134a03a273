"""Run a command with the file system a hardened systemd unit gives it, without systemd.

    unshare -m --propagation private python hardening.py [--home yes|read-only]
        [--writable DIR ...] -- COMMAND ...

Inside a private mount namespace (``unshare -m``, as root) it reproduces what the shipped units
set, as systemd.exec(5) describes it:

- ``ProtectSystem=strict``: every mount read-only, except the API file systems ``/proc``,
  ``/sys`` and ``/dev`` (which the units protect with other settings);
- ``ProtectHome=yes``: ``/home``, ``/root`` and ``/run/user`` empty and inaccessible;
  ``ProtectHome=read-only``: read-only like the rest;
- ``ReadWritePaths=``: each ``--writable`` directory writable again;

then replaces itself with COMMAND. ``/tmp`` stays the host's, read-only (the units have no
PrivateTmp=: the daemon must see Ray's session under /tmp/ray).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

_API_FILE_SYSTEMS = ("/proc", "/sys", "/dev")
_HOMES = ("/home", "/root", "/run/user")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            # Octal escapes (\040 for a space) in the mount point field.
            point = line.split()[1].encode().decode("unicode_escape")
            points.append(point)
    return points


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--home", choices=["yes", "read-only"], default="yes")
    p.add_argument("--writable", action="append", default=[])
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command")
    writable = [os.path.realpath(d) for d in args.writable]
    # Bind each writable directory onto itself first: a mount of its own, which the read-only
    # pass below makes read-only too and the last step makes writable again.
    for d in writable:
        _mount("--bind", d, d)
    for point in _mount_points():
        if _under(point, _API_FILE_SYSTEMS):
            continue
        # Per-mount flag only (bind remount): the file systems stay writable for the host.
        # A mount that refuses (a stale or special one) is left as it is, as systemd does.
        subprocess.run(["mount", "-o", "remount,bind,ro", point], capture_output=True)
    for home in _HOMES:
        if not os.path.isdir(home):
            continue
        if args.home == "yes":
            _mount("-t", "tmpfs", "-o", "ro,mode=000,size=4k", "tmpfs", home)
    for d in writable:
        _mount("-o", "remount,bind,rw", d)
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
