"""Helpers shared by the daemon benchmarks: a real Prometheus, Ray's 5 s rewriter, tables.

Everything binds to 127.0.0.1 on free ports, lives in temp directories, and every process
started here is stopped by its PID (SIGTERM, then SIGKILL) in a ``finally``.

Run as ``python bench/_common.py rewriter FILE TARGETS_JSON [INTERVAL]`` it is the standalone
5 s rewriter (Ray's way) that bench/quiet_cost.py measures as a process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from fsd_daemon.sim.launch import free_port, stop_process

# Before anything imports ray: a loopback-only single-machine cluster, no usage reporting
# (the same settings as tests/conftest.py). Child processes inherit them.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parent.parent

from fsd_daemon.sim.harness import DaemonProcess  # noqa: E402

# Ray's PrometheusServiceDiscoveryWriter flushes every 5 s (ray/_private/metrics_agent.py).
RAY_FLUSH_PERIOD = 5.0


def stop_pid(proc: subprocess.Popen[Any] | None, timeout: float = 15.0) -> None:
    """SIGTERM the process by its PID, SIGKILL it if it has not gone within ``timeout``."""
    if proc is not None:
        stop_process(proc, timeout)


def http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return bytes(r.read())


def http_answers(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` answers 2xx now (a readiness probe)."""
    try:
        http_get(url, timeout=timeout)
        return True
    except OSError:
        return False


def http_post(url: str, timeout: float = 30.0) -> int:
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return int(r.status)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {"name{labels}": value}, labels in the order written.

    prometheus_client's parser; like it, it names the samples of a counter whose name lacks
    ``_total`` with ``_total`` added.
    """
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            out[sample.name + (f"{{{labels}}}" if labels else "")] = float(sample.value)
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metric_sum(metrics: dict[str, float], name: str, contains: str = "") -> float:
    """Sum of every series of ``name`` whose label text contains ``contains``."""
    total = 0.0
    for key, value in metrics.items():
        base, _, labels = key.partition("{")
        if base == name and contains in labels:
            total += value
    return total


class Prometheus:
    """A real Prometheus (the Debian 2.42 binary) on a free 127.0.0.1 port, in a temp dir."""

    def __init__(
        self, config: dict[str, Any], *, lifecycle: bool = False, name: str = "prom"
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise SystemExit("prometheus is not installed (Debian package 'prometheus')")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix=f"fsd-bench-{name}-"))
        self.config_path = self.dir / "prometheus.yml"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lifecycle = lifecycle
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(config)

    def write_config(self, config: dict[str, Any]) -> None:
        """Rewrite prometheus.yml (JSON is YAML); atomically, as an editor or verl would."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=1))
        os.replace(tmp, self.config_path)

    def start(self, timeout: float = 60.0) -> Prometheus:
        args = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        if self.lifecycle:
            args.append("--web.enable-lifecycle")
        self.log = open(self.dir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_tail()}")
            try:
                http_get(self.url + "/-/ready", timeout=2)
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready within {timeout}s: {self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.dir / "prometheus.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def reload(self) -> None:
        http_post(self.url + "/-/reload")

    def active_targets(self, job: str | None = None) -> list[dict[str, Any]]:
        data = json.loads(http_get(self.url + "/api/v1/targets?state=active", timeout=60))
        targets = data["data"]["activeTargets"]
        if job is not None:
            targets = [t for t in targets if t.get("scrapePool") == job]
        return list(targets)

    def active_instances(self, job: str | None = None) -> set[str]:
        return {t["labels"].get("instance", "") for t in self.active_targets(job)}

    def metrics(self) -> dict[str, float]:
        return parse_metrics(http_get(self.url + "/metrics").decode())

    def stop(self) -> None:
        stop_pid(self.proc)
        if getattr(self, "log", None) is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def prometheus_config(
    jobs: Sequence[dict[str, Any]], scrape_interval: str = "15s", timeout: str = "10s"
) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": timeout},
        "scrape_configs": list(jobs),
    }


