"""Targets and their rendering into canonical file_sd JSON bytes.

Invariant: :func:`render` only ever receives targets that passed :func:`validate_target`, so
every file it produces is one Prometheus accepts. Prometheus rejects a whole file for one bad
label name, and then keeps the file's previous targets: one hostile actor name must never cost
every other server its scrape.
"""

from __future__ import annotations

import bisect
import ipaddress
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from fsd_daemon.mixin import names

LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# The one reserved label a target may carry: Prometheus scrapes that path instead of the job's
# metrics_path (TRT-LLM serves Prometheus text at /prometheus/metrics, not /metrics).
METRICS_PATH_LABEL = names.METRICS_PATH
_METRICS_PATH_RE = re.compile(r"/[A-Za-z0-9_\-./]{0,255}\Z", re.ASCII)
# RFC 1123 host names; Prometheus would accept more, but nothing Ray reports needs more.
# Matched with fullmatch and \Z: "$" would accept a trailing newline, which Prometheus then
# fails to scrape ("invalid URL escape %0A").
MAX_HOST_LENGTH = 253
_HOSTNAME_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?){0,126}\Z",
    re.ASCII,
)
# "[v6]:port", "v4:port" or "name:port" is never longer than this; longer is refused unread.
_MAX_ADDRESS_LENGTH = MAX_HOST_LENGTH + 2 + 1 + 5
_PORT_RE = re.compile(r"[0-9]{1,5}\Z", re.ASCII)


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
    """Normalise what ``get_server_address()`` returned: ``(ip, port)`` or ``"ip:port"``.

    Raises :class:`InvalidTarget` for anything else, including a port that is not an integer
    (80.9 is refused, not truncated) and digits that are not ASCII.
    """
    if isinstance(value, (tuple, list)) and len(value) == 2:
        host, port = value
        if not isinstance(host, str) or len(host) > MAX_HOST_LENGTH + 2:
            raise InvalidTarget("bad_address", f"address {_short(value)} is not (host, port)")
        address = format_address(host.strip("[]"), _port_number(port))
    elif isinstance(value, str):
        if len(value) > _MAX_ADDRESS_LENGTH + len("https://") + 1:
            raise InvalidTarget("bad_address", f"address {_short(value)} is too long")
        address = value
        for prefix in ("http://", "https://"):
            if address.startswith(prefix):
                address = address[len(prefix) :]
                if address.endswith("/"):
                    address = address[:-1]
    else:
        raise InvalidTarget(
            "bad_address", f"address {_short(value)} is neither (host, port) nor 'host:port'"
        )
    check_address(address)
    return address


def _port_number(port: object) -> int:
    """An int port, or a string of ASCII digits; never a float, a bool or other digits."""
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    if isinstance(port, str) and _PORT_RE.match(port):
        return int(port)
    raise InvalidTarget("bad_port", f"port {_short(port)} is not an integer")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"


def check_address(address: str) -> None:
    """Raise :class:`InvalidTarget` unless ``address`` is ``host:port`` Prometheus can scrape."""
    if len(address) > _MAX_ADDRESS_LENGTH:
        raise InvalidTarget("bad_address", f"address {_short(address)} is too long")
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise InvalidTarget("bad_address", f"address {_short(address)} is not host:port")
    if not _PORT_RE.match(port_text) or not 1 <= int(port_text) <= 65535:
        raise InvalidTarget("bad_port", f"port in {_short(address)} is not 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        literal = host[1:-1]
        # No zone ("%eth0"): Prometheus reads a target as a URL, where "%" starts an escape.
        if not literal.isascii() or "%" in literal:
            raise InvalidTarget("bad_address", f"{_short(host)} is not an IPv6 address")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise InvalidTarget("bad_address", f"{_short(host)} is not an IPv6 address") from None
        return
    if ":" in host:
        raise InvalidTarget("bad_address", f"IPv6 host {_short(host)} must be in brackets")
    # ipaddress accepts only ASCII digits in IPv4; the host-name pattern only ASCII at all.
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    if len(host) > MAX_HOST_LENGTH or not _HOSTNAME_RE.match(host):
        raise InvalidTarget(
            "bad_address", f"host {_short(host)} is neither an IP address nor a host name"
        )


def validate_target(target: Target, max_value_length: int) -> None:
    """Raise :class:`InvalidTarget` unless Prometheus will accept ``target`` in a file_sd file."""
    check_address(target.address)
    for name, value in target.labels:
        if name == METRICS_PATH_LABEL:
            if not _METRICS_PATH_RE.match(value):
                raise InvalidTarget("bad_metrics_path", f"metrics path {_short(value)} refused")
            continue
        if not LABEL_NAME_RE.match(name) or name.startswith("__"):
            raise InvalidTarget("bad_label_name", f"label name {_short(name)} is not allowed")
        if len(value) > max_value_length:
            raise InvalidTarget(
                "label_too_long", f"label {name} is {len(value)} characters (> {max_value_length})"
            )
        try:
            # Lone surrogates cannot be encoded: Prometheus requires valid UTF-8.
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidTarget("bad_label_value", f"label {name} is not valid UTF-8") from None


_RENDER_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
_ORDER = operator.attrgetter("address", "labels")


def render(targets: Iterable[Target]) -> bytes:
    """Canonical file_sd JSON: one group per target, sorted, so equal sets give equal bytes."""
    groups = [
        {"targets": [t.address], "labels": dict(t.labels)} for t in sorted(set(targets), key=_ORDER)
    ]
    return orjson.dumps(groups, option=_RENDER_OPTIONS) + b"\n"


def _group(target: Target) -> bytes:
    """One target's group as :func:`render` lays it out inside the list (indented by 2)."""
    group = {"targets": [target.address], "labels": dict(target.labels)}
    return b"  " + orjson.dumps(group, option=_RENDER_OPTIONS).replace(b"\n", b"\n  ")


class Renderer:
    """:func:`render`, keeping the last call's order and rendered groups for the next call.

    A changed poll at 10,000 servers changes a few groups; rendering and sorting every group
    again was most of its render cost. Invariants: ``_order`` is the last call's targets
    sorted as :func:`render` sorts them, and ``_groups`` holds each of them rendered as
    :func:`render` lays it out (a group depends only on its target, which is immutable and
    compared by value); so the bytes equal :func:`render`'s, and only the last call's groups
    are kept. No two distinct targets tie in that order (it is by their whole value).
    """

    # Above this many new targets, sorting all of them again is cheaper than inserting each.
    _INSERT_AT_MOST = 256

    def __init__(self) -> None:
        self._order: list[Target] = []
        self._groups: dict[Target, bytes] = {}

    def render(self, targets: Iterable[Target]) -> bytes:
        wanted = set(targets)
        groups = self._groups
        added = wanted.difference(groups)
        if len(added) > self._INSERT_AT_MOST or len(wanted) - len(added) < len(groups) // 2:
            order = sorted(wanted, key=_ORDER)
        else:
            # A subsequence of a sorted list is sorted; each insertion keeps it so.
            order = [t for t in self._order if t in wanted]
            for target in added:
                bisect.insort(order, target, key=_ORDER)
        for gone in groups.keys() - wanted:
            del groups[gone]
        for target in added:
            groups[target] = _group(target)
        self._order = order
        if not order:
            return b"[]\n"
        return b"[\n" + b",\n".join(map(groups.__getitem__, order)) + b"\n]\n"
