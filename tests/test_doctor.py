"""``fsd-daemon doctor`` and the metrics probe, against real servers, Ray and Prometheus.

The broken servers are what verl's defaults give (verl main 1dda039b,
``verl/trainer/config/rollout/rollout.yaml``: ``disable_log_stats: True``,
``prometheus.enable: false``): a vLLM server whose ``/metrics`` has no ``vllm:`` series and an
SGLang server without a ``/metrics`` route. They run in a verl-like job on the session's real
Ray cluster (``fsd_daemon.sim.job --metrics-off``); doctor runs as the ``fsd-daemon`` command.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from fsd_daemon import doctor, probe
from fsd_daemon.demo import start_prometheus, wait_http_ok
from fsd_daemon.mixin import names
from fsd_daemon.mixin.rules import RULES_DIR
from fsd_daemon.pipeline.render import Target
from fsd_daemon.sim.harness import LocalRayCluster
from fsd_daemon.sim.launch import Job, free_port, start_job, stop_process
from tests.support.cli import run_cli

VLLM_KEY = "actor_rollout_ref.rollout.disable_log_stats=False"
SGLANG_KEY = "actor_rollout_ref.rollout.prometheus.enable=True"


# --- The probe, against HTTP servers on 127.0.0.1 ---------------------------------------------


class _Server:
    """An HTTP server on 127.0.0.1:0 answering GETs with ``respond(path) -> (status, body)``."""

    def __init__(self, respond: Any) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = respond(self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[_Server]]:
    started: list[_Server] = []
    yield started
    for server in started:
        server.close()


def _target(address: str, engine: str = "vllm", **labels: str) -> Target:
    return Target.of(address, {"engine": engine, "actor_name": f"{engine}_server_0_0", **labels})


def test_probe_tells_every_case_apart(servers: list[_Server]) -> None:
    """200 with engine series is ok; 200 without is no_engine_series; 404 is route_missing;
    500 is http_error; a closed port is unreachable. The OpenMetrics spelling (``vllm_``) of
    an engine series counts; the target's ``__metrics_path__`` is used."""
    bodies = {
        "/metrics": (200, b"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n"),
        "/prometheus/metrics": (200, b"vllm_num_requests_running 0\nvllm_x 1\n"),
    }
    ok = _Server(lambda path: bodies.get(path, (404, b"")))
    bare = _Server(lambda path: (200, b"process_cpu_seconds_total 1\npython_info 1\n"))
    missing = _Server(lambda path: (404, b"not found"))
    broken = _Server(lambda path: (500, b"oops"))
    servers += [ok, bare, missing, broken]
    closed = f"127.0.0.1:{free_port()}"
    results = probe.probe_all(
        [
            _target(ok.address),
            _target(ok.address, __metrics_path__="/prometheus/metrics"),
            _target(bare.address),
            _target(missing.address, engine="sglang"),
            _target(broken.address),
            _target(closed),
        ],
        timeout=5,
    )
    assert [r.verdict for r in results] == [
        probe.OK,
        probe.OK,
        probe.NO_ENGINE_SERIES,
        probe.ROUTE_MISSING,
        probe.HTTP_ERROR,
        probe.UNREACHABLE,
    ]
    assert [r.engine_series for r in results[:3]] == [1, 2, 0]
    assert results[1].url == f"http://{ok.address}/prometheus/metrics"
    assert [r.http_status for r in results] == [200, 200, 200, 404, 500, 0]
    assert results[5].error


def test_a_verl_0_5_server_is_told_to_upgrade_not_to_set_a_key(servers: list[_Server]) -> None:
    """A 404 from a server fsd-daemon labels metrics_route="absent" (verl <= 0.5: verl
    v0.5.0 verl/workers/rollout/async_server.py has only /v1/chat/completions) is fixed by
    upgrading verl, whatever its engine; a default SGLang server's 404 by verl's keys."""
    missing = _Server(lambda path: (404, b"not found"))
    servers.append(missing)
    legacy = _target(missing.address, engine="sglang", metrics_route="absent")
    default = _target(missing.address, engine="sglang")
    old, new = doctor._check_servers([legacy, default], doctor.Options(timeout=5))
    assert not old.ok and "404" in old.detail
    assert "upgrade verl to >= 0.6" in old.fix and SGLANG_KEY not in old.fix
    assert SGLANG_KEY in new.fix and "upgrade" not in new.fix


