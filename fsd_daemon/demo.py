"""``fsd-daemon demo``: the whole path on one machine, no cluster and no GPU needed.

It starts, each as its own process and stopped by its PID on exit (Ctrl-C, SIGTERM, or
``--duration``):

1. a local Ray cluster bound to 127.0.0.1 (this process is its first driver);
2. two verl-like jobs side by side, their actors placed and named as verl main places them in
   each rollout mode (fsd_daemon/sim/verl_modes.py): a hybrid job (the trainer's WorkerDicts,
   vLLM rollout replicas on their GPUs that sleep while the trainer works, and a colocated vLLM
   reward replica) and a fully async one (standalone SGLang replicas with their
   CheckpointEngineWorkers, the last one's engine still loading: reserved and idle); each
   server serves real vLLM/SGLang-named metrics with a long-tailed load;
3. ``fsd-gpu-exporter --simulate N``: simulated GPUs with bursty duty cycles, owned by those
   servers;
4. ``fsd-daemon run``, writing the target files;
5. Prometheus with the generated config and the shipped rules, when the ``prometheus`` binary
   is on PATH (otherwise it says how to get it).

Everything lives in one work directory; ``demo.json`` there lists addresses and PIDs, so
scripts (and the end-to-end test) can find and poke each part.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fsd_daemon.assets.install import install_prometheus_rules
from fsd_daemon.config import Config, load_config
from fsd_daemon.plumbing.httpclient import HttpFailed, http_request
from fsd_daemon.plumbing.process import STOP_SIGNALS, handled_signals
from fsd_daemon.prometheus.scrape_config import full_config, render_yaml
from fsd_daemon.sim.launch import Job, free_port, start_job, start_logged, stop_process

# Which rollout GPUs are idle, and how idle (a recording rule of assets/prometheus/rules).
IDLE_ROLLOUT_GPUS_QUERY = urllib.parse.quote('gpu_role:fsd_gpu_idle:ratio_rate1m{role="rollout"}')
DEMO_SCRAPE_INTERVAL = 5.0  # short, so rates and rules have data within a minute


def _say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


# What a Ray client on this machine needs to reach a cluster that listens on 127.0.0.1 only.
LOOPBACK_CLIENT_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"


def loopback_ray_environment() -> None:
    """A one-machine Ray that only uses 127.0.0.1 (else clients move to the outward address)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def port_or_free(port: int) -> int:
    """``port`` when it can be bound on 127.0.0.1 now, else a free one."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        return port
    except OSError:
        return free_port()


def start_prometheus(
    binary: str,
    config_file: Path,
    data_dir: Path,
    port: int,
    log_path: Path,
    *,
    lifecycle: bool = True,
) -> subprocess.Popen[bytes]:
    """A real Prometheus on 127.0.0.1:port, with the lifecycle API (POST /-/reload) unless
    ``lifecycle`` is false."""
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    if lifecycle:
        argv.append("--web.enable-lifecycle")
    return start_logged(argv, log_path)


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_request(url, timeout=2, max_bytes=0).status == 200:
                return
        except HttpFailed:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.pid} exited with {proc.returncode} before {url} answered"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:g} s")
        time.sleep(0.2)


@dataclass
class DemoStack:
    """The demo's processes, started in order and stopped in reverse."""

    workdir: Path
    replicas: int
    gpus: int
    prometheus_port: int
    log_level: str = "info"
    # Where the daemon writes (default: <workdir>/targets).
    output_dir: Path | None = None
    ray_address: str = ""
    # The demo's own Ray temp dir: a real head node's /tmp/ray/session_latest is never touched.
    ray_temp_dir: Path | None = None
    scenario: str = ""  # a scripted load (fsd_daemon.sim.scenario) instead of the two jobs
    scrape_interval: float = DEMO_SCRAPE_INTERVAL
    # A long-term store that Prometheus also streams to (remote_write URL; "" = none).
    remote_write: str = ""
    jobs: list[Job] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def targets_dir(self) -> Path:
        return self.output_dir or self.workdir / "targets"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def daemon_config_path(self) -> Path:
        return self.workdir / "fsd-daemon.toml"

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.start_ray()
        self.start_jobs()
        self.start_exporter()
        self.start_daemon()
        self.start_prometheus()
        self.write_state()

    def start_ray(self) -> None:
        import ray

        # Short (Unix socket paths are limited to 107 bytes) and our own.
        self.ray_temp_dir = Path(tempfile.mkdtemp(prefix="fsd-demo-ray-"))
        _say(f"starting a local Ray cluster on 127.0.0.1 (temp dir {self.ray_temp_dir}) ...")
        self.ports["ray_dashboard"] = free_port()
        context = ray.init(
            address="local",
            _temp_dir=str(self.ray_temp_dir),
            # Logical CPUs: verl's placement groups reserve max_colocate_count CPUs per GPU.
            num_cpus=max(16, os.cpu_count() or 1),
            # Logical GPUs for Ray to give out as verl's worker groups ask; the simulated NVML
            # (fsd-gpu-exporter --simulate) stands for the devices, with the same indices.
            num_gpus=self.gpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=self.ports["ray_dashboard"],
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        self.ray_address = str(context.address_info["gcs_address"])  # type: ignore[attr-defined]
        _say(
            f"Ray is up at {self.ray_address} (dashboard http://127.0.0.1:{self.ports['ray_dashboard']})"
        )

    def start_jobs(self) -> None:
        if self.scenario:
            self.start_scenario_job()
            return
        sglang = max(1, self.replicas // 2)
        # Ray gives the GPUs (as many as simulated): the trainer's one per hybrid replica, one
        # per standalone replica. The last standalone replica's engine has started and holds
        # no memory yet: its GPU is reserved by it, and idle.
        hybrid = ["--vllm", "0", "--verl-hybrid", str(self.replicas)]
        hybrid += ["--verl-colocated-reward", "1", "--sleep-between-steps", "--seed", "1"]
        # Speculative decoding (MTP) on the vLLM replicas: the acceptance panels have data.
        hybrid += ["--speculative-tokens", "2"]
        fully_async = ["--vllm", "0", "--verl-standalone", str(sglang)]
        fully_async += ["--verl-standalone-engine", "sglang", "--seed", "2"]
        fully_async += ["--engine-loading", str(sglang - 1)]
        for plan in (hybrid, fully_async):
            _say(f"starting a verl-like job: {' '.join(plan)}")
            job = start_job(self.ray_address, *plan, "--step-seconds", "30", new_session=True)
            self.jobs.append(job)
            names = ", ".join(a["name"] for a in job.info["actors"])
            _say(f"job {job.job_id} serves {names}")

    def start_scenario_job(self) -> None:
        from fsd_daemon.sim.scenario import SCENARIOS

        scenario = SCENARIOS[self.scenario]
        plan = ["--vllm", str(scenario.replicas), "--scenario", scenario.name, "--seed", "1"]
        if scenario.gpus:
            plan += ["--cuda-visible-devices", ",".join(map(str, scenario.gpus))]
        _say(f"starting a verl-like job with the scripted load {scenario.name!r}")
        self.jobs.append(start_job(self.ray_address, *plan, new_session=True))

    def start_exporter(self) -> None:
        self.ports["gpu_exporter"] = free_port()
        self.procs["gpu_exporter"] = start_logged(
            [
                sys.executable,
                "-m",
                "fsd_daemon.gpu.cli",
                "--simulate",
                str(self.gpus),
                "--listen",
                f"127.0.0.1:{self.ports['gpu_exporter']}",
            ],
            self.logs / "fsd-gpu-exporter.log",
        )
        wait_http_ok(
            f"http://127.0.0.1:{self.ports['gpu_exporter']}/metrics", 30, self.procs["gpu_exporter"]
        )

    def write_daemon_config(self) -> Path:
        # The shipped rules, installed as `fsd-daemon assets install --prometheus-rules` does.
        rules_dir = self.workdir / "rules"
        install_prometheus_rules(rules_dir)
        rules = sorted(str(p) for p in rules_dir.glob("*.yml"))
        text = f"""# Written by `fsd-daemon demo`.
[daemon]
output_dir = {_toml(self.targets_dir)}
cluster = "demo"
log_level = "{self.log_level}"
poll_interval_seconds = 1.0
grace_period_seconds = 5.0
metrics_listen = "127.0.0.1:{self.ports["daemon_metrics"]}"

[ray]
address = {_toml(self.ray_address)}

[targets]
gpu_exporter_port = {self.ports["gpu_exporter"]}

[prometheus]
scrape_interval_seconds = {self.scrape_interval}
rule_files = [{", ".join(_toml(r) for r in rules)}]
"""
        self.daemon_config_path.write_text(text, encoding="utf-8")
        return self.daemon_config_path

    def start_daemon(self) -> None:
        self.ports["daemon_metrics"] = free_port()
        config_file = self.write_daemon_config()
        self.procs["fsd_daemon"] = start_logged(
            [sys.executable, "-m", "fsd_daemon.cli", "run", "--config", str(config_file)],
            self.logs / "fsd-daemon.log",
        )
        wait_http_ok(
            f"http://127.0.0.1:{self.ports['daemon_metrics']}/metrics", 60, self.procs["fsd_daemon"]
        )
        deadline = time.monotonic() + 60
        while not (self.targets_dir / "rollout.json").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon wrote no rollout.json within 60 s; see its log")
            time.sleep(0.2)
        _say(f"fsd-daemon writes {self.targets_dir}/{{rollout,gpu,ray}}.json")

    def start_prometheus(self) -> None:
        binary = shutil.which("prometheus")
        config_file = self.workdir / "prometheus.yml"
        # What `fsd-daemon prometheus-config` prints for the daemon's own config.
        daemon_config = load_config(self.daemon_config_path)
        if self.remote_write:
            # What `fsd-daemon prometheus-config --remote-write URL` prints.
            from fsd_daemon.prometheus.central import CentralOptions, central_config

            doc = central_config(daemon_config, CentralOptions(remote_write=self.remote_write))
        else:
            doc = full_config(daemon_config)
        config_file.write_text(render_yaml(doc), encoding="utf-8")
        if binary is None:
            _say(
                f"no `prometheus` binary on PATH: install it (Debian/Ubuntu: `sudo apt-get install "
                f"prometheus`) and start it with --config.file={config_file}"
            )
            return
        port = port_or_free(self.prometheus_port)
        self.ports["prometheus"] = port
        self.procs["prometheus"] = start_prometheus(
            binary,
            config_file,
            self.workdir / "prometheus-data",
            port,
            self.logs / "prometheus.log",
        )
        wait_http_ok(f"http://127.0.0.1:{port}/-/ready", 60, self.procs["prometheus"])

    def write_state(self) -> None:
        state = {
            "workdir": str(self.workdir),
            "ray_address": self.ray_address,
            "ray_temp_dir": str(self.ray_temp_dir or ""),
            "targets_dir": str(self.targets_dir),
            "ports": self.ports,
            "pids": {name: p.pid for name, p in self.procs.items()},
            "jobs": [{"pid": j.proc.pid, **j.info} for j in self.jobs],
        }
        (self.workdir / "demo.json").write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))

    def stop(self) -> None:
        # Jobs first, while the daemon still runs (it logs them leaving); then the rest.
        for job in self.jobs:
            job.stop(timeout=20)
        for name in ("prometheus", "fsd_daemon", "gpu_exporter"):
            proc = self.procs.get(name)
            if proc is not None:
                code = stop_process(proc)
                if code not in (0, -signal.SIGTERM):
                    _say(f"{name} exited with {code}; its log is in {self.logs}")
        if self.ray_address:
            import ray

            ray.shutdown()
        if self.ray_temp_dir is not None:
            # Ray's own session files, not the demo's results (those stay in the workdir).
            shutil.rmtree(self.ray_temp_dir, ignore_errors=True)

    def where_to_look(self) -> str:
        lines = [
            "",
            "fsd_daemon demo is running. Look at:",
            f"  target files      {self.targets_dir}/  (rollout.json, gpu.json, ray.json)",
            f"  daemon            http://127.0.0.1:{self.ports['daemon_metrics']}/healthz",
            f"  GPU exporter      http://127.0.0.1:{self.ports['gpu_exporter']}/metrics",
        ]
        if "prometheus" in self.ports:
            base = f"http://127.0.0.1:{self.ports['prometheus']}"
            lines += [
                f"  Prometheus        {base}/targets  (jobs rollout, gpu, ray, fsd_daemon)",
                f"  idle rollout GPUs {base}/graph?g0.tab=1&g0.expr={IDLE_ROLLOUT_GPUS_QUERY}",
                f"  rules             {base}/rules",
                "  Grafana           fsd-daemon assets install --grafana-provisioning DIR "
                f"--prometheus-url {base}",
                f"  report            fsd-daemon report --prometheus {base} --since 10m",
                # The demo's Ray listens on 127.0.0.1 only; without this variable Ray's client
                # turns 127.0.0.1 into the machine's outward address (a real head node needs
                # no such thing).
                f"  is it working?    {LOOPBACK_CLIENT_ENV} fsd-daemon doctor "
                f"--config {self.daemon_config_path} --prometheus {base}",
            ]
        lines += [
            f"  logs              {self.logs}/",
            f"  PIDs and ports    {self.workdir / 'demo.json'}",
            "Press Ctrl-C to stop everything.",
            "",
        ]
        return "\n".join(lines)


