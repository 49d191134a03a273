"""Rendering and validation: canonical bytes, and never a file Prometheus would reject."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsd_daemon.demo import start_prometheus, wait_http_ok
from fsd_daemon.pipeline.render import InvalidTarget, Target, parse_address, render, validate_target
from fsd_daemon.sim.launch import free_port


def test_render_is_canonical_and_sorted() -> None:
    """The same set of targets in any order renders to the same bytes; empty labels vanish."""
    a = Target.of("10.0.0.2:80", {"b": "2", "a": "1", "empty": ""})
    b = Target.of("10.0.0.1:80", {"a": "x"})
    assert render([a, b]) == render([b, a, a])
    groups = orjson.loads(render([a, b]))
    assert groups == [
        {"targets": ["10.0.0.1:80"], "labels": {"a": "x"}},
        {"targets": ["10.0.0.2:80"], "labels": {"a": "1", "b": "2"}},
    ]
    assert render([]) == b"[]\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (("10.1.2.3", 8000), "10.1.2.3:8000"),
        (["10.1.2.3", "8000"], "10.1.2.3:8000"),
        ("10.1.2.3:8000", "10.1.2.3:8000"),
        ("http://10.1.2.3:8000/", "10.1.2.3:8000"),
        (("fd00::1", 8000), "[fd00::1]:8000"),
        (("[fd00::1]", 8000), "[fd00::1]:8000"),
        ("[fd00::1]:8000", "[fd00::1]:8000"),
        (("node-7.cluster.local", 31000), "node-7.cluster.local:31000"),
    ],
)
def test_addresses_from_get_server_address(value: object, expected: str) -> None:
    """(ip, port) tuples (verl 0.6+), "ip:port" strings (verl <= 0.5) and IPv6 are normalised."""
    assert parse_address(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        ("10.1.2.3", 0),
        ("10.1.2.3", 65536),
        "10.1.2.3",
        "10.1.2.3:port",
        ("bad host", 80),
        ("fd00::zz", 1),
        None,
        42,
        ("10.1.2.3", True),
        "a/b:80",
        ":80",
    ],
)
def test_bad_addresses_are_rejected(value: object) -> None:
    """Ports 0 and 65536, missing ports, spaces, bad IPv6 and non-address values are refused."""
    with pytest.raises(InvalidTarget):
        parse_address(value)


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({"model-name": "x"}, "bad_label_name"),
        ({"__meta": "x"}, "bad_label_name"),
        ({"1abc": "x"}, "bad_label_name"),
        ({"a": "x" * 2000}, "label_too_long"),
        ({"a": "bad \ud800 surrogate"}, "bad_label_value"),
    ],
)
def test_invalid_labels_are_refused(labels: dict[str, str], reason: str) -> None:
    """Label names outside [a-zA-Z_][a-zA-Z0-9_]*, reserved names, huge or non-UTF-8 values."""
    with pytest.raises(InvalidTarget) as info:
        validate_target(Target.of("10.0.0.1:80", labels), 1024)
    assert info.value.reason == reason


def test_unicode_and_control_characters_in_values_are_kept() -> None:
    """Valid UTF-8 values, control characters included, are legal label values."""
    t = Target.of("10.0.0.1:80", {"actor_name": "сервер\t😀\x01"})
    validate_target(t, 1024)
    assert orjson.loads(render([t]))[0]["labels"]["actor_name"] == "сервер\t😀\x01"


@pytest.mark.parametrize(
    "value",
    [
        ("10.1.2.3\n", 8000),  # "$" matched before the newline; Prometheus: invalid URL escape
        ("node-7\n", 8000),
        "node-7\n:8000",
        "10.1.2.3:8000\n",
        ("10.1.2.3", 80.9),  # was truncated to 80
        ("10.1.2.3", 80.0),
        ("10.1.2.3", "80.9"),
        ("10.1.2.3", "\u0668\u0660"),  # ARABIC-INDIC "80": int() accepts it
        "10.1.2.3:\u0668\u0660",
        "10.1.2.3:\uff18\uff10",  # FULLWIDTH "80"
        ("\u0661\u0660.1.2.3", 80),
        ("h" * 254, 80),  # longer than a host name can be
        ("a." * 200 + "b", 80),
        ("fd00::1", "+80"),
        "fd00::1:8000",  # IPv6 without brackets
        ("fe80::1%eth0", 8000),  # a zone: "%" starts a URL escape
        ("10.1.2.3", "9" * 5000),
        "x" * 100_000 + ":80",
    ],
)
def test_addresses_prometheus_would_fail_or_misread_are_refused(value: object) -> None:
    """Anchored with \\Z, integer ports only, ASCII digits only, bounded host,
    IPv6 only in brackets."""
    with pytest.raises(InvalidTarget):
        parse_address(value)


def test_metrics_path_is_the_only_reserved_label_allowed() -> None:
    """__metrics_path__ (TRT-LLM's /prometheus/metrics) may be written; other reserved names
    and odd paths may not."""
    ok = Target.of("10.0.0.1:80", {"__metrics_path__": "/prometheus/metrics", "engine": "trtllm"})
    validate_target(ok, 1024)
    assert orjson.loads(render([ok]))[0]["labels"]["__metrics_path__"] == "/prometheus/metrics"
    for labels, reason in (
        ({"__metrics_path__": "prometheus"}, "bad_metrics_path"),
        ({"__metrics_path__": "/metrics\n"}, "bad_metrics_path"),
        ({"__metrics_path__": "/m?x=1"}, "bad_metrics_path"),
        ({"__scheme__": "https"}, "bad_label_name"),
        ({"__address__": "10.0.0.2:80"}, "bad_label_name"),
        ({"engine\n": "x"}, "bad_label_name"),
    ):
        with pytest.raises(InvalidTarget) as info:
            validate_target(Target.of("10.0.0.1:80", labels), 1024)
        assert info.value.reason == reason


class _TrtllmLikeHandler(http.server.BaseHTTPRequestHandler):
    """Answers like trtllm-serve: JSON at /metrics, Prometheus text at /prometheus/metrics."""

    def do_GET(self) -> None:
        if self.path == "/prometheus/metrics":
            body, kind = b"trtllm_request_success_total 3\n", "text/plain; version=0.0.4"
        elif self.path == "/metrics":
            body, kind = b"[]", "application/json"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_prometheus_scrapes_the_metrics_path_given_in_the_target_file(
    prometheus_bin: str, tmp_path: Path
) -> None:
    """A real Prometheus reads __metrics_path__ from a rendered file_sd file and scrapes a
    TRT-LLM-like server at /prometheus/metrics (its /metrics is JSON, which would fail):
    NVIDIA/TensorRT-LLM tensorrt_llm/serve/openai_server.py, register_routes / mount_metrics."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TrtllmLikeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    targets = tmp_path / "rollout.json"
    address = f"127.0.0.1:{server.server_address[1]}"
    labels = {"__metrics_path__": "/prometheus/metrics", "engine": "trtllm"}
    target = Target.of(address, labels)
    validate_target(target, 1024)
    targets.write_bytes(render([target]))
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: rollout\n    file_sd_configs: [{{files: ['{targets}']}}]\n",
        encoding="utf-8",
    )
    port = free_port()
    proc = start_prometheus(prometheus_bin, config, tmp_path / "data", port, tmp_path / "p.log")
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/-/ready", 60, proc)
        deadline = time.monotonic() + 30
        while True:
            url = f"http://127.0.0.1:{port}/api/v1/targets"
            with urllib.request.urlopen(url, timeout=5) as response:
                active = orjson.loads(response.read())["data"]["activeTargets"]
            if active and active[0]["health"] == "up":
                break
            assert time.monotonic() < deadline, active
            time.sleep(0.5)
        assert active[0]["scrapeUrl"] == f"http://{address}/prometheus/metrics"
        assert active[0]["labels"]["engine"] == "trtllm"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.shutdown()


@settings(max_examples=400, deadline=None)
@given(
    host=st.text(max_size=80) | st.sampled_from(["10.0.0.1", "node-1", "fd00::1", "[fd00::1]"]),
    port=st.integers(-5, 70000) | st.floats(allow_nan=True) | st.text(max_size=8),
    newline=st.booleans(),
)
def test_any_address_value_is_refused_or_is_one_prometheus_can_scrape(
    host: str, port: object, newline: bool
) -> None:
    """Property: whatever a server answers, parse_address raises InvalidTarget or returns
    ASCII host:port with an integer port 1-65535 and no whitespace."""
    for value in ((host + ("\n" if newline else ""), port), f"{host}:{port}"):
        try:
            address = parse_address(value)
        except InvalidTarget:
            continue
        assert address.isascii() and not any(c.isspace() for c in address)
        port_text = address.rpartition(":")[2]
        assert port_text.isdigit() and 1 <= int(port_text) <= 65535
        assert isinstance(port, (int, str)) and not isinstance(port, bool)
