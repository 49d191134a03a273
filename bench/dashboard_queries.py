"""Time every panel query of the shipped Grafana dashboards against a Prometheus, over a range.

Reads the committed dashboards JSON (fsd_daemon/assets/grafana/dashboards), substitutes the
template variables as Grafana does with "All" selected ($cluster, $job, $role -> ".*"; $__range
-> the range; $__rate_interval -> max(4 x scrape interval, step + scrape interval)), and asks
each query as Grafana would: instant queries at the range's end, range queries with
step = max(range / 1000 points, scrape interval). Prints each query's wall time, slowest first.

    .venv/bin/python bench/dashboard_queries.py --prometheus URL [--range 24h] [--end UNIX]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "fsd_daemon" / "assets" / "grafana" / "dashboards"
MAX_POINTS = 1000
SCRAPE_INTERVAL = 15.0
ALL = ".*"


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    expr: str
    instant: bool


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def queries() -> list[Query]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        for panel in _panels(doc.get("panels", [])):
            for target in panel.get("targets", []):
                if "expr" in target:
                    instant = bool(target.get("instant")) and not target.get("range")
                    out.append(Query(path.stem, panel.get("title", "?"), target["expr"], instant))
    return out


def substituted(expr: str, range_s: float, step: float) -> str:
    rate_interval = max(4 * SCRAPE_INTERVAL, step + SCRAPE_INTERVAL)
    for var in ("cluster", "job", "role"):
        expr = expr.replace("${" + var + "}", ALL).replace("$" + var, ALL)
    return expr.replace("$__rate_interval", f"{rate_interval:.0f}s").replace(
        "$__range", f"{range_s:.0f}s"
    )


def time_query(base: str, q: Query, range_s: float, end: float) -> tuple[float, int, str]:
    """(seconds, result series, error or "")."""
    step = max(range_s / MAX_POINTS, SCRAPE_INTERVAL)
    step = float(int(step))
    expr = substituted(q.expr, range_s, step)
    if q.instant:
        params = {"query": expr, "time": f"{end:.3f}"}
        url = f"{base}/api/v1/query?{urllib.parse.urlencode(params)}"
    else:
        params = {
            "query": expr,
            "start": f"{end - range_s:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step:.0f}",
        }
        url = f"{base}/api/v1/query_range?{urllib.parse.urlencode(params)}"
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            body = json.loads(r.read())
    except Exception as e:
        return time.perf_counter() - t0, 0, str(e)[:100]
    return time.perf_counter() - t0, len(body["data"]["result"]), ""


def run(base: str, range_s: float, end: float) -> list[dict[str, Any]]:
    rows = []
    for q in queries():
        seconds, series, error = time_query(base, q, range_s, end)
        rows.append(
            {
                "dashboard": q.dashboard,
                "panel": q.panel,
                "instant": q.instant,
                "seconds": round(seconds, 3),
                "series": series,
                "error": error,
            }
        )
    rows.sort(key=lambda r: -r["seconds"])
    return rows


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(text[:-1]) * units[text[-1]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--range", default="24h")
    parser.add_argument("--end", type=float, default=None)
    args = parser.parse_args(argv)
    rows = run(args.prometheus.rstrip("/"), parse_duration(args.range), args.end or time.time())
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
