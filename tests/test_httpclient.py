"""The one HTTP client: an answer, an error status with its body, a timeout and a refused
connection, each against a real server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fsd_daemon.plumbing.httpclient import ERROR_BODY_BYTES, HttpFailed, http_request
from fsd_daemon.sim.launch import free_port


class _Handler(BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/hang":
            self.release.wait(30)
        status, body = (200, b"x" * 100) if self.path in ("/ok", "/hang") else (404, b"n" * 9000)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    _Handler.release = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _Handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_an_answer_is_cut_at_max_bytes(base: str) -> None:
    reply = http_request(f"{base}/ok", timeout=5, max_bytes=10)
    assert (reply.status, reply.body) == (200, b"x" * 10)


def test_an_error_status_carries_the_start_of_its_body(base: str) -> None:
    with pytest.raises(HttpFailed) as failed:
        http_request(f"{base}/missing", timeout=5, max_bytes=10)
    assert (failed.value.kind, failed.value.status) == ("status", 404)
    assert failed.value.body == b"n" * ERROR_BODY_BYTES


def test_no_answer_in_time_is_a_timeout(base: str) -> None:
    with pytest.raises(HttpFailed) as failed:
        http_request(f"{base}/hang", timeout=0.3, max_bytes=10)
    assert failed.value.kind == "timeout" and failed.value.reason == "timed out"


def test_a_refused_connection_is_unreachable_and_an_oserror() -> None:
    port = free_port()  # nothing listens there
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    with pytest.raises(OSError) as failed:
        http_request(f"http://127.0.0.1:{port}/", timeout=5, max_bytes=10)
    assert isinstance(failed.value, HttpFailed) and failed.value.kind == "unreachable"
