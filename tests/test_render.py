"""Rendering and validation: canonical bytes, and never a file Prometheus would reject."""

from __future__ import annotations

import orjson
import pytest

from fsd_daemon.render import InvalidTarget, Target, parse_address, render, validate_target


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
