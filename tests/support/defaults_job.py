"""A verl-like job whose rollout servers run with verl's default metrics settings.

Run as a script (``python tests/support/defaults_job.py --address ADDR``) so that Ray ships
the server classes by value. It creates, under verl's actor and class names:

* ``vllm_server_0_0`` (``vLLMHttpServer``): ``/metrics`` answers 200 with process and Python
  series only, as vLLM does with ``disable_log_stats=True`` (verl's default);
* ``sglang_server_0_0`` (``SGLangHttpServer``): no ``/metrics`` route (404), as SGLang does
  without ``--enable-metrics`` (verl's default ``prometheus.enable: false``);
* ``vllm_server_1_0`` (``vLLMHttpServer``): statistics on, ``vllm:`` series served.

Each serves HTTP on 127.0.0.1 at a port picked at run time and answers
``get_server_address()`` with ``(ip, port)`` like verl. Prints one JSON line (job id, actor
addresses) once all serve, then lives until its stdin closes or it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROCESS_ONLY = (
    b"# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
    b"# TYPE process_cpu_seconds_total counter\n"
    b"process_cpu_seconds_total 1.5\n"
    b"# HELP python_info Python platform information\n"
    b"# TYPE python_info gauge\n"
    b'python_info{implementation="CPython",major="3",minor="12",version="3.12.0"} 1.0\n'
)
WITH_STATS = PROCESS_ONLY + (
    b"# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
    b"# TYPE vllm:num_requests_running gauge\n"
    b'vllm:num_requests_running{engine="0",model_name="m"} 0.0\n'
)


def _serve(metrics: bytes | None) -> tuple[str, int]:
    """An HTTP server in a daemon thread; ``metrics`` None: no /metrics route (404)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics" and metrics is not None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(metrics)))
                self.end_headers()
                self.wfile.write(metrics)
            elif self.path == "/health":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return "127.0.0.1", int(server.server_address[1])


class vLLMHttpServer:
    def __init__(self, stats: bool) -> None:
        self.address = _serve(WITH_STATS if stats else PROCESS_ONLY)

    def get_server_address(self) -> tuple[str, int]:
        return self.address


class SGLangHttpServer:
    def __init__(self) -> None:
        self.address = _serve(None)

    def get_server_address(self) -> tuple[str, int]:
        return self.address


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    args = parser.parse_args(argv)
    import ray

    ray.init(address=args.address, log_to_driver=False)
    actors: dict[str, Any] = {
        "vllm_server_0_0": ray.remote(vLLMHttpServer).options(name="vllm_server_0_0", num_cpus=0),
        "sglang_server_0_0": ray.remote(SGLangHttpServer).options(
            name="sglang_server_0_0", num_cpus=0
        ),
        "vllm_server_1_0": ray.remote(vLLMHttpServer).options(name="vllm_server_1_0", num_cpus=0),
    }
    handles = {
        "vllm_server_0_0": actors["vllm_server_0_0"].remote(stats=False),
        "sglang_server_0_0": actors["sglang_server_0_0"].remote(),
        "vllm_server_1_0": actors["vllm_server_1_0"].remote(stats=True),
    }
    addresses = {
        name: "{}:{}".format(*ray.get(h.get_server_address.remote(), timeout=60))
        for name, h in handles.items()
    }
    info = {"job_id": ray.get_runtime_context().get_job_id(), "addresses": addresses}
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    done.wait()
    ray.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
