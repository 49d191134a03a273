"""A small threaded HTTP listener for /metrics (prometheus_client), /healthz, and JSON routes
(the daemon's HTTP service discovery lists, ``fsd_daemon.service.httpsd``).

Both programs serve the same way: scrapes render what is already in memory (a registry whose
collectors never block on I/O), so a slow Ray call or a hung NVML call never delays a scrape.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)

# (healthy, details) -> 200 or 503 with the details as JSON.
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]
# The request's Authorization header (None if absent) -> allowed; otherwise 401 on every path.
Authenticate = Callable[[str | None], bool]
# URL path -> the JSON body to serve now, or None: 503 (nothing to serve yet).
JsonRoutes = Mapping[str, Callable[[], "bytes | None"]]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that fails the TLS handshake or hangs up is its own problem: one debug
        # line, not a traceback on stderr.
        log.debug("http: request from %s failed: %r", client_address, sys.exc_info()[1])


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


def _server_class(host: str, port: int) -> type[_ThreadingWSGIServer]:
    """The address family ``host`` needs (an IPv6 address, or a name that resolves only to
    one); socketserver's default is IPv4 only."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return _ThreadingWSGIServer  # the bind then fails with the resolver's own message
    if infos and infos[0][0] == socket.AF_INET6:
        return _ThreadingWSGIServerV6
    return _ThreadingWSGIServer


class _QuietHandler(WSGIRequestHandler):
    # A client that connects and sends nothing (or never finishes a TLS handshake) frees its
    # thread after this many seconds.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


def build_app(
    registry: CollectorRegistry,
    health: HealthCheck | None = None,
    authenticate: Authenticate | None = None,
    json_routes: JsonRoutes | None = None,
    metrics_app: WsgiApp | None = None,
) -> WsgiApp:
    if metrics_app is None:
        metrics_app = make_wsgi_app(registry)
    routes = dict(json_routes or {})

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if authenticate is not None and not authenticate(environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Basic realm="fsd"')],
            )
            return [b"Unauthorized\n"]
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            healthy, details = health() if health else (True, {})
            body = orjson.dumps({"status": "ok" if healthy else "degraded", **details})
            status = "200 OK" if healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        if path in ("/metrics", "/"):
            return metrics_app(environ, start_response)
        route = routes.get(path)
        if route is not None:
            listed = route()
            if listed is None:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"nothing to serve yet\n"]
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(listed)))],
            )
            return [listed]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class MetricsServer:
    """Serves ``registry`` on ``host:port`` in daemon threads until :meth:`stop`; over TLS
    with ``ssl_context``, and only to requests that ``authenticate`` allows. ``metrics_app``
    serves /metrics in place of prometheus_client's (``fsd_daemon.plumbing.metricscache``)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: HealthCheck | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        authenticate: Authenticate | None = None,
        json_routes: JsonRoutes | None = None,
        metrics_app: WsgiApp | None = None,
    ) -> None:
        self._server = make_server(
            host,
            port,
            build_app(registry, health, authenticate, json_routes, metrics_app),
            server_class=_server_class(host, port),
            handler_class=_QuietHandler,
        )
        if ssl_context is not None:
            # The handshake happens on the request's own thread (first read), not in accept()
            # on the serving thread, where one slow client would stall every other.
            self._server.socket = ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
