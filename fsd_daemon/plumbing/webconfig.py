"""TLS and basic auth for a listener, node_exporter's way: the exporter's ``--web.config.file``
and the daemon's ``daemon.web_config_file``.

The file has the Prometheus exporter-toolkit format (``docs/web-configuration.md`` of
prometheus/exporter-toolkit), so one file can serve node_exporter and both listeners::

    tls_server_config:
      cert_file: /etc/fsd-daemon/tls/server.crt
      key_file: /etc/fsd-daemon/tls/server.key
      client_auth_type: RequireAndVerifyClientCert   # optional
      client_ca_file: /etc/fsd-daemon/tls/ca.crt     # with a client_auth_type that verifies
      min_version: TLS12                             # optional (TLS10 .. TLS13)
      max_version: TLS13                             # optional
    basic_auth_users:
      prometheus: $2y$10$...                         # bcrypt hash (htpasswd -nBC 10 "" ...)

A key of the format that is not implemented here (cipher_suites, client_allowed_sans, HTTP/2
settings, ...) or a misspelt one is an error, as exporter-toolkit's strict parsing makes it:
a setting that is silently ignored is a hole in what the operator thinks is protected. The
file is read once, at start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

# exporter-toolkit's names -> what Python's ssl module can do. RequestClientCert and
# RequireAnyClientCert accept a client certificate without verifying it, which ssl cannot.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TOP_KEYS = {"tls_server_config", "basic_auth_users"}
_TOP_UNSUPPORTED = {"http_server_config", "rate_limit"}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
}
_TLS_UNSUPPORTED = {
    "cert",
    "key",
    "cipher_suites",
    "curve_preferences",
    "prefer_server_cipher_suites",
    "client_allowed_sans",
}
# Bounds what one request can make us hash: bcrypt only reads 72 bytes anyway.
_MAX_CREDENTIAL_BYTES = 1024
# Successful checks remembered (bcrypt costs ~50 ms a check; Prometheus scrapes every few
# seconds with the same credentials). exporter-toolkit caches the same way.
_CACHE_SIZE = 100
# Failed checks remembered too, so that a client retrying the same wrong password (a
# misconfigured Prometheus, a script) costs one hash, not one per request.
_FAILED_CACHE_SIZE = 1000
# Hashes of credentials not in either cache, per second at most (a token bucket of this
# size refilled at this rate): a tenth of a core of bcrypt at cost 10. A stranger trying
# passwords on a listener bound to 0.0.0.0 is refused without hashing beyond that; a good
# password, once checked, is served from the cache and never waits for the bucket. The price:
# while such an attack lasts, a client whose good password is not cached yet (the exporter
# just restarted) may be refused a few times before one of its scrapes gets a check.
_NEW_CHECKS_PER_SECOND = 2.0


class WebConfigError(ValueError):
    """The web config file is unusable; the message is one line naming the file and key."""


@dataclass(frozen=True)
class WebConfig:
    """What the listener needs: a TLS context (None: plain HTTP) and the users (none: open)."""

    path: str
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)

    def describe(self) -> str:
        parts = ["TLS" if self.ssl_context is not None else "plain HTTP"]
        if self.users:
            parts.append(f"basic auth ({len(self.users)} user(s))")
        return ", ".join(parts)


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check ``path``: the certificate and key load, every hash is bcrypt. Raises
    :class:`WebConfigError`."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WebConfigError(f"{where}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(f"{where}: expected a mapping at the top")
    _check_keys(where, "", data, _TOP_KEYS, _TOP_UNSUPPORTED)
    tls = data.get("tls_server_config")
    users = data.get("basic_auth_users")
    return WebConfig(
        path=where,
        ssl_context=None if tls is None else _ssl_context(where, tls),
        users={} if users is None else _users(where, users),
    )


def _check_keys(
    where: str, prefix: str, data: Mapping[Any, Any], known: set[str], unsupported: set[str]
) -> None:
    for key in data:
        name = f"{prefix}{key}"
        if key in unsupported:
            raise WebConfigError(f"{where}: {name} is not supported (only TLS and basic auth are)")
        if key not in known:
            raise WebConfigError(f"{where}: unknown key {name!r}")


def _ssl_context(where: str, tls: Any) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise WebConfigError(f"{where}: tls_server_config must be a mapping")
    _check_keys(where, "tls_server_config.", tls, _TLS_KEYS, _TLS_UNSUPPORTED)

    def text(key: str, default: str = "") -> str:
        value = tls.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, str):
            raise WebConfigError(f"{where}: tls_server_config.{key} must be a string")
        return value

    cert, key = text("cert_file"), text("key_file")
    if not cert or not key:
        raise WebConfigError(f"{where}: tls_server_config needs both cert_file and key_file")
    auth = text("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(
            f"{where}: tls_server_config.client_auth_type {auth!r} is not supported "
            f"(one of {', '.join(_CLIENT_AUTH)})"
        )
    ca = text("client_ca_file")
    if _CLIENT_AUTH[auth] != ssl.CERT_NONE and not ca:
        raise WebConfigError(f"{where}: client_auth_type {auth} needs client_ca_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for bound, attr, default in (
        ("min_version", "minimum_version", "TLS12"),
        ("max_version", "maximum_version", "TLS13"),
    ):
        name = text(bound, default)
        if name not in _TLS_VERSIONS:
            raise WebConfigError(
                f"{where}: tls_server_config.{bound} {name!r} is not one of "
                f"{', '.join(_TLS_VERSIONS)}"
            )
        setattr(ctx, attr, _TLS_VERSIONS[name])
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(f"{where}: cannot load {cert} / {key}: {exc}") from exc
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if ca:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{where}: cannot load client_ca_file {ca}: {exc}") from exc
    return ctx


def _users(where: str, users: Any) -> dict[str, bytes]:
    if not isinstance(users, dict):
        raise WebConfigError(f"{where}: basic_auth_users must be a mapping of user: bcrypt hash")
    found = {}
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(f"{where}: basic_auth_users: bad user name {user!r}")
        if not isinstance(hashed, str) or not _is_bcrypt(hashed):
            raise WebConfigError(
                f"{where}: basic_auth_users.{user} is not a bcrypt hash (make one with "
                f"`htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
            )
        found[user] = hashed.encode("ascii")
    return found


def _is_bcrypt(hashed: str) -> bool:
    try:
        bcrypt.checkpw(b"", hashed.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return True


class BasicAuth:
    """Checks an ``Authorization: Basic`` header against bcrypt hashes, with a small cache of
    good credentials (keyed by their SHA-256, never the password itself)."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        checks_per_second: float = _NEW_CHECKS_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = dict(users)
        # A hash to check unknown users against, so that a wrong user name costs the same
        # time as a wrong password (exporter-toolkit does the same).
        self._dummy = bcrypt.hashpw(b"fsd-gpu-exporter", bcrypt.gensalt(rounds=10))
        self._good: dict[bytes, None] = {}
        self._failed: dict[bytes, None] = {}
        self._rate = checks_per_second
        self._tokens = checks_per_second
        self._clock = clock
        self._refilled = clock()
        self._lock = threading.Lock()
        self.hashes = 0  # bcrypt checks made (for the benches)

    def __call__(self, header: str | None) -> bool:
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        digest = hashlib.sha256(user + b"\0" + password).digest()
        with self._lock:
            if any(hmac.compare_digest(digest, good) for good in self._good):
                return True
            if digest in self._failed or not self._take_token():
                return False
            self.hashes += 1
        hashed = self._users.get(user.decode("utf-8", "replace"))
        ok = bcrypt.checkpw(password, hashed if hashed is not None else self._dummy)
        ok = ok and hashed is not None
        with self._lock:
            cache, size = (self._good, _CACHE_SIZE) if ok else (self._failed, _FAILED_CACHE_SIZE)
            if len(cache) >= size:
                cache.pop(next(iter(cache)))
            cache[digest] = None
        return ok

    def _take_token(self) -> bool:
        """One new check allowed now? (Called with the lock held.)"""
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def _parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header or len(header) > 2 * _MAX_CREDENTIAL_BYTES:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user, password
