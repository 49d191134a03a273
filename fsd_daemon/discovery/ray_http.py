"""Ray's dashboard REST API over plain HTTP, without importing Ray in this process.

The state API (``/api/v0/actors``, ``/api/v0/nodes``) and ``/api/version`` are JSON over HTTP;
``ray.util.state`` is only a client of them (ray-project/ray
``python/ray/util/state/api.py``, StateApiClient._make_http_get_request). Speaking it with
urllib keeps Ray (about 100 MiB of RSS once imported) out of the daemon.

Only one thing needs Ray: turning a GCS address (or ``auto``) into the dashboard's URL, which
Ray keeps in the GCS's key-value store (``ray.dashboard.utils.ray_address_to_api_server_url``).
That runs once per connection in a short-lived child (``python -m
fsd_daemon.discovery.ray_http``), killed at its timeout; an ``http://`` address needs none.

What this module relies on from Ray's answers (checked by tests/test_ray_http.py against the
installed Ray): the envelope ``{"result": bool, "msg": str, "data": {"result": {...}}}``; in it
``result`` (a list of records), ``total``, ``num_after_truncation``, ``num_filtered``,
``partial_failure_warning``; ``/api/version``'s ``session_name``.
"""

from __future__ import annotations

import argparse
import math
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from fsd_daemon.discovery.ray_auth import RayAuth, RayChildFailed, is_rejection, run_ray_child
from fsd_daemon.plumbing.gcpause import paused_gc
from fsd_daemon.plumbing.httpclient import HttpFailed, http_request

# The API server scales the timeout it is sent by 0.8 and truncates to whole seconds; Ray
# 2.44 then refuses 0 ("0 second timeout is not supported", python/ray/util/state/common.py
# ListApiOptions.__post_init__), so anything below 2 s fails every request there. Later
# releases clamp to 1 s themselves. Never send less.
MIN_SERVER_TIMEOUT = 2
# A listing of 10,000 actors is a few MB of JSON; nothing Ray sends us is larger than this.
_MAX_BODY_BYTES = 256 * 1024 * 1024


class DashboardError(Exception):
    """A request failed. ``kind``: unreachable, timeout, auth, api_error or bad_response."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def server_timeout(timeout: float) -> int:
    """The ``timeout`` query value for a request we wait ``timeout`` seconds for."""
    return max(MIN_SERVER_TIMEOUT, math.ceil(timeout))


class DashboardClient:
    """GET requests to one dashboard URL, with Ray's auth header when token mode is on."""

    def __init__(self, url: str, auth: RayAuth) -> None:
        self.url = url.rstrip("/")
        self.auth = auth
        self._headers = {"Accept": "application/json", **auth.http_headers()}

    def get(self, path: str, params: Sequence[tuple[str, Any]], timeout: float) -> Any:
        """The JSON body of ``GET path?params``. Raises :class:`DashboardError`."""
        query = urllib.parse.urlencode([(k, _query_value(v)) for k, v in params])
        where = f"{self.url}{path}"
        try:
            body = http_request(
                f"{where}?{query}" if query else where,
                timeout=timeout,
                max_bytes=_MAX_BODY_BYTES + 1,
                headers=self._headers,
            ).body
        except HttpFailed as exc:
            if exc.kind == "status":
                text = _body_text(exc.body, exc.reason)
                if exc.status in (401, 403):
                    raise DashboardError(
                        "auth",
                        f"HTTP {exc.status} from {where}: {text}; {self.auth.rejected_hint()}",
                    ) from None
                raise DashboardError(
                    "api_error", f"HTTP {exc.status} from {where}: {text}"
                ) from None
            if exc.kind == "timeout":
                raise DashboardError(
                    "timeout", f"{where} did not answer within {timeout:g} s"
                ) from None
            raise DashboardError("unreachable", f"cannot reach {where}: {exc.reason}") from None
        if len(body) > _MAX_BODY_BYTES:
            raise DashboardError("bad_response", f"{where}: answer over {_MAX_BODY_BYTES} bytes")
        try:
            # orjson: about 4x faster than json at 10,000 actors (bench/scale.py). The
            # collector is paused while it decodes (see fsd_daemon.plumbing.gcpause).
            with paused_gc():
                return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DashboardError("bad_response", f"{where}: not JSON ({exc})") from None

    def list_state(
        self,
        resource: str,
        *,
        filters: Sequence[tuple[str, str, str]],
        limit: int,
        timeout: float,
    ) -> dict[str, Any]:
        """The ListApiResponse of ``/api/v0/<resource>`` (``detail=false``)."""
        params: list[tuple[str, Any]] = []
        for key, predicate, value in filters:
            params += [("filter_keys", key), ("filter_predicates", predicate)]
            params.append(("filter_values", value))
        params += [("limit", limit), ("timeout", server_timeout(timeout)), ("detail", False)]
        envelope = self.get(f"/api/v0/{resource}", params, timeout)
        try:
            if envelope["result"] is False:
                # The API server's own failure (a GCS timeout, a refused option): its words.
                raise DashboardError(
                    "api_error", f"Ray's state API refused /api/v0/{resource}: {envelope['msg']}"
                )
            listing = envelope["data"]["result"]
            if not isinstance(listing, dict) or not isinstance(listing["result"], list):
                raise TypeError("data.result.result is not a list")
        except (KeyError, TypeError) as exc:
            raise DashboardError(
                "bad_response", f"/api/v0/{resource}: unexpected answer ({exc!r})"
            ) from None
        return listing

    def session_name(self, timeout: float) -> str:
        """The Ray session's name from ``/api/version`` ("" when the answer has none)."""
        answer = self.get("/api/version", (), timeout)
        name = answer.get("session_name") if isinstance(answer, dict) else None
        return name if isinstance(name, str) and len(name) <= 200 else ""


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _body_text(body: bytes, reason: str, limit: int = 200) -> str:
    """The start of an error answer's body on one line, else the status line's reason."""
    text = " ".join(body[: limit * 4].decode("utf-8", "replace").split())
    return text[:limit] if text else reason


