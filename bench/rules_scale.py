"""The shipped rules at the users' scale: 1,000 GPUs and 256 rollout servers, real Prometheus.

Starts the synthetic cluster of bench/_synthetic.py (125 GPU exporters of 8 GPUs, 256 vLLM and
SGLang servers in four Ray jobs, one colocated job's engines asleep) in one serving process,
writes rollout.json and gpu.json as fsd-daemon does, and runs two Prometheus 2.42 side by side
on the same targets, configured by ``fsd_daemon.prometheus.scrape_config.full_config`` (15 s scrape
and
evaluation interval): one with the shipped rule files, one without. Both scrape the same bodies
under the same machine load, so the CPU ratio between them is the rules' cost even on a shared
machine.

Measured over the window after a warm-up:
  * per rule group: prometheus_rule_group_last_duration_seconds sampled every interval
    (median and max), against prometheus_rule_group_interval_seconds (goal: under 10%);
  * per rule: evaluationTime from /api/v1/rules, summed over samples: the costliest rules;
  * CPU seconds of each Prometheus process over the window (goal: rules add at most 25%).

    .venv/bin/python bench/rules_scale.py [--warmup 150] [--window 300] [--json OUT]

Every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _synthetic
import dashboard_queries
from _common import REPO, Prometheus, http_get, stop_pid
from prometheus_client.parser import text_string_to_metric_families

from fsd_daemon.config import Config, DaemonSection, PrometheusSection
from fsd_daemon.prometheus.scrape_config import full_config

RULES_DIR = REPO / "fsd_daemon" / "assets" / "prometheus" / "rules"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def serve_main(directory: Path) -> int:
    """The serving process: plan, bind, write targets, print 'ready', serve until SIGTERM."""
    cluster = _synthetic.plan()
    bodies = _synthetic.Bodies(cluster, time.time())

    async def main() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        task = asyncio.create_task(_synthetic.serve(cluster, bodies, ready, stop))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises what stopped it
        _synthetic.write_targets(cluster, directory)
        print("ready", flush=True)
        await task

    asyncio.run(main())
    return 0


def start_cluster(directory: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(directory)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        stop_pid(proc)
        raise RuntimeError(f"synthetic cluster did not start: {line!r}")
    return proc


def prometheus_yaml(targets_dir: Path, with_rules: bool) -> dict[str, Any]:
    rule_files = tuple(str(p) for p in sorted(RULES_DIR.glob("*.yml"))) if with_rules else ()
    config = Config(
        daemon=DaemonSection(output_dir=str(targets_dir), metrics_listen=""),
        prometheus=PrometheusSection(rule_files=rule_files),
    )
    return full_config(config)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def group_metrics(prom: Prometheus) -> dict[str, dict[str, float]]:
    """Per rule group: last duration, interval, and last evaluation's sample count."""
    out: dict[str, dict[str, float]] = {}
    text = http_get(prom.url + "/metrics").decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            group = s.labels.get("rule_group", "")
            if not group:
                continue
            group = group.rsplit(";", 1)[-1]
            if s.name in (
                "prometheus_rule_group_last_duration_seconds",
                "prometheus_rule_group_interval_seconds",
                "prometheus_rule_group_last_evaluation_samples",
            ):
                out.setdefault(group, {})[s.name.removeprefix("prometheus_rule_group_")] = s.value
    return out


def rule_times(prom: Prometheus) -> dict[tuple[str, str], float]:
    data = json.loads(http_get(prom.url + "/api/v1/rules"))
    out = {}
    for group in data["data"]["groups"]:
        for rule in group["rules"]:
            out[(group["name"], rule["name"])] = float(rule.get("evaluationTime", 0.0))
    return out


def scraped_up(prom: Prometheus) -> tuple[int, int]:
    data = json.loads(http_get(prom.url + "/api/v1/query?query=sum(up)%20or%20vector(0)"))
    up = int(float(data["data"]["result"][0]["value"][1]))
    return up, len(prom.active_targets())


