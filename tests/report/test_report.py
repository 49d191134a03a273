"""``fsd-daemon report`` against a real Prometheus fed by the demo running a scripted load.

The demo runs as a user runs it (``fsd-daemon demo --scenario long-tail``, its own process, a
clean environment): one verl-like job whose rollout replicas finish their work 3, 5, 7 and 13 s
into every 20 s step, and a fifth replica that gets no request (fsd_daemon/sim/scenario.py).
The truth is computed from that script, not written here: the tail (13 s - median 6 s = 7 s),
its share of the step's GPU time, the idle replica, and the GPUs the simulated exporter's
script never keeps busy (fsd_daemon/gpu/simulated.py DEFAULT_SCRIPT).

Tolerances: the engine's gauges change every 0.1 s, Prometheus scrapes every 1 s, and the
report's grid is 1 s, so each finish time is late by up to 2 s and a difference of two finish
times is off by less than 2 s: tails within 2 s, shares within 0.15. The GPU busy fraction is
a 4-scrape rate that starts from zero when the exporter's series begin: within 0.08.
"""

from __future__ import annotations

import itertools
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsd_daemon.config import load_config
from fsd_daemon.demo import start_prometheus, wait_http_ok
from fsd_daemon.gpu.simulated import DEFAULT_SCRIPT
from fsd_daemon.prometheus.scrape_config import render_yaml, scrape_jobs
from fsd_daemon.report.figures import FIGURE_SIZES, IDLENESS_PNG, LONG_TAIL_PNG
from fsd_daemon.sim.launch import stop_process
from fsd_daemon.sim.scenario import SCENARIOS
from tests.report.helpers import (
    DemoProcess,
    clean_env,
    distinct_colours,
    free_port,
    fsd_daemon_cli,
    png_size,
    run_command,
    screenshot,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.ray, pytest.mark.slow]

SCENARIO = SCENARIOS["long-tail"]
TAIL_TOLERANCE_SECONDS = 2.0
SHARE_TOLERANCE = 0.15
GPU_BUSY_TOLERANCE = 0.08
# Two whole steps: the first aligned batch comes within one step of the engines' start, and a
# step is whole once its slowest replica is done.
COMPLETE_STEPS = 2


class Fixture:
    def __init__(
        self,
        base: Path,
        env: dict[str, str],
        prometheus: str,
        rollout_only: str,
        job: str,
        started: float,
    ) -> None:
        self.base = base
        self.env = env
        self.prometheus = prometheus
        self.rollout_only = rollout_only
        self.job = job
        self.started = started

    def report(self, *args: str, output: str = "report") -> Any:
        return run_command(
            [*fsd_daemon_cli(), "report", *args, "--output", str(self.base / output)],
            self.env,
            self.base,
        )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> Iterator[Fixture]:
    base = tmp_path_factory.mktemp("report")
    env = clean_env()
    started = time.time()
    demo = DemoProcess(
        [
            *fsd_daemon_cli(),
            "demo",
            "--scenario",
            SCENARIO.name,
            "--scrape-interval",
            "1",
            "--gpus",
            "6",
            "--prometheus-port",
            str(free_port()),
        ],
        base / "demo",
        env,
    )
    second: Any = None
    try:
        state = demo.wait_ready()
        prometheus = f"http://127.0.0.1:{state['ports']['prometheus']}"
        # A second Prometheus that scrapes the rollout servers only (the daemon's own
        # "rollout" scrape job for the demo's config): no GPU exporter.
        rollout_job = [
            job
            for job in scrape_jobs(load_config(base / "demo" / "fsd-daemon.toml"))
            if job["job_name"] == "rollout"
        ]
        config = base / "rollout-only.yml"
        config.write_text(
            render_yaml(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": rollout_job,
                }
            ),
            encoding="utf-8",
        )
        port = free_port()
        second = start_prometheus(
            prometheus_bin, config, base / "rollout-only-data", port, base / "rollout-only.log"
        )
        wait_http_ok(f"http://127.0.0.1:{port}/-/ready", 60, second)
        # Until COMPLETE_STEPS whole steps are in: one step to the first aligned batch, then
        # one step each, and a few scrapes to see the last replica finish.
        time.sleep((COMPLETE_STEPS + 1) * SCENARIO.step_seconds - SCENARIO.step_seconds / 2)
        job = state["jobs"][0]["job_id"]
        yield Fixture(base, env, prometheus, f"http://127.0.0.1:{port}", job, started)
    finally:
        if second is not None:
            stop_process(second)
        code = demo.stop()
        assert code == 0, f"the demo exited with {code}:\n{demo.log_text()}"
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


