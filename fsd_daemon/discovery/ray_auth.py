"""Ray's token authentication, decided the way Ray's own CLI decides it.

Since Ray 2.52, ``ray start --head`` turns token mode on when ``RAY_AUTH_MODE`` is unset and a
token can be found; a process that connects later with an explicit address does not do that
by itself (``ray.init(address=...)`` and ``ray.util.state`` then fail with ``InvalidAuthToken
... RAY_AUTH_MODE is currently 'disabled'``). Every Ray client of fsd_daemon (the state API
over HTTP, the bridge child, the exporter's name lookup) takes its decision from here:

- ``RAY_AUTH_MODE`` set: obeyed as it is (``token`` needs a token; anything else sends none);
- unset: token mode when a token is found, in Ray's order (ray-project/ray
  ``src/ray/rpc/authentication/authentication_token_loader.cc``, TryLoadTokenFromSources):
  ``RAY_AUTH_TOKEN`` (non-empty), else the first line of ``RAY_AUTH_TOKEN_PATH`` (set but
  unreadable or empty is an error, with no fall-through), else ``$HOME/.ray/auth_token``;
  each trimmed of whitespace.

The token itself never reaches a log line or a ``repr``: only where it came from does.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

# Ray's names (python/ray/_private/authentication/authentication_constants.py).
AUTH_MODE_VAR = "RAY_AUTH_MODE"
TOKEN_VAR = "RAY_AUTH_TOKEN"
TOKEN_PATH_VAR = "RAY_AUTH_TOKEN_PATH"
AUTHORIZATION_HEADER = "Authorization"
BEARER_PREFIX = "Bearer "

log = logging.getLogger(__name__)

# A token is a line of printable ASCII; anything longer than this is not a Ray token.
_MAX_TOKEN_CHARS = 4096


class RayAuthError(Exception):
    """The auth settings cannot work (token mode without a token, an unreadable token file)."""


@dataclass(frozen=True, slots=True)
class RayAuth:
    """What a Ray client of this process sends: a token (or none) and where it came from."""

    token_mode: bool
    source: str  # "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH (/x)", "~/.ray/auth_token (/x)", ""
    why: str  # how the mode was decided, for the log
    token: str = field(default="", repr=False)

    def http_headers(self) -> dict[str, str]:
        """The header Ray's dashboard checks (``Authorization: Bearer <token>``), or none."""
        if not self.token_mode or not self.token:
            return {}
        return {AUTHORIZATION_HEADER: BEARER_PREFIX + self.token}

    def child_env(self) -> dict[str, str]:
        """Variables a child that imports Ray needs to decide as we did.

        Ray's loader reads the same sources in the same order, so naming the mode is enough:
        the child finds the same token itself and the token never travels in an argument.
        """
        return {AUTH_MODE_VAR: "token"} if self.token_mode else {}

    def describe(self) -> str:
        """One phrase for the log: the mode, why, and the token's source (never the token)."""
        if self.token_mode:
            return f"Ray token auth on ({self.why}; token from {self.source})"
        return f"Ray token auth off ({self.why})"

    def rejected_hint(self) -> str:
        """What to do, in one line, when the cluster answers 401/403 or InvalidAuthToken."""
        if not self.token_mode:
            if self.why.startswith(AUTH_MODE_VAR + "="):  # set explicitly to another mode
                return (
                    f"the Ray cluster requires a token but {self.why}: set "
                    f"{AUTH_MODE_VAR}=token and {TOKEN_PATH_VAR}=<file holding the token "
                    f"that `ray get-auth-token` prints on the head node>"
                )
            return (
                "the Ray cluster requires a token and none was found: set "
                f"{TOKEN_PATH_VAR}=<file holding the token that `ray get-auth-token` prints on "
                f"the head node> (or put it in ~/.ray/auth_token of the user the daemon runs as)"
            )
        return (
            f"the Ray cluster rejected the token from {self.source}: it must be the cluster's "
            "own token (`ray get-auth-token` on the head node prints it)"
        )


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline(_MAX_TOKEN_CHARS + 1).strip()


def _checked(token: str, source: str) -> str:
    # A header value must be one line of printable ASCII; anything else is not Ray's token
    # and would make the request itself malformed.
    if len(token) > _MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise RayAuthError(f"the Ray token from {source} is not one line of printable ASCII")
    return token


