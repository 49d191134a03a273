"""``fsd-gpu-exporter`` as a user runs it: the console script in a subprocess, scraped over HTTP,
stopped by PID.

Scenarios: --help; bad configuration (exit 2, one line naming the key); a port in use (exit 1);
``--simulate 8`` serving a promtool-clean exposition whose busy counters match the script;
no driver on this machine (serves fsd_gpu_nvml_up 0, one log line); SIGTERM and SIGINT exit 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsd_daemon.gpu.simulated import DEFAULT_SCRIPT
from fsd_daemon.sim.launch import free_port
from tests.gpu.helpers import one, parse, promtool_check, select

SCRIPT = Path(sys.executable).with_name("fsd-gpu-exporter")


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class Running:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(SCRIPT), "--listen", f"127.0.0.1:{self.port}", "--node", "e2e", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def get(self, path: str = "/metrics") -> tuple[str, float]:
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            body = r.read().decode()
        return body, time.perf_counter() - started

    def wait_ready(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.proc.communicate()
            try:
                return self.get()[0]
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def signal(self, signum: int, timeout: float = 20) -> tuple[int, str]:
        os.kill(self.proc.pid, signum)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=10)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    try:
        yield started
    finally:
        for r in started:
            r.kill()


def test_help_works() -> None:
    done = run("--help")
    assert done.returncode == 0
    for flag in ("--listen", "--config", "--simulate", "--node", "--log-level"):
        assert flag in done.stdout


@pytest.mark.parametrize(
    ("toml", "args", "key"),
    [
        ("[exporter]\nsample_interval_seconds = -1\n", (), "exporter.sample_interval_seconds"),
        ("[exporter]\nnope = 1\n", (), "exporter.nope"),
        ("", ("--listen", "localhost"), "exporter.listen"),
        ("[exporter]\nroles = { Foo = 'not a label' }\n", (), "exporter.roles.Foo"),
    ],
)
def test_bad_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, toml: str, args: tuple[str, ...], key: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(toml)
    done = run("--config", str(config), *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], done.stderr


def test_missing_config_file_and_bad_simulate_exit_2(tmp_path: Path) -> None:
    done = run("--config", str(tmp_path / "absent.toml"))
    assert done.returncode == 2 and "--config" in done.stderr
    assert run("--simulate", "0").returncode == 2


def test_port_in_use_exits_1_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = run("--simulate", "1", "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "cannot listen" in done.stderr.strip().splitlines()[-1]


def busy_bounds(start: float, end: float, slack: float) -> list[tuple[float, float]]:
    """Per simulated GPU, the busy seconds a counter increase between two scrapes at
    ``start``/``end`` can hold: the sampler integrates up to its last sample, which lags a
    scrape by at most ``slack`` seconds."""
    out = []
    for i in range(8):
        cycle = DEFAULT_SCRIPT[i % len(DEFAULT_SCRIPT)]
        out.append((cycle.busy_between(start, end - slack), cycle.busy_between(start - slack, end)))
    return out


@pytest.mark.prometheus
def test_simulate_8_end_to_end(running: list[Running], promtool: str) -> None:
    """A new user's first run: eight GPUs, a clean exposition, fast scrapes, busy counters
    that match the scripted truth, /healthz ok, SIGTERM exits 0."""
    r = Running("--simulate", "8")
    running.append(r)
    r.wait_ready()
    time.sleep(1.5)  # a few ticks: every GPU has its first samples
    first, t0 = r.get(), time.time()
    time.sleep(8.0)
    second, t1 = r.get(), time.time()
    text = second[0]
    promtool_check(promtool, text)
    a, b = parse(first[0]), parse(text)
    assert one(b, "fsd_gpu_nvml_up") == 1.0
    assert len(select(b, "fsd_gpu_busy_seconds_total")) == 8
    assert one(b, "fsd_gpu_exporter_build_info", backend="simulated") == 1.0
    for gpu, (low, high) in enumerate(busy_bounds(t0, t1, slack=3.0)):
        delta = one(b, "fsd_gpu_busy_seconds_total", gpu=str(gpu)) - one(
            a, "fsd_gpu_busy_seconds_total", gpu=str(gpu)
        )
        assert low - 0.02 <= delta <= high + 0.02, (gpu, low, delta, high)
    latencies = sorted(r.get()[1] for _ in range(20))
    assert latencies[len(latencies) // 2] < 0.25, latencies  # generous: two shared cores
    health, _ = r.get("/healthz")
    assert '"status":"ok"' in health
    code, err = r.signal(signal.SIGTERM)
    assert code == 0, err


def test_no_driver_serves_nvml_up_0_logs_one_line_and_stops_on_sigint(
    running: list[Running],
) -> None:
    """This machine has no NVIDIA driver: the real NVML backend starts anyway."""
    r = Running()
    running.append(r)
    series = parse(r.wait_ready())
    if one(series, "fsd_gpu_nvml_up") == 1.0:  # pragma: no cover - a machine with a GPU
        pytest.skip("this machine has an NVIDIA driver")
    assert not select(series, "fsd_gpu_busy_seconds_total")
    assert one(series, "fsd_gpu_exporter_build_info", backend="nvml") == 1.0
    code, err = r.signal(signal.SIGINT)
    assert code == 0, err
    nvml_lines = [line for line in err.splitlines() if "NVML" in line]
    assert len(nvml_lines) == 1 and "retrying every" in nvml_lines[0], err
