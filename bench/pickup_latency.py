"""Pick-up latency: a rollout server starts serving -> its target is in a file -> it is an
active target in a real Prometheus. Three ways, measured on the same servers in the same run.

- fsd: a real local Ray cluster (``ray.cluster_utils.Cluster``, 127.0.0.1) and a real
  ``fsd-daemon run`` process (built-in defaults: 2 s poll, 0.5 s change probe between polls,
  Ray bridge kept connected) writing rollout.json, watched by Prometheus A through file_sd.
- verl's way: the moment the driver has the server's address, rewrite a static prometheus.yml
  with every server so far and POST /-/reload to Prometheus B (--web.enable-lifecycle).
- Ray's way: a writer that rewrites its file_sd file every 5 s whatever happened
  (json.dumps, temp file, os.replace, as Ray's PrometheusServiceDiscoveryWriter), watched by
  Prometheus C. It is handed each address at t0: no discovery of its own, a gift. Its 5 s grid
  is moved to a random phase before each trial: with one fixed phase (one deployment) its
  writes would meet Prometheus's 5 s tickers at the same point every time.

Each trial: wait a random 0-5 s (so the trials fall at every phase of the 5 s tickers), create
one verl-like server actor (``fsd_daemon.sim.rollout_server.vLLMHttpServer``, a real HTTP
/metrics server, named ``vllm_server_<i>_0``) from this process as the Ray driver, and call its
``get_server_address()`` until it answers: t0. The actor is ALIVE a few milliseconds before
(its HTTP server starts in a timer thread at once). Then, for each way: when the target is in
the file (fsd: seen by a 20 ms stat poller; verl: /-/reload returned; Ray's way: the rewrite
that first holds it) and when it is in the activeTargets of /api/v1/targets (polled every
100 ms). ``in file -> active`` is Prometheus's own share: file_sd's two internal 5 s tickers
(discovery manager, then scrape manager), or, for the reload, the same scrape manager ticker.

``--quiet-trials`` more servers follow, each after ``--quiet-seconds`` with no change in the
cluster (the first server after a quiet spell: the daemon's fast re-poll is over, an idle
bridge would have been stopped); they are reported apart.

Servers stay up until the end (verl's servers never leave either); every process started here
is stopped by its PID, temp dirs are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from math import nan
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

from fsd_daemon.sim.harness import DaemonProcess, LocalRayCluster, wait_for

WAYS = ("fsd", "verl", "ray")
WAY_NAMES = {
    "fsd": "fsd-daemon (Ray poll, file_sd)",
    "verl": "verl: prometheus.yml + /-/reload",
    "ray": "Ray: rewrite every 5 s (file_sd)",
}


class FileWatcher(threading.Thread):
    """Polls a file_sd file every ``step`` s; records when each target first appears in it."""

    def __init__(self, path: Path, step: float = 0.02) -> None:
        super().__init__(daemon=True, name=f"watch-{path.name}")
        self.path = path
        self.step = step
        self.first_seen: dict[str, float] = {}
        self.changes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        signature = None
        while not self._halt.wait(self.step):
            try:
                st = self.path.stat()
                sig = (st.st_ino, st.st_mtime_ns, st.st_size)
                if sig == signature:
                    continue
                data = json.loads(self.path.read_bytes())
            except (OSError, ValueError):
                continue
            seen = time.monotonic()
            signature = sig
            self.changes += 1
            for group in data:
                for target in group.get("targets", []):
                    self.first_seen.setdefault(target, seen)

    def stop(self) -> None:
        self._halt.set()


class RayStyleRewriter(threading.Thread):
    """Rewrites its file every ``period`` s with every address it was given (Ray's way).

    ``rephase()`` moves its 5 s grid. Ray's writer and Prometheus's tickers both run on 5 s
    grids, so within one deployment their phase is fixed and every server sees the same
    Prometheus delay; re-phasing before each trial samples that phase as over many deployments.
    """

    def __init__(self, path: Path, period: float = common.RAY_FLUSH_PERIOD) -> None:
        super().__init__(daemon=True, name="ray-style-rewriter")
        self.path = path
        self.period = period
        self.addresses: list[str] = []
        self.first_written: dict[str, float] = {}
        self.writes = 0
        self._next = time.monotonic()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False

    def add(self, address: str) -> None:
        with self._lock:
            self.addresses.append(address)

    def rephase(self, delay: float) -> None:
        with self._lock:
            self._next = time.monotonic() + delay
        self._wake.set()

    def run(self) -> None:
        while not self._stopping:
            with self._lock:
                due = time.monotonic() >= self._next
                addresses = list(self.addresses)
            if due:
                common.ray_style_write(
                    self.path, [{"labels": {"source": "ray_style"}, "targets": addresses}]
                )
                written = time.monotonic()
                self.writes += 1
                for a in addresses:
                    self.first_written.setdefault(a, written)
                with self._lock:
                    self._next = max(self._next + self.period, written)
            with self._lock:
                wait = max(0.0, self._next - time.monotonic())
            self._wake.wait(wait)
            self._wake.clear()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()


class VerlStyle:
    """verl's way: rewrite prometheus.yml with every server so far, POST /-/reload."""

    def __init__(self, prom: common.Prometheus, base: dict[str, Any]) -> None:
        self.prom = prom
        self.base = base
        self.addresses: list[str] = []
        self.reloaded: dict[str, float] = {}
        self.reload_seconds: list[float] = []

    def add(self, address: str) -> None:
        self.addresses.append(address)
        config = dict(self.base)
        config["scrape_configs"] = [
            {"job_name": "rollout", "static_configs": [{"targets": list(self.addresses)}]}
        ]
        started = time.monotonic()
        self.prom.write_config(config)
        self.prom.reload()  # returns once Prometheus has applied the new config
        done = time.monotonic()
        self.reload_seconds.append(done - started)
        self.reloaded[address] = done


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from fsd_daemon.sim.rollout_server import vLLMHttpServer

    work = Path(tempfile.mkdtemp(prefix="fsd-bench-pickup-"))
    fsd_dir, ray_dir = work / "fsd", work / "ray"
    fsd_dir.mkdir()
    ray_dir.mkdir()
    (ray_dir / "rollout.json").write_text("[]")
    # Output directories exist before Prometheus starts, or inotify is not set up on them.
    base = common.prometheus_config([], scrape_interval="15s")
    proms: dict[str, common.Prometheus] = {}
    cluster: LocalRayCluster | None = None
    daemon: DaemonProcess | None = None
    threads: list[Any] = []
    handles: list[Any] = []
    try:
        print("starting Ray, 3 Prometheus servers and the daemon ...", flush=True)
        proms["fsd"] = common.Prometheus(
            common.prometheus_config([common.file_sd_job("rollout", fsd_dir / "rollout.json")]),
            name="pickup-fsd",
        ).start()
        proms["ray"] = common.Prometheus(
            common.prometheus_config([common.file_sd_job("rollout", ray_dir / "rollout.json")]),
            name="pickup-ray",
        ).start()
        proms["verl"] = common.Prometheus(base, lifecycle=True, name="pickup-verl").start()
        cluster = LocalRayCluster().start(timeout=90)
        settings = {"daemon.poll_interval_seconds": args.poll_interval}
        daemon = common.start_daemon(cluster.address, fsd_dir, work / "daemon.log", **settings)
        ray.init(
            address=cluster.address,
            namespace="fsd_bench",
            logging_level="ERROR",
            log_to_driver=False,
        )
        watcher = FileWatcher(fsd_dir / "rollout.json")
        rewriter = RayStyleRewriter(ray_dir / "rollout.json")
        verl = VerlStyle(proms["verl"], base)
        threads = [watcher, rewriter]
        for t in threads:
            t.start()
        # The daemon writes its first (empty) files once its Ray bridge is connected.
        wait_for(lambda: (fsd_dir / "rollout.json").exists(), 120, step=0.2)
        server_cls = ray.remote(vLLMHttpServer)
        trials: list[dict[str, Any]] = []
        rng = random.Random(args.seed)
        total = args.servers + args.quiet_trials
        for i in range(total):
            rewriter.rephase(rng.uniform(0, common.RAY_FLUSH_PERIOD))
            # The last --quiet-trials servers each come after a quiet spell: nothing has
            # changed in the cluster for --quiet-seconds (the daemon's fast re-poll is long
            # over, an idle bridge would have been stopped).
            quiet = i >= args.servers
            time.sleep((args.quiet_seconds if quiet else 0.0) + rng.uniform(0, 5))
            created = time.monotonic()
            handle = server_cls.options(name=f"vllm_server_{i}_0", num_cpus=0).remote(seed=i)
            handles.append(handle)
            while True:
                try:
                    host, port = ray.get(handle.get_server_address.remote(), timeout=60)
                    break
                except ray.exceptions.RayTaskError:
                    time.sleep(0.02)  # HTTP not launched yet
            t0 = time.monotonic()
            address = f"{host}:{port}"
            rewriter.add(address)
            verl_thread = threading.Thread(target=verl.add, args=(address,), daemon=True)
            verl_thread.start()
            active: dict[str, float] = {}
            deadline = t0 + args.timeout
            while len(active) < len(WAYS) and time.monotonic() < deadline:
                for way in WAYS:
                    if way in active:
                        continue
                    try:
                        instances = proms[way].active_instances("rollout")
                    except OSError:
                        continue  # the reload briefly keeps the API busy
                    if address in instances:
                        active[way] = time.monotonic()
                time.sleep(0.1)
            verl_thread.join(timeout=30)
            in_file = {
                "fsd": watcher.first_seen.get(address),
                "verl": verl.reloaded.get(address),
                "ray": rewriter.first_written.get(address),
            }
            trial = {"i": i, "address": address, "create_to_t0": t0 - created, "quiet": quiet}
            for way in WAYS:
                f, a = in_file[way], active.get(way)
                trial[way] = {
                    "file": None if f is None else f - t0,
                    "active": None if a is None else a - t0,
                }
            trials.append(trial)
            print(
                f"  server {i + 1:>3}/{total}{' (after a quiet spell)' if quiet else ''}: "
                + ", ".join(
                    f"{way} {trial[way]['active']:.2f}s"
                    if trial[way]["active"] is not None
                    else f"{way} timeout"
                    for way in WAYS
                ),
                flush=True,
            )
        daemon_metrics = common.parse_metrics(daemon.metrics())
        prom_metrics = {way: p.metrics() for way, p in proms.items()}
        return {
            "trials": trials,
            "poll_interval": args.poll_interval,
            "quiet_seconds": args.quiet_seconds,
            "reload_seconds": verl.reload_seconds,
            "rewrites": rewriter.writes,
            "fsd_file_changes": watcher.changes,
            "daemon_writes": common.metric_sum(
                daemon_metrics, "fsd_daemon_writes_total", 'file="rollout.json"'
            ),
            "sd_scans": {
                way: common.metric_sum(m, "prometheus_sd_file_scan_duration_seconds_count")
                for way, m in prom_metrics.items()
            },
        }
    finally:
        for t in threads:
            t.stop()
        for h in handles:
            with contextlib.suppress(Exception):
                ray.kill(h)
        if ray.is_initialized():
            ray.shutdown()
        if daemon is not None:
            daemon.stop()
        if cluster is not None:
            cluster.stop()
        for p in proms.values():
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


def summarize(result: dict[str, Any]) -> str:
    quiet = [t for t in result["trials"] if t.get("quiet")]
    trials = [t for t in result["trials"] if not t.get("quiet")]
    rows = []
    p50 = {}
    for way in WAYS:
        done = [
            t[way] for t in trials if t[way]["active"] is not None and t[way]["file"] is not None
        ]
        total = [d["active"] for d in done]
        file_ = [d["file"] for d in done]
        prom = [d["active"] - d["file"] for d in done]
        share = statistics.mean(prom) / statistics.mean(total) if total else float("nan")
        p50[way] = common.percentile(total, 50)
        rows.append(
            [
                WAY_NAMES[way],
                f"{len(done)}/{len(trials)}",
                common.percentile(file_, 50),
                common.percentile(file_, 99),
                common.percentile(prom, 50),
                common.percentile(prom, 99),
                common.percentile(total, 50),
                common.percentile(total, 99),
                max(total) if total else float("nan"),
                f"{share * 100:.0f}%",
            ]
        )
    for row, way in zip(rows, WAYS, strict=True):
        row.append(common.ratio(p50[way], p50["fsd"]))
    headers = [
        "way",
        "n",
        "-> in file p50",
        "p99",
        "file -> active p50",
        "p99",
        "total p50",
        "total p99",
        "max",
        "Prometheus share (mean)",
        "p50 vs fsd",
    ]
    fsd_files = [t["fsd"]["file"] for t in trials if t["fsd"]["file"] is not None]
    create_p50 = common.percentile([t["create_to_t0"] for t in trials], 50)
    out = [
        f"Pick-up latency, seconds from t0 (server answers get_server_address()), "
        f"{len(trials)} servers; daemon poll interval {result['poll_interval']:g} s",
        common.table(headers, rows),
        "",
        f"verl's POST /-/reload took p50 {common.percentile(result['reload_seconds'], 50):.3f} s, "
        f"max {max(result['reload_seconds'], default=float('nan')):.3f} s (rewrite + reload "
        f"of the whole config per server). Ray's way rewrote its file {result['rewrites']} times; "
        f"the daemon wrote rollout.json {result['daemon_writes']:.0f} times. Prometheus file "
        f"rescans: fsd {result['sd_scans']['fsd']:.0f}, Ray's way {result['sd_scans']['ray']:.0f}.",
        f"Actor creation -> t0: p50 {create_p50:.2f} s (Ray worker start-up; not counted above).",
        f"fsd -> in file, every server: max {max(fsd_files, default=nan):.2f} s",
    ]
    if quiet:
        out.append(
            f"After {result['quiet_seconds']:g} s with no change in the cluster ({len(quiet)} "
            "servers), seconds from t0, per server: "
            + "; ".join(
                ", ".join(
                    f"{way} file {_s(t[way]['file'])} active {_s(t[way]['active'])}" for way in WAYS
                )
                for t in quiet
            )
        )
    return "\n".join(out)


def _s(value: float | None) -> str:
    return "timeout" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python bench/pickup_latency.py",
        description="Seconds from a rollout server serving to its target being active in a real "
        "Prometheus: fsd-daemon vs verl's prometheus.yml + /-/reload vs Ray's 5 s rewriter, on "
        "the same servers in the same run.",
    )
    p.add_argument("--servers", type=int, default=20, help="servers started, one per trial")
    p.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        help="daemon.poll_interval_seconds (built-in default 2)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="give up on a trial after N s")
    p.add_argument(
        "--quiet-trials",
        type=int,
        default=3,
        help="more servers after those, each after --quiet-seconds with no change (reported apart)",
    )
    p.add_argument("--quiet-seconds", type=float, default=70.0, help="the quiet spell, seconds")
    p.add_argument("--seed", type=int, default=1, help="seed of the random waits between trials")
    return common.bench_main(p, run, summarize, argv, json_what="trials")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
