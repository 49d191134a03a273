"""Prometheus' HTTP client settings (``basic_auth``, ``authorization``, ``tls_config``), as
``prometheus-config`` prints them for an ``http_sd_configs`` entry or a ``remote_write`` one.

Secrets are referenced by file (``password_file``, ``credentials_file``), never copied into the
printed config: a prometheus.yml is often world-readable, a secret file need not be.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class ClientConfigError(ValueError):
    """A bad option; ``str()`` is the one line for the user."""


@dataclass(frozen=True)
class HttpClient:
    """What Prometheus needs to talk to one HTTP endpoint. Empty strings: not set."""

    username: str = ""
    password_file: str = ""
    bearer_token_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    def check(self, option: str) -> None:
        """Raises :class:`ClientConfigError` for combinations Prometheus refuses."""
        if self.password_file and not self.username:
            raise ClientConfigError(f"{option}-password-file needs {option}-username")
        if self.username and self.bearer_token_file:
            raise ClientConfigError(f"{option}-username and {option}-bearer-token-file: choose one")
        if bool(self.cert_file) != bool(self.key_file):
            raise ClientConfigError(f"{option}-cert-file and {option}-key-file go together")

    def fields(self) -> dict[str, Any]:
        """The settings as Prometheus' YAML keys (nothing for what is not set)."""
        out: dict[str, Any] = {}
        if self.username:
            auth = {"username": self.username}
            if self.password_file:
                auth["password_file"] = self.password_file
            out["basic_auth"] = auth
        if self.bearer_token_file:
            out["authorization"] = {"type": "Bearer", "credentials_file": self.bearer_token_file}
        tls = {
            key: value
            for key, value in (
                ("ca_file", self.ca_file),
                ("cert_file", self.cert_file),
                ("key_file", self.key_file),
                ("server_name", self.server_name),
            )
            if value
        }
        if tls:
            out["tls_config"] = tls
        return out


def check_http_url(url: str, option: str) -> str:
    """``url`` when it is an absolute http(s) URL with a host; else ClientConfigError."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ClientConfigError(f"{option}: not a URL: {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientConfigError(f"{option} must be an http:// or https:// URL (got {url!r})")
    if any(c.isspace() for c in url):
        raise ClientConfigError(f"{option}: a URL has no spaces (got {url!r})")
    return url


__all__ = ["ClientConfigError", "HttpClient", "check_http_url"]