def test_probe_is_bounded_by_its_timeout(servers: list[_Server]) -> None:
    """A server that accepts and never answers costs one timeout, then reads as unreachable."""
    release = threading.Event()

    def hang(path: str) -> tuple[int, bytes]:
        release.wait(30)
        return 200, b""

    hung = _Server(hang)
    servers.append(hung)
    try:
        started = time.monotonic()
        [result] = probe.probe_all([_target(hung.address)], timeout=0.5)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert result.verdict == probe.UNREACHABLE
    assert "timed out" in result.error.lower()
    assert elapsed < 10  # the timeout, not the server's 30 s


def test_probe_asks_servers_concurrently(servers: list[_Server]) -> None:
    """With concurrency 12, twelve servers are asked at once: each answers only once all
    twelve requests have arrived (a barrier); asked one after the other, the barrier breaks
    and they answer 500."""
    count = 12
    barrier = threading.Barrier(count, timeout=10)

    def wait_for_all(path: str) -> tuple[int, bytes]:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return 500, b""
        return 200, b"sglang:num_running_reqs 0\n"

    servers += [_Server(wait_for_all) for _ in range(count)]
    results = probe.probe_all(
        [_target(s.address, engine="sglang") for s in servers], timeout=20, concurrency=count
    )
    assert [r.verdict for r in results] == [probe.OK] * count


def test_probe_collector_exports_the_last_results(promtool: str, tmp_path: Path) -> None:
    """The daemon-side gauges: one series per probed server with its HTTP status (404 for a
    missing route, 0 for no answer) and engine series; servers gone from the last update leave
    no series; the exposition passes ``promtool check metrics``."""
    registry = CollectorRegistry()
    collector = probe.MetricsProbeCollector(registry)
    a = Target.of("10.0.0.1:1", {"engine": "sglang", "ray_job_id": "01000000", "actor_name": "s0"})
    b = Target.of("10.0.0.1:2", {"engine": "vllm", "ray_job_id": "01000000", "replica": "1"})
    collector.update(
        [
            probe.ProbeResult(a, "/metrics", 404, 0, "Not Found"),
            probe.ProbeResult(b, "/metrics", 0, 0),
        ]
    )
    text = generate_latest(registry).decode()
    assert (
        f'{names.DAEMON_METRICS_PROBE_STATUS}{{actor_name="s0",address="10.0.0.1:1",cluster="",'
        f'engine="sglang",metrics_path="/metrics",metrics_route="",ray_job_id="01000000",'
        f'replica="",role=""}} 404.0'
    ) in text
    assert 'address="10.0.0.1:2"' in text
    (tmp_path / "m.txt").write_text(text, encoding="utf-8")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    collector.update([probe.ProbeResult(b, "/metrics", 200, 3)])
    text = generate_latest(registry).decode()
    assert 'address="10.0.0.1:1"' not in text
    assert f'{names.DAEMON_METRICS_PROBE_ENGINE_SERIES}{{actor_name="",address="10.0.0.1:2"' in text


def test_rollout_metrics_probe_runs_on_its_worker(servers: list[_Server]) -> None:
    """The daemon-side probe, started: it probes the targets it is given on its own thread and
    exports a 404 for a server without a metrics route; stop() ends the thread."""
    missing = _Server(lambda path: (404, b""))
    servers.append(missing)
    registry = CollectorRegistry()
    probe_loop = probe.RolloutMetricsProbe(
        registry, lambda: [_target(missing.address, engine="sglang")], interval=0.2, timeout=5
    ).start()
    try:
        deadline = time.monotonic() + 30
        wanted = f'address="{missing.address}"'
        while wanted not in generate_latest(registry).decode():
            assert time.monotonic() < deadline, "the probe never ran"
            time.sleep(0.05)
        value = registry.get_sample_value(
            names.DAEMON_METRICS_PROBE_STATUS,
            {
                "address": missing.address,
                "metrics_path": "/metrics",
                "cluster": "",
                "engine": "sglang",
                "role": "",
                "replica": "",
                "ray_job_id": "",
                "actor_name": "sglang_server_0_0",
                "metrics_route": "",
            },
        )
        assert value == 404
    finally:
        probe_loop.stop()
    assert not probe_loop.running


