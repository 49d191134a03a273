"""A day of a run at 1,000 GPUs: backfilled history, dashboard panels and the report over it.

The live benchmark (bench/rules_scale.py) sees a few minutes of data; this one builds hours or
days of history for the same synthetic cluster (bench/_synthetic.py: 125 exporters x 8 GPUs,
256 rollout servers in four Ray jobs) and times the dashboards and ``fsd-daemon report`` over
it.

1. Series: the synthetic cluster is served for a few scrapes to a real Prometheus 2.42
   configured by ``fsd_daemon.prometheus.scrape_config.full_config`` (no rules), and every
   stored series is read back from ``/federate``: the exact names and label sets a live
   Prometheus keeps (target labels from rollout.json / gpu.json, ``job``, ``instance``, ``up``
   and the scrape series), so nothing drifts from the bodies the project renders.
2. History (numpy, one matrix per 2 h chunk, no loop per sample) at the shipped 15 s scrape
   interval: each awake job runs rollout steps whose replicas finish with a long tail (most near
   the median, a few late), then trains; the colocated job's engines stay asleep while its
   trainer works; counters of a replica grow only while it runs requests; running requests fall
   as a replica nears its finish; each GPU's busy seconds grow at its owner's duty (rollout
   GPUs while their replica runs, training GPUs between steps, unowned GPUs never); owners,
   info series and everything else keep their scraped values.
3. Each 2 h chunk is written as OpenMetrics text and turned into a block by ``promtool tsdb
   create-blocks-from openmetrics`` (promtool re-reads its whole input once per 2 h block, so
   one file per block keeps it linear), then deleted.
4. Recording rules: ``promtool tsdb create-blocks-from rules`` against a Prometheus serving the
   blocks, level by level (a rule that reads another recorded series is evaluated once the
   blocks of the rule it reads are in place: promtool evaluates each rule against the server
   only).
5. A Prometheus with the shipped rules and config serves the data dir; after its start-up
   compaction settles, every dashboard panel query is timed over the range
   (bench/dashboard_queries.py) and ``fsd-daemon report`` runs over the range under
   /usr/bin/time -v (wall time, peak RSS).

    .venv/bin/python bench/backfill_day.py --range 24h [--step 15] [--report DIR] [--json OUT]

Every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dashboard_queries
import rules_scale
from _common import Prometheus, free_port, http_get, stop_pid

from fsd_daemon.config import Config, DaemonSection, PrometheusSection
from fsd_daemon.mixin import names as n
from fsd_daemon.prometheus.scrape_config import full_config

# One OpenMetrics file per hour at 15 s: promtool re-reads its whole input once per 2 h block
# and maps it into memory (about 2x the file in RSS), so an hour (about 5 GiB of text) keeps it
# linear and within the machine's memory. At a coarser step a whole 2 h block per file.
CHUNK_SECONDS = 3600
BLOCK_SECONDS = 7200
SCRAPES_BEFORE_CAPTURE = 40.0
# Rollout steps per awake job: (period s, phase s). A step's median replica finishes at
# MEDIAN_SHARE of the period; the rest of the period is training (rollout idle).
STEP_PLAN = {"02000000": (300.0, 0.0), "03000000": (240.0, 70.0), "04000000": (420.0, 130.0)}
MEDIAN_SHARE = 0.45
# Training takes at least this long after the slowest replica: steps stay apart on the grid.
MIN_TRAIN_SECONDS = 60.0
TAIL_PROBABILITY = 0.03  # a replica is a straggler in this share of steps
RUNNING_AT_START = 32  # requests running on a replica when a step starts
# The colocated job's trainer: busy this many seconds of every period (engines asleep).
COLOCATED_TRAIN = (300.0, 200.0)
GROWTH_PER_ACTIVE_SECOND = 1.0 / 600.0
POWER_WATTS = 450.0
# Exporter series the model moves that the names module has no constant for (the dashboards
# and rules do not read them).
GPU_ENERGY_JOULES = "fsd_gpu_energy_joules_total"
GPU_UTILIZATION = "fsd_gpu_utilization_ratio"
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
_RUNNING = (n.VLLM_REQUESTS_RUNNING, n.SGLANG_REQUESTS_RUNNING)


# -- 1. the series a live Prometheus stores ---------------------------------------------------


def capture_series(work: Path) -> bytes:
    """/federate of a Prometheus (shipped config, no rules) after a few scrapes of the cluster."""
    targets = work / "targets"
    cluster = rules_scale.start_cluster(targets)
    prom = Prometheus(rules_scale.prometheus_yaml(targets, False), name="backfill-capture")
    try:
        prom.start()
        time.sleep(SCRAPES_BEFORE_CAPTURE)
        return http_get(prom.url + '/federate?match[]={__name__=~".%2B"}', timeout=120)
    finally:
        prom.stop()
        stop_pid(cluster)
        shutil.rmtree(prom.dir, ignore_errors=True)


@dataclass
class Universe:
    """Every series as a line prefix (``name{labels}``) with its model: what drives it and how."""

    prefixes: list[bytes]
    base: np.ndarray  # scraped value
    kind: np.ndarray  # KIND_* per series
    driver: np.ndarray  # replica index (rollout) or GPU index (gpu), -1 otherwise
    replica_job: list[str]  # ray job id per replica index
    gpu_owner: list[tuple[str, str, str]]  # (role, ray job id, replica) per GPU index


KIND_CONSTANT, KIND_COUNTER, KIND_RUNNING, KIND_BUSY, KIND_ENERGY, KIND_UTIL = range(6)


def parse_federate(body: bytes) -> Universe:
    prefixes: list[bytes] = []
    base: list[float] = []
    kind: list[int] = []
    driver: list[int] = []
    replicas: dict[tuple[str, str], int] = {}
    gpus: dict[tuple[str, str], int] = {}
    owners: dict[tuple[str, str], tuple[str, str, str]] = {}
    rows = []
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        prefix, value, _ts = line.rsplit(" ", 2)
        name = prefix.split("{", 1)[0]
        labels = dict(_LABEL.findall(prefix))
        rows.append((prefix, float(value), name, labels))
        if name == n.GPU_OWNER_INFO:
            key = (labels["instance"], labels[n.GPU])
            owner = (
                labels.get(n.ROLE, ""),
                labels.get(n.RAY_JOB_ID, ""),
                labels.get(n.REPLICA, ""),
            )
            # A GPU shared by a rollout engine and a trainer is driven by the rollout owner.
            if key not in owners or owner[0] == n.ROLE_ROLLOUT:
                owners[key] = owner
    for prefix, scraped, name, labels in rows:
        job = labels.get("job")
        k, d = KIND_CONSTANT, -1
        if name.endswith("_created") or name in ("up",) or name.startswith("scrape_"):
            pass
        elif job == n.JOB_ROLLOUT:
            d = replicas.setdefault(
                (labels.get(n.RAY_JOB_ID, ""), labels.get(n.REPLICA, "")), len(replicas)
            )
            if name in _RUNNING:
                k = KIND_RUNNING
            elif name.endswith(_COUNTER_SUFFIXES):
                k = KIND_COUNTER
        elif job == n.JOB_GPU and n.GPU in labels:
            d = gpus.setdefault((labels["instance"], labels[n.GPU]), len(gpus))
            if name == n.GPU_BUSY_SECONDS:
                k = KIND_BUSY
            elif name == GPU_ENERGY_JOULES:
                k = KIND_ENERGY
            elif name == GPU_UTILIZATION:
                k = KIND_UTIL
        prefixes.append(prefix.encode())
        base.append(scraped)
        kind.append(k)
        driver.append(d)
    replica_job = [""] * len(replicas)
    for (job_id, _r), i in replicas.items():
        replica_job[i] = job_id
    gpu_owner = [("", "", "")] * len(gpus)
    for key, i in gpus.items():
        gpu_owner[i] = owners.get(key, ("", "", ""))
    return Universe(
        prefixes, np.array(base), np.array(kind), np.array(driver), replica_job, gpu_owner
    )


# -- 2. history ---------------------------------------------------------------------------------


def step_durations(job: str, step: int, replicas: int, period: float) -> np.ndarray:
    """Seconds each replica of ``job`` runs in rollout step ``step``: near the median, a few
    stragglers (a long tail), never into the minimum training time."""
    rng = np.random.default_rng([int(job), step & 0xFFFFFFFF])
    x = rng.lognormal(0.0, 0.15, replicas)
    straggler = rng.random(replicas) < TAIL_PROBABILITY
    x[straggler] *= rng.uniform(1.5, 2.4, int(straggler.sum()))
    return np.minimum(period * MEDIAN_SHARE * x, period - MIN_TRAIN_SECONDS)


class History:
    """The cluster's state on a time grid, chunk after chunk (cumulative values carry over)."""

    def __init__(self, universe: Universe, step: float) -> None:
        self.u = universe
        self.step = step
        self.active_seconds = np.zeros(len(universe.replica_job))
        self.busy_seconds = np.zeros(len(universe.gpu_owner))
        self.replica_rows = {
            job: np.flatnonzero(np.array(universe.replica_job) == job) for job in STEP_PLAN
        }
        self.gpu_role = np.array([o[0] for o in universe.gpu_owner])
        self.gpu_job = np.array([o[1] for o in universe.gpu_owner])
        # GPU -> replica index of its rollout owner (-1: none): set by set_replica_keys
        self.gpu_replica = np.full(len(universe.gpu_owner), -1)

    def set_replica_keys(self, keys: dict[tuple[str, str], int]) -> None:
        for g, (role, job, replica) in enumerate(self.u.gpu_owner):
            if role == n.ROLE_ROLLOUT:
                self.gpu_replica[g] = keys.get((job, replica), -1)

    def activity(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(running requests, replica runs) per replica x grid time."""
        running = np.zeros((len(self.u.replica_job), len(t)))
        for job, (period, phase) in STEP_PLAN.items():
            rows = self.replica_rows[job]
            if not len(rows):
                continue
            k = np.floor((t - phase) / period).astype(np.int64)
            offset = t - phase - k * period
            for step in np.unique(k):
                cols = np.flatnonzero(k == step)
                d = step_durations(job, int(step), len(rows), period)[:, None]
                left = np.clip((d - offset[cols][None, :]) / d, 0.0, 1.0)
                running[np.ix_(rows, cols)] = np.ceil(RUNNING_AT_START * left**2)
        return running, running > 0

    def gpu_duty(self, t: np.ndarray, runs: np.ndarray) -> np.ndarray:
        duty = np.zeros((len(self.u.gpu_owner), len(t)))
        rollout = self.gpu_replica >= 0
        duty[rollout] = np.where(runs[self.gpu_replica[rollout]], 0.85, 0.01)
        for job, rows in self.replica_rows.items():
            training = ~runs[rows].any(axis=0) if len(rows) else np.zeros(len(t), bool)
            mask = (self.gpu_role != n.ROLE_ROLLOUT) & (self.gpu_job == job)
            duty[mask] = np.where(training, 0.9, 0.05)
        colocated = (self.gpu_job != "") & ~np.isin(self.gpu_job, list(STEP_PLAN))
        period, busy = COLOCATED_TRAIN
        duty[colocated] = np.where(np.mod(t, period) < busy, 0.9, 0.02)
        return duty

    def chunk(self, t: np.ndarray, elapsed: np.ndarray) -> np.ndarray:
        """Every series' value (series x grid time)."""
        u = self.u
        running, runs = self.activity(t)
        active = self.active_seconds[:, None] + np.cumsum(runs, axis=1) * self.step
        self.active_seconds = active[:, -1].copy()
        duty = self.gpu_duty(t, runs)
        busy = self.busy_seconds[:, None] + np.cumsum(duty, axis=1) * self.step
        self.busy_seconds = busy[:, -1].copy()
        values = np.repeat(u.base[:, None], len(t), axis=1)
        for kind, source in (
            (KIND_COUNTER, 1.0 + GROWTH_PER_ACTIVE_SECOND * active),
            (KIND_RUNNING, running),
            (KIND_BUSY, busy),
            (KIND_UTIL, duty),
        ):
            rows = np.flatnonzero(u.kind == kind)
            if kind == KIND_COUNTER:
                values[rows] = u.base[rows, None] * source[u.driver[rows]]
            elif kind == KIND_BUSY:
                values[rows] = u.base[rows, None] + source[u.driver[rows]]
            else:
                values[rows] = source[u.driver[rows]]
        rows = np.flatnonzero(u.kind == KIND_ENERGY)
        values[rows] = u.base[rows, None] + POWER_WATTS * elapsed[None, :]
        return values


# -- 3. OpenMetrics text, vectorised ------------------------------------------------------------

VALUE_DIGITS = 9  # significant digits: d.dddddddde+XX
VALUE_WIDTH = VALUE_DIGITS + 5


def format_values(v: np.ndarray) -> np.ndarray:
    """Non-negative floats as fixed-width ASCII 'd.dddddddde+XX' (uint8, shape + (14,))."""
    v = np.asarray(v, dtype=np.float64)
    if (v < 0).any() or not np.isfinite(v).all():
        raise ValueError("only finite non-negative values are written")
    zero = v == 0
    safe = np.where(zero, 1.0, v)
    e = np.floor(np.log10(safe)).astype(np.int64)
    m = np.rint(safe / 10.0**e * 10 ** (VALUE_DIGITS - 1)).astype(np.int64)
    over = m >= 10**VALUE_DIGITS
    m[over] //= 10
    e[over] += 1
    low = m < 10 ** (VALUE_DIGITS - 1)  # log10 rounding just below a power of ten
    m[low] *= 10
    e[low] -= 1
    m[zero] = 0
    e[zero] = 0
    out = np.empty((*v.shape, VALUE_WIDTH), dtype=np.uint8)
    digits = np.empty((*v.shape, VALUE_DIGITS), dtype=np.int64)
    for i in range(VALUE_DIGITS - 1, -1, -1):
        digits[..., i] = m % 10
        m //= 10
    out[..., 0] = digits[..., 0] + 48
    out[..., 1] = ord(".")
    out[..., 2 : VALUE_DIGITS + 1] = digits[..., 1:] + 48
    out[..., VALUE_DIGITS + 1] = ord("e")
    out[..., VALUE_DIGITS + 2] = np.where(e < 0, ord("-"), ord("+"))
    ae = np.abs(e)
    out[..., VALUE_DIGITS + 3] = ae // 10 + 48
    out[..., VALUE_DIGITS + 4] = ae % 10 + 48
    return out


def write_openmetrics(
    path: Path, prefixes: list[bytes], values: np.ndarray, t: np.ndarray, batch: int = 512
) -> int:
    """``prefix value timestamp`` lines, series after series (each in time order): grouped by
    prefix length so each group is one uint8 matrix. Returns bytes written."""
    ts = np.array([f"{int(x):010d}".encode() for x in t])
    ts_bytes = np.frombuffer(b"".join(ts), dtype=np.uint8).reshape(len(t), 10)
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prefixes):
        by_length.setdefault(len(p), []).append(i)
    written = 0
    with open(path, "wb") as f:
        for length, rows_all in by_length.items():
            for lo in range(0, len(rows_all), batch):
                rows = rows_all[lo : lo + batch]
                pre = np.frombuffer(b"".join(prefixes[i] for i in rows), dtype=np.uint8)
                pre = pre.reshape(len(rows), length)
                width = length + VALUE_WIDTH + 13
                out = np.empty((len(rows), len(t), width), dtype=np.uint8)
                out[:, :, :length] = pre[:, None, :]
                out[:, :, length] = ord(" ")
                out[:, :, length + 1 : length + 1 + VALUE_WIDTH] = format_values(values[rows])
                out[:, :, length + 1 + VALUE_WIDTH] = ord(" ")
                out[:, :, length + 2 + VALUE_WIDTH : width - 1] = ts_bytes[None, :, :]
                out[:, :, width - 1] = ord("\n")
                f.write(out.data)
                written += out.nbytes
        f.write(b"# EOF\n")
    return written + 6


