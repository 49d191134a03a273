"""A small client of Prometheus' HTTP query API (``/api/v1/query``, ``/api/v1/query_range``)."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsd_daemon.plumbing.httpclient import HttpFailed, http_request

# Prometheus refuses a range query of more than 11,000 points per series.
MAX_POINTS = 11_000
_MAX_RESPONSE_BYTES = 512 * 1024 * 1024
# A range query asks for at most this many steps at once: a day of 1,000 GPUs at one query
# is hundreds of MB of JSON and of Python objects; slices keep the peak to one slice's.
SLICE_POINTS = 1_000


class PrometheusUnreachable(RuntimeError):
    """No HTTP answer from Prometheus at all (refused, timed out, DNS)."""


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with a result (bad query, HTTP error, not Prometheus)."""


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and its samples' times (unix seconds) and
    values, in time order."""

    labels: dict[str, str]
    times: np.ndarray
    values: np.ndarray

    @classmethod
    def from_samples(cls, labels: dict[str, str], samples: list[tuple[float, float]]) -> Series:
        times = np.array([t for t, _ in samples], dtype=float)
        return cls(labels, times, np.array([v for _, v in samples], dtype=float))


class Prometheus:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str]) -> Any:
        # GET: every endpoint takes it (the targets API takes nothing else).
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            body = http_request(url, timeout=self.timeout, max_bytes=_MAX_RESPONSE_BYTES).body
        except HttpFailed as exc:
            if exc.kind == "status":
                detail = _error_text(exc.body)
                raise PrometheusError(f"HTTP {exc.status} from {self.url}{path}: {detail}") from exc
            reason = exc.reason or exc
            raise PrometheusUnreachable(f"cannot reach Prometheus at {self.url}: {reason}") from exc
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise PrometheusError(f"{self.url}{path} answered no JSON: is it Prometheus?") from exc
        if not isinstance(data, dict) or data.get("status") != "success":
            raise PrometheusError(f"{self.url}{path}: {_error_text(body)}")
        return data.get("data", {})

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """The range as slices of at most SLICE_POINTS steps, each turned into arrays before
        the next is asked; one Series per label set, its slices joined."""
        parts: dict[
            tuple[tuple[str, str], ...], tuple[dict[str, str], list[np.ndarray], list[np.ndarray]]
        ] = {}
        lo = start
        while lo <= end:
            hi = min(end, lo + (SLICE_POINTS - 1) * step)
            data = self._get(
                "/api/v1/query_range",
                {"query": expr, "start": f"{lo:.3f}", "end": f"{hi:.3f}", "step": f"{step:g}"},
            )
            for item in data.get("result", []):
                labels = dict(item.get("metric", {}))
                pairs = item.get("values", [])
                entry = parts.setdefault(tuple(sorted(labels.items())), (labels, [], []))
                entry[1].append(np.fromiter((p[0] for p in pairs), float, len(pairs)))
                entry[2].append(np.array([p[1] for p in pairs], dtype=float))
            del data
            lo = hi + step
        return [
            Series(labels=labels, times=np.concatenate(times), values=np.concatenate(values))
            for labels, times, values in parts.values()
        ]

    def scrape_intervals(self) -> list[tuple[dict[str, str], str]]:
        """(labels, scrape interval) of each active target (``/api/v1/targets``)."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return [
            (dict(t.get("labels", {})), str(t.get("scrapeInterval", "")))
            for t in data.get("activeTargets", [])
            if isinstance(t, dict)
        ]

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        return [
            (dict(item.get("metric", {})), float(item["value"][1]))
            for item in data.get("result", [])
        ]


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
        return str(data.get("error") or data)[:300]
    except ValueError:
        return body[:300].decode("utf-8", "replace").strip() or "(empty answer)"
