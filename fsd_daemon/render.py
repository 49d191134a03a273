"""Targets and their rendering into canonical file_sd JSON bytes.

Invariant: :func:`render` only ever receives targets that passed :func:`validate_target`, so
every file it produces is one Prometheus accepts. Prometheus rejects a whole file for one bad
label name, and then keeps the file's previous targets: one hostile actor name must never cost
every other server its scrape.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# RFC 1123 host names; Prometheus would accept more, but nothing Ray reports needs more.
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True, slots=True)
class Target:
    """One scrape target: an address and its labels, sorted by name (hashable, comparable)."""

    address: str
    labels: tuple[tuple[str, str], ...]
    # Sets of targets are diffed and deduplicated on every changed poll (10,000 at a time);
    # a tuple does not cache its hash, so the target does.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.address, self.labels)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def of(cls, address: str, labels: Mapping[str, str]) -> Target:
        # Empty values mean "no such label" to Prometheus; leave them out so two targets that
        # differ only there compare equal.
        return cls(address, tuple(sorted((k, v) for k, v in labels.items() if v != "")))

    def label(self, name: str) -> str:
        return dict(self.labels).get(name, "")


class InvalidTarget(ValueError):
    """Why a target cannot be written. ``reason`` is a short, stable label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def format_address(host: str, port: int) -> str:
    """``host:port``, bracketing IPv6 literals as Prometheus requires."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def parse_address(value: object) -> str:
    """Normalise what ``get_server_address()`` returned: ``(ip, port)`` or ``"ip:port"``."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        host, port = value
        if not isinstance(host, str) or isinstance(port, bool):
            raise InvalidTarget("bad_address", f"address {value!r} is not (host, port)")
        try:
            port_number = int(port)
        except (TypeError, ValueError):
            raise InvalidTarget("bad_address", f"port {port!r} is not a number") from None
        address = format_address(host.strip("[]"), port_number)
    elif isinstance(value, str):
        address = value.strip()
        for prefix in ("http://", "https://"):
            if address.startswith(prefix):
                address = address[len(prefix) :].rstrip("/")
    else:
        raise InvalidTarget(
            "bad_address", f"address {value!r} is neither (host, port) nor 'host:port'"
        )
    check_address(address)
    return address


def check_address(address: str) -> None:
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise InvalidTarget("bad_address", f"address {address!r} is not host:port")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidTarget("bad_port", f"port in {address!r} is not 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise InvalidTarget("bad_address", f"{host!r} is not an IPv6 address") from None
        return
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(host):
        raise InvalidTarget(
            "bad_address", f"host {host!r} is neither an IP address nor a host name"
        )


def validate_target(target: Target, max_value_length: int) -> None:
    """Raise :class:`InvalidTarget` unless Prometheus will accept ``target`` in a file_sd file."""
    check_address(target.address)
    for name, value in target.labels:
        if not LABEL_NAME_RE.match(name) or name.startswith("__"):
            raise InvalidTarget("bad_label_name", f"label name {name!r} is not allowed")
        if len(value) > max_value_length:
            raise InvalidTarget(
                "label_too_long", f"label {name} is {len(value)} characters (> {max_value_length})"
            )
        try:
            # Lone surrogates cannot be encoded: Prometheus requires valid UTF-8.
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidTarget("bad_label_value", f"label {name} is not valid UTF-8") from None


def render(targets: Iterable[Target]) -> bytes:
    """Canonical file_sd JSON: one group per target, sorted, so equal sets give equal bytes."""
    groups = [
        {"targets": [t.address], "labels": dict(t.labels)}
        for t in sorted(set(targets), key=lambda t: (t.address, t.labels))
    ]
    return orjson.dumps(groups, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
