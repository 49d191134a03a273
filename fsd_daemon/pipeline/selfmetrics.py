"""The daemon's own metrics and health: what the pipeline records about itself (polls, writes,
targets, Ray's state); the service serves them on an optional listener (127.0.0.1 by default)."""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from fsd_daemon import __version__


class Health:
    """Why the daemon is degraded, by area ("ray", "write:rollout.json", ...), and when it last
    completed a poll. Read by /healthz from another thread, hence the lock."""

    def __init__(self, stale_after_seconds: float, clock: Any = time.monotonic) -> None:
        self.stale_after_seconds = stale_after_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {}
        self._last_success: float | None = None
        self._started = clock()

    def problem(self, area: str, message: str) -> None:
        with self._lock:
            self._problems[area] = message

    def clear(self, area: str) -> None:
        with self._lock:
            self._problems.pop(area, None)

    def clear_prefix(self, prefix: str) -> None:
        with self._lock:
            for area in [a for a in self._problems if a.startswith(prefix)]:
                del self._problems[area]

    def succeeded(self) -> None:
        with self._lock:
            self._last_success = self._clock()

    def check(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            now = self._clock()
            problems = dict(self._problems)
            since = now - (self._last_success if self._last_success is not None else self._started)
            if since > self.stale_after_seconds:
                problems.setdefault("poll", f"no successful poll for {since:.0f}s")
            details: dict[str, Any] = {"problems": problems}
            if self._last_success is not None:
                details["seconds_since_last_successful_poll"] = round(now - self._last_success, 3)
            return not problems, details


class SelfMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        Info("fsd_daemon_build", "fsd-daemon version.", registry=r).info({"version": __version__})
        self.poll_duration = Histogram(
            "fsd_daemon_poll_duration_seconds",
            "Wall time of one poll: listing Ray, resolving, rendering and writing.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.poll_errors = Counter(
            "fsd_daemon_poll_errors_total",
            "Failed polls or writes, by kind (unreachable, timeout, api_error, write, ...).",
            ["kind"],
            registry=r,
        )
        self.targets = Gauge(
            "fsd_daemon_targets", "Targets in each file as last written.", ["file"], registry=r
        )
        self.writes = Counter(
            "fsd_daemon_writes_total",
            "Target file writes (only when the content changed).",
            ["file"],
            registry=r,
        )
        self.dropped = Counter(
            "fsd_daemon_dropped_targets_total",
            "Targets left out of a file because Prometheus would reject them, once per offender.",
            ["file", "reason"],
            registry=r,
        )
        self.restores = Counter(
            "fsd_daemon_restores_total",
            "Target files put back after someone else deleted or changed them.",
            ["file"],
            registry=r,
        )
        self.last_success = Gauge(
            "fsd_daemon_last_successful_poll_timestamp_seconds",
            "Unix time of the last poll in which Ray answered.",
            registry=r,
        )
        self.servers = Gauge(
            "fsd_daemon_rollout_servers",
            "Rollout servers known, resolved or not yet.",
            registry=r,
        )
        self.healthy = Gauge(
            "fsd_daemon_healthy", "1 when the last poll and every write succeeded.", registry=r
        )
        self.truncated = Gauge(
            "fsd_daemon_actor_list_truncated",
            "1 when Ray's actor list reached ray.actor_limit (servers are then never removed).",
            registry=r,
        )
        for kind in ("unreachable", "timeout", "api_error", "partial", "write"):
            self.poll_errors.labels(kind)
