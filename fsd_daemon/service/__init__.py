"""The long-running ``fsd-daemon run`` around the pipeline.

``daemon``: the loop, signals, systemd notify, config reload, the prometheus.yml keeper;
``watch``: file watching that wakes it;
``httpsd``: the target lists as HTTP service discovery; ``grafana_session``: our dashboards in
the current Ray session's Grafana directory.
"""
