"""Patching a large prometheus.yml: time, peak memory, and bytes of the user's jobs changed.

A synthetic prometheus.yml of the size asked for (jobs written the way people write them:
four-space indentation, quoted strings, comments, relabelling; a ``gpu`` job with TLS and
basic auth that the patch must keep) is patched twice, each in a process of its own:
``text`` is the patch as shipped (``fsd_daemon.prometheus.scrape_config.patch_text``), ``ruamel``
the
whole-document round trip the patch used before (kept here for comparison, and in the code as
the fallback for layouts the text edits do not handle). Reported: wall seconds, peak RSS, how
many of the original's lines are no longer in the result, and the size change.

    python bench/promconfig_patch.py --sizes-mb 1 2 10
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

JOB = """\
  # job {i}: the node exporters of rack {i}
  - job_name: "node-{i}"
    scrape_interval: "15s"
    static_configs:
        - targets: ["10.{a}.{b}.1:9100", "10.{a}.{b}.2:9100", '10.{a}.{b}.3:9100']
          labels:
              rack: "r{i}"
    relabel_configs:
        - source_labels: ["__address__"]
          regex: '(.+):9100'
          target_label: "host"
          replacement: "$1"
"""

HEAD = """\
# Prometheus for the training cluster
global:
    scrape_interval: "15s"   # our SLO needs 15s
    evaluation_interval: "15s"
scrape_configs:
  - job_name: "gpu"
    scheme: https
    tls_config:
        ca_file: "/etc/prometheus/ca.crt"
    basic_auth:
        username: "prometheus"
        password_file: "/etc/prometheus/gpu.pass"
    file_sd_configs:
        - files: ["/var/lib/fsd-daemon/targets/gpu.json"]
"""


def synthetic(size: int) -> str:
    parts = [HEAD]
    total, i = len(HEAD), 0
    while total < size:
        job = JOB.format(i=i, a=(i // 250) % 250, b=i % 250)
        parts.append(job)
        total += len(job)
        i += 1
    return "".join(parts)


def _measure(how: str, path: str) -> None:
    """Child: patch ``path`` one way; print JSON (seconds, peak RSS, result size, lost lines)."""
    from fsd_daemon.config import load_config
    from fsd_daemon.prometheus.scrape_config import _round_trip, patch_text, patched

    config = load_config(None, environ={}, overrides={"daemon.output_dir": "/var/lib/fsd"})
    text = Path(path).read_text()
    start = time.perf_counter()
    if how == "text":
        new = patch_text(text, config)
    else:
        doc = _round_trip().load(text)
        out = io.StringIO()
        _round_trip().dump(patched(doc, config), out)
        new = out.getvalue()
    took = time.perf_counter() - start
    new_lines = set(new.splitlines())
    lost = sum(1 for line in text.splitlines() if line not in new_lines)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": took, "peak_mb": peak_mb, "size": len(new), "lost": lost}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 2])
    parser.add_argument("--ways", nargs="+", default=["text", "ruamel"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fsd-bench-promconfig-") as tmp:
        print("| size | way | seconds | peak RSS MB | original lines changed | size change |")
        print("|---|---|---|---|---|---|")
        for mb in args.sizes_mb:
            path = Path(tmp) / f"prometheus-{mb:g}.yml"
            text = synthetic(int(mb * 1024 * 1024))
            path.write_text(text)
            for how in args.ways:
                result = subprocess.run(
                    [sys.executable, __file__, "--child", how, str(path)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(result.stdout)
                print(
                    f"| {len(text) / 1e6:.2f} MB | {how} | {r['seconds']:.2f} | "
                    f"{r['peak_mb']:.0f} | {r['lost']} of {text.count(chr(10))} | "
                    f"{r['size'] - len(text):+d} B |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _measure(sys.argv[2], sys.argv[3])
        raise SystemExit(0)
    raise SystemExit(main())
