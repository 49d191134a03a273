"""One HTTP request with the standard library, its failures sorted into three kinds.

Every HTTP client in fsd_daemon (Ray's dashboard, Prometheus' API and reload, a target's
/metrics, the demo's readiness checks) asks through :func:`http_request`, so that a timeout is a
timeout wherever it surfaces (urllib raises it bare or wrapped in ``URLError``), an HTTP error
status always comes with a bounded piece of its body, and no caller leaks a response.
urllib rather than a third-party client: the daemon's answers are small, one request at a time
per thread, and urllib adds nothing to the daemon's memory or dependencies.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

# How much of an error answer's body is kept: enough for its message, never a whole page.
ERROR_BODY_BYTES = 4096


class HttpFailed(OSError):
    """No usable answer. ``kind``: ``"status"`` (an HTTP error status, in ``status``, with the
    start of its body in ``body``), ``"timeout"`` or ``"unreachable"``.

    An OSError, as urllib's own errors are, so that a caller that treats every network
    failure alike can keep catching OSError.
    """

    def __init__(
        self, kind: str, message: str, *, status: int = 0, reason: str = "", body: bytes = b""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.reason = reason
        self.body = body


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes


def http_request(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    method: str = "GET",
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> HttpReply:
    """``method url``; the status and at most ``max_bytes`` of the body (read ``max_bytes + 1``
    to tell a body that was cut). Raises :class:`HttpFailed`; a URL urllib cannot parse
    raises ValueError, as urllib does."""
    prepared = urllib.request.Request(url, data=data, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(prepared, timeout=timeout, context=context) as reply:
            return HttpReply(int(reply.status), reply.read(max_bytes))
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(ERROR_BODY_BYTES)
        except OSError:
            body = b""
        finally:
            exc.close()
        reason = exc.reason if isinstance(exc.reason, str) else ""
        raise HttpFailed(
            "status", f"HTTP {exc.code} from {url}", status=exc.code, reason=reason, body=body
        ) from None
    except TimeoutError:
        raise _timed_out(url, timeout) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _timed_out(url, timeout) from None
        raise HttpFailed(
            "unreachable", f"cannot reach {url}: {exc.reason}", reason=str(exc.reason)
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise HttpFailed("unreachable", f"{url} failed: {exc!r}", reason=repr(exc)) from None


def _timed_out(url: str, timeout: float) -> HttpFailed:
    return HttpFailed("timeout", f"{url} did not answer within {timeout:g} s", reason="timed out")
