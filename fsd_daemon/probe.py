"""GET a server's metrics path and say what came back: the answer Prometheus cannot give.

Prometheus records a failed scrape as ``up == 0`` whether the server is dead or answers 404
(SGLang under verl's defaults has no ``/metrics`` route), and records ``up == 1`` for a vLLM
server whose ``/metrics`` has no ``vllm:`` series (verl's default ``disable_log_stats=True``).
This module tells the cases apart, for ``fsd-daemon doctor`` and for fsd-daemon itself:

* :func:`probe` / :func:`probe_all`: one GET per target, bounded in time and size, many at once.
* :class:`MetricsProbeCollector`: the last results as two gauges on the daemon's registry,
  ``fsd_daemon_rollout_metrics_probe_http_status`` (0: no HTTP answer) and
  ``fsd_daemon_rollout_metrics_probe_engine_series``, which the alert
  ``FsdRolloutMetricsRouteMissing`` reads and ``FsdRolloutTargetDown`` uses to leave 404s out.

* :class:`RolloutMetricsProbe`: both on a :class:`~fsd_daemon.plumbing.periodic.PeriodicWorker`, for
  the daemon. Wiring (the poll itself stays free of calls to the servers)::

      probe = RolloutMetricsProbe(self_metrics.registry, lambda: last_rollout_targets)
      probe.start()   # after the first poll; probe.stop() at shutdown
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from threading import Lock

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from fsd_daemon.mixin import names
from fsd_daemon.pipeline.render import Target
from fsd_daemon.plumbing.httpclient import HttpFailed, http_request
from fsd_daemon.plumbing.periodic import PeriodicWorker

# A vLLM /metrics page is a few hundred kB; stop reading well before a hostile server's body
# could hurt.
MAX_BODY_BYTES = 32 * 1024 * 1024
# The classic text format keeps "vllm:" names intact (an OpenMetrics answer from
# prometheus_client >= 0.22 turns the colon into "_").
_ACCEPT = "text/plain;version=0.0.4"

OK = "ok"
ROUTE_MISSING = "route_missing"  # HTTP 404
NO_ENGINE_SERIES = "no_engine_series"  # HTTP 200 without the engine's series
HTTP_ERROR = "http_error"  # any other HTTP status
UNREACHABLE = "unreachable"  # no HTTP answer at all (refused, timeout, reset)

# Labels the gauges carry, from the target's labels (address and metrics_path added).
_PROBE_LABELS = (
    names.PROBE_ADDRESS,
    "metrics_path",
    names.CLUSTER,
    names.ENGINE,
    names.ROLE,
    names.REPLICA,
    names.RAY_JOB_ID,
    names.ACTOR_NAME,
    # "absent" on verl <= 0.5 servers: the rules give their 404 its own alert.
    names.METRICS_ROUTE,
)


@dataclass(frozen=True)
class ProbeResult:
    target: Target
    metrics_path: str
    http_status: int  # 0: no HTTP answer
    engine_series: int  # samples whose name has the expected prefix; -1: prefix unknown
    error: str = ""  # why there was no answer, or the HTTP reason

    @property
    def url(self) -> str:
        return f"http://{self.target.address}{self.metrics_path}"

    @property
    def verdict(self) -> str:
        if self.http_status == 0:
            return UNREACHABLE
        if self.http_status == 404:
            return ROUTE_MISSING
        if self.http_status != 200:
            return HTTP_ERROR
        if self.engine_series == 0:
            return NO_ENGINE_SERIES
        return OK


def metrics_path_of(target: Target) -> str:
    path = target.label(names.METRICS_PATH) or names.DEFAULT_METRICS_PATH
    return path if path.startswith("/") else names.DEFAULT_METRICS_PATH


def expected_prefix(target: Target) -> str | None:
    """The metric-name prefix a rollout server must export (None: engine not known here)."""
    return names.ENGINE_PREFIXES.get(target.label(names.ENGINE))


def probe(target: Target, *, timeout: float, prefix: str | None = None) -> ProbeResult:
    """GET the target's metrics path once; never raises. ``prefix`` defaults to the engine's
    (``vllm:`` / ``sglang:``); pass ``"fsd_gpu_"`` for an exporter."""
    prefix = prefix if prefix is not None else expected_prefix(target)
    path = metrics_path_of(target)
    url = f"http://{target.address}{path}"
    try:
        reply = http_request(
            url, timeout=timeout, max_bytes=MAX_BODY_BYTES, headers={"Accept": _ACCEPT}
        )
    except HttpFailed as exc:
        if exc.kind == "status":
            return ProbeResult(target, path, exc.status, 0, exc.reason[:200])
        return ProbeResult(target, path, 0, 0, f"{exc.kind}: {exc.reason}"[:200])
    except ValueError as exc:  # a URL urllib cannot parse
        return ProbeResult(target, path, 0, 0, f"{type(exc).__name__}: {exc}"[:200])
    return ProbeResult(target, path, reply.status, _count_series(reply.body, prefix))


def _count_series(body: bytes, prefix: str | None) -> int:
    if prefix is None:
        return -1
    wanted = prefix.encode()
    # OpenMetrics answers turn "vllm:" into "vllm_": accept both spellings of an engine prefix.
    alternative = wanted[:-1] + b"_" if wanted.endswith(b":") else wanted
    return sum(
        1 for line in body.splitlines() if line.startswith(wanted) or line.startswith(alternative)
    )


def probe_all(
    targets: Iterable[Target],
    *,
    timeout: float = 3.0,
    concurrency: int = 32,
    prefix: str | None = None,
) -> list[ProbeResult]:
    """Probe every target, ``concurrency`` at a time; results in the targets' order. Total time
    is about ceil(n / concurrency) * timeout at worst."""
    targets = list(targets)
    if not targets:
        return []
    workers = max(1, min(concurrency, len(targets)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fsd-probe") as pool:
        return list(pool.map(lambda t: probe(t, timeout=timeout, prefix=prefix), targets))


class MetricsProbeCollector(Collector):
    """The last probe results as gauges. ``update`` replaces them all: servers that are gone
    leave no stale series behind."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._lock = Lock()
        self._results: tuple[ProbeResult, ...] = ()
        if registry is not None:
            registry.register(self)

    def update(self, results: Sequence[ProbeResult]) -> None:
        with self._lock:
            self._results = tuple(results)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            results = self._results
        status = GaugeMetricFamily(
            names.DAEMON_METRICS_PROBE_STATUS,
            "HTTP status of the last GET of each rollout server's metrics path (0: no HTTP "
            "answer; 404: no metrics route).",
            labels=_PROBE_LABELS,
        )
        series = GaugeMetricFamily(
            names.DAEMON_METRICS_PROBE_ENGINE_SERIES,
            "Engine samples (vllm:..., sglang:...) in that answer (-1: engine not checked).",
            labels=_PROBE_LABELS,
        )
        for result in results:
            labels = [
                result.target.address,
                result.metrics_path,
                *(result.target.label(name) for name in _PROBE_LABELS[2:]),
            ]
            status.add_metric(labels, result.http_status)
            series.add_metric(labels, result.engine_series)
        yield status
        yield series

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class RolloutMetricsProbe:
    """fsd-daemon's probe: every ``interval`` seconds, on its own thread, export a verdict for
    each rollout target that ``targets()`` returns (the last poll's rollout.json).

    A round GETs only the targets whose verdict may have changed: new ones, those whose last
    answer was not OK, and OK ones last asked more than ``recheck_ok_interval`` ago. A server
    whose route and engine series were there keeps them until it restarts, and a restarted
    server is a new target (verl binds a fresh port); Prometheus' own ``up`` tells a server that
    died. So a quiet cluster of N healthy servers costs N page downloads per
    ``recheck_ok_interval``, not per ``interval`` (a vLLM page is hundreds of kB). A round costs
    at most about ceil(due / concurrency) * timeout seconds."""

    def __init__(
        self,
        registry: CollectorRegistry,
        targets: Callable[[], Sequence[Target]],
        *,
        interval: float = 60.0,
        recheck_ok_interval: float = 900.0,
        timeout: float = 3.0,
        concurrency: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collector = MetricsProbeCollector(registry)
        self._targets = targets
        self._timeout = timeout
        self._concurrency = concurrency
        self._recheck_ok_interval = recheck_ok_interval
        self._clock = clock
        # (address, metrics path) -> (last result, clock time of its GET). Only the worker
        # thread touches it; entries of targets no longer listed are dropped every round.
        self._last: dict[tuple[str, str], tuple[ProbeResult, float]] = {}
        self._worker = PeriodicWorker("fsd-metrics-probe", self.run_once, interval)

    def run_once(self) -> None:
        targets = list(self._targets())
        now = self._clock()
        keys = [(t.address, metrics_path_of(t)) for t in targets]
        due = [
            target
            for target, key in zip(targets, keys, strict=True)
            if not self._still_ok(self._last.get(key), now)
        ]
        for result in probe_all(due, timeout=self._timeout, concurrency=self._concurrency):
            self._last[(result.target.address, result.metrics_path)] = (result, now)
        self._last = {key: self._last[key] for key in keys if key in self._last}
        # The labels of a target may change without a new GET (a replica relabelled): export
        # each verdict under the target as listed now.
        listed = zip(targets, keys, strict=True)
        self.collector.update([replace(self._last[key][0], target=t) for t, key in listed])

    def _still_ok(self, last: tuple[ProbeResult, float] | None, now: float) -> bool:
        if last is None:
            return False
        result, asked_at = last
        return result.verdict == OK and now - asked_at < self._recheck_ok_interval

    def start(self) -> RolloutMetricsProbe:
        self._worker.start()
        return self

    def wake(self) -> None:
        """Probe now (the target file changed): a new server's verdict should not wait for
        the next round."""
        self._worker.wake()

    def stop(self, timeout: float = 10.0) -> None:
        self._worker.stop(timeout)

    @property
    def running(self) -> bool:
        return self._worker.running
