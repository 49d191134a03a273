"""/metrics served from cached renders: the same bytes prometheus_client renders, in every form
a scraper asks for, rendered once per new snapshot rather than once per scrape.

The exporter runs in-process with the simulated driver and serves real HTTP on 127.0.0.1.
Ticks are driven by hand (intervals of an hour), so each test knows which snapshot is current.
"""

from __future__ import annotations

import gzip
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from fsd_daemon.config import Config, ExporterSection
from fsd_daemon.gpu.exporter import Exporter
from fsd_daemon.gpu.sampler import Snapshot
from fsd_daemon.gpu.simulated import SimulatedNvml
from tests.gpu.helpers import one, parse

OPENMETRICS_ACCEPT = (
    # What Prometheus 2.x sends.
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


class Counting:
    """Counts the registry's renders (calls of the collector's collect)."""

    def __init__(self, exporter: Exporter) -> None:
        self.renders = 0
        collect = exporter.collector.collect

        def counted() -> Iterator[Metric]:
            self.renders += 1
            return collect()

        exporter.collector.collect = counted  # type: ignore[method-assign]


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    config = Config(
        exporter=ExporterSection(sample_interval_seconds=3600, ownership_interval_seconds=3600)
    )
    ex = Exporter(
        SimulatedNvml(3), config, node="n", backend_name="simulated", listen=("127.0.0.1", 0)
    )
    ex.start()  # each thread ticks once now, then not for an hour
    try:
        yield ex
    finally:
        ex.stop()


def scrape(port: int, accept: str | None = None, gzipped: bool = False) -> tuple[str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept is not None:
        request.add_header("Accept", accept)
    if gzipped:
        request.add_header("Accept-Encoding", "gzip")
    with urllib.request.urlopen(request, timeout=10) as r:
        body = r.read()
        if r.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return r.headers["Content-Type"], body


def settle(exporter: Exporter) -> None:
    """Wait until the first ticks of both threads (started by start()) have published."""
    deadline = time.monotonic() + 10
    while exporter.ownership.ownership.refreshed_at is None or not exporter.sampler.snapshot.gpus:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_every_form_is_what_prometheus_client_renders(exporter: Exporter) -> None:
    settle(exporter)
    text = generate_latest(exporter.registry)
    openmetrics = generate_openmetrics(exporter.registry)
    for gzipped in (False, True):
        content_type, body = scrape(exporter.port, gzipped=gzipped)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert body == text
        content_type, body = scrape(exporter.port, OPENMETRICS_ACCEPT, gzipped=gzipped)
        assert content_type.startswith("application/openmetrics-text; version=1.0.0")
        assert body == openmetrics
    # A name[] filter is prometheus_client's own path, unchanged.
    wanted = ["fsd_gpu_nvml_up"]
    with urllib.request.urlopen(
        f"http://127.0.0.1:{exporter.port}/metrics?name[]={wanted[0]}", timeout=10
    ) as r:
        assert r.read() == generate_latest(exporter.registry.restricted_registry(wanted))


def test_scrapes_between_snapshots_render_nothing(exporter: Exporter) -> None:
    settle(exporter)
    counting = Counting(exporter)
    first = scrape(exporter.port, OPENMETRICS_ACCEPT, gzipped=True)
    for _ in range(20):
        assert scrape(exporter.port, OPENMETRICS_ACCEPT, gzipped=True) == first
    assert counting.renders <= 1  # the first scrape of a form may render it


def test_a_new_snapshot_is_rendered_once_by_its_publisher_and_served_at_once(
    exporter: Exporter,
) -> None:
    settle(exporter)
    scrape(exporter.port, gzipped=True)  # the form asked for
    counting = Counting(exporter)
    # A tick on the sampler's schedule: it publishes, then the exporter renders.
    exporter.sampler._tick()
    assert counting.renders == 1
    for _ in range(5):
        _, body = scrape(exporter.port, gzipped=True)
    assert body == generate_latest(exporter.registry)
    assert counting.renders == 2  # 1 + the reference render just above: scrapes rendered none


def test_a_scrape_never_serves_older_data_than_the_snapshot(exporter: Exporter) -> None:
    """A snapshot published without a refresh (between the assignment and the callback) is
    rendered by the scrape that finds it."""
    settle(exporter)
    assert one(parse(scrape(exporter.port)[1].decode()), "fsd_gpu_nvml_up") == 1.0
    exporter.sampler.snapshot = Snapshot(nvml_up=False)
    assert one(parse(scrape(exporter.port)[1].decode()), "fsd_gpu_nvml_up") == 0.0
