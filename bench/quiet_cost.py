"""Quiet cost: what keeping targets current costs while nothing changes, against Ray's way.

A real local Ray cluster (``ray.cluster_utils.Cluster``, 127.0.0.1) runs K verl-like rollout
servers (``fsd_daemon.sim.rollout_server.vLLMHttpServer``, real HTTP /metrics) that neither
come nor go. Two set-ups run side by side for the same window:

- fsd: a real ``fsd-daemon run`` process, built-in defaults (2 s poll of Ray's state API,
  watchdog on its output directory), writing rollout.json, gpu.json and ray.json, read by
  Prometheus A through the scrape jobs ``fsd-daemon prometheus-config`` prints.
- Ray's way: a process that rewrites its file_sd file with the same K targets every 5 s
  (json.dumps, temp file, os.replace; ``python bench/_common.py rewriter``), read by
  Prometheus B.

Over the window: file replacements (a 50 ms stat poller, plus the daemon's own
fsd_daemon_writes_total), each Prometheus's file rescans, the time they took and read errors
(prometheus_sd_file_scan_duration_seconds_count/_sum, prometheus_sd_file_read_errors_total),
target-group updates passed on to the scrape manager (prometheus_sd_received_updates_total,
prometheus_target_sync_length_seconds_count), and CPU seconds (psutil: user + system, the
daemon with its Ray bridge child) and RSS of each writer.

Hour-equivalent: both sides are steady periodic loops, so the window (default 120 s, after a
warm-up) is scaled linearly to one hour; the tables say so. The poll interval is not shortened.
The daemon's CPU includes discovery (listing Ray every 2 s); the rewriter is handed its targets
and discovers nothing. Ray's dashboard pays for the daemon's listings: its CPU is shown for a
baseline window before the daemon starts and for the measured window.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

from fsd_daemon.sim.harness import DaemonProcess, LocalRayCluster, wait_for


class ReplaceCounter(threading.Thread):
    """Counts replacements (inode, mtime or size changes) of files, polled every ``step`` s."""

    def __init__(self, paths: list[Path], step: float = 0.05) -> None:
        super().__init__(daemon=True, name="replace-counter")
        self.paths = paths
        self.step = step
        self.counts = dict.fromkeys(paths, 0)
        self._last: dict[Path, Any] = {}
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._halt.wait(self.step):
            for path in self.paths:
                try:
                    st = path.stat()
                except OSError:
                    continue
                sig = (st.st_ino, st.st_mtime_ns, st.st_size)
                with self._lock:
                    if path in self._last and self._last[path] != sig:
                        self.counts[path] += 1
                    self._last[path] = sig

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def stop(self) -> None:
        self._halt.set()


def proc_tree(pid: int) -> list[Any]:
    import psutil

    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def cpu_each(procs: list[Any]) -> list[float]:
    import psutil

    out = []
    for p in procs:
        try:
            t = p.cpu_times()
            out.append(t.user + t.system)
        except psutil.NoSuchProcess:
            out.append(0.0)
    return out


def cpu_seconds(procs: list[Any]) -> float:
    return sum(cpu_each(procs))


def rss(procs: list[Any]) -> list[int]:
    out = []
    for p in procs:
        try:
            out.append(int(p.memory_info().rss))
        except Exception:
            out.append(0)
    return out


class TreeCpu:
    """CPU seconds of a process and every descendant it has had since ``sample()`` was first
    called: the tree is walked again at each sample, so a child started later (the Ray bridge,
    the dashboard lookup) is counted, and one that ended keeps the CPU it had at its last
    sample (at most one sample step of its work is lost)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._last: dict[int, tuple[str, float]] = {}

    def sample(self) -> float:
        import psutil

        try:
            procs = proc_tree(self.pid)
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                t = p.cpu_times()
                self._last[p.pid] = (p.name(), t.user + t.system)
            except psutil.NoSuchProcess:
                pass
        return sum(cpu for _name, cpu in self._last.values())

    def each(self) -> dict[int, tuple[str, float]]:
        return dict(self._last)


PROM_COUNTERS = {
    "rescans": ("prometheus_sd_file_scan_duration_seconds_count", ""),
    "rescan_seconds": ("prometheus_sd_file_scan_duration_seconds_sum", ""),
    "read_errors": ("prometheus_sd_file_read_errors_total", ""),
    "sd_updates": ("prometheus_sd_received_updates_total", 'name="scrape"'),
    "pool_syncs": ("prometheus_target_sync_length_seconds_count", ""),
}