@pytest.fixture(scope="module")
def drawn(demo: Fixture) -> tuple[Any, Path, dict[str, Any]]:
    # A step during which a scrape failed (a loaded machine) is not measured: draw again, a
    # step later, until COMPLETE_STEPS whole steps are in.
    deadline = time.monotonic() + 4 * SCENARIO.step_seconds
    while True:
        result = demo.report("--prometheus", demo.prometheus, "--since", "5m")
        assert result.returncode == 0, result.stderr
        out = demo.base / "report"
        summary = orjson.loads((out / "summary.json").read_bytes())
        if len(summary["steps"]) >= COMPLETE_STEPS or time.monotonic() > deadline:
            return result, out, summary
        time.sleep(SCENARIO.step_seconds / 2)


def test_summary_matches_the_scripted_long_tail(drawn: tuple[Any, Path, dict[str, Any]]) -> None:
    """Every whole step is found, with the scripted tail, shares and slowest replica."""
    result, _out, summary = drawn
    steps = summary["steps"]
    assert len(steps) >= COMPLETE_STEPS, result.stdout
    for step in steps:
        assert step["replicas"] == len(SCENARIO.working), step
        assert step["slowest_replica"] == str(SCENARIO.busy_seconds.index(max(SCENARIO.working)))
        assert abs(step["seconds"] - SCENARIO.step_busy_seconds) <= TAIL_TOLERANCE_SECONDS, step
        assert abs(step["tail_seconds"] - SCENARIO.tail_seconds) <= TAIL_TOLERANCE_SECONDS, step
        assert abs(step["tail_share"] - SCENARIO.tail_share) <= SHARE_TOLERANCE, step
        assert abs(step["waiting_share"] - SCENARIO.waiting_share) <= SHARE_TOLERANCE, step
    # Steps come every step_seconds.
    starts = [s["start"] for s in steps]
    for a, b in itertools.pairwise(starts):
        assert abs((b - a) - SCENARIO.step_seconds) <= TAIL_TOLERANCE_SECONDS
    assert f"rollout steps: {len(steps)};" in result.stdout


def test_summary_finds_the_idle_replica_and_rightsizes(
    demo: Fixture, drawn: tuple[Any, Path, dict[str, Any]]
) -> None:
    """The replica without requests is named; the replicas needed are the scripted busy
    replica-seconds per step over the step period, rounded up."""
    result, _out, summary = drawn
    idle = [{"job": demo.job, "replica": str(r)} for r in SCENARIO.idle_replicas]
    assert summary["never_busy_replicas"] == idle
    for r in SCENARIO.idle_replicas:
        assert f"replica {r} of job {demo.job} ran no request" in result.stdout
    (sizing,) = summary["rightsizing"]
    assert sizing["replicas"] == SCENARIO.replicas
    # The range starts before the first batch (idle time), so the mean is a little low.
    assert abs(sizing["mean_busy_replicas"] - SCENARIO.mean_busy_replicas) <= 0.3, sizing
    assert sizing["needed_replicas"] == math.ceil(SCENARIO.mean_busy_replicas)
    assert sizing["tokens_per_second"] > 0
    assert "assumes" in summary["rightsizing_assumption"]
    assert summary["not_drawn"] == []


