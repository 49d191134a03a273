"""What the HTTP service discovery endpoint costs: ``GET /sd/rollout`` at N rollout targets.

The daemon's Service runs in this process against a described cluster of N vLLM servers
(StaticCluster, the discovery seam), its listener on 127.0.0.1 (a free port): plain HTTP, then
TLS with basic auth from a web config (bcrypt cost 10, as htpasswd -B -C 10 makes it). One
client asks ``--requests`` times in a row, as a remote Prometheus refreshes (once per refresh
interval: 15 s by default); the figures are per request, on the client side.

    .venv/bin/python bench/http_sd.py --sizes 1000,10000 --requests 200
"""

from __future__ import annotations

import argparse
import base64
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bcrypt  # noqa: E402
import orjson  # noqa: E402

from fsd_daemon.config import load_config  # noqa: E402
from fsd_daemon.service.daemon import Service  # noqa: E402
from fsd_daemon.sim.launch import free_port  # noqa: E402

PASSWORD = "bench"


def cluster_file(path: Path, n: int) -> None:
    nodes = [
        {"node_id": f"n{i}", "node_ip": f"10.1.{i // 250}.{i % 250 + 1}", "node_name": f"n{i}",
         "is_head": i == 0, "metrics_port": 8080}
        for i in range(max(1, n // 8))
    ]  # fmt: skip
    actors = [
        {"actor_id": f"a{i}", "class_name": "vLLMHttpServer", "name": f"vllm_server_{i}_0",
         "job_id": "01000000", "namespace": "ns", "node_id": f"n{i // 8}", "pid": 1000 + i,
         "address": [f"10.1.{(i // 8) // 250}.{(i // 8) % 250 + 1}", 20000 + i % 8]}
        for i in range(n)
    ]  # fmt: skip
    path.write_bytes(orjson.dumps({"actors": actors, "nodes": nodes}))


def certs(directory: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    san = "subjectAltName=IP:127.0.0.1"
    run = ["openssl", "req", "-x509", *ec, "-keyout", "server.key", "-out", "server.crt",
           "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", san]  # fmt: skip
    subprocess.run(run, cwd=directory, check=True, capture_output=True)


def measure(n: int, requests: int, tls: bool, work: Path) -> dict[str, Any]:
    cluster_file(work / "cluster.json", n)
    port = free_port()
    lines = [
        "[daemon]",
        f'output_dir = "{work / f"targets-{tls}"}"',
        f'metrics_listen = "127.0.0.1:{port}"',
        'cluster = "bench"',
        "poll_interval_seconds = 1.0",
    ]
    context = None
    headers = {}
    if tls:
        certs(work)
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
        (work / "web.yml").write_text(
            f"tls_server_config:\n  cert_file: {work / 'server.crt'}\n"
            f"  key_file: {work / 'server.key'}\nbasic_auth_users:\n  prometheus: {hashed}\n"
        )
        lines.append(f'web_config_file = "{work / "web.yml"}"')
        context = ssl.create_default_context(cafile=str(work / "server.crt"))
        token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    lines += ["[ray]", f'address = "file:{work / "cluster.json"}"']
    (work / "fsd.toml").write_text("\n".join(lines) + "\n")
    service = Service(load_config(work / "fsd.toml", environ={}))
    thread = threading.Thread(target=service.run, kwargs={"watch": False}, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    url = f"{scheme}://127.0.0.1:{port}/sd/rollout"
    try:
        deadline = time.monotonic() + 120
        body = b""
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=10, context=context) as r:
                    body = r.read()
                if body.count(b'"targets"') >= n:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=10, context=context) as r:
                r.read()
            times.append(time.perf_counter() - started)
    finally:
        service.request_stop()
        thread.join(timeout=30)
    times.sort()
    return {
        "targets": n,
        "tls+auth": tls,
        "bytes": len(body),
        "p50_ms": 1000 * statistics.median(times),
        "p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000", help="comma list of target counts")
    p.add_argument("--requests", type=int, default=200, help="GETs per measurement")
    args = p.parse_args()
    print("| targets | TLS + basic auth | answer | p50 | p99 |")
    print("|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        for tls in (False, True):
            work = Path(tempfile.mkdtemp(prefix="fsd-bench-sd-"))
            try:
                r = measure(n, args.requests, tls, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(
                f"| {r['targets']:,} | {'yes' if tls else 'no'} | {r['bytes'] / 1e6:.2f} MB "
                f"| {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
