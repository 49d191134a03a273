"""Small shared parts with no knowledge of Ray, verl or Prometheus's data.

``atomic_files`` (temp file, fsync, rename; change-only), ``backoff``, ``periodic`` (a worker
on its own monotonic schedule), ``problem_log`` (a lasting problem logged at its start, every
so often, and its end), ``process`` (logging and signals), ``httpserve`` (the small HTTP
listener), ``metricscache`` (a /metrics page rendered once per change), ``httpclient`` (one
bounded HTTP request: status, timeout or unreachable), ``childlog`` (a child's output as log
lines), ``webconfig`` (exporter-toolkit's TLS and basic-auth file), ``gcpause``,
``sdnotify``.
"""