# -- 4. rules, level by level -------------------------------------------------------------------

RULES_DIR = rules_scale.RULES_DIR
_RECORDED = re.compile(r"[a-zA-Z_]+:[a-zA-Z0-9_:]+")


def rule_levels() -> list[dict[str, Any]]:
    """The shipped recording rules split into levels: level 0 reads only scraped series, level
    k reads a series recorded at level k-1 at most. Each level is one rule-file document."""
    rules = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    rules.append((group, rule))
    recorded = {r["record"] for _, r in rules}
    level: dict[str, int] = {}
    while len(level) < len(rules):
        for _group, rule in rules:
            if rule["record"] in level:
                continue
            deps = {d for d in _RECORDED.findall(rule["expr"]) if d in recorded}
            if all(d in level for d in deps):
                level[rule["record"]] = 1 + max((level[d] for d in deps), default=-1)
    docs = []
    for k in range(max(level.values()) + 1):
        groups: dict[str, list[dict[str, Any]]] = {}
        intervals = {}
        for group, rule in rules:
            if level[rule["record"]] == k:
                groups.setdefault(group["name"], []).append(rule)
                intervals[group["name"]] = group.get("interval", "15s")
        docs.append(
            {
                "groups": [
                    {"name": g, "interval": intervals[g], "rules": rs} for g, rs in groups.items()
                ]
            }
        )
    return docs


