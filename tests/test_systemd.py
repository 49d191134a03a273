"""The systemd units and environment file under systemd/.

``systemd-analyze verify`` must accept each unit without a warning (it needs the ExecStart
binary to exist, so the unit is verified as a copy whose ExecStart points at this
environment's console script); the hardening the README promises must be in the units; every
``FSD_*`` variable the environment file mentions must be a key the config loader accepts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fsd_daemon.config import environment_variables, load_config
from fsd_daemon.sim.harness import read_groups, wait_for
from fsd_daemon.sim.rayhead import ray_has_token_auth
from tests.support.netns import Namespace, NetnsPair, can_create_namespaces
from tests.support.raynodes import BIN, auth_env, base_env, get_in, short_tmp, start_ray

REPO = Path(__file__).resolve().parent.parent
SYSTEMD = REPO / "systemd"
DAEMON_UNIT = SYSTEMD / "fsd-daemon.service"
EXPORTER_UNIT = SYSTEMD / "fsd-gpu-exporter.service"
ENV_FILE = SYSTEMD / "fsd-daemon.env"
UNITS = [DAEMON_UNIT, EXPORTER_UNIT]

# Keys with these exact values in both units.
COMMON_HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    # Not "yes": Python itself often lives under a home (pyenv, conda, the rayproject images'
    # /home/ray/anaconda3), and a hidden interpreter cannot even start (systemd/README.md).
    "ProtectHome": "read-only",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "User": "fsd-daemon",
    "EnvironmentFile": "-/etc/default/fsd-daemon",
    "Restart": "on-failure",
}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value, in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(path: Path) -> dict[str, list[str]]:
    return parse_unit(path)["Service"]


def one(svc: dict[str, list[str]], key: str) -> str:
    values = svc.get(key)
    assert values, f"{key}= is missing"
    return values[-1]


def console_script(name: str) -> Path:
    """This environment's console script ``name`` (the venv's bin, then PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return candidate
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"console script {name} not found: pip install -e . in this environment")
    return Path(found)


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return path


def local_copy(unit: Path, tmp_path: Path) -> Path:
    """``unit`` with ExecStart's /usr/local/bin/<script> replaced by this environment's."""
    text = unit.read_text(encoding="utf-8")

    def replace(match: re.Match[str]) -> str:
        return f"ExecStart={console_script(match.group(1))}"

    new, count = re.subn(r"^ExecStart=/usr/local/bin/([\w.-]+)", replace, text, flags=re.M)
    assert count == 1, f"{unit.name}: expected one ExecStart=/usr/local/bin/..."
    copy = tmp_path / unit.name
    copy.write_text(new, encoding="utf-8")
    return copy


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts the unit with no error and no warning (an unknown
    or misspelt key is only a warning, so any message about the unit fails the test)."""
    analyze = systemd_analyze()
    copy = local_copy(unit, tmp_path)
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    about_unit = [
        line for line in output.splitlines() if unit.name in line or str(tmp_path) in line
    ]
    assert not about_unit, "\n".join(about_unit)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_security_exposure(unit: Path, tmp_path: Path) -> None:
    """``systemd-analyze security`` rates the unit's exposure below 3.0 ("OK") offline."""
    analyze = systemd_analyze()
    copy = local_copy(unit, tmp_path)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    if result.returncode != 0 and match is None and "offline" in output:
        pytest.skip(f"this systemd-analyze cannot rate units offline: {output.strip()[:200]}")
    assert match is not None, output
    assert float(match.group(1)) < 3.0, output


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_common_hardening(unit: Path) -> None:
    """Both services run as fsd-daemon, read-only everywhere, with no new privileges, no
    home directories, no kernel knobs, only IP and Unix sockets (plus netlink), and the shared
    environment file; neither uses PrivateTmp (Ray's session lives in /tmp/ray)."""
    svc = service(unit)
    for key, value in COMMON_HARDENING.items():
        assert one(svc, key) == value, f"{unit.name}: {key}"
    families = set(one(svc, "RestrictAddressFamilies").split())
    assert (
        {"AF_INET", "AF_INET6", "AF_UNIX"}
        <= families
        <= {
            "AF_INET",
            "AF_INET6",
            "AF_UNIX",
            "AF_NETLINK",
        }
    )
    assert "PrivateTmp" not in svc
    assert one(svc, "SystemCallFilter") and "@system-service" in svc["SystemCallFilter"]
    # The Ray driver must log to the journal: the session's log directory is read-only here.
    assert "RAY_LOG_TO_STDERR=1" in " ".join(svc.get("Environment", []))
    assert parse_unit(unit)["Install"]["WantedBy"] == ["multi-user.target"]


