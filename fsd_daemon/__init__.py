"""fsd_daemon: Prometheus file_sd discovery of RL rollout servers on Ray, and a GPU exporter."""

__version__ = "0.1.0"