def test_rollout_metrics_probe_asks_a_healthy_server_again_only_after_the_recheck(
    servers: list[_Server],
) -> None:
    """Rounds every 60 s on a quiet cluster: a server whose route and vLLM series were there is
    not downloaded again until the recheck interval has passed (its page is hundreds of kB);
    a 404 server is asked every round (it may be fixed), a new server at its first round; each
    round still exports a verdict for every listed target, under its current labels."""
    gets: dict[str, int] = {"ok": 0, "missing": 0, "new": 0}

    def counting(kind: str, status: int, body: bytes) -> Any:
        def respond(path: str) -> tuple[int, bytes]:
            gets[kind] += 1
            return status, body

        return respond

    page = b"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 1\n"
    healthy = _Server(counting("ok", 200, page))
    missing = _Server(counting("missing", 404, b""))
    new = _Server(counting("new", 200, page))
    servers += [healthy, missing, new]
    listed = [_target(healthy.address), _target(missing.address, engine="sglang")]
    now = [0.0]
    registry = CollectorRegistry()
    probe_loop = probe.RolloutMetricsProbe(
        registry, lambda: list(listed), recheck_ok_interval=900, clock=lambda: now[0]
    )
    for _ in range(5):
        probe_loop.run_once()
        now[0] += 60
    assert gets == {"ok": 1, "missing": 5, "new": 0}
    listed[0] = _target(healthy.address, replica="7")
    listed.append(_target(new.address))
    probe_loop.run_once()
    assert gets == {"ok": 1, "missing": 6, "new": 1}
    labels = {
        "address": healthy.address,
        "metrics_path": "/metrics",
        "cluster": "",
        "engine": "vllm",
        "role": "",
        "replica": "7",
        "ray_job_id": "",
        "actor_name": "vllm_server_0_0",
        "metrics_route": "",
    }
    assert registry.get_sample_value(names.DAEMON_METRICS_PROBE_STATUS, labels) == 200
    assert registry.get_sample_value(names.DAEMON_METRICS_PROBE_ENGINE_SERIES, labels) == 1
    now[0] = 60 * 5 + 899  # the first server was asked at 0, the new one at 300
    probe_loop.run_once()
    assert gets == {"ok": 2, "missing": 7, "new": 1}
    # A target that left and came back at the same address is new again.
    del listed[0]
    probe_loop.run_once()
    listed.append(_target(healthy.address))
    probe_loop.run_once()
    assert gets["ok"] == 3


# --- doctor on a real cluster -------------------------------------------------------------------


@pytest.fixture(scope="module")
def defaults_job(ray_cluster: LocalRayCluster) -> Iterator[Job]:
    """vllm_server_0_0 and sglang_server_0_0 with verl's default metrics settings (no vllm:
    series; no /metrics route), vllm_server_1_0 with statistics on."""
    job = start_job(ray_cluster.address, "--vllm", "2", "--sglang", "1", "--metrics-off", "0")
    try:
        yield job
    finally:
        job.stop()


def _doctor(ray_cluster: LocalRayCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "doctor", "--ray-address", ray_cluster.address, "--timeout", "5", *args, timeout=180
    )


def _by_subject(findings: list[dict[str, Any]], check: str, needle: str) -> dict[str, Any]:
    matches = [f for f in findings if f["check"] == check and needle in f["subject"]]
    assert len(matches) == 1, (check, needle, findings)
    return matches[0]