def _toml(value: object) -> str:
    return orjson.dumps(str(value)).decode()  # a JSON string is a valid TOML basic string


class DemoArgumentError(ValueError):
    """A demo flag that cannot work; ``str()`` is the one line for the user."""


def check_demo_args(args: argparse.Namespace) -> None:
    """Everything the demo is given is checked before anything starts."""
    if getattr(args, "ray_address", None):
        raise DemoArgumentError(
            "demo: --ray-address is not used: the demo starts its own Ray cluster "
            "(run `fsd-daemon run --ray-address ...` against yours)"
        )
    if args.replicas < 1:
        raise DemoArgumentError(f"demo: --replicas must be at least 1 (got {args.replicas})")
    if args.gpus < 0:
        raise DemoArgumentError(f"demo: --gpus must be 0 or more (got {args.gpus})")
    needed = args.replicas + max(1, args.replicas // 2)
    if not getattr(args, "scenario", None) and args.gpus < needed:
        raise DemoArgumentError(
            f"demo: --gpus {args.gpus} is too few: {args.replicas} hybrid and "
            f"{max(1, args.replicas // 2)} standalone replicas need {needed} GPUs"
        )
    if not 1 <= args.prometheus_port <= 65535:
        raise DemoArgumentError(
            f"demo: --prometheus-port must be 1 to 65535 (got {args.prometheus_port})"
        )
    if not args.duration >= 0 or args.duration == float("inf"):
        raise DemoArgumentError(f"demo: --duration must be 0 or more seconds (got {args.duration})")
    if args.remote_write:
        from fsd_daemon.prometheus.client import ClientConfigError, check_http_url

        try:
            check_http_url(args.remote_write, "--remote-write")
        except ClientConfigError as exc:
            raise DemoArgumentError(f"demo: {exc}") from None


def run_demo(config: Config, args: argparse.Namespace) -> int:
    """The demo writes the config its own daemon runs with; of ``config`` it takes the
    output directory (``--output-dir``) and the log level."""
    try:
        check_demo_args(args)
    except DemoArgumentError as exc:
        print(f"fsd-daemon: {exc}", file=sys.stderr)
        return 2
    loopback_ray_environment()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fsd-demo-")).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    stack = DemoStack(
        workdir=workdir,
        replicas=args.replicas,
        gpus=args.gpus,
        prometheus_port=args.prometheus_port,
        log_level=config.daemon.log_level,
        output_dir=Path(args.output_dir).absolute() if args.output_dir else None,
        scenario=args.scenario or "",
        scrape_interval=args.scrape_interval,
        remote_write=args.remote_write or "",
    )
    stopping = threading.Event()
    with handled_signals({signum: stopping.set for signum in STOP_SIGNALS}):
        return _run_until_stopped(stack, args.duration, stopping)


def _run_until_stopped(stack: DemoStack, duration: float, stopping: threading.Event) -> int:
    """Start the stack, then wait for Ctrl-C, SIGTERM, ``duration`` or a part that died."""
    try:
        stack.start()
        print(stack.where_to_look(), flush=True)
        deadline = time.monotonic() + duration if duration > 0 else float("inf")
        while not stopping.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return 0
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    _say(f"{name} exited with {proc.returncode}; see {stack.logs}")
                    return 1
        return 0
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        _say(f"could not start: {exc}")
        return 1
    finally:
        _say("stopping ...")
        stack.stop()
        _say(f"stopped; files are kept in {stack.workdir}")
