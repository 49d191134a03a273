"""Bad input, tried as a user would (real processes, a clean environment): one line on stderr,
exit 2, no traceback, and never READY to systemd; ``run --once`` failures; ``check-config``
prints TOML that loads back as the same config."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fsd_daemon.config import load_config
from tests.support.clusterfile import cluster, server
from tests.support.fs import remount, small_tmpfs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing FSD_* or Ray-specific inherited."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FSD_", "RAY_")) and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")
    }
    return {**env, **extra}


def fsd(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsd_daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def described(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.json"
    path.write_bytes(orjson.dumps(cluster(server(0))))
    return path


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "ro", 1 << 20) as mount:
        remount(mount, read_only=True, size_bytes=1 << 20)
        yield mount / "targets"


def bad_inputs(
    tmp: Path, described: Path, read_only: Path
) -> list[tuple[str, list[str], dict[str, str], str]]:
    """(case, args, environment, what the line must name)."""
    a_file = tmp / "a-file"
    a_file.write_text("")
    busy = tmp / "busy-port"
    config = tmp / "c.toml"
    fsd_ray = ["--ray-address", f"file:{described}"]
    out = ["--output-dir", str(tmp / "out")]
    cases = [
        (
            "output dir is a file",
            ["run", *fsd_ray, "--output-dir", str(a_file)],
            {},
            "daemon.output_dir",
        ),
        (
            "output dir under a file",
            ["run", *fsd_ray, "--output-dir", str(a_file / "t")],
            {},
            "daemon.output_dir",
        ),
        (
            "output dir read-only",
            ["run", *fsd_ray, "--output-dir", str(read_only)],
            {},
            "daemon.output_dir",
        ),
        (
            "busy metrics port",
            ["run", *fsd_ray, *out, "--metrics-listen", busy.read_text()],
            {},
            "daemon.metrics_listen",
        ),
        (
            "foreign metrics address",
            ["run", *fsd_ray, *out, "--metrics-listen", "192.0.2.1:21001"],
            {},
            "daemon.metrics_listen",
        ),
        (
            "IPv6 without brackets",
            ["run", *fsd_ray, *out, "--metrics-listen", "::1:21002"],
            {},
            "daemon.metrics_listen",
        ),
        (
            "inf interval",
            ["run", *fsd_ray, *out],
            {"FSD_DAEMON_POLL_INTERVAL_SECONDS": "inf"},
            "daemon.poll_interval_seconds",
        ),
        (
            "nan interval",
            ["run", *fsd_ray, *out],
            {"FSD_RAY_REQUEST_TIMEOUT_SECONDS": "nan"},
            "ray.request_timeout_seconds",
        ),
        (
            "misspelt variable",
            ["run", *fsd_ray, *out],
            {"FSD_DAEMON_POLL_INTERVAL": "3"},
            "did you mean FSD_DAEMON_POLL_INTERVAL_SECONDS",
        ),
        ("unknown variable", ["run", *fsd_ray, *out], {"FSD_WHATEVER": "1"}, "FSD_WHATEVER"),
        (
            "scrape interval finer than 1 ms",
            ["run", "--config", str(config), *fsd_ray, *out],
            {},
            "prometheus.scrape_interval_seconds",
        ),
        (
            "actor_limit 1.5",
            ["run", *fsd_ray, *out],
            {"FSD_RAY_ACTOR_LIMIT": "1.5"},
            "ray.actor_limit",
        ),
        ("ray address foo", ["run", *out, "--ray-address", "foo"], {}, "ray.address"),
        ("ray address http://x", ["run", *out, "--ray-address", "http://x"], {}, "ray.address"),
        (
            "ray address ray://",
            ["run", *out, "--ray-address", "ray://10.0.0.1:10001"],
            {},
            "ray.address",
        ),
        ("ray address port 0", ["run", *out, "--ray-address", "10.0.0.1:0"], {}, "ray.address"),
        ("RAY_ADDRESS garbage", ["run", *out], {"RAY_ADDRESS": "foo"}, "ray.address"),
        (
            "once, output dir a file",
            ["run", "--once", *fsd_ray, "--output-dir", str(a_file)],
            {},
            "daemon.output_dir",
        ),
    ]
    config.write_text("[prometheus]\nscrape_interval_seconds = 0.0005\n")
    return cases


def test_every_bad_input_is_one_line_exit_2_no_traceback_never_ready(
    tmp_path: Path, described: Path, notify_socket: socket.socket, read_only_dir: Path
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    (tmp_path / "busy-port").write_text(f"127.0.0.1:{listener.getsockname()[1]}")
    notify = str(tmp_path / "notify.sock")
    failures, tracebacks = [], 0
    try:
        for case, args, env, names in bad_inputs(tmp_path, described, read_only_dir):
            try:
                result = fsd(*args, env=clean_env(NOTIFY_SOCKET=notify, **env), timeout=20)
            except subprocess.TimeoutExpired:  # it started and ran, as under systemd
                failures.append((case, "still running after 20 s"))
                continue
            lines = result.stderr.strip().splitlines()
            tracebacks += result.stderr.count("Traceback")
            ready = [m for m in received(notify_socket) if "READY=1" in m]
            if result.returncode != 2 or len(lines) != 1 or names not in lines[0] or ready:
                failures.append((case, result.returncode, result.stderr[-600:], ready))
    finally:
        listener.close()
    assert tracebacks == 0
    assert not failures, "\n".join(map(str, failures))


def test_run_once_exits_non_zero_when_it_cannot_write(tmp_path: Path, described: Path) -> None:
    out = tmp_path / "out"
    (out / "rollout.json").mkdir(parents=True)  # a directory where the file must go
    result = fsd(
        "run",
        "--once",
        "--ray-address",
        f"file:{described}",
        "--output-dir",
        str(out),
        env=clean_env(),
    )
    assert result.returncode == 1, result.stderr
    assert "could not write rollout.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_once_reports_an_unreachable_ray_within_seconds(tmp_path: Path) -> None:
    """Nothing listens on the GCS port: exit 1 within ray.request_timeout_seconds and start-up
    (a few seconds), not after 40 s of waiting for the bridge first."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = fsd(
        "run",
        "--once",
        "--ray-address",
        f"127.0.0.1:{port}",
        "--output-dir",
        str(tmp_path / "out"),
        env=clean_env(FSD_RAY_REQUEST_TIMEOUT_SECONDS="3"),
        timeout=120,
    )
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert "could not be reached" in result.stderr
    assert "Traceback" not in result.stderr
    assert took < 20, took
    print(f"unreachable Ray reported in {took:.1f}s")


