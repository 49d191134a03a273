"""``fsd-daemon report``: ask Prometheus, write PNGs and one HTML page, print a summary.

Exit status: 0 when the report was written (parts without data are listed, the rest drawn);
1 when Prometheus cannot be reached or has no data at all in the range; 2 for bad arguments.
Importing this module is cheap: matplotlib loads only when a report is drawn.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_NO_REPORT, EXIT_USAGE = 0, 1, 2
DEFAULT_PROMETHEUS = "http://127.0.0.1:9090"
# Prometheus' own duration syntax, e.g. 90s, 2h, 1h30m.
_DURATION_RE = re.compile(r"(?:(\d{1,9})(ms|s|m|h|d|w))+\Z")
_DURATION_PART_RE = re.compile(r"(\d{1,9})(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Ray job ids are hex ("02000000"); the value goes into a PromQL matcher, so nothing else.
_JOB_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
# What the report's extra installs (pyproject.toml, [project.optional-dependencies] report).
_DRAWING_MODULES = ("matplotlib", "numpy")
# A cluster label value that goes into a PromQL matcher: host names, Slurm and pod names.
_CLUSTER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}\Z")
# Grid points per series: at most what one Prometheus range query returns (11,000).
MAX_GRID_POINTS = 10_000


class UsageError(ValueError):
    pass


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="from Prometheus: the rollout long tail, idle GPUs, rightsizing (PNG + HTML)",
        description="Ask Prometheus about a time range and write a directory with PNG figures "
        "and one self-contained HTML page (index.html), then print a short summary.",
    )
    p.add_argument(
        "--prometheus",
        metavar="URL",
        default=DEFAULT_PROMETHEUS,
        help=f"Prometheus base URL (default {DEFAULT_PROMETHEUS})",
    )
    p.add_argument(
        "--since",
        metavar="DURATION",
        help="the range ends now and lasts this long (e.g. 30m, 2h; default 1h)",
    )
    p.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="range start: ISO 8601 (UTC unless it says) or unix seconds",
    )
    p.add_argument("--to", dest="end", metavar="TIME", help="range end (default now)")
    p.add_argument("--job", metavar="RAY_JOB_ID", help="only this Ray job")
    p.add_argument(
        "--cluster",
        metavar="NAME",
        help="only this cluster's series (its `cluster` label: a store holds many)",
    )
    compare = p.add_argument_group(
        "run B, drawn against the run above (run A): long tail and idle GPUs per step"
    )
    compare.add_argument(
        "--compare-from", metavar="TIME", help="run B's start (giving it asks for the comparison)"
    )
    compare.add_argument(
        "--compare-to", metavar="TIME", help="run B's end (default: as long as run A)"
    )
    compare.add_argument("--compare-job", metavar="RAY_JOB_ID", help="run B's job (default --job)")
    compare.add_argument(
        "--compare-cluster", metavar="NAME", help="run B's cluster (default --cluster)"
    )
    p.add_argument(
        "--resolution",
        metavar="SECONDS",
        type=float,
        help="seconds between points (default: 1 s, coarser for long ranges)",
    )
    p.add_argument(
        "--output", metavar="DIR", help="report directory (default ./fsd-report-<UTC time>)"
    )


def parse_duration(text: str) -> float:
    if not _DURATION_RE.match(text):
        raise UsageError(f"not a duration (like 90s, 30m, 2h): {text!r}")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART_RE.findall(text))
    if seconds <= 0:
        raise UsageError(f"the duration must be positive: {text!r}")
    return float(seconds)


def parse_time(text: str) -> float:
    try:
        value = float(text)
        if math.isfinite(value) and value > 0:
            return value
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not a time (ISO 8601 or unix seconds): {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def time_range(args: argparse.Namespace, now: float) -> tuple[float, float]:
    if args.since and (args.start or args.end):
        raise UsageError("give --since, or --from/--to, not both")
    end = parse_time(args.end) if args.end else now
    start = parse_time(args.start) if args.start else end - parse_duration(args.since or "1h")
    if start >= end:
        raise UsageError("the range is empty: --from must be before --to")
    return start, end


def resolution(args: argparse.Namespace, start: float, end: float) -> float:
    if args.resolution is not None:
        if not (math.isfinite(args.resolution) and args.resolution > 0):
            raise UsageError("--resolution must be a positive number of seconds")
        if (end - start) / args.resolution > MAX_GRID_POINTS:
            raise UsageError(
                f"--resolution {args.resolution:g} gives more than {MAX_GRID_POINTS} points "
                "over the range: choose a coarser one or a shorter range"
            )
        return float(args.resolution)
    return float(max(1, math.ceil((end - start) / MAX_GRID_POINTS)))


def run(args: argparse.Namespace) -> int:
    try:
        start, end = time_range(args, time.time())
        step = resolution(args, start, end)
        for job in (args.job, args.compare_job):
            if job is not None and not _JOB_RE.match(job):
                raise UsageError(f"not a Ray job id: {job[:140]!r}")
        for cluster in (args.cluster, args.compare_cluster):
            if cluster is not None and not _CLUSTER_RE.match(cluster):
                raise UsageError(f"not a cluster name: {cluster[:140]!r}")
        if not args.prometheus.startswith(("http://", "https://")):
            raise UsageError(f"--prometheus must be an http(s):// URL: {args.prometheus!r}")
        run_b = compared_run(args, start, end, step)
    except UsageError as exc:
        print(f"fsd-daemon report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stamp = datetime.fromtimestamp(end, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    output = Path(args.output or f"fsd-report-{stamp}")
    return draw(
        args.prometheus,
        start,
        end,
        step,
        args.job,
        output,
        args.cluster,
        run_b,
        exact_step=args.resolution is not None,
    )


def compared_run(
    args: argparse.Namespace, start: float, end: float, step: float
) -> tuple[float, float, str | None, str | None] | None:
    """Run B as (start, end, job, cluster), or None when no --compare-* option is given."""
    if args.compare_from is None:
        if args.compare_to or args.compare_job or args.compare_cluster:
            raise UsageError("--compare-from says where run B starts: give it")
        return None
    b_start = parse_time(args.compare_from)
    b_end = parse_time(args.compare_to) if args.compare_to else b_start + (end - start)
    if b_start >= b_end:
        raise UsageError("run B's range is empty: --compare-from must be before --compare-to")
    if (b_end - b_start) / step > MAX_GRID_POINTS:
        raise UsageError(
            f"run B is longer than {MAX_GRID_POINTS} points at {step:g} s: give --resolution"
        )
    return (
        b_start,
        b_end,
        args.compare_job if args.compare_job is not None else args.job,
        args.compare_cluster if args.compare_cluster is not None else args.cluster,
    )


def draw(
    url: str,
    start: float,
    end: float,
    step: float,
    job: str | None,
    output: Path,
    cluster: str | None = None,
    run_b: tuple[float, float, str | None, str | None] | None = None,
    exact_step: bool = False,
) -> int:
    try:
        from fsd_daemon.report import analysis, data, figures, page, summary
        from fsd_daemon.report.compare import COMPARE_PNG
    except ImportError as exc:
        if exc.name not in _DRAWING_MODULES:
            raise
        print(
            f"fsd-daemon report: {exc.name} is not installed: the report is an extra, "
            "pip install 'fsd-daemon[report]'",
            file=sys.stderr,
        )
        return EXIT_NO_REPORT
    from fsd_daemon.report.prom import Prometheus, PrometheusError, PrometheusUnreachable

    try:
        report_data = data.fetch(Prometheus(url), start, end, step, job, cluster, exact_step)
        data_b = None
        if run_b is not None:
            b_start, b_end, b_job, b_cluster = run_b
            data_b = data.fetch(
                Prometheus(url), b_start, b_end, report_data.step, b_job, b_cluster, True
            )
    except PrometheusUnreachable as exc:
        print(f"fsd-daemon report: {exc}", file=sys.stderr)
        return EXIT_NO_REPORT
    except PrometheusError as exc:
        print(f"fsd-daemon report: Prometheus refused a query: {exc}", file=sys.stderr)
        return EXIT_NO_REPORT
    if not report_data.running and not report_data.gpu_busy:
        which = f" for job {job}" if job else ""
        print(
            f"fsd-daemon report: no data in the range{which}: Prometheus at {url} has neither "
            "rollout engine series nor fsd-gpu-exporter series between "
            f"{summary._utc(start)} and {summary._utc(end)}",
            file=sys.stderr,
        )
        return EXIT_NO_REPORT
    result = analysis.analyse(report_data)
    try:
        output.mkdir(parents=True, exist_ok=True)
        figures.draw_long_tail(report_data, result, output / figures.LONG_TAIL_PNG)
        figures.draw_idleness(report_data, result, output / figures.IDLENESS_PNG)
        lines = summary.lines(report_data, result)
        (output / "summary.json").write_text(
            json.dumps(summary.as_json(report_data, result), indent=2) + "\n", encoding="utf-8"
        )
        shown = {
            figures.LONG_TAIL_PNG: "The long tail of each rollout step",
            figures.IDLENESS_PNG: "Idle rollout GPUs",
        }
        if data_b is not None and run_b is not None:
            run_a = (start, end, job, cluster)
            lines += _compare(output, run_a, report_data, result, run_b, data_b)
            shown[COMPARE_PNG] = "Run A against run B: long tail and idle GPUs per step"
        index = page.write_page(output, lines, result, shown)
    except OSError as exc:
        print(f"fsd-daemon report: cannot write the report in {output}: {exc}", file=sys.stderr)
        return EXIT_NO_REPORT
    for line in lines:
        print(line)
    print(f"report: {index.absolute()}")
    return EXIT_OK


def _compare(
    output: Path,
    run_a: tuple[float, float, str | None, str | None],
    data_a: Any,
    analysis_a: Any,
    run_b: tuple[float, float, str | None, str | None],
    data_b: Any,
) -> list[str]:
    """Draw compare.png, write compare.json; the summary lines of the comparison."""
    from fsd_daemon.report import analysis, compare

    a_start, a_end, a_job, a_cluster = run_a
    b_start, b_end, b_job, b_cluster = run_b
    runs = (
        compare.Run("A", a_start, a_end, cluster=a_cluster, job=a_job),
        compare.Run("B", b_start, b_end, cluster=b_cluster, job=b_job),
    )
    unit_a, steps_a = compare.per_step(data_a, analysis_a)
    unit_b, steps_b = compare.per_step(data_b, analysis.analyse(data_b))
    # Idle GPUs against idle replicas would compare different things: say which was counted.
    unit = unit_a if unit_a == unit_b else f"{unit_a} (A) / {unit_b} (B)"
    figures = (steps_a, steps_b)
    compare.draw(runs, figures, unit, output / compare.COMPARE_PNG)
    (output / "compare.json").write_text(
        json.dumps(compare.as_json(runs, figures, unit), indent=2) + "\n", encoding="utf-8"
    )
    return compare.lines(runs, figures, unit)
