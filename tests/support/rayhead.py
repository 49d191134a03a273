"""``ray start --head`` for the tests: it lives in ``fsd_daemon.sim.rayhead`` (the benches use it
too)."""

from __future__ import annotations

from fsd_daemon.sim.rayhead import (
    RAY_BIN,
    TOKEN,
    RayHead,
    clean_env,
    ray_has_token_auth,
    write_token,
)

__all__ = ["RAY_BIN", "TOKEN", "RayHead", "clean_env", "ray_has_token_auth", "write_token"]