def test_check_config_prints_toml_that_loads_back(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[daemon]\ncluster = "a \\"quoted\\" name"\n'
        "[exporter.roles]\nMyTrainer = 'train'\n"
        "[[discovery.extra_patterns]]\nclass_name = 'MyServer'\n"
        "name = 'my_(?P<replica>\\\\d+)'\nengine = 'sglang'\n"
        "[[discovery.extra_patterns]]\nclass_name = 'MyTrt'\nengine = 'trtllm'\n"
        "metrics_path = '/prometheus/metrics'\nhas_metrics_route = false\n"
        "[prometheus]\nrule_files = ['/etc/r.yml']\nscrape_interval_seconds = 0.5\n"
    )
    result = fsd("check-config", "--config", str(config), env=clean_env())
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    assert printed["daemon"]["cluster"] == 'a "quoted" name'
    assert load_config(again, environ={}) == load_config(config, environ={})


@pytest.mark.parametrize(
    "args, names",
    [
        (["--replicas", "-1"], "--replicas"),
        (["--replicas", "0"], "--replicas"),
        (["--gpus", "-1"], "--gpus"),
        (["--prometheus-port", "99999"], "--prometheus-port"),
        (["--prometheus-port", "0"], "--prometheus-port"),
        (["--duration", "nan"], "--duration"),
        (["--ray-address", "127.0.0.1:6379"], "--ray-address"),
        (["--ray-address", "foo"], "ray.address"),
    ],
)
def test_demo_refuses_bad_flags_before_starting_anything(
    tmp_path: Path, args: list[str], names: str
) -> None:
    started = time.monotonic()
    result = fsd("demo", "--workdir", str(tmp_path / "w"), *args, env=clean_env(), timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and names in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 15  # Ray was never started
