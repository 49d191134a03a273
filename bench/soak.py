"""Soak: 30 minutes of rollout-server churn with a Ray restart in the middle.

Run as a user would, every piece a process of its own:

- Ray: ``ray start --head --block`` with its own ``--temp-dir``, its own ``HOME`` (so the token
  that Ray 2.60's token auth writes to ``~/.ray/auth_token`` is this run's alone) and fixed ports
  (``--base-port`` .. +30), so that the restart comes back on the same addresses. It is stopped by
  its PID (SIGTERM; ``ray start --block`` then ends its own processes); any of its processes
  still alive 30 s later is killed by PID. Never Ray's own stop command (it ends every Ray process).
- the daemon: ``fsd-daemon run`` from this venv with a clean environment (``PATH``, ``HOME``,
  ``LANG``; the token only in ``~/.ray/auth_token``, as README describes; ``--auth-mode-env``
  adds ``RAY_AUTH_MODE=token``) and its built-in defaults (2 s poll, 10 s grace).
- the churn: a verl-like Ray driver (``python bench/soak.py churn ...``, the simulated server
  classes of ``fsd_daemon.sim.rollout_server``, named as verl names them) that starts a new
  server every ``--interval`` s and kills the oldest once more than ``--max-live`` are up. It
  reports every server it starts (once it serves HTTP) and every server it kills on stdout.

Half way, the Ray head is stopped under the running driver (a crash, as far as the job can
tell), the driver is stopped, Ray is started again on the same ports and a new driver churns on.

An operator's hands too (``--no-operator-faults`` leaves them out): the daemon also reads a
config file (``--config``) naming a prometheus.yml to keep, whose ``gpu`` job has
``scheme: https``, ``tls_config`` and ``basic_auth``. Before the restart: the output directory
is removed (``rm -rf``), the config file is rewritten in place ten times (truncate, a 0.4 s
stall, the same bytes), prometheus.yml is rewritten without our jobs (verl's way); at the
restart the token in ``~/.ray/auth_token`` is replaced by a new one, which Ray starts with.
Checked: the files back after the removal (and how soon), no reload of a half-written config
and the listener answering throughout, the gpu job patched again with its TLS settings kept,
and the daemon following the new token (the checks above, after the restart).

Every ``--sample`` s: RSS, threads, open fds of the daemon and all its descendants, the number
of descendants, the machine's load average, and rollout.json against the live set (servers the
driver reported serving): ``missing`` live servers not in the file, ``extra`` targets of servers
gone; ``stale`` counts only what is older than a poll plus margin (missing) or than the grace
period plus margin (extra), which should stay 0 outside the restart.

The churn lasts ``--duration`` s in all, half before the restart and half after Ray is back
(the outage, about a minute, comes on top). A second watcher reads the three files every 0.25 s
and records every spell at 0 targets (gpu.json and ray.json list the head node, alive
throughout: they must never be empty). At the end the churn stops, and once the grace period
has passed rollout.json must hold exactly the live set. A summary table (start = first sample
after the warm-up, middle = last sample before the restart, end, max, least-squares slope per
hour after the warm-up) and the checks are printed; with ``--json FILE`` all samples are
written too. The exit status is 1 when a check failed.

    .venv/bin/python bench/soak.py --json /tmp/soak.json            # 30 minutes
    .venv/bin/python bench/soak.py --short --json /tmp/soak.json    # 4 minutes of churn
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

from fsd_daemon.sim.harness import healthz, remove_tree
from fsd_daemon.sim.rayhead import RayHead

VENV_BIN = Path(sys.executable).parent
GRACE_SECONDS = 10.0  # the daemon's built-in daemon.grace_period_seconds
POLL_SECONDS = 2.0  # its built-in daemon.poll_interval_seconds
STALE_MARGIN = 8.0  # slack on top of a poll or the grace period before a difference counts


# --------------------------------------------------------------------------------------------
# The churn driver (a separate process; a verl-like job)


def churn_main(argv: Sequence[str]) -> int:
    """``soak.py churn``: start a server every ``--interval`` s, keep at most ``--max-live``.

    Prints one JSON line per event: ``{"up": name, "address": "host:port", "t": unix}`` once a
    server serves, ``{"down": name, "t": unix}`` just before it is killed, ``{"frozen": true}``
    when a ``stop`` line arrives on stdin (churn stops, the servers stay). Exits when stdin
    closes or on SIGTERM; its servers die with it (they are not detached, as verl's).
    """
    p = argparse.ArgumentParser(prog="soak.py churn")
    p.add_argument("--address", required=True)
    p.add_argument("--interval", type=float, required=True)
    p.add_argument("--max-live", type=int, required=True)
    p.add_argument("--first-replica", type=int, default=0)
    args = p.parse_args(argv)

    import logging

    import ray

    from fsd_daemon.plumbing.process import STOP_SIGNALS, handled_signals
    from fsd_daemon.sim.rollout_server import SGLangHttpServer, vLLMHttpServer

    ray.init(address=args.address, logging_level=logging.ERROR, log_to_driver=False)
    done = threading.Event()
    freeze = threading.Event()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                freeze.set()
        done.set()

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({**event, "t": time.time()}) + "\n")
        sys.stdout.flush()

    threading.Thread(target=read_stdin, daemon=True).start()
    live: list[tuple[str, Any]] = []
    replica = args.first_replica
    with handled_signals({signum: done.set for signum in STOP_SIGNALS}):
        next_start = time.monotonic()
        while not done.is_set():
            if freeze.is_set():
                emit({"frozen": True})
                done.wait()
                break
            if done.wait(max(0.0, next_start - time.monotonic())):
                break
            next_start += args.interval
            # verl's names: vllm_server_{replica}_{node}, sglang_server_{replica}_{node}.
            cls, kind = (
                (SGLangHttpServer, "sglang") if replica % 3 == 2 else (vLLMHttpServer, "vllm")
            )
            name = f"{kind}_server_{replica}_0"
            handle = (
                ray.remote(cls)
                .options(name=name, num_cpus=0)
                .remote(seed=replica, options={"idle": True})
            )
            replica += 1
            try:
                address = _wait_address(ray, handle, done)
            except Exception as exc:  # the cluster went away under us: the parent handles it
                emit({"error": f"{name}: {type(exc).__name__}: {str(exc)[:200]}"})
                continue
            if address is None:
                break
            live.append((name, handle))
            emit({"up": name, "address": address})
            while len(live) > args.max_live:
                old_name, old = live.pop(0)
                emit({"down": old_name})
                ray.kill(old)
    ray.shutdown()
    return 0


def _wait_address(ray: Any, handle: Any, done: threading.Event) -> str | None:
    """The server's "host:port" once it serves HTTP; None if asked to stop first."""
    deadline = time.monotonic() + 120
    while not done.is_set():
        try:
            host, port = ray.get(handle.get_server_address.remote(), timeout=30)
            return f"{host}:{port}"
        except ray.exceptions.GetTimeoutError:
            pass
        except ray.exceptions.RayTaskError:
            done.wait(0.1)  # HTTP not launched yet
        if time.monotonic() > deadline:
            raise TimeoutError("no address within 120 s")
    return None


# --------------------------------------------------------------------------------------------
# The pieces, from the soak's side


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """What a user's login shell has: nothing Ray-specific unless given."""
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def common_start(
    argv: Sequence[str], log_path: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    from fsd_daemon.sim.launch import start_logged

    return start_logged(argv, log_path, env)


@dataclass
class Server:
    name: str
    address: str
    up_at: float
    down_at: float | None = None
    taken_by_restart: bool = False


@dataclass
class LiveSet:
    """The servers the churn drivers reported, by address (unique among live servers)."""

    servers: list[Server] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    frozen: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    t0: float = 0.0
    # When Ray came back after the restart: the daemon cannot see servers leave before.
    ray_back_at: float = 0.0

    def live(self) -> list[Server]:
        with self.lock:
            return [s for s in self.servers if s.down_at is None]

    def gone(self) -> list[Server]:
        with self.lock:
            return [s for s in self.servers if s.down_at is not None]

    def all_down(self, at: float) -> None:
        """The Ray head stopped at ``at``: every server is gone; Ray is back when told."""
        with self.lock:
            self.ray_back_at = float("inf")
            for s in self.servers:
                if s.down_at is None:
                    s.down_at = at
                    s.taken_by_restart = True

    def follow(self, stream: IO[bytes]) -> None:
        for raw in stream:
            event = json.loads(raw)
            with self.lock:
                if "up" in event:
                    self.servers.append(Server(event["up"], event["address"], event["t"]))
                elif "down" in event:
                    for s in self.servers:
                        if s.name == event["down"] and s.down_at is None:
                            s.down_at = event["t"]
                elif "error" in event:
                    self.errors.append(event["error"])
            if event.get("frozen"):
                self.frozen.set()


class Churn:
    """One churn driver process and the thread that reads its events."""

    def __init__(
        self, args: argparse.Namespace, head: RayHead, live: LiveSet, first: int, log: Path
    ) -> None:
        env = user_env(
            head.home,
            RAY_AUTH_MODE="token",  # a driver of a token-auth cluster needs it (FACTS.md)
            RAY_TMPDIR=str(head.temp_dir),
            PYTHONPATH=str(common.REPO),
        )
        argv = [sys.executable, __file__, "churn", "--address", head.address]
        argv += ["--interval", str(args.interval), "--max-live", str(args.max_live)]
        argv += ["--first-replica", str(first)]
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        self.reader = threading.Thread(target=live.follow, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def freeze(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            common.stop_pid(self.proc, 20)
        self.reader.join(timeout=10)


# --------------------------------------------------------------------------------------------
# Sampling


def tree_sample(pid: int) -> dict[str, Any]:
    """RSS (MiB), threads, open fds of ``pid`` and its descendants; their count."""
    root = psutil.Process(pid)
    procs = [root]
    with contextlib.suppress(psutil.NoSuchProcess):
        procs += root.children(recursive=True)
    rss = threads = fds = 0
    counted = 0
    own: dict[str, float] = {}
    names = []
    for p in procs:
        try:
            with p.oneshot():
                r, t, f = p.memory_info().rss, p.num_threads(), p.num_fds()
                if p.pid != pid:
                    command = " ".join(p.cmdline()[:4])
                    names.append(command[:120])
                    # The daemon's only multiprocessing child is the Ray bridge.
                    if "spawn_main" in command:
                        own.update(bridge_rss_mib=r / 2**20, bridge_pid=p.pid)
        except psutil.NoSuchProcess:
            continue
        if p.pid == pid:
            own.update(daemon_rss_mib=r / 2**20, daemon_threads=t, daemon_fds=f)
        rss += r
        threads += t
        fds += f
        counted += 1
    return {
        "rss_mib": rss / 2**20,
        "threads": threads,
        "fds": fds,
        "children": counted - 1,
        "child_commands": sorted(names),
        **own,
    }


def file_targets(path: Path) -> set[str]:
    try:
        groups = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return set()
    return {t for g in groups for t in g.get("targets", [])}


def compare(live: LiveSet, in_file: set[str], now: float) -> dict[str, Any]:
    live_servers = live.live()
    live_addr = {s.address for s in live_servers}
    # Ports are reused: an address in the file stands for the last server that served there
    # (the 30-minute run saw 7 of 360 addresses taken twice, each counted as a stale target
    # of the first server while the second was within its grace period).
    last_at: dict[str, Server] = {}
    for s in live.servers:
        if s.address not in last_at or s.up_at >= last_at[s.address].up_at:
            last_at[s.address] = s
    gone = [s for s in live.gone() if s.address not in live_addr and last_at[s.address] is s]
    missing = [s for s in live_servers if s.address not in in_file]
    extra = in_file - live_addr
    extra_gone = [s for s in gone if s.address in extra]
    stale_missing = [s.name for s in missing if now - s.up_at > POLL_SECONDS + STALE_MARGIN]
    assert all(s.down_at is not None for s in extra_gone)

    # The daemon sees a server leave only while Ray answers: for the servers the restart took,
    # the grace period starts when Ray is back.
    def gone_since(s: Server) -> float:
        down = s.down_at or now
        return max(down, live.ray_back_at) if s.taken_by_restart else down

    stale_extra = sorted(
        {s.address for s in extra_gone if now - gone_since(s) > GRACE_SECONDS + STALE_MARGIN}
    )
    return {
        "live": len(live_addr),
        "in_file": len(in_file),
        "missing": len(missing),
        "extra": len(extra),
        "stale_missing": stale_missing,
        "stale_extra": stale_extra,
        # Targets in the file that no driver ever reported: should never happen.
        "unknown": sorted(extra - {s.address for s in gone}),
    }


# --------------------------------------------------------------------------------------------
# An operator's hands

PROMETHEUS_YML = """\
# the training cluster's Prometheus (soak)
global:
    scrape_interval: "15s"
scrape_configs:
    - job_name: "gpu"
      scheme: https
      tls_config:
          ca_file: "/etc/prometheus/fsd-ca.crt"
      basic_auth:
          username: "prometheus"
          password_file: "/etc/prometheus/gpu.pass"
    - job_name: "node"
      static_configs:
          - targets: ['127.0.0.1:9100']
"""


def operator_config(work: Path) -> Path:
    """The daemon's config file: the prometheus.yml to keep (the rest comes from flags)."""
    prom = work / "prometheus.yml"
    prom.write_text(PROMETHEUS_YML)
    config = work / "fsd-daemon.toml"
    config.write_text(f'[daemon]\ncluster = "soak"\n[prometheus]\nconfig_file = "{prom}"\n')
    return config


class OperatorFaults(threading.Thread):
    """The faults of the module docstring, one after another from ``start_after`` s on."""

    def __init__(
        self, work: Path, out_dir: Path, config: Path, metrics_port: int, start_after: float
    ) -> None:
        super().__init__(daemon=True, name="operator-faults")
        self.work, self.out_dir, self.config = work, out_dir, config
        self.metrics_port, self.start_after = metrics_port, start_after
        # [removed at, all files back at] of each directory removal: an empty file then is
        # the operator's doing, not the daemon's.
        self.windows: list[list[float]] = []
        self.result: dict[str, Any] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            if self._halt.wait(self.start_after):
                return
            self.result["directory_back_s"] = self._remove_directory()
            if self._halt.wait(10):
                return
            self.result.update(self._rewrite_config())
            if self._halt.wait(10):
                return
            self.result.update(self._rewrite_prometheus_yml())
        except Exception as exc:  # reported, and the checks then fail
            self.result["error"] = repr(exc)

    def _remove_directory(self) -> float | None:
        print("-- operator: rm -rf of the output directory", flush=True)
        window = [time.time()]
        self.windows.append(window)
        remove_tree(self.out_dir)
        names = ("rollout.json", "gpu.json", "ray.json")
        deadline = time.time() + 30
        while time.time() < deadline:
            if all((self.out_dir / n).exists() for n in names):
                window.append(time.time())
                return round(window[1] - window[0], 2)
            time.sleep(0.02)
        window.append(time.time())
        return None

    def _rewrite_config(self) -> dict[str, Any]:
        print("-- operator: the config file rewritten in place 10 times", flush=True)
        reloads_before = self._log().count("config reloaded")
        dark = 0
        data = self.config.read_bytes()
        for _ in range(10):
            with open(self.config, "wb") as f:  # truncate ...
                f.flush()
                for _ in range(4):  # ... a stall (the listener is asked meanwhile) ...
                    dark += healthz(self.metrics_port)[0] == 0
                    time.sleep(0.1)
                f.write(data)  # ... write
            time.sleep(0.3)
        time.sleep(2.0)
        return {
            "config_rewrites": 10,
            "config_reloads": self._log().count("config reloaded") - reloads_before,
            "listener_dark_answers": dark,
        }

    def _rewrite_prometheus_yml(self) -> dict[str, Any]:
        print("-- operator: prometheus.yml rewritten without our jobs (verl's way)", flush=True)
        prom = self.work / "prometheus.yml"
        patched_before = self._log().count("patched ")
        with open(prom, "w") as f:  # in place, as verl's update_prometheus_config writes
            f.write(PROMETHEUS_YML)
        deadline = time.time() + 30
        while time.time() < deadline and self._log().count("patched ") == patched_before:
            time.sleep(0.2)
        time.sleep(1.0)
        jobs = {j["job_name"]: j for j in _yaml_jobs(prom)}
        gpu = jobs.get("gpu", {})
        return {
            "prometheus_yml_patched_again": self._log().count("patched ") > patched_before,
            "gpu_job_keeps_tls": all(k in gpu for k in ("scheme", "tls_config", "basic_auth"))
            and "file_sd_configs" in gpu,
        }

    def _log(self) -> str:
        return (self.work / "daemon.log").read_text(errors="replace")

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=60)


def _yaml_jobs(path: Path) -> list[dict[str, Any]]:
    import yaml

    return list(yaml.safe_load(path.read_text()).get("scrape_configs") or [])


def rotate_token(home: Path) -> None:
    """A new token where ``ray start`` and the daemon find it (``~/.ray/auth_token``)."""
    path = home / ".ray" / "auth_token"
    path.write_text(f"fsd-soak-rotated-{os.urandom(16).hex()}\n")
    path.chmod(0o600)


# --------------------------------------------------------------------------------------------
# The run


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=args.work_root))
    home, out_dir, temp_dir = work / "home", work / "targets", work / "r"
    for d in (home, out_dir, temp_dir):
        d.mkdir(parents=True)
    print(f"work dir: {work}", flush=True)
    rollout = out_dir / "rollout.json"
    head = RayHead(work, env=user_env(home), base_port=args.base_port, temp_dir=temp_dir)
    live = LiveSet()
    churn: Churn | None = None
    daemon: subprocess.Popen[bytes] | None = None
    samples: list[dict[str, Any]] = []
    sampler: Sampler | None = None
    file_watch: FileWatch | None = None
    faults: OperatorFaults | None = None
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "machine": common.machine(),
        "duration_s": args.duration,
        "interval_s": args.interval,
        "max_live": args.max_live,
        "sample_s": args.sample,
        "work_dir": str(work),
    }
    try:
        head.generate_token()
        head.start()
        print(f"Ray up at {head.address} (dashboard :{head.dashboard_port})", flush=True)
        auth = {"RAY_AUTH_MODE": "token"} if args.auth_mode_env else {}
        daemon_env = user_env(home, **auth)
        daemon_argv = [str(VENV_BIN / "fsd-daemon"), "run", "--ray-address", head.address]
        daemon_argv += ["--output-dir", str(out_dir), "--log-level", "info"]
        daemon_argv += ["--metrics-listen", f"127.0.0.1:{args.base_port + 10}"]
        config = operator_config(work) if args.operator_faults else None
        if config is not None:
            daemon_argv += ["--config", str(config)]
        daemon = common_start(daemon_argv, work / "daemon.log", daemon_env)
        result["daemon_env"] = sorted(daemon_env)
        result["daemon_argv"] = daemon_argv
        churn = Churn(args, head, live, 0, work / "churn.log")

        t0 = time.time()
        file_watch = FileWatch(out_dir, live)
        file_watch.start()
        sampler = Sampler(daemon.pid, live, rollout, t0, args.sample)
        sampler.start()
        if config is not None:
            faults = OperatorFaults(
                work, out_dir, config, args.base_port + 10, min(30.0, args.duration / 8)
            )
            faults.start()
        sleep_until(daemon, t0 + args.duration / 2, work)
        sampler.phase = 2
        if faults is not None:
            faults.stop()
            result["operator_faults"] = faults.result
        result["restart"] = restart_ray(head, live, churn, rotate=config is not None)
        churn = Churn(args, head, live, 100000, work / "churn.log")
        # As much churn after the restart as before it: the outage does not count.
        sleep_until(daemon, live.ray_back_at + args.duration / 2, work)
        sampler.stop()
        samples = sampler.samples
        result["end"] = final_check(churn, live, rollout, daemon)
        health = _get(f"http://127.0.0.1:{args.base_port + 10}/healthz")
        result["healthz_at_end"] = health
    finally:
        if sampler is not None:
            sampler.stop()
            samples = sampler.samples
        if faults is not None:
            faults.stop()
            result.setdefault("operator_faults", faults.result)
        if file_watch is not None:
            file_watch.stop()
            result["files"] = file_watch.report(live.t0, faults.windows if faults else [])
            if file_watch.restart_targets_gone_at is not None and "restart" in result:
                result["restart"]["old_targets_left_after_ray_back_s"] = round(
                    file_watch.restart_targets_gone_at - live.ray_back_at, 1
                )
        if churn is not None:
            churn.stop()
        if daemon is not None:
            result["daemon_exit"] = common.stop_process(daemon, 30)
        head.stop()
        result["ray_leftovers_killed"] = head.leftovers_killed
        result["servers_started"] = len(live.servers)
        result["driver_errors"] = live.errors
        result["samples"] = samples
        result["servers"] = [vars(s) for s in live.servers]
        if file_watch is not None:
            result["rollout_events"] = file_watch.rollout_events
            result["lags"] = lags(result["servers"], file_watch.rollout_events, live.ray_back_at)
        if args.keep:
            print(f"kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["summary"] = summarize_samples(samples, args)
    result["verdict"] = verdict(result)
    return result


def verdict(result: dict[str, Any]) -> dict[str, bool]:
    """The checks that must hold (flatness is read from the table, not judged here)."""
    summary, end, files = result["summary"], result.get("end") or {}, result.get("files", {})
    return {
        "file_equals_live_set_at_end": bool(end.get("equal")) and len(end.get("live", [])) > 0,
        "no_live_server_missing_beyond_a_poll": summary.get("samples_with_stale_missing") == 0,
        "no_gone_server_listed_beyond_grace": summary.get("samples_with_stale_extra") == 0,
        "no_target_never_reported": summary.get("samples_with_unknown") == 0,
        "gpu_and_ray_json_never_empty": all(
            files.get(f, {}).get("empty_spells", 1) == 0 for f in ("gpu.json", "ray.json")
        ),
        "daemon_exit_0_on_sigterm": result.get("daemon_exit") == 0,
        **operator_verdict(result),
    }


def operator_verdict(result: dict[str, Any]) -> dict[str, bool]:
    faults = result.get("operator_faults")
    if faults is None:
        return {}
    back = faults.get("directory_back_s")
    return {
        "removed_directory_back_within_a_poll": back is not None and back <= POLL_SECONDS + 1,
        "no_reload_of_a_half_written_config": faults.get("config_reloads") == 0,
        "listener_answered_during_config_rewrites": faults.get("listener_dark_answers") == 0,
        "tls_gpu_job_patched_again_and_kept": bool(
            faults.get("prometheus_yml_patched_again") and faults.get("gpu_job_keeps_tls")
        ),
    }


def restart_ray(head: RayHead, live: LiveSet, churn: Churn, rotate: bool) -> dict[str, Any]:
    """Stop the head under the running driver, stop the driver, start Ray on the same ports
    (``rotate``: with a new token, which the daemon must find by itself)."""
    print("-- stopping the Ray head (by PID) under the running driver", flush=True)
    began = time.time()
    head.stop()
    stopped = time.time()
    live.all_down(stopped)
    churn.stop()
    if rotate:
        print("-- operator: a new token in ~/.ray/auth_token; Ray starts with it", flush=True)
        rotate_token(head.home)
    head.start()
    back = time.time()
    live.ray_back_at = back
    print(f"-- Ray back after {back - began:.1f} s on {head.address}", flush=True)
    return {
        "stop_s": round(stopped - began, 1),
        "down_s": round(back - began, 1),
        "at_s": round(began - live.t0, 1) if live.t0 else None,
    }


def sleep_until(daemon: subprocess.Popen[bytes], deadline: float, work: Path) -> None:
    while time.time() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited {daemon.returncode}: see {work}")
        time.sleep(min(1.0, max(0.0, deadline - time.time())))


class FileWatch(threading.Thread):
    """Every ``step`` s: how many targets each file holds; records every spell of a file at 0
    targets after it had some (gpu.json and ray.json hold the head node, always alive: they
    must never be empty; rollout.json only when no server lives) and, after the restart, when
    the last target of a server the restart took left rollout.json."""

    FILES = ("rollout.json", "gpu.json", "ray.json")

    def __init__(self, out_dir: Path, live: LiveSet, step: float = 0.25) -> None:
        super().__init__(daemon=True, name="file-watch")
        self.out_dir, self.live, self.step = out_dir, live, step
        self.empty_spells: dict[str, list[list[float]]] = {f: [] for f in self.FILES}
        self.restart_targets_gone_at: float | None = None
        self._held_taken = False
        # Every change of rollout.json, target by target: {"in"|"out": address, "t": unix}.
        self.rollout_events: list[dict[str, Any]] = []
        self._rollout_before: set[str] = set()
        self._had_targets: set[str] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.step):
            now = time.time()
            for name in self.FILES:
                targets = file_targets(self.out_dir / name)
                spells = self.empty_spells[name]
                open_spell = bool(spells) and len(spells[-1]) == 1
                if targets:
                    self._had_targets.add(name)
                    if open_spell:
                        spells[-1].append(now)
                elif name in self._had_targets and not open_spell:
                    spells.append([now])
                if name == "rollout.json":
                    self._check_restart_targets(targets, now)
                    self._record_changes(targets, now)

    def _record_changes(self, targets: set[str], now: float) -> None:
        if not (self.out_dir / "rollout.json").exists():
            return  # not written yet (file_targets reads a missing file as empty)
        for address in sorted(targets - self._rollout_before):
            self.rollout_events.append({"in": address, "t": now})
        for address in sorted(self._rollout_before - targets):
            self.rollout_events.append({"out": address, "t": now})
        self._rollout_before = targets

    def _check_restart_targets(self, targets: set[str], now: float) -> None:
        taken = {s.address for s in self.live.gone() if s.taken_by_restart}
        if taken & targets:
            self._held_taken = True
        elif self._held_taken and self.restart_targets_gone_at is None:
            self.restart_targets_gone_at = now

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=10)

    def report(self, t0: float, excused: Sequence[Sequence[float]] = ()) -> dict[str, Any]:
        """Spells at 0 targets; those that began while an operator had removed the files
        (``excused``: [removed at, back at]) are counted apart."""
        end = time.time()
        out: dict[str, Any] = {}

        def operator_did_it(start: float) -> bool:
            return any(w[0] - 0.5 <= start <= (w[1] if len(w) > 1 else end) for w in excused)

        for name, spells in self.empty_spells.items():
            closed = [(spell[0], spell[1] if len(spell) > 1 else end) for spell in spells]
            ours = [(a, b) for a, b in closed if not operator_did_it(a)]
            out[name] = {
                "empty_spells": len(ours),
                "empty_seconds": round(sum(b - a for a, b in ours), 2),
                "empty_at_s": [round(a - t0, 1) for a, _ in ours],
                "removed_by_operator": len(closed) - len(ours),
            }
        return out