def test_summary_gpu_idleness_matches_the_exporter_script(
    drawn: tuple[Any, Path, dict[str, Any]],
) -> None:
    """Rollout GPUs' busy share is the mean of their scripted duty cycles; the GPUs whose
    script is (nearly) never busy are listed as held but never used."""
    _result, _out, summary = drawn
    script = [DEFAULT_SCRIPT[g % len(DEFAULT_SCRIPT)].fraction for g in SCENARIO.gpus]
    truth_busy = sum(script) / len(script)
    # Four of the exporter's 1 s scrapes: a rate needs two samples, a longer window smears.
    assert summary["gpu_rate_window"] == "4s"
    states = summary["states"]
    assert states["unit"] == "GPUs"
    assert states["asleep"] == 0  # this scenario never puts an engine to sleep
    assert abs(states["busy"] - truth_busy) <= GPU_BUSY_TOLERANCE, (states, truth_busy)
    assert abs(states["busy"] + states["idle"] - 1) < 1e-6
    never = {str(g) for g, f in zip(SCENARIO.gpus, script, strict=True) if f < 0.01}
    assert {g["gpu"] for g in summary["never_used_gpus"]} == never
    hours = {(h["role"], h["job"]): h["hours"] for h in summary["idle_gpu_hours"]}
    assert any(role == "rollout" for role, _ in hours) and all(v > 0 for v in hours.values())


def test_figures_are_pictures_of_the_right_size(drawn: tuple[Any, Path, dict[str, Any]]) -> None:
    """Both PNGs exist at their declared size and are not blank."""
    _result, out, _summary = drawn
    for name in (LONG_TAIL_PNG, IDLENESS_PNG):
        assert png_size(out / name) == FIGURE_SIZES[name]
        assert distinct_colours(out / name) > 50, f"{name} looks blank"


def test_page_is_self_contained_and_renders(
    drawn: tuple[Any, Path, dict[str, Any]], tmp_path: Path
) -> None:
    """index.html loads nothing from anywhere (images embedded); headless Chromium, with the
    network switched off, renders it to a screenshot that is not blank."""
    _result, out, _summary = drawn
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 2
    assert "Tail: how long the slowest replica" in page  # the definitions are on the page
    shot = out / "screenshot.png"
    screenshot(out / "index.html", shot)
    width, height = png_size(shot)
    assert (width, height) == (1300, 2600)
    assert distinct_colours(shot) > 100


def test_exporter_absent_draws_the_rest(demo: Fixture) -> None:
    """Against a Prometheus without the GPU exporter, the report says which part it could not
    draw and draws the long tail."""
    result = demo.report("--prometheus", demo.rollout_only, "--since", "5m", output="partial")
    assert result.returncode == 0, result.stderr
    summary = orjson.loads((demo.base / "partial" / "summary.json").read_bytes())
    assert len(summary["steps"]) >= 1
    assert summary["states"]["unit"] == "replicas"
    assert len(summary["not_drawn"]) == 1 and "fsd-gpu-exporter" in summary["not_drawn"][0]
    assert "not drawn: GPU busy time" in result.stdout
    for name in (LONG_TAIL_PNG, IDLENESS_PNG):
        assert png_size(demo.base / "partial" / name) == FIGURE_SIZES[name]


def test_job_filter(demo: Fixture) -> None:
    """--job keeps that job; an unknown job has no data (exit 1, one line)."""
    result = demo.report(
        "--prometheus", demo.prometheus, "--since", "5m", "--job", demo.job, output="one-job"
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads((demo.base / "one-job" / "summary.json").read_bytes())["jobs"] == [demo.job]
    result = demo.report(
        "--prometheus", demo.prometheus, "--since", "5m", "--job", "ffff0000", output="no-job"
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no data in the range for job ffff0000" in (
        result.stderr
    )


def test_no_data_in_the_range(demo: Fixture) -> None:
    """A range before anything ran: exit 1 and one line saying so, no traceback."""
    result = demo.report(
        "--prometheus",
        demo.prometheus,
        "--from",
        "2020-01-01T00:00:00Z",
        "--to",
        "2020-01-01T01:00:00Z",
        output="empty",
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no data in the range" in result.stderr


def test_prometheus_unreachable(demo: Fixture) -> None:
    """Nothing listening: exit 1 and one line naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    result = demo.report("--prometheus", url, "--since", "5m", output="unreachable")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"cannot reach Prometheus at {url}" in result.stderr
