"""Small shared pieces of the GPU exporter tests: a fake clock and exposition parsing."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fsd_daemon.gpu.collector import GpuCollector
from fsd_daemon.gpu.ownership import Ownership
from fsd_daemon.gpu.sampler import Sampler


class FakeClock:
    """A clock that moves only when told; usable as monotonic, wall and timer clocks."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def render(
    sampler: Sampler,
    ownership: Callable[[], Ownership] = Ownership,
    *,
    node: str = "node-1",
) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        GpuCollector(
            lambda: sampler.snapshot,
            ownership,
            node=node,
            version="0.0.0-test",
            backend="nvml",
            python_version="3.x",
        )
    )
    return generate_latest(registry).decode()


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def select(series: Series, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {lbl: v for (n, lbl), v in series.items() if n == name and want <= lbl}


def one(series: Series, name: str, **labels: str) -> float:
    found = select(series, name, **labels)
    assert len(found) == 1, f"expected one {name}{labels}, got {found}"
    return next(iter(found.values()))


def names(series: Series) -> set[str]:
    return {n for n, _ in series}


def promtool_check(promtool: str, text: str) -> None:
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    problems = (done.stdout + done.stderr).decode()
    assert done.returncode == 0 and not problems.strip(), problems