def test_daemon_unit() -> None:
    """The daemon: Type=notify with a watchdog, reload by SIGHUP, no device access, and only
    its state directory writable (the output directory lives there)."""
    svc = service(DAEMON_UNIT)
    assert one(svc, "Type") == "notify"
    assert one(svc, "NotifyAccess") == "main"
    assert one(svc, "WatchdogSec") == "30"
    assert one(svc, "ExecStart") == (
        "/usr/local/bin/fsd-daemon run --config /etc/fsd-daemon/fsd-daemon.toml"
    )
    assert one(svc, "ExecReload") == "kill -HUP $MAINPID"
    assert one(svc, "PrivateDevices") == "yes"
    assert svc["ReadWritePaths"] == ["/var/lib/fsd-daemon"]
    assert one(svc, "StateDirectory") == "fsd-daemon"
    assert one(svc, "CapabilityBoundingSet") == ""
    # The default output directory is inside the only writable path.
    assert load_config(None, environ={}).daemon.output_dir.startswith("/var/lib/fsd-daemon/")


def test_exporter_unit() -> None:
    """The exporter: NVML needs /dev/nvidia*, so no PrivateDevices and no DevicePolicy; it
    writes nothing; its only capability reads other users' /proc/<pid>."""
    svc = service(EXPORTER_UNIT)
    assert one(svc, "Type") in ("simple", "exec", "notify")
    assert one(svc, "ExecStart") == (
        "/usr/local/bin/fsd-gpu-exporter --config /etc/fsd-daemon/fsd-daemon.toml"
    )
    assert svc.get("PrivateDevices", ["no"])[-1] == "no"
    assert "DevicePolicy" not in svc
    assert "ReadWritePaths" not in svc
    assert one(svc, "CapabilityBoundingSet") == "CAP_SYS_PTRACE"


def env_assignments() -> dict[str, str]:
    """Every KEY=value of the environment file, commented-out examples included."""
    found: dict[str, str] = {}
    for raw in ENV_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.lstrip("#").strip()
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_env_file_keys_are_real() -> None:
    """Every FSD_<SECTION>_<KEY> in fsd-daemon.env (examples too) is accepted, with its
    value, by the config loader; Ray's address and token variables are documented."""
    assignments = env_assignments()
    assert assignments.get("RAY_ADDRESS") == "auto"
    assert "RAY_AUTH_TOKEN_PATH" in assignments
    fsd = {k: v for k, v in assignments.items() if k.startswith("FSD_")}
    assert fsd
    config = load_config(None, environ=fsd)
    assert config.daemon.metrics_listen == "127.0.0.1:9848"
    # One unknown FSD_ name would be silently ignored by the loader: check the names too.
    known = set(environment_variables())
    assert set(fsd) <= known, sorted(set(fsd) - known)


def test_env_file_syntax() -> None:
    """systemd's EnvironmentFile= syntax: KEY=value lines and comments, no shell."""
    for raw in ENV_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assert re.match(r"^[A-Z][A-Z0-9_]*=\S*$", line), line
        assert not line.startswith("export ") and "$" not in line, line


def test_readme_names_every_file() -> None:
    """systemd/README.md documents each file of the directory and the user."""
    readme = (SYSTEMD / "README.md").read_text(encoding="utf-8")
    for path in SYSTEMD.iterdir():
        if path.name != "README.md":
            assert path.name in readme, path.name
    assert "fsd-daemon" in readme and "/var/lib/fsd-daemon" in readme


# --- Under the units' hardening (mount namespaces) ---------------------------------------------


def unit_environment(unit: Path) -> dict[str, str]:
    """The unit's Environment= assignments (space-separated KEY=value words)."""
    env = {}
    for value in service(unit).get("Environment", []):
        for word in value.split():
            key, _, val = word.partition("=")
            env[key] = val
    return env


def hardened(unit: Path, argv: list[str], *, writable: list[Path]) -> list[str]:
    """``argv`` under the unit's file-system view: everything read-only (ProtectSystem=strict),
    homes as the unit's ProtectHome= makes them, only ``writable`` writable (ReadWritePaths=)."""
    svc = service(unit)
    assert one(svc, "ProtectSystem") == "strict"
    home = one(svc, "ProtectHome")
    return [
        "unshare",
        "-m",
        "--propagation",
        "private",
        sys.executable,
        str(REPO / "tests" / "support" / "hardening.py"),
        f"--home={home}",
        *(f"--writable={d}" for d in writable),
        "--",
        *argv,
    ]


