"""A verl run's other metric endpoints, placed and named as upstream places and names them.

Run as a script (``python tests/support/endpoints_job.py --address ADDR``) so that Ray ships
the classes by value. It creates:

* ``TransferQueueController`` in namespace ``transfer_queue`` (transferqueue 0.1.11
  ``transfer_queue/interface.py`` ``init``), serving ``/metrics`` on its node IP at a port
  chosen at run time, as ``controller.py`` ``start_metrics(port=0)`` does with verl's default
  ``transfer_queue.metrics.port: 0``;
* ``prometheus_server_{node_id[:8]}`` (``PrometheusMetricsServer``, detached), verl-recipe
  AsyncFlow's per-node server (``async_flow/utils/metric/prometheus_metrics_server.py``),
  started but not answering at the node's address on port 9400, as when it is bound to
  127.0.0.1 on a node other than Prometheus'.

Prints one JSON line (the actor names, the node's IP) once both exist, then lives until its
stdin closes or it gets SIGTERM; the detached actor is killed on the way out.
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


class TransferQueueController:
    def __init__(self) -> None:
        import ray

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"# TYPE tq_up gauge\ntq_up 1\n"
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((ray.util.get_node_ip_address(), 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.endpoint = f"{server.server_address[0]}:{server.server_address[1]}"

    def get_endpoint(self) -> str:
        return self.endpoint


class PrometheusMetricsServer:
    def get_status(self) -> str:
        return "running"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    args = parser.parse_args(argv)
    import ray

    ray.init(address=args.address, log_to_driver=False)
    controller = (
        ray.remote(TransferQueueController)
        .options(name="TransferQueueController", namespace="transfer_queue", num_cpus=0)
        .remote()
    )
    node_id = ray.get_runtime_context().get_node_id()
    name = f"prometheus_server_{node_id[:8]}"
    server = (
        ray.remote(PrometheusMetricsServer)
        .options(name=name, lifetime="detached", num_cpus=0)
        .remote()
    )
    ray.get(server.get_status.remote(), timeout=60)
    info = {
        "transfer_queue": ray.get(controller.get_endpoint.remote(), timeout=60),
        "async_flow": name,
        "node_ip": ray.util.get_node_ip_address(),
    }
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    done.wait()
    ray.kill(server)  # detached: it would outlive this driver
    ray.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