def prom_counters(prom: common.Prometheus) -> dict[str, float]:
    m = prom.metrics()
    return {k: common.metric_sum(m, name, sel) for k, (name, sel) in PROM_COUNTERS.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import psutil
    import ray

    from fsd_daemon.config import load_config
    from fsd_daemon.prometheus.scrape_config import scrape_jobs
    from fsd_daemon.sim.rollout_server import vLLMHttpServer

    work = Path(tempfile.mkdtemp(prefix="fsd-bench-quiet-"))
    fsd_dir, ray_dir = work / "fsd", work / "ray"
    fsd_dir.mkdir()
    ray_dir.mkdir()
    proms: dict[str, common.Prometheus] = {}
    cluster: LocalRayCluster | None = None
    daemon: DaemonProcess | None = None
    rewriter: subprocess.Popen[bytes] | None = None
    counter: ReplaceCounter | None = None
    handles: list[Any] = []
    try:
        print(f"starting Ray and {args.servers} servers ...", flush=True)
        cluster = LocalRayCluster().start(timeout=90)
        ray.init(
            address=cluster.address,
            namespace="fsd_bench",
            logging_level="ERROR",
            log_to_driver=False,
        )
        server_cls = ray.remote(vLLMHttpServer)
        handles = [
            server_cls.options(name=f"vllm_server_{i}_0", num_cpus=0).remote(seed=i)
            for i in range(args.servers)
        ]
        addresses = []
        for h in handles:
            while True:
                try:
                    host, port = ray.get(h.get_server_address.remote(), timeout=60)
                    addresses.append(f"{host}:{port}")
                    break
                except ray.exceptions.RayTaskError:
                    time.sleep(0.05)

        fsd_config = load_config(None, environ={}, overrides={"daemon.output_dir": str(fsd_dir)})
        proms["fsd"] = common.Prometheus(
            common.prometheus_config(scrape_jobs(fsd_config)), name="quiet-fsd"
        ).start()
        proms["ray"] = common.Prometheus(
            common.prometheus_config([common.file_sd_job("rollout", ray_dir / "rollout.json")]),
            name="quiet-ray",
        ).start()

        dash = [
            psutil.Process(pid)
            for kind, pids in cluster.process_pids().items()
            if kind in ("dashboard", "gcs_server")
            for pid in pids
        ]
        baseline: dict[str, float] = {}
        if args.baseline > 0:
            print(
                f"baseline: Ray dashboard + GCS CPU for {args.baseline:g} s without the daemon ...",
                flush=True,
            )
            c0 = cpu_seconds(dash)
            time.sleep(args.baseline)
            baseline = {"seconds": args.baseline, "ray_cpu": cpu_seconds(dash) - c0}

        targets_file = work / "targets.json"
        targets_file.write_text(
            json.dumps([{"labels": {"source": "ray_style"}, "targets": addresses}])
        )
        rewriter = subprocess.Popen(
            [
                sys.executable,
                str(Path(common.__file__)),
                "rewriter",
                str(ray_dir / "rollout.json"),
                str(targets_file),
                str(common.RAY_FLUSH_PERIOD),
            ],
            cwd=str(common.REPO),
        )
        daemon = common.start_daemon(cluster.address, fsd_dir, work / "daemon.log")

        def settled() -> bool:
            try:
                data = json.loads((fsd_dir / "rollout.json").read_bytes())
            except (OSError, ValueError):
                return False
            return len(data) == args.servers and (fsd_dir / "ray.json").exists()

        wait_for(settled, 120, step=0.2)
        print(
            f"warm-up {args.warmup:g} s, then measuring {args.duration:g} s of no change ...",
            flush=True,
        )
        time.sleep(args.warmup)
        files = [fsd_dir / n for n in ("rollout.json", "gpu.json", "ray.json")]
        counter = ReplaceCounter([*files, ray_dir / "rollout.json"])
        counter.start()
        time.sleep(0.5)  # the counter's first pass records where each file stands

        fsd_tree = TreeCpu(daemon.pid)
        rw_procs = proc_tree(rewriter.pid)

        def reading(daemon: DaemonProcess, counter: ReplaceCounter) -> dict[str, Any]:
            """Where every measure stands now (the window is the difference of two)."""
            return {
                "time": time.monotonic(),
                "fsd_cpu": fsd_tree.sample(),
                "fsd_cpu_each": fsd_tree.each(),
                "ray_cpu": cpu_seconds(rw_procs),
                "dash_cpu": cpu_seconds(dash),
                "daemon_writes": common.metric_sum(
                    common.parse_metrics(daemon.metrics()), "fsd_daemon_writes_total"
                ),
                "prom": {k: prom_counters(p) for k, p in proms.items()},
                "counts": dict(counter.counts),
            }

        start = reading(daemon, counter)
        rss_samples: dict[str, list[list[int]]] = {"fsd": [], "ray": []}
        end_at = start["time"] + args.duration
        while time.monotonic() < end_at:
            fsd_tree.sample()
            rss_samples["fsd"].append(rss(proc_tree(daemon.pid)))
            rss_samples["ray"].append(rss(rw_procs))
            time.sleep(min(1.0, max(0.0, end_at - time.monotonic())))
        end = reading(daemon, counter)
        window = end["time"] - start["time"]
        fsd_replaced = sum(end["counts"][f] - start["counts"][f] for f in files)
        ray_path = ray_dir / "rollout.json"
        return {
            "servers": args.servers,
            "window": window,
            "baseline": baseline,
            "procs": {
                "fsd": [f"{name}({pid})" for pid, (name, _cpu) in end["fsd_cpu_each"].items()],
                "ray": [f"{p.name()}({p.pid})" for p in rw_procs],
            },
            "fsd": {
                "replaced": fsd_replaced,
                "daemon_writes": end["daemon_writes"] - start["daemon_writes"],
                "cpu": end["fsd_cpu"] - start["fsd_cpu"],
                "cpu_parts": [
                    cpu - start["fsd_cpu_each"].get(pid, (name, 0.0))[1]
                    for pid, (name, cpu) in end["fsd_cpu_each"].items()
                ],
                "rss": max(sum(s) for s in rss_samples["fsd"]),
                "rss_parts": rss_samples["fsd"][-1],
                "prom": {k: end["prom"]["fsd"][k] - start["prom"]["fsd"][k] for k in PROM_COUNTERS},
            },
            "ray": {
                "replaced": end["counts"][ray_path] - start["counts"][ray_path],
                "cpu": end["ray_cpu"] - start["ray_cpu"],
                "rss": max(sum(s) for s in rss_samples["ray"]),
                "rss_parts": rss_samples["ray"][-1],
                "prom": {k: end["prom"]["ray"][k] - start["prom"]["ray"][k] for k in PROM_COUNTERS},
            },
            "dash_cpu": end["dash_cpu"] - start["dash_cpu"],
        }
    finally:
        if counter is not None:
            counter.stop()
        common.stop_pid(rewriter)
        if daemon is not None:
            daemon.stop()
        for h in handles:
            with contextlib.suppress(Exception):
                ray.kill(h)
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.stop()
        for p in proms.values():
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


def summarize(r: dict[str, Any]) -> str:
    scale = 3600.0 / r["window"]
    f, y = r["fsd"], r["ray"]

    def row(label: str, a: float, b: float, per_hour: bool = True) -> list[Any]:
        if per_hour:
            a, b = a * scale, b * scale
        return [label, a, b, common.ratio(b, a)]

    rows = [
        row("target file replacements (stat poller)", f["replaced"], y["replaced"]),
        row("  daemon's own fsd_daemon_writes_total", f["daemon_writes"], float("nan")),
        row("Prometheus file rescans", f["prom"]["rescans"], y["prom"]["rescans"]),
        row("Prometheus rescan time (s)", f["prom"]["rescan_seconds"], y["prom"]["rescan_seconds"]),
        row("Prometheus file read errors", f["prom"]["read_errors"], y["prom"]["read_errors"]),
        row(
            "SD updates passed to scrape manager", f["prom"]["sd_updates"], y["prom"]["sd_updates"]
        ),
        row("scrape pool syncs", f["prom"]["pool_syncs"], y["prom"]["pool_syncs"]),
        row("writer CPU seconds", f["cpu"], y["cpu"]),
        row("writer peak RSS (MiB)", f["rss"] / 2**20, y["rss"] / 2**20, per_hour=False),
    ]
    rows[1][2] = "-"
    rows[1][3] = ""
    out = [
        f"Quiet cost per hour-equivalent: {r['window']:.0f} s measured with nothing changing, "
        f"x{scale:.1f} (linear); {r['servers']} rollout servers; daemon built-in defaults "
        "(2 s poll)",
        common.table(
            ["per hour (RSS: peak)", "fsd-daemon", "Ray's way (5 s rewrite)", "Ray's way / fsd"],
            rows,
        ),
        "",
        f"fsd processes (the daemon, then its children: multiprocessing's resource tracker and "
        f"the Ray bridge): {', '.join(r['procs']['fsd'])}; RSS each (MiB): "
        + ", ".join(f"{b / 2**20:.0f}" for b in f["rss_parts"])
        + "; CPU s/h each: "
        + ", ".join(f"{c * scale:.1f}" for c in f["cpu_parts"]),
        f"Ray's way process: {', '.join(r['procs']['ray'])} (a bare Python loop; Ray's real "
        "writer is a thread inside the dashboard, whose memory cannot be split off).",
        f"The daemon's CPU includes listing Ray's state API every 2 s (plus its bridge child); "
        f"the rewriter discovers nothing. Ray dashboard + GCS CPU during the window: "
        f"{r['dash_cpu'] * scale:.0f} s/h",
    ]
    if r["baseline"]:
        b = r["baseline"]
        out[-1] += (
            f"; without the daemon (baseline {b['seconds']:g} s): "
            f"{b['ray_cpu'] * 3600 / b['seconds']:.0f} s/h."
        )
    else:
        out[-1] += "."
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python bench/quiet_cost.py",
        description="Writes, Prometheus rescans, CPU and RSS of fsd-daemon over an "
        "hour-equivalent in which nothing changes, against a 5 s rewriter (Ray's way) in the "
        "same run. The measured window is scaled linearly to one hour.",
    )
    p.add_argument("--duration", type=float, default=120.0, help="measured window, seconds")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds after the daemon settles")
    p.add_argument(
        "--baseline",
        type=float,
        default=30.0,
        help="seconds of Ray dashboard CPU measured before the daemon starts (0: skip)",
    )
    p.add_argument("--servers", type=int, default=8, help="rollout servers (Ray actors)")
    return common.bench_main(p, run, summarize, argv)


if __name__ == "__main__":
    sys.exit(main())
