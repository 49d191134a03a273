"""How fine the report's time grid is: never finer than the data, never coarser than the
series drawn (fsd_daemon/report/data.py)."""

from __future__ import annotations

from fsd_daemon.mixin import names
from fsd_daemon.report.data import _grid_floor


def test_the_shortest_interval_of_the_series_drawn_bounds_the_grid() -> None:
    # Rollout servers scraped every second, GPU exporters every 15 s: a 15 s grid would hide
    # steps that the rollout series show.
    assert _grid_floor({names.JOB_ROLLOUT: 1.0, names.JOB_GPU: 15.0}, 15.0) == 1.0
    assert _grid_floor({names.JOB_GPU: 15.0}, 15.0) == 15.0


def test_a_rollout_only_prometheus_keeps_the_asked_step() -> None:
    # No GPU exporter and no targets API answer (a store): nothing says how coarse the data
    # is, so no default may coarsen the grid below the run's steps.
    assert _grid_floor({}, None) is None
    # A store with exporter samples: their interval, read from the samples.
    assert _grid_floor({}, 14.6) == 14.6