def timed_report(url: str, window: list[str], output: Path, timeout: float = 600) -> dict[str, Any]:
    """``fsd-daemon report`` over ``window`` (``--since 5m`` or ``--from``/``--to``) under
    ``/usr/bin/time -v``: exit status, wall seconds, peak RSS, the tails of its output."""
    cli = Path(sys.executable).with_name("fsd-daemon")
    command = ["/usr/bin/time", "-v", str(cli), "report", "--prometheus", url, *window]
    command += ["--output", str(output)]
    t0 = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    peak_kib = next(
        (int(line.split()[-1]) for line in done.stderr.splitlines() if "Maximum resident" in line),
        0,
    )
    return {
        "rc": done.returncode,
        "wall_s": round(wall, 2),
        "peak_rss_mib": peak_kib // 1024,
        "stdout_tail": done.stdout[-600:],
        "stderr_tail": done.stderr[-600:] if done.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=150.0)
    parser.add_argument("--window", type=float, default=300.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--panels",
        action="store_true",
        help="then time every dashboard panel's query over the data gathered (bench/"
        "dashboard_queries.py against the Prometheus with rules)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        help="then run `fsd-daemon report --since <run>` into this directory under "
        "/usr/bin/time -v (wall time, peak RSS)",
    )
    args = parser.parse_args(argv)
    if args.serve:
        return serve_main(args.serve)

    targets_dir = Path(tempfile.mkdtemp(prefix="fsd-bench-rules-scale-"))
    cluster = None
    proms: dict[str, Prometheus] = {}
    try:
        cluster = start_cluster(targets_dir)
        started = time.time()
        for name, with_rules in (("rules", True), ("norules", False)):
            proms[name] = Prometheus(prometheus_yaml(targets_dir, with_rules), name=name).start()
        print(f"targets in {targets_dir}; warming up {args.warmup:.0f} s", flush=True)
        time.sleep(args.warmup)
        for name, prom in proms.items():
            up, total = scraped_up(prom)
            print(f"{name}: {up} of {total} targets up", flush=True)
        load_start = os.getloadavg()[0]
        cpu0 = {name: cpu_seconds(p.pid) for name, p in proms.items()}
        cpu0["cluster"] = cpu_seconds(cluster.pid)
        t0 = time.monotonic()
        samples: dict[str, list[float]] = {}
        intervals: dict[str, float] = {}
        eval_samples: dict[str, float] = {}
        per_rule: dict[tuple[str, str], list[float]] = {}
        while time.monotonic() - t0 < args.window:
            time.sleep(15.0)
            for group, values in group_metrics(proms["rules"]).items():
                samples.setdefault(group, []).append(values["last_duration_seconds"])
                intervals[group] = values["interval_seconds"]
                eval_samples[group] = values.get("last_evaluation_samples", 0.0)
            for key, seconds in rule_times(proms["rules"]).items():
                per_rule.setdefault(key, []).append(seconds)
        elapsed = time.monotonic() - t0
        cpu = {name: cpu_seconds(p.pid) - cpu0[name] for name, p in proms.items()}
        cpu["cluster"] = cpu_seconds(cluster.pid) - cpu0["cluster"]
        load_end = os.getloadavg()[0]
        result: dict[str, Any] = {
            "window_s": round(elapsed, 1),
            "load_average": [round(load_start, 2), round(load_end, 2)],
            "cpu_share": {k: round(v / elapsed, 4) for k, v in cpu.items()},
            "rss_bytes": {name: rss_bytes(p.pid) for name, p in proms.items()},
            "rules_cpu_increase": round(cpu["rules"] / cpu["norules"] - 1, 3),
            "groups": {
                g: {
                    "interval_s": intervals[g],
                    "median_s": round(statistics.median(v), 4),
                    "max_s": round(max(v), 4),
                    "max_share_of_interval": round(max(v) / intervals[g], 4),
                    "samples_written": eval_samples[g],
                }
                for g, v in sorted(samples.items())
            },
            "rules_by_cost": [
                {
                    "group": g,
                    "rule": r,
                    "median_s": round(statistics.median(v), 5),
                    "max_s": round(max(v), 5),
                }
                for (g, r), v in sorted(per_rule.items(), key=lambda kv: -statistics.median(kv[1]))[
                    :12
                ]
            ],
        }
        if args.panels:
            since_start = time.time() - started
            result["panels_range_s"] = round(since_start)
            result["panels"] = dashboard_queries.run(proms["rules"].url, since_start, time.time())
        if args.report:
            result["report"] = timed_report(
                proms["rules"].url, ["--since", f"{time.time() - started:.0f}s"], args.report
            )
        print(json.dumps(result, indent=1))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    finally:
        for prom in proms.values():
            prom.stop()
        stop_pid(cluster)


if __name__ == "__main__":
    sys.exit(main())