@dataclass
class NamespacedHead:
    """A Ray head started in a network namespace of the test's own, and what a unit needs of it."""

    ns: Namespace
    gcs: str
    home: Path  # HOME of the user who started Ray (its token is in .ray/auth_token)
    temp_dir: Path  # Ray's --temp-dir


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[NamespacedHead]:
    """A Ray head started as users start it (``ray start --head``, token auth on), in a network
    namespace of the test's own (its ports are private), with one verl-like job serving."""
    why = can_create_namespaces()
    if why is None and shutil.which("unshare") is None:
        why = "needs util-linux's unshare"
    if why is None and not ray_has_token_auth():
        why = "the units are tested with Ray's token auth, which this Ray (< 2.52) does not have"
    if why is not None:
        pytest.skip(why)
    home = tmp_path / "home"
    home.mkdir()
    env = base_env(home, tmp_path)
    subprocess.run(
        [str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True,
        capture_output=True, timeout=60,
    )  # fmt: skip
    # Ray's processes (in the namespaces) are stopped before its temp dir is removed.
    with (
        short_tmp() as ray_tmp,
        NetnsPair(f"s{os.getpid() % 100000}", subnet=os.getpid() % 250 + 1) as pair,
    ):
        ns = pair.head
        temp_dir = ray_tmp / "h"
        start_ray(ns, env, tmp_path, temp_dir, "--head", "--port=26379",
                  f"--dashboard-host={ns.address}", "--dashboard-port=26265")  # fmt: skip
        gcs = f"{ns.address}:26379"
        job = ns.start(
            [str(BIN / "python"), "-m", "fsd_daemon.sim.job", "--address", gcs, "--vllm", "1"],
            tmp_path / "job.log",
            {**env, **auth_env(home)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert job.stdout is not None
        line = job.stdout.readline()
        assert line, (tmp_path / "job.log").read_text()
        yield NamespacedHead(ns, gcs, home, temp_dir)


def test_daemon_under_the_units_hardening_finds_the_servers(
    ray_head: NamespacedHead, tmp_path: Path
) -> None:
    """fsd-daemon as the unit runs it: read-only /, /tmp and /usr, homes as ProtectHome= says,
    only its state directory writable, the unit's Environment=, a clean environment otherwise
    and the token copied out of the home as the env file says. The rollout server is written
    to rollout.json and /healthz says ok.

    What it caught: with ProtectHome=yes an interpreter under a home (pyenv here, conda, the
    rayproject images) cannot even start. On Ray 2.44..2.53 the Ray driver also creates its
    temp dir under the read-only /tmp (EROFS): the Ray-marked CI run against
    the oldest supported Ray covers that; Ray 2.60 no longer writes there."""
    ns, gcs, home = ray_head.ns, ray_head.gcs, ray_head.home
    state = tmp_path / "state"  # stands for /var/lib/fsd-daemon
    out = state / "targets"
    state.mkdir()
    etc = tmp_path / "etc"  # stands for /etc/fsd-daemon: read-only under the unit
    etc.mkdir()
    token = etc / "ray-auth-token"
    shutil.copy(home / ".ray" / "auth_token", token)
    token.chmod(0o640)
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(state),  # the service user's home is its state directory
        "LANG": "C.UTF-8",
        **unit_environment(DAEMON_UNIT),
        "RAY_ADDRESS": gcs,
        # What the env file sets; token mode is decided from it alone.
        "RAY_AUTH_TOKEN_PATH": str(token),
        "STATE_DIRECTORY": str(state),  # systemd sets it for StateDirectory=
        "FSD_DAEMON_OUTPUT_DIR": str(out),
        "FSD_DAEMON_POLL_INTERVAL_SECONDS": "1",
        "FSD_DAEMON_METRICS_LISTEN": "127.0.0.1:26848",
    }
    log = tmp_path / "daemon.log"
    daemon = ns.start(
        hardened(DAEMON_UNIT, [str(BIN / "fsd-daemon"), "run", "--no-watch"], writable=[state]),
        log,
        env,
    )

    def found() -> bool:
        assert daemon.poll() is None, log.read_text()[-3000:]
        return any(g["targets"] for g in read_groups(out / "rollout.json"))

    try:
        wait_for(found, 60, 0.5)
    except AssertionError:
        pytest.fail(
            f"rollout.json under the hardening: {read_groups(out / 'rollout.json')}\n"
            + log.read_text()[-3000:]
        )
    health = json.loads(get_in(ns, "http://127.0.0.1:26848/healthz"))
    assert health["status"] == "ok", health


def test_exporter_under_the_units_hardening_serves(
    ray_head: NamespacedHead, tmp_path: Path
) -> None:
    """fsd-gpu-exporter as its unit runs it (nothing writable, homes hidden, the unit's
    Environment=): it serves /metrics with its simulated GPUs on its default listener."""
    ns = ray_head.ns
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        **unit_environment(EXPORTER_UNIT),
    }
    log = tmp_path / "exporter.log"
    proc = ns.start(
        hardened(EXPORTER_UNIT, [str(BIN / "fsd-gpu-exporter"), "--simulate", "2"], writable=[]),
        log,
        env,
    )

    def serving() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            body = get_in(ns, f"http://{ns.address}:9847/metrics")
        except OSError:
            return False
        return b"fsd_gpu_nvml_up 1.0" in body

    wait_for(serving, 60, 0.5)


def test_rays_sockets_admit_only_rays_user(ray_head: NamespacedHead) -> None:
    """Why the daemon must run as Ray's user (systemd/README.md, "Which user"): its Ray driver
    connects to the raylet and the object store through Unix sockets that Ray creates 0755
    for the user that started it, and connect(2) needs write permission. If a Ray release makes
    them group- or world-writable, this fails and the README's advice can be relaxed."""
    sockets = ray_head.temp_dir / "session_latest" / "sockets"
    for name in ("raylet", "plasma_store"):
        mode = (sockets / name).stat().st_mode
        assert stat.S_ISSOCK(mode), name
        assert stat.S_IMODE(mode) & 0o022 == 0, (name, oct(stat.S_IMODE(mode)))
