"""Prometheus rules and Grafana dashboards shipped inside the package (package data).

Everything a user runs (the demo, ``fsd-daemon assets``, tests) finds them here, never in a
checkout's path, so an installed wheel has them too.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
RULES_DIR = ASSETS_DIR / "prometheus" / "rules"
RULE_TESTS_DIR = RULES_DIR / "tests"
GRAFANA_DIR = ASSETS_DIR / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