def test_doctor_names_both_servers_and_the_keys_to_set(
    ray_cluster: LocalRayCluster, defaults_job: Job
) -> None:
    """A new user's first run on a cluster with verl's defaults: doctor finds the job's three
    servers through Ray, says the vLLM server has no vllm: series and the SGLang server has no
    metrics route, names the verl key for each, passes the healthy server, and exits 1. The
    plain-text output says the same."""
    result = _doctor(ray_cluster, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    findings = report["findings"]
    assert _by_subject(findings, "ray", "Ray at")["ok"] is True
    job = _by_subject(findings, "servers", f"Ray job {defaults_job.job_id}")
    assert job["ok"] is True and job["detail"].startswith("3 rollout servers")

    vllm = _by_subject(findings, "metrics", "vllm_server_0_0")
    assert vllm["ok"] is False
    assert "no vllm: series" in vllm["detail"]
    assert VLLM_KEY in vllm["fix"] and SGLANG_KEY not in vllm["fix"]
    assert defaults_job.addresses["vllm_server_0_0"] in vllm["subject"]

    sglang = _by_subject(findings, "metrics", "sglang_server_0_0")
    assert sglang["ok"] is False
    assert "404" in sglang["detail"]
    assert SGLANG_KEY in sglang["fix"] and VLLM_KEY in sglang["fix"]

    healthy = _by_subject(findings, "metrics", "vllm_server_1_0")
    assert healthy["ok"] is True and " 0 engine series" not in healthy["detail"]
    assert re.search(r"HTTP 200 with [1-9][0-9]* engine series", healthy["detail"])

    text = _doctor(ray_cluster)
    assert text.returncode == 1
    assert f"fix: set {VLLM_KEY}" in text.stdout
    assert f"fix: set {SGLANG_KEY}" in text.stdout
    assert "FAIL  metrics" in text.stdout and "failed." in text.stdout.splitlines()[-1]
    assert "Traceback" not in text.stderr


@pytest.fixture
def prometheus(prometheus_bin: str, tmp_path: Path) -> Iterator[Any]:
    """Start a real Prometheus on a given config; stopped by PID at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: dict[str, Any], name: str) -> str:
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        proc = start_prometheus(
            prometheus_bin, path, tmp_path / f"{name}-data", port, tmp_path / f"{name}.log"
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/-/ready", 60, proc)
        return url

    yield start
    for proc in procs:
        stop_process(proc)


def _wait_scraped(url: str, instances: set[str], timeout: float = 60) -> None:
    """Until Prometheus has scraped each of ``instances`` once (up or down)."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{url}/api/v1/targets?state=active", timeout=5) as r:
            active = json.loads(r.read())["data"]["activeTargets"]
        scraped = {t["labels"]["instance"] for t in active if t["health"] != "unknown"}
        if instances <= scraped:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus did not scrape {instances - scraped}: {active}")
        time.sleep(0.5)


def test_doctor_checks_prometheus_jobs_targets_and_rules(
    ray_cluster: LocalRayCluster, defaults_job: Job, prometheus: Any, tmp_path: Path
) -> None:
    """With the daemon's target files and a Prometheus configured as ``fsd-daemon
    prometheus-config`` says, plus the shipped rules: doctor finds the rollout, gpu and ray
    jobs and every rule group, sees that Prometheus scrapes every server the daemon lists, and
    reports the 404 server's target as down with Prometheus' own error. A bare Prometheus gets
    the missing jobs and rule groups named, with the command that adds them."""
    out = tmp_path / "targets"
    out.mkdir()
    written = run_cli(
        "run",
        "--once",
        "--no-watch",
        "--ray-address",
        ray_cluster.address,
        "--output-dir",
        str(out),
    )
    assert written.returncode == 0, written.stderr
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted(RULES_DIR.glob("*.rules.yml"))],
        "scrape_configs": [
            {"job_name": job, "file_sd_configs": [{"files": [str(out / f"{job}.json")]}]}
            for job in names.TARGET_JOBS
        ],
    }
    url = prometheus(config, "configured")
    _wait_scraped(url, set(defaults_job.addresses.values()))

    result = _doctor(ray_cluster, "--json", "--prometheus", url)
    assert result.returncode == 1, result.stdout + result.stderr
    findings = json.loads(result.stdout)["findings"]
    prom = [f for f in findings if f["check"] == "prometheus"]
    assert _by_subject(prom, "prometheus", "scrape jobs")["ok"] is True
    assert _by_subject(prom, "prometheus", "rule groups")["ok"] is True
    down = _by_subject(prom, "prometheus", f"target {defaults_job.addresses['sglang_server_0_0']}")
    assert down["ok"] is False and "404" in down["detail"]
    assert not [f for f in prom if "not scraped" in f["detail"]], prom

    bare = prometheus({"global": {"scrape_interval": "1s"}}, "bare")
    result = _doctor(ray_cluster, "--json", "--prometheus", bare)
    assert result.returncode == 1
    prom = [f for f in json.loads(result.stdout)["findings"] if f["check"] == "prometheus"]
    jobs = _by_subject(prom, "prometheus", "scrape jobs")
    assert jobs["ok"] is False and "rollout" in jobs["detail"]
    assert "fsd-daemon prometheus-config --patch" in jobs["fix"]
    groups = _by_subject(prom, "prometheus", "rule groups")
    assert groups["ok"] is False and names.GROUP_ROLLOUT_ALERTS in groups["detail"]
    assert [f for f in prom if "not scraped" in f["detail"]]


