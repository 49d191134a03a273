"""The Prometheus side we write: configs printed or patched in, never the data.

``scrape_config``: the scrape jobs that read our target files (printed, or patched into a
prometheus.yml by ``yamltext`` keeping every other character); ``central``: configs for a
store that outlives the cluster (HTTP SD, remote write, agent mode); ``client``: Prometheus's
HTTP client settings (auth, TLS) for those; ``sd_routes``: which job's list the daemon serves
at which path, for its listener and for those configs alike.
"""