# -- finding the dashboard ------------------------------------------------------------------


def is_dashboard_url(address: str) -> bool:
    return address.startswith(("http://", "https://"))


def find_dashboard_url(address: str, auth: RayAuth, timeout: float) -> str:
    """The dashboard URL of the cluster at ``address`` (a URL, a GCS ``host:port`` or auto).

    A GCS address is asked in a child that imports Ray (killed at ``timeout``); its
    environment carries the auth decision so that Ray's GCS client sends the same token.
    Raises :class:`DashboardError`.
    """
    if is_dashboard_url(address):
        return address.rstrip("/")
    try:
        done = run_ray_child("fsd_daemon.discovery.ray_http", ["--address", address], auth, timeout)
    except RayChildFailed as exc:
        if exc.kind == "timeout":
            raise DashboardError(
                "timeout",
                f"the GCS at {address!r} did not say where the dashboard is within {timeout:g} s",
            ) from None
        raise DashboardError(exc.kind, f"the dashboard lookup failed: {exc}") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines and is_dashboard_url(lines[-1]):
        return lines[-1].strip()
    error = _last_error_line(done.stderr)
    if is_rejection(error):
        raise DashboardError(
            "auth", f"Ray at {address!r} rejected us (InvalidAuthToken): {auth.rejected_hint()}"
        )
    raise DashboardError("unreachable", f"cannot find Ray's dashboard via {address!r}: {error}")


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    # Ray's GCS client logs a warning per retry; the exception's last line says why it ended.
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:400]
    return lines[-1][:400] if lines else "no output"


def _main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fsd_daemon.discovery.ray_http",
        description="Print the dashboard URL of the Ray cluster at --address (GCS or auto).",
    )
    parser.add_argument("--address", required=True)
    args = parser.parse_args(argv)
    from ray.dashboard.utils import ray_address_to_api_server_url

    try:
        print(ray_address_to_api_server_url(args.address), flush=True)
    except Exception as exc:  # one line for the parent: the exception's last line says why
        text = " ".join(str(exc).split())
        print(f"{type(exc).__name__}: {text[:600]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