class Store:
    """A Prometheus on an existing data dir (no scraping unless ``config`` says so)."""

    def __init__(self, data: Path, config: dict[str, Any], name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"fsd-bench-{name}-"))
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(json.dumps(config))
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 600.0) -> Store:
        binary = shutil.which("prometheus")
        assert binary is not None
        self.log = open(self.dir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data}",
                "--storage.tsdb.retention.time=3650d",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.dir / "prometheus.log").read_text()[-2000:])
            try:
                http_get(self.url + "/-/ready", timeout=2)
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("prometheus not ready")

    def metric(self, name: str) -> float:
        for line in http_get(self.url + "/metrics").decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def stop(self) -> None:
        stop_pid(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def empty_config(work: Path, with_rules: bool, rule_files: tuple[str, ...] = ()) -> dict[str, Any]:
    """The shipped config (full_config) over an empty targets dir: nothing is scraped."""
    targets = work / "no-targets"
    targets.mkdir(exist_ok=True)
    files = tuple(str(p) for p in sorted(RULES_DIR.glob("*.yml"))) if with_rules else rule_files
    config = Config(
        daemon=DaemonSection(output_dir=str(targets), metrics_listen=""),
        prometheus=PrometheusSection(rule_files=files),
    )
    return full_config(config)


def backfill_rules(work: Path, data: Path, start: float, end: float, step: float) -> list[float]:
    """Seconds per level."""
    seconds = []
    for k, doc in enumerate(rule_levels()):
        rule_file = work / f"level{k}.rules.yml"
        rule_file.write_text(yaml.safe_dump(doc))
        out = work / f"rules-out-{k}"
        store = Store(data, empty_config(work, False), f"backfill-rules{k}").start()
        t0 = time.monotonic()
        try:
            done = subprocess.run(
                [
                    "promtool", "tsdb", "create-blocks-from", "rules", "--quiet",
                    f"--url={store.url}", f"--start={int(start)}", f"--end={int(end)}",
                    f"--eval-interval={step:.0f}s", f"--output-dir={out}", str(rule_file),
                ],
                capture_output=True, text=True,
            )  # fmt: skip
        finally:
            store.stop()
        if done.returncode:
            raise RuntimeError(f"rules level {k}: {done.stderr[-1500:]}")
        for block in out.iterdir():
            if block.is_dir():
                block.rename(data / block.name)
        shutil.rmtree(out, ignore_errors=True)
        seconds.append(round(time.monotonic() - t0, 1))
        print(f"rules level {k}: {seconds[-1]} s", flush=True)
    return seconds


# -- 5. measure ---------------------------------------------------------------------------------


def wait_compaction(store: Store, quiet: float = 90.0, limit: float = 1800.0) -> float:
    """Seconds until the compaction count has not moved for ``quiet`` seconds (Prometheus
    compacts the backfilled 2 h blocks on start, as a live one would have over the range)."""
    t0 = time.monotonic()
    last, since = -1.0, time.monotonic()
    while time.monotonic() - t0 < limit:
        count = store.metric("prometheus_tsdb_compactions_total")
        count += store.metric("prometheus_tsdb_vertical_compactions_total")
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(5)
    return round(since - t0, 1)


def du_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--range", default="24h", help="history length: 1h, 24h, 7d")
    parser.add_argument("--step", type=float, default=15.0, help="sample step, s (15: shipped)")
    parser.add_argument("--work", type=Path, help="work dir (kept); default: a new temp dir")
    parser.add_argument("--report", type=Path, help="write the report here (and time it)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-rules", action="store_true", help="skip the rules backfill")
    args = parser.parse_args(argv)
    range_s = dashboard_queries.parse_duration(args.range)
    work = args.work or Path(tempfile.mkdtemp(prefix="fsd-bench-backfill-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    data.mkdir(exist_ok=True)
    result: dict[str, Any] = {"range": args.range, "step_s": args.step, "work": str(work)}
    result["load_average_start"] = [round(x, 2) for x in os.getloadavg()]

    t0 = time.monotonic()
    universe = parse_federate(capture_series(work))
    result["series"] = len(universe.prefixes)
    result["capture_s"] = round(time.monotonic() - t0, 1)
    print(f"{len(universe.prefixes)} series captured in {result['capture_s']} s", flush=True)

    end = math.floor(time.time() / args.step) * args.step
    start = end - range_s
    history = History(universe, args.step)
    keys: dict[tuple[str, str], int] = {}
    for prefix, d, kind in zip(universe.prefixes, universe.driver, universe.kind, strict=True):
        if kind == KIND_RUNNING:
            labels = dict(_LABEL.findall(prefix.decode()))
            keys[(labels[n.RAY_JOB_ID], labels[n.REPLICA])] = int(d)
    history.set_replica_keys(keys)

    grid = np.arange(start + args.step, end + args.step / 2, args.step)
    chunk_s = CHUNK_SECONDS if args.step < 30 else BLOCK_SECONDS
    edges = np.arange(math.floor(start / chunk_s) * chunk_s, end + 1, chunk_s)
    chunks = [grid[(grid >= lo) & (grid < lo + chunk_s)] for lo in edges]
    chunks = [t for t in chunks if len(t)]
    totals = {"generate_s": 0.0, "bytes": 0, "samples": 0}

    def generate(i: int) -> Path:
        """Chunk i as OpenMetrics text (in a thread: numpy and file writes release the GIL,
        so the next chunk is written while promtool reads this one)."""
        g0 = time.monotonic()
        t = chunks[i]
        values = history.chunk(t, t - start)
        path = work / f"chunk-{i}.om"
        totals["bytes"] += write_openmetrics(path, universe.prefixes, values, t)
        totals["samples"] += values.size
        totals["generate_s"] += time.monotonic() - g0
        return path

    wall0 = time.monotonic()
    promtool_s = 0.0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(generate, 0)
        for i in range(len(chunks)):
            chunk_file = pending.result()
            if i + 1 < len(chunks):
                pending = pool.submit(generate, i + 1)
            p0 = time.monotonic()
            done = subprocess.run(
                ["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                 str(chunk_file), str(data)],
                capture_output=True, text=True,
            )  # fmt: skip
            chunk_file.unlink()
            if done.returncode:
                raise RuntimeError(f"promtool openmetrics: {done.stderr[-1500:]}")
            promtool_s += time.monotonic() - p0
            print(
                f"chunk {i + 1}/{len(chunks)} ({len(chunks[i])} steps): promtool "
                f"{time.monotonic() - p0:.1f} s, generation so far {totals['generate_s']:.1f} s",
                flush=True,
            )
    samples, text_bytes, gen_s = totals["samples"], totals["bytes"], totals["generate_s"]
    result["history_wall_s"] = round(time.monotonic() - wall0, 1)
    result.update(
        start=start,
        end=end,
        samples=samples,
        openmetrics_gib=round(text_bytes / 2**30, 2),
        generate_s=round(gen_s, 1),
        promtool_openmetrics_s=round(promtool_s, 1),
        raw_blocks_mib=round(du_bytes(data) / 2**20, 1),
    )
    if not args.no_rules:
        levels = backfill_rules(work, data, start, end, args.step)
        result["rules_levels_s"] = levels
        result["rules_total_s"] = round(sum(levels), 1)
    result["data_mib_before_compaction"] = round(du_bytes(data) / 2**20, 1)

    store = Store(data, empty_config(work, True), "backfill-serve")
    t_start = time.monotonic()
    store.start()
    result["prometheus_ready_s"] = round(time.monotonic() - t_start, 1)
    try:
        result["compaction_settled_s"] = wait_compaction(store)
        result["data_mib"] = round(du_bytes(data) / 2**20, 1)
        result["prometheus_rss_mib_before_queries"] = round(
            store.metric("process_resident_memory_bytes") / 2**20
        )
        result["load_average_queries"] = [round(x, 2) for x in os.getloadavg()]
        panels = dashboard_queries.run(store.url, range_s, end)
        seconds = [r["seconds"] for r in panels]
        result["panels_median_s"] = round(statistics.median(seconds), 3)
        result["panels_max_s"] = max(seconds)
        result["panels_over_2s"] = sum(1 for s in seconds if s >= 2.0)
        result["panels_empty"] = [r["panel"] for r in panels if not r["series"] and not r["error"]]
        result["panels_error"] = [(r["panel"], r["error"]) for r in panels if r["error"]]
        result["panels_slowest"] = panels[:8]
        result["panels"] = panels
        if args.report:
            result["load_average_report"] = [round(x, 2) for x in os.getloadavg()]
            result["report"] = rules_scale.timed_report(
                store.url, ["--from", f"{start:.0f}", "--to", f"{end:.0f}"], args.report, 1800
            )
        result["prometheus_rss_mib_after"] = round(
            store.metric("process_resident_memory_bytes") / 2**20
        )
    finally:
        store.stop()
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "panels"}, indent=1))
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