def test_doctor_says_when_ray_is_unreachable() -> None:
    """No Ray at the address: one failing "ray" finding with what to check, exit 1, no
    traceback."""
    result = run_cli(
        "doctor",
        "--json",
        "--ray-address",
        f"127.0.0.1:{free_port()}",
        "--timeout",
        "2",
        timeout=180,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    [finding] = json.loads(result.stdout)["findings"]
    assert finding["check"] == "ray" and finding["ok"] is False
    assert "RAY_ADDRESS" in finding["fix"] or "RAY_AUTH_MODE" in finding["fix"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prometheus", "localhost:9090"], "--prometheus must be an http(s) URL"),
        (["--timeout", "0"], "--timeout must be between"),
        (["--concurrency", "0"], "--concurrency must be between"),
    ],
)
def test_doctor_bad_usage_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    """Bad input: exit 2 with one clear line on stderr, before any network call."""
    result = run_cli("doctor", "--ray-address", "127.0.0.1:1", *args, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr


def test_running_daemon_probes_its_rollout_targets(servers: list[_Server], tmp_path: Path) -> None:
    """The daemon itself runs the probe when it serves self-metrics: a server whose metrics
    route answers 404 (SGLang with verl's defaults) is exported as such, which is what
    FsdRolloutMetricsRouteMissing reads; a healthy vLLM-like server as 200."""
    from fsd_daemon.sim.harness import DaemonProcess, wait_for
    from tests.support.clusterfile import cluster, server

    missing = _Server(lambda path: (404, b"not found"))
    healthy = _Server(lambda path: (200, b"vllm:num_requests_running 0\n"))
    servers.extend([missing, healthy])

    def addr(s: _Server) -> list[Any]:
        host, port = s.address.rsplit(":", 1)
        return [host, int(port)]

    described = tmp_path / "cluster.json"
    described.write_text(
        json.dumps(
            cluster(
                server(0, engine="sglang", address=addr(missing)),
                server(1, engine="vllm", address=addr(healthy)),
            )
        )
    )
    with DaemonProcess(f"file:{described}", tmp_path / "out") as d:
        url = f"http://127.0.0.1:{d.metrics_port}/metrics"

        def statuses() -> dict[str, str]:
            try:
                text = urllib.request.urlopen(url, timeout=5).read().decode()
            except OSError:
                return {}  # not listening yet
            return {
                line.split('address="')[1].split('"')[0]: line.rsplit(" ", 1)[1]
                for line in text.splitlines()
                if line.startswith(names.DAEMON_METRICS_PROBE_STATUS + "{")
            }

        wait_for(lambda: len(statuses()) == 2, timeout=30)
        found = statuses()
    assert float(found[missing.address]) == 404
    assert float(found[healthy.address]) == 200
