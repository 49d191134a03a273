"""End to end, through the README's main command: `fsd-daemon demo` with the real Prometheus.

One demo run (a local Ray cluster, two verl-like jobs, the simulated-GPU exporter, the daemon and
Prometheus with the generated config and shipped rules) is shared by the tests of this module:

- every target is active with up == 1 and carries its job's labels;
- every expression of every recording rule, dashboard panel and dashboard variable returns data
  (a dashboard that would show "No Data" fails);
- the rules answer "which rollout GPUs are idle";
- a job that ends is dropped from Prometheus's active targets;
- Ctrl-C (SIGINT) stops every process the demo started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from fsd_daemon.sim.harness import wait_for
from fsd_daemon.sim.launch import free_port, start_job
from tests.promql import all_expressions

pytestmark = [pytest.mark.prometheus, pytest.mark.ray, pytest.mark.slow]


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    workdir: Path
    log: Path
    state: dict[str, Any]

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.state['ports']['prometheus']}"

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["activeTargets"])

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("demo")
    log = workdir / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fsd_daemon.cli",
                "demo",
                "--workdir",
                str(workdir),
                "--replicas",
                "2",
                "--gpus",
                "6",
                "--prometheus-port",
                str(free_port()),
                "--output-dir",
                str(workdir / "files"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            wait_for(
                lambda: (workdir / "demo.json").exists() or proc.poll() is not None, timeout=240
            )
        except AssertionError:
            pytest.fail(f"the demo did not start:\n{log.read_text()[-4000:]}")
        assert proc.poll() is None, log.read_text()[-4000:]
        state = json.loads((workdir / "demo.json").read_text())
        yield Demo(proc, workdir, log, state)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_every_target_is_up_with_its_labels(demo: Demo) -> None:
    jobs = {j["job_id"]: j for j in demo.state["jobs"]}

    def all_up() -> list[dict[str, Any]] | None:
        targets = demo.active_targets()
        by_job: dict[str, int] = {}
        for t in targets:
            if t["health"] != "up":
                return None
            by_job[t["labels"]["job"]] = by_job.get(t["labels"]["job"], 0) + 1
        # 2 hybrid vLLM replicas + 1 colocated reward + 1 standalone SGLang replica; one node;
        # Ray's node, dashboard and autoscaler; the daemon itself.
        return targets if by_job == {"rollout": 4, "gpu": 1, "ray": 3, "fsd_daemon": 1} else None

    wait_for(all_up, timeout=90, step=1)
    targets = all_up()
    assert targets is not None
    rollout = [t["labels"] for t in targets if t["labels"]["job"] == "rollout"]
    assert {t["ray_job_id"] for t in rollout} == set(jobs)
    assert sorted((t["engine"], t["role"], t["replica"]) for t in rollout) == [
        ("sglang", "rollout", "0"),
        ("vllm", "reward", "0"),
        ("vllm", "rollout", "0"),
        ("vllm", "rollout", "1"),
    ]
    for t in rollout:
        assert t["cluster"] == "demo" and t["node_ip"] == "127.0.0.1" and t["node_id"]
        assert t["ray_namespace"] == jobs[t["ray_job_id"]]["namespace"]
    assert demo.query('up{job=~"rollout|gpu|ray|fsd_daemon"} == 0') == []


def test_every_rule_panel_and_variable_returns_data(demo: Demo) -> None:
    expressions = [e for e in all_expressions() if e.kind != "alert"]
    assert len(expressions) > 20
    # Rates need two scrapes and recording rules feed others: allow a few evaluation rounds.
    deadline = time.monotonic() + 180
    while True:
        empty = [e for e in expressions if not demo.query(e.expr)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert not empty, "no data:\n" + "\n".join(f"{e.where}: {e.expr}" for e in empty)


def test_rules_answer_which_rollout_gpus_are_idle(demo: Demo) -> None:
    # Every alert expression parses and evaluates (firing or not) against the live data.
    for e in all_expressions():
        if e.kind == "alert":
            demo.query(e.expr)

    def owners() -> tuple[set[str], set[tuple[str, str]]]:
        series = demo.query('fsd_gpu_owner_info{role="rollout"}')
        states = {s["metric"]["state"] for s in series}
        return states, {(s["metric"]["ray_job_id"], s["metric"]["replica"]) for s in series}

    # The exporter's ownership scan and Prometheus's scrape each take their time on a loaded
    # machine: wait until both states have been scraped, then check the whole answer.
    with contextlib.suppress(AssertionError):  # the assertion below says what was seen
        wait_for(lambda: owners()[0] == {"active", "reserved"}, timeout=90, step=1)
    states, replicas = owners()
    assert states == {"active", "reserved"}, states
    assert len(replicas) == 3  # 2 vLLM + 1 SGLang rollout replicas, each on its own GPU


def test_a_job_that_ends_is_dropped(demo: Demo) -> None:
    sglang_job = next(
        j for j in demo.state["jobs"] if any(a["name"].startswith("sglang") for a in j["actors"])
    )
    wait_for(
        lambda: any(t["labels"].get("engine") == "sglang" for t in demo.active_targets()), 90, 1
    )
    os.kill(sglang_job["pid"], signal.SIGTERM)
    took = wait_for(
        lambda: (
            not any(
                t["labels"].get("ray_job_id") == sglang_job["job_id"] for t in demo.active_targets()
            )
        ),
        timeout=60,
        step=0.5,
    )
    print(f"job dropped from Prometheus's active targets {took:.1f} s after it was stopped")
    remaining = [t for t in demo.active_targets() if t["labels"]["job"] == "rollout"]
    assert len(remaining) == 3


def test_demo_keeps_to_its_own_ray_temp_dir_and_output_dir(demo: Demo) -> None:
    """Run on a real head node, the demo must not repoint the machine's session_latest: its
    Ray lives in a temp dir of its own. --output-dir is where its daemon writes."""
    own = Path(demo.state["ray_temp_dir"])
    assert (own / "session_latest").exists()
    for default in {Path("/tmp/ray"), Path(os.environ.get("RAY_TMPDIR", "/tmp/ray"))}:
        latest = default / "session_latest"
        if latest.exists():
            assert own not in latest.resolve().parents, latest
    assert Path(demo.state["targets_dir"]) == demo.workdir / "files"
    assert (demo.workdir / "files" / "rollout.json").exists()


def test_doctor_as_printed_names_a_job_with_verls_metric_defaults(demo: Demo) -> None:
    """The demo's own "is it working?" command, run as printed in a clean environment: all well
    on the demo; then a user's job with verl's defaults on the same cluster (a vLLM server with
    its statistics off, an SGLang server without a metrics route): doctor exits 1 and names
    both servers and the verl key each needs (verl-project/verl
    verl/trainer/config/rollout/rollout.yaml: disable_log_stats, prometheus.enable)."""
    line = next(x for x in demo.output().splitlines() if "fsd-daemon doctor" in x)
    words = line.split("is it working?", 1)[1].split()
    env_words = [w for w in words if "=" in w and not w.startswith("-")]
    argv = words[len(env_words) :]
    assert argv[0] == "fsd-daemon"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(Path.home())}
    env.update(w.split("=", 1) for w in env_words)

    def doctor() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fsd_daemon.cli", *argv[1:], "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    healthy = doctor()
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "Traceback" not in healthy.stderr

    job_env = dict(os.environ)
    if (Path.home() / ".ray" / "auth_token").exists():
        job_env["RAY_AUTH_MODE"] = "token"  # a driver joins a token cluster this way
    job = start_job(
        demo.state["ray_address"], "--vllm", "1", "--sglang", "1", "--metrics-off", "0",
        env=job_env,
    )  # fmt: skip
    try:
        ours = set(job.addresses.values())
        result = doctor()
    finally:
        job.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    failing = [f for f in report["findings"] if not f["ok"] and f["check"] == "metrics"]
    assert len(failing) == 2, failing
    by_address = {a: f for f in failing for a in ours if a in f["subject"]}
    assert set(by_address) == ours, failing
    fixes = " ".join(f["fix"] for f in failing)
    assert "actor_rollout_ref.rollout.disable_log_stats=False" in fixes
    assert "actor_rollout_ref.rollout.prometheus.enable=True" in fixes


def test_ctrl_c_stops_everything(demo: Demo) -> None:
    pids = [demo.proc.pid, *demo.state["pids"].values(), *(j["pid"] for j in demo.state["jobs"])]
    actor_pids = [a["pid"] for j in demo.state["jobs"] for a in j["actors"]]
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=90) == 0, demo.output()[-3000:]
    wait_for(
        lambda: not any(psutil.pid_exists(p) and _alive(p) for p in pids + actor_pids), 30, 0.2
    )
    assert "stopped; files are kept" in demo.output()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
