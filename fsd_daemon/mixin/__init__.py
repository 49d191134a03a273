"""The monitoring mixin: metric, label and rule names (:mod:`.names`), the Prometheus rules built
from them (:mod:`.rules`), and the dashboards (built by the report side from the same names).

Generated files (``fsd_daemon/assets/prometheus/rules/*.rules.yml``) are committed; a test fails
when they differ from what the code generates (``python -m fsd_daemon.mixin.rules --write``).
"""
