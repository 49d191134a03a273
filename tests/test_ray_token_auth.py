"""Ray started as users start it (``ray start --head`` in its own process, a token in
~/.ray/auth_token as ``ray get-auth-token --generate`` leaves it), and fsd_daemon's commands
run from another shell with a clean environment: nothing Ray-specific inherited, only what a
user would set. Ray decides token mode this way in ray-project/ray
python/ray/scripts/scripts.py (``ray start``: maybe_enable_token_auth_if_token_available),
and an explicit address never turns it on (python/ray/_private/worker.py, ray.init).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsd_daemon.gpu.raylookup import NameLookupFailed, list_job_actors
from fsd_daemon.sim.harness import read_groups, wait_for
from fsd_daemon.sim.launch import Job, start_job, stop_process
from fsd_daemon.sim.rayhead import TOKEN, RayHead, clean_env, ray_has_token_auth, write_token

pytestmark = [
    pytest.mark.ray,
    # Token auth came with Ray 2.52; the oldest supported Ray (CI's second run) has none.
    pytest.mark.skipif(not ray_has_token_auth(), reason="this Ray has no token auth"),
]

_FSD = (sys.executable, "-m", "fsd_daemon.cli")


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """The test process's own environment for a moment (the simulated job's driver inherits
    it); the commands under test get theirs explicitly."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    root = tmp_path_factory.mktemp("rayhead")
    write_token(root / "home")
    with RayHead(root) as started:
        assert "Token authentication is enabled" in started.log_path.read_text()
        yield started


@pytest.fixture(scope="module")
def job(head: RayHead) -> Iterator[Job]:
    # A verl driver on the head node finds the token as `ray start` did.
    with _environ(HOME=str(head.home), RAY_AUTH_MODE="token"):
        started = start_job(head.address, "--vllm", "1")
    try:
        yield started
    finally:
        started.stop()


def _targets(head: RayHead, env: dict[str, str]) -> tuple[int, str, str]:
    """`fsd-daemon targets --json` with exactly ``env`` (nothing of the test's own)."""
    result = subprocess.run(
        [*_FSD, "targets", "--json", "--ray-address", head.address, "--log-level", "info"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout, result.stderr


@contextlib.contextmanager
def _daemon(head: RayHead, out: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`fsd-daemon run` with exactly ``env``, output to ``out/../daemon.log``; stopped by PID."""
    log_path = out.parent / "daemon.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*_FSD, "run", "--ray-address", head.address, "--output-dir", str(out)],
            env={**env, "FSD_DAEMON_POLL_INTERVAL_SECONDS": "0.5"},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def test_targets_finds_servers_with_the_token_in_home(head: RayHead, job: Job) -> None:
    """`fsd-daemon targets` in a clean shell of the same user: token mode on, the server is
    listed with its address, and the log names the token's source (never the token)."""
    code, out, err = _targets(head, (clean_env(head.home)))
    assert code == 0, err
    data = json.loads(out)
    assert [g["targets"][0] for g in data["rollout.json"]] == [job.addresses["vllm_server_0_0"]]
    assert "token from ~/.ray/auth_token" in err
    assert TOKEN not in err + out


def test_targets_finds_servers_with_token_path(head: RayHead, job: Job, tmp_path: Path) -> None:
    """The README's way for another user (or systemd with ProtectHome): RAY_AUTH_TOKEN_PATH."""
    token_file = tmp_path / "ray-token"
    token_file.write_text(TOKEN + "\n")
    env = clean_env(tmp_path / "empty-home", RAY_AUTH_TOKEN_PATH=str(token_file))
    code, out, err = _targets(head, env)
    assert code == 0, err
    assert len(json.loads(out)["rollout.json"]) == 1
    assert f"token from RAY_AUTH_TOKEN_PATH ({token_file})" in err


def test_wrong_or_missing_token_says_what_to_do_in_one_line(head: RayHead, tmp_path: Path) -> None:
    """A rejected token and a missing one each end in one line naming the fix, no traceback."""
    wrong = clean_env(tmp_path, RAY_AUTH_TOKEN="not-the-cluster-token")
    code, _, err = _targets(head, wrong)
    assert code != 0
    assert "rejected the token from RAY_AUTH_TOKEN" in err, err
    assert "Traceback" not in err
    missing = clean_env(tmp_path / "nobody")
    code, _, err = _targets(head, missing)
    assert code != 0
    assert "requires a token and none was found" in err, err
    assert "Traceback" not in err


def test_daemon_finds_servers_and_never_imports_ray(
    head: RayHead, job: Job, tmp_path: Path
) -> None:
    """`fsd-daemon run` from a clean shell writes the server; the daemon process itself has no
    Ray loaded (the state API is plain HTTP; only the bridge child is a Ray driver)."""
    out = tmp_path / "out"
    with _daemon(head, out, clean_env(head.home)) as proc:
        wait_for(lambda: len(read_groups(out / "rollout.json")) == 1, timeout=60)
        assert read_groups(out / "rollout.json")[0]["targets"] == [job.addresses["vllm_server_0_0"]]
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "_raylet" not in maps, "the daemon process loaded Ray"
    assert "token from ~/.ray/auth_token" in (tmp_path / "daemon.log").read_text()


def test_exporter_lookup_uses_the_token(
    head: RayHead, job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU exporter's actor-name lookup (a child of the exporter) under the same rules."""
    for name in [k for k in os.environ if k.startswith("RAY_AUTH")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(head.home))
    rows = list_job_actors(head.address, job.job_id, timeout=60)
    assert "vllm_server_0_0" in {r.name for r in rows}
    monkeypatch.setenv("HOME", str(tmp_path))  # no token: the lookup says what to do
    with pytest.raises(NameLookupFailed, match="requires a token"):
        list_job_actors(head.address, job.job_id, timeout=60)