def lags(
    servers: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]], ray_back_at: float
) -> dict[str, Any]:
    """How long each server took to enter rollout.json after it served (``pick_up``) and to
    leave it after it was killed (``removal``; the grace period is part of it). Servers the
    restart took count from when Ray was back (``removal_after_restart``). Seconds: p50, p95,
    max, and how many servers never entered or never left."""
    ins: dict[str, list[float]] = {}
    outs: dict[str, list[float]] = {}
    for e in events:
        (ins if "in" in e else outs).setdefault(e.get("in") or e["out"], []).append(e["t"])
    pick_up: list[float] = []
    removal: list[float] = []
    after_restart: list[float] = []
    never_in = never_out = 0
    for s in servers:
        down = s["down_at"] if s["down_at"] is not None else float("inf")
        # Ports are reused over a long run: an event belongs to the server whose life it follows.
        entered = [t for t in ins.get(s["address"], []) if s["up_at"] - 1 <= t <= down]
        if entered:
            pick_up.append(entered[0] - s["up_at"])
        elif down - s["up_at"] > 60:
            never_in += 1
        if s["down_at"] is None:
            continue
        start = max(down, ray_back_at) if s.get("taken_by_restart") else down
        left = [t for t in outs.get(s["address"], []) if t >= down]
        if left:
            (after_restart if s.get("taken_by_restart") else removal).append(left[0] - start)
        elif entered:
            never_out += 1

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "n": len(values),
            "p50": round(common.percentile(values, 50), 2),
            "p95": round(common.percentile(values, 95), 2),
            "max": round(max(values), 2) if values else float("nan"),
        }

    return {
        "pick_up_s": stats(pick_up),
        "removal_s": stats(removal),
        "removal_after_restart_s": stats(after_restart),
        "never_in": never_in,
        "never_out": never_out,
    }


