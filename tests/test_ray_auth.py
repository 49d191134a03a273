"""Ray's token auth decided as Ray's CLI decides it: mode, token sources and their order, and
the token never shown. Sources and order: ray-project/ray
src/ray/rpc/authentication/authentication_token_loader.cc (TryLoadTokenFromSources) and
python/ray/_private/authentication/authentication_token_setup.py
(maybe_enable_token_auth_if_token_available)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsd_daemon.discovery.ray_auth import RayAuthError, resolve_auth

TOKEN = "abcdef0123456789"


def _home(tmp_path: Path, token: str | None) -> Path:
    home = tmp_path / "home"
    if token is not None:
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text(token)
    else:
        home.mkdir(parents=True)
    return home


def test_unset_mode_and_no_token_means_off(tmp_path: Path) -> None:
    """A user without any token: no header, no child env, and the log says why."""
    auth = resolve_auth({"HOME": str(_home(tmp_path, None))})
    assert not auth.token_mode
    assert auth.http_headers() == {}
    assert auth.child_env() == {}
    assert "no token" in auth.describe()


def test_unset_mode_with_default_token_file_turns_token_mode_on(tmp_path: Path) -> None:
    """`ray start --head` left ~/.ray/auth_token (with a newline): token mode, trimmed token."""
    home = _home(tmp_path, f"  {TOKEN}\nsecond line ignored\n")
    auth = resolve_auth({"HOME": str(home)})
    assert auth.token_mode
    assert auth.http_headers() == {"Authorization": f"Bearer {TOKEN}"}
    assert auth.child_env() == {"RAY_AUTH_MODE": "token"}
    assert str(home / ".ray" / "auth_token") in auth.source
    assert TOKEN not in auth.describe() and TOKEN not in repr(auth)


def test_token_sources_in_rays_order(tmp_path: Path) -> None:
    """RAY_AUTH_TOKEN beats RAY_AUTH_TOKEN_PATH, which beats ~/.ray/auth_token."""
    home = _home(tmp_path, "from-home")
    path = tmp_path / "token"
    path.write_text("from-path\n")
    env = {"HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(path), "RAY_AUTH_TOKEN": "from-env"}
    assert resolve_auth(env).http_headers()["Authorization"] == "Bearer from-env"
    assert resolve_auth(env).source == "RAY_AUTH_TOKEN"
    del env["RAY_AUTH_TOKEN"]
    assert resolve_auth(env).http_headers()["Authorization"] == "Bearer from-path"
    assert resolve_auth(env).source == f"RAY_AUTH_TOKEN_PATH ({path})"
    del env["RAY_AUTH_TOKEN_PATH"]
    assert resolve_auth(env).http_headers()["Authorization"] == "Bearer from-home"


def test_unreadable_token_path_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    """Ray does not fall back to ~/.ray/auth_token when RAY_AUTH_TOKEN_PATH is unusable."""
    home = _home(tmp_path, "from-home")
    with pytest.raises(RayAuthError, match="cannot be read"):
        resolve_auth({"HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(RayAuthError, match="is empty"):
        resolve_auth({"HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(empty)})


def test_explicit_mode_is_obeyed(tmp_path: Path) -> None:
    """RAY_AUTH_MODE=disabled sends no token even if one exists; =token without one fails."""
    home = _home(tmp_path, TOKEN)
    off = resolve_auth({"HOME": str(home), "RAY_AUTH_MODE": "disabled"})
    assert not off.token_mode and off.http_headers() == {}
    assert "RAY_AUTH_MODE=token" in off.rejected_hint()
    with pytest.raises(RayAuthError, match="no token"):
        resolve_auth({"HOME": str(_home(tmp_path / "x", None)), "RAY_AUTH_MODE": "token"})


def test_a_token_that_would_break_the_header_is_refused(tmp_path: Path) -> None:
    """A control character cannot reach an HTTP header (the first line only is read, and
    what is left must be printable ASCII)."""
    with pytest.raises(RayAuthError, match="printable"):
        resolve_auth({"HOME": str(tmp_path), "RAY_AUTH_TOKEN": "abc\x00def"})


def test_rejection_hints_are_one_line_and_name_the_source(tmp_path: Path) -> None:
    home = _home(tmp_path, TOKEN)
    on = resolve_auth({"HOME": str(home)})
    none = resolve_auth({"HOME": str(tmp_path / "nohome")})
    for hint in (on.rejected_hint(), none.rejected_hint()):
        assert "\n" not in hint and "ray get-auth-token" in hint
    assert "~/.ray/auth_token" in on.rejected_hint()
    assert "RAY_AUTH_TOKEN_PATH" in none.rejected_hint()