def find_token(env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(token, source)`` from Ray's sources in Ray's order; None when there is none.

    Raises :class:`RayAuthError` when ``RAY_AUTH_TOKEN_PATH`` is set but unreadable or empty
    (Ray treats that as an error too, rather than trying the default file).
    """
    direct = env.get(TOKEN_VAR, "")
    if direct:
        token = direct.strip()
        if token:
            return _checked(token, TOKEN_VAR), TOKEN_VAR
    path_value = env.get(TOKEN_PATH_VAR, "")
    if path_value:
        source = f"{TOKEN_PATH_VAR} ({path_value})"
        try:
            token = _first_line(Path(path_value))
        except OSError as exc:
            raise RayAuthError(
                f"{TOKEN_PATH_VAR}={path_value} cannot be read: {exc.strerror or exc}"
            ) from None
        if not token:
            raise RayAuthError(f"{TOKEN_PATH_VAR}={path_value} is empty")
        return _checked(token, source), source
    home = env.get("HOME", "")
    default = Path(home) / ".ray" / "auth_token" if home else Path(".ray/auth_token")
    try:
        token = _first_line(default)
    except OSError:
        return None
    if not token:
        return None
    source = f"~/.ray/auth_token ({default})"
    return _checked(token, source), source


def resolve_auth(env: Mapping[str, str] | None = None) -> RayAuth:
    """Decide token mode as Ray's CLI does (see the module docstring). Raises RayAuthError."""
    env = os.environ if env is None else env
    mode = env.get(AUTH_MODE_VAR)
    if mode is not None and mode.strip().lower() != "token":
        return RayAuth(token_mode=False, source="", why=f"{AUTH_MODE_VAR}={mode}")
    found = find_token(env)
    if mode is not None:  # "token"
        if found is None:
            raise RayAuthError(
                f"{AUTH_MODE_VAR}=token but no token was found: set {TOKEN_PATH_VAR}=<file> "
                f"or {TOKEN_VAR}, or put it in ~/.ray/auth_token"
            )
        return RayAuth(True, found[1], f"{AUTH_MODE_VAR}=token", found[0])
    if found is None:
        return RayAuth(
            token_mode=False,
            source="",
            why=f"{AUTH_MODE_VAR} unset and no token in {TOKEN_VAR}, {TOKEN_PATH_VAR} "
            "or ~/.ray/auth_token",
        )
    return RayAuth(True, found[1], f"{AUTH_MODE_VAR} unset and a token was found", found[0])


@runtime_checkable
class ReloadsAuth(Protocol):
    """A Ray client that can read its token again (a rotated token file)."""

    def reload_auth(self) -> bool:
        """Find the token again; True when what is sent changed."""
        ...


def is_rejection(text: str) -> bool:
    """Whether an error text is Ray refusing our credentials (gRPC or HTTP)."""
    lowered = text.lower()
    return (
        "invalidauthtoken" in lowered
        or "unauthenticated" in lowered
        or "authentication token" in lowered
        or "http 401" in lowered
        or "http 403" in lowered
    )


class RayChildFailed(Exception):
    """A Ray-side child could not run or was killed. ``kind``: "timeout" or "unreachable"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class RayChildResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def rejected(self) -> bool:
        """Whether the child failed because Ray refused our credentials."""
        return self.returncode != 0 and is_rejection(self.stderr)


def run_ray_child(
    module: str, args: Sequence[str], auth: RayAuth, timeout: float
) -> RayChildResult:
    """``python -m module args`` with this process's auth decision in its environment, so
    that the child's Ray client sends the same token; killed at ``timeout``.

    A child keeps Ray (its import, its memory, a call that hangs) out of the caller's process.
    Raises :class:`RayChildFailed` when it cannot start or runs out of time.
    """
    command = [sys.executable, "-m", module, *args]
    env = {**os.environ, **auth.child_env()}
    try:
        done = subprocess.run(
            command,
            env=env,
            capture_output=True,
            timeout=timeout,
            check=False,
            text=True,
            errors="replace",
        )
    except subprocess.TimeoutExpired:
        raise RayChildFailed("timeout", f"{module} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise RayChildFailed("unreachable", f"cannot run {module}: {exc}") from None
    return RayChildResult(done.returncode, done.stdout, done.stderr)


_logged: set[str] = set()
_logged_lock = threading.Lock()


def load_auth() -> RayAuth:
    """This process's decision, logged once per distinct decision (the token's source, never
    the token). Raises :class:`RayAuthError`."""
    auth = resolve_auth()
    line = auth.describe()
    with _logged_lock:
        if line not in _logged:
            _logged.add(line)
            log.info("%s", line)
    return auth