class Sampler(threading.Thread):
    """Every ``period`` s: the daemon's process tree and rollout.json against the live set."""

    def __init__(self, pid: int, live: LiveSet, rollout: Path, t0: float, period: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.pid, self.live, self.rollout, self.t0, self.period = pid, live, rollout, t0, period
        live.t0 = t0
        self.phase = 1
        self.samples: list[dict[str, Any]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        due = self.t0
        while not self._halt.wait(max(0.0, due - time.time())):
            now = time.time()
            sample: dict[str, Any] = {"t": round(now - self.t0, 1), "phase": self.phase}
            try:
                sample.update(tree_sample(self.pid))
            except psutil.NoSuchProcess:
                return
            if not self.rollout.exists():  # an operator removed it: back within a poll
                time.sleep(POLL_SECONDS + 1.0)
            sample.update(compare(self.live, file_targets(self.rollout), time.time()))
            sample["load1"] = os.getloadavg()[0]
            self.samples.append(sample)
            print(_sample_line(sample), flush=True)
            due += self.period
            while due < time.time():  # a late wake-up skips samples, never bunches them
                due += self.period

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=30)


def final_check(
    churn: Churn, live: LiveSet, rollout: Path, daemon: subprocess.Popen[bytes]
) -> dict[str, Any]:
    """Stop the churn; after the grace period the file must equal the live set."""
    churn.freeze()
    if not live.frozen.wait(180):
        raise RuntimeError("the churn driver did not stop churning")
    frozen_at = time.time()
    last_down = max((s.down_at or 0.0) for s in live.servers) if live.servers else frozen_at
    settle_until = max(frozen_at, last_down + GRACE_SECONDS) + POLL_SECONDS + STALE_MARGIN
    # Keep looking until it matches (or a minute after it should): when it first matched,
    # and whether it still matches at the settle time.
    first_match: float | None = None
    while True:
        now = time.time()
        expected = {s.address for s in live.live()}
        got = file_targets(rollout)
        if got == expected and first_match is None:
            first_match = now
        if now >= settle_until and (got == expected or now >= settle_until + 60):
            break
        time.sleep(0.5)
    return {
        "live": sorted(expected),
        "in_file": sorted(got),
        "equal": got == expected,
        "missing": sorted(expected - got),
        "extra": sorted(got - expected),
        "seconds_after_freeze_first_equal": None
        if first_match is None
        else round(first_match - frozen_at, 1),
        "daemon_alive": daemon.poll() is None,
    }


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return f"{r.status} {r.read().decode(errors='replace')[:500]}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read().decode(errors='replace')[:500]}"
    except OSError as exc:
        return f"unreachable: {exc}"


def _sample_line(s: dict[str, Any]) -> str:
    return (
        f"t={s['t']:7.1f} p{s['phase']} rss={s['rss_mib']:6.1f}MiB thr={s['threads']:3d} "
        f"fds={s['fds']:3d} kids={s['children']} live={s['live']:2d} file={s['in_file']:2d} "
        f"miss={s['missing']} extra={s['extra']} stale={len(s['stale_missing'])}/"
        f"{len(s['stale_extra'])} load={s['load1']:.1f}"
    )


# --------------------------------------------------------------------------------------------
# Summary

METRICS = (
    ("rss_mib", "RSS, daemon + descendants (MiB)"),
    ("daemon_rss_mib", "RSS, daemon alone (MiB)"),
    ("bridge_rss_mib", "RSS, Ray bridge child (MiB)"),
    ("threads", "threads, daemon + descendants"),
    ("fds", "open fds, daemon + descendants"),
    ("children", "descendant processes"),
    ("load1", "machine load (1 min)"),
)


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour; NaN with fewer than 2."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 3600


def summarize_samples(samples: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    warm = [s for s in samples if s["t"] >= args.warmup]
    if not warm:
        return {}
    phase1 = [s for s in warm if s["phase"] == 1]
    middle = phase1[-1] if phase1 else warm[0]
    out: dict[str, Any] = {}
    for key, _ in METRICS:
        values = [s[key] for s in warm if key in s]
        if not values:
            continue
        out[key] = {
            "start": next(s[key] for s in warm if key in s),
            "middle": middle.get(key),
            "end": next(s[key] for s in reversed(warm) if key in s),
            "min": min(values),
            "max": max(values),
            "slope_per_hour": slope_per_hour([(s["t"], s[key]) for s in warm if key in s]),
        }
    out["samples"] = len(samples)
    # A new pid is a new bridge child: idle stops, Ray restarts and replacements after
    # RECYCLE_AFTER lookups (fsd_daemon/discovery/ray_bridge.py).
    out["bridge_children_seen"] = len({s["bridge_pid"] for s in samples if "bridge_pid" in s})
    out["samples_with_stale_missing"] = sum(1 for s in samples if s["stale_missing"])
    out["samples_with_stale_extra"] = sum(1 for s in samples if s["stale_extra"])
    out["samples_with_unknown"] = sum(1 for s in samples if s["unknown"])
    out["max_live"] = max(s["live"] for s in samples)
    return out


def summarize(result: dict[str, Any]) -> str:
    summary = result["summary"]
    rows = []
    for key, title in METRICS:
        if key in summary:
            m = summary[key]
            rows.append([title, m["start"], m["middle"], m["end"], m["max"], m["slope_per_hour"]])
    lines = [
        common.table(["", "start", "middle", "end", "max", "slope / hour"], rows),
        "",
        f"servers started: {result.get('servers_started')}, samples: {summary.get('samples')}, "
        f"Ray restart: {result.get('restart')}, bridge children seen: "
        f"{summary.get('bridge_children_seen')}",
        f"samples with a live server missing > {POLL_SECONDS + STALE_MARGIN:g} s: "
        f"{summary.get('samples_with_stale_missing')}; with a gone server still listed > "
        f"{GRACE_SECONDS + STALE_MARGIN:g} s: {summary.get('samples_with_stale_extra')}; "
        f"with a target never reported: {summary.get('samples_with_unknown')}",
    ]
    if "lags" in result:
        lines.append(
            "seconds to rollout.json after a server serves (pick-up), out of it after it is "
            "killed (removal, grace included), out of it after Ray is back (servers the restart "
            "took): " + json.dumps(result["lags"])
        )
    for name, spells in result.get("files", {}).items():
        lines.append(
            f"{name}: empty {spells['empty_spells']} times after it had targets, "
            f"{spells['empty_seconds']} s in all, at t = {spells['empty_at_s']} s"
        )
    end = result.get("end")
    if end:
        lines.append(
            f"at the end: file == live set: {end['equal']} ({len(end['live'])} live, "
            f"{len(end['in_file'])} in rollout.json; missing {end['missing']}, extra "
            f"{end['extra']}; first equal {end['seconds_after_freeze_first_equal']} s after "
            "the churn stopped)"
        )
    if "operator_faults" in result:
        lines.append(f"operator faults: {json.dumps(result['operator_faults'])}")
    failed = [k for k, ok in result.get("verdict", {}).items() if not ok]
    lines.append("checks: " + ("all passed" if not failed else "FAILED " + ", ".join(failed)))
    lines.append(
        f"daemon exit code on SIGTERM: {result.get('daemon_exit')}; Ray processes killed "
        f"after ray start had gone: {len(result.get('ray_leftovers_killed', []))}; driver "
        f"errors: {len(result.get('driver_errors', []))}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["churn"]:
        return churn_main(argv[1:])
    p = argparse.ArgumentParser(prog="bench/soak.py", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of churn")
    p.add_argument("--short", action="store_true", help="a smoke run: 4 minutes of churn")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between new servers")
    p.add_argument("--max-live", type=int, default=6, help="servers up at once, at most")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=None, help="seconds left out of the summary")
    p.add_argument("--base-port", type=int, default=21000, help="Ray's ports: this .. +299")
    p.add_argument("--work-root", default="/tmp/rt-soak", help="where the temp dir goes")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, files)")
    p.add_argument(
        "--auth-mode-env",
        action="store_true",
        help="also give the daemon RAY_AUTH_MODE=token (by default it has only the token in "
        "HOME's ~/.ray/auth_token, as README says)",
    )

    p.add_argument(
        "--no-operator-faults",
        dest="operator_faults",
        action="store_false",
        help="leave out the operator's faults (directory removed, config rewritten in place, "
        "prometheus.yml rewritten, token rotated at the restart)",
    )

    outcome: dict[str, Any] = {}

    def run_checked(args: argparse.Namespace) -> dict[str, Any]:
        if args.short:
            args.duration = 240.0
        if args.warmup is None:
            args.warmup = min(120.0, args.duration / 10)
        Path(args.work_root).mkdir(parents=True, exist_ok=True)
        outcome.update(run(args))
        return outcome

    common.bench_main(p, run_checked, summarize, argv, json_what="result and samples")
    return 0 if all(outcome.get("verdict", {"ran": False}).values()) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # finally blocks run on SIGTERM
    sys.exit(main())