def file_sd_job(name: str, path: Path | str) -> dict[str, Any]:
    # refresh_interval as fsd-daemon's own generated config: inotify does the work.
    return {"job_name": name, "file_sd_configs": [{"files": [str(path)], "refresh_interval": "5m"}]}


def ray_style_write(path: Path, content: Any) -> None:
    """Ray's PrometheusServiceDiscoveryWriter.write(): json.dumps, temp file, os.replace.

    No fsync, no change check: it writes whether or not anything changed.
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(content))
    os.replace(tmp, path)


def rewriter_main(argv: Sequence[str]) -> int:
    """The 5 s rewriter as a process of its own (quiet_cost measures its CPU and RSS)."""
    path, targets_file = Path(argv[0]), Path(argv[1])
    interval = float(argv[2]) if len(argv) > 2 else RAY_FLUSH_PERIOD
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    next_write = time.monotonic()
    while not stop:
        # Like Ray's writer, it rebuilds the content from its source on every flush.
        content = json.loads(targets_file.read_text())
        ray_style_write(path, content)
        next_write += interval
        while not stop and time.monotonic() < next_write:
            time.sleep(min(0.2, max(0.0, next_write - time.monotonic())))
    return 0


def start_daemon(
    ray_address: str,
    out_dir: Path,
    log_path: Path,
    *,
    log_level: str = "info",
    serve_metrics: bool = True,
    **settings: Any,
) -> DaemonProcess:
    """``fsd-daemon run`` with its built-in defaults plus ``settings`` and nothing inherited
    from this shell's FSD_* or RAY_ADDRESS; self-metrics on a free 127.0.0.1 port."""
    return DaemonProcess(
        ray_address,
        out_dir,
        defaults={},
        clean_env=True,
        log_path=log_path,
        log_level=log_level,
        serve_metrics=serve_metrics,
        cwd=REPO,
        **settings,
    )


def start_exporter(
    *args: str, sample_interval: float
) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    """``python -m fsd_daemon.gpu.cli *args`` on a free 127.0.0.1 port, sampling every
    ``sample_interval`` s; returns the process (stop it by PID), its /metrics URL, its command."""
    port = free_port()
    command = [sys.executable, "-m", "fsd_daemon.gpu.cli", *args]
    command += ["--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
    env = {**os.environ, "FSD_EXPORTER_SAMPLE_INTERVAL_SECONDS": str(sample_interval)}
    proc = subprocess.Popen(command, cwd=REPO, env=env)
    return proc, f"http://127.0.0.1:{port}/metrics", command


def bench_main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    summarize: Callable[[dict[str, Any]], str],
    argv: Sequence[str] | None,
    *,
    json_what: str = "results",
) -> int:
    """A bench's main(): adds ``--json``, prints the machine, runs, writes the JSON, summarizes."""
    parser.add_argument("--json", metavar="FILE", help=f"also write the raw {json_what} here")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print()
    print(summarize(result))
    return 0


def percentile(values: Iterable[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(a: float, b: float) -> str:
    """``a / b`` as "12.3x"; "inf" when b is 0 and a is not."""
    if b == 0:
        return "n/a" if a == 0 else "inf"
    return f"{a / b:.3g}x"


def machine() -> str:
    """One line: CPU model, cores, RAM, OS, Python, Prometheus version."""
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    ram = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    prom = "?"
    try:
        out = subprocess.run(
            ["prometheus", "--version"], capture_output=True, text=True, timeout=10
        )
        prom = (out.stdout or out.stderr).split()[2]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return (
        f"{model}, {os.cpu_count()} cores, {ram:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, Prometheus {prom}"
    )


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "rewriter":
        sys.exit(rewriter_main(sys.argv[2:]))
    print(__doc__)
    sys.exit(2)
