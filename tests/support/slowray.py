"""Slow and failing Ray backends for the bridge: they live in ``fsd_daemon.sim.slowray`` (the
cold-start bench uses them too); the bridge child loads them by name from either module."""

from __future__ import annotations

from fsd_daemon.sim.slowray import FailingBackend, NoisyFailingBackend, SlowBackend, address_of

__all__ = ["FailingBackend", "NoisyFailingBackend", "SlowBackend", "address_of"]
