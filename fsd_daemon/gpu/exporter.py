"""Wiring: backend -> sampler thread -> snapshot; ownership thread; collector; HTTP listener.

Three threads do the work and none waits on another: the sampler (the only caller of the
driver), the ownership tracker (psutil; reads the sampler's snapshot) with its Ray name
resolver, and the HTTP listener, whose scrapes render the two latest immutable snapshots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from fsd_daemon import __version__
from fsd_daemon.config import Config, parse_listen
from fsd_daemon.gpu.backend import GpuBackend
from fsd_daemon.gpu.collector import GpuCollector
from fsd_daemon.gpu.ownership import OwnershipTracker
from fsd_daemon.gpu.raylookup import ActorNameResolver
from fsd_daemon.gpu.sampler import Sampler
from fsd_daemon.plumbing.httpserve import MetricsServer
from fsd_daemon.plumbing.metricscache import RenderedMetrics
from fsd_daemon.plumbing.webconfig import BasicAuth, WebConfig

log = logging.getLogger(__name__)


class Exporter:
    """One node's GPU exporter. :meth:`start` starts the threads and the listener (a bind
    failure raises OSError there); :meth:`stop` stops them."""

    def __init__(
        self,
        backend: GpuBackend,
        config: Config,
        *,
        node: str,
        backend_name: str,
        listen: tuple[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        python_version: str | None = None,
        web_config: WebConfig | None = None,
    ) -> None:
        ex = config.exporter
        self.config = config
        self.node = node
        self.sampler = Sampler(
            backend,
            interval=ex.sample_interval_seconds,
            retry_interval=ex.nvml_retry_seconds,
            clock=clock,
            on_snapshot=self._data_changed,
        )
        self.resolver = ActorNameResolver(
            # The child process imports Ray (about a second) before its own request timeout.
            timeout=max(10.0, 3 * config.ray.request_timeout_seconds),
            retry=ex.ownership_interval_seconds,
            on_change=self._names_arrived,
        )
        self.ownership = OwnershipTracker(
            lambda: self.sampler.snapshot,
            roles=config.gpu_roles,
            patterns=config.patterns,
            interval=ex.ownership_interval_seconds,
            resolver=self.resolver,
            on_refresh=self._data_changed,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = GpuCollector(
            lambda: self.sampler.snapshot,
            lambda: self.ownership.ownership,
            node=node,
            version=__version__,
            backend=backend_name,
            python_version=python_version,
        )
        self.registry.register(self.collector)
        # Scrapes serve bytes rendered when a snapshot is replaced (on the sampler's and the
        # tracker's threads), not rendered per scrape: see fsd_daemon.plumbing.metricscache.
        self.metrics = RenderedMetrics(
            self.registry, lambda: (self.sampler.snapshot, self.ownership.ownership)
        )
        self.listen = listen if listen is not None else parse_listen(ex.listen, "exporter.listen")
        self.web_config = web_config
        self._server: MetricsServer | None = None

    def _data_changed(self) -> None:
        self.metrics.refresh()

    def _names_arrived(self) -> None:
        self.ownership.wake()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return self._server.port

    def start(self) -> Exporter:
        host, port = self.listen
        # Bind first: a port in use fails start-up before any thread runs.
        web = self.web_config
        self._server = MetricsServer(
            host,
            port,
            self.registry,
            health=self.health,
            metrics_app=self.metrics,
            ssl_context=web.ssl_context if web is not None else None,
            authenticate=BasicAuth(web.users) if web is not None and web.users else None,
        )
        self.sampler.start()
        self.ownership.start()
        self._server.start()
        log.info(
            "fsd-gpu-exporter %s serving %s://%s:%d/metrics (node %s, sampling every %.3g s%s)",
            __version__,
            "https" if web is not None and web.ssl_context is not None else "http",
            host,
            self.port,
            self.node,
            self.sampler.interval,
            f"; {web.describe()} from {web.path}" if web is not None else "",
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self.ownership.stop()
        self.sampler.stop()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while the sampler's ticks keep coming (see :meth:`Sampler.health`)."""
        healthy, details = self.sampler.health()
        now = time.time()
        details["ownership_age_seconds"] = _age(self.ownership.ownership.refreshed_at, now)
        details["last_sample_age_seconds"] = _age(
            self.sampler.snapshot.last_sample_timestamp_seconds, now
        )
        return healthy, details


def _age(timestamp: float | None, now: float) -> float | None:
    """Seconds since the wall-clock ``timestamp`` (None before the first one)."""
    return None if timestamp is None else round(max(0.0, now - timestamp), 3)
