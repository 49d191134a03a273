"""fsd-gpu-exporter: per-GPU busy time, health and ownership (which Ray actor holds which GPU).

Layout, one job per module:

- ``backend``: the small interface the sampler needs (plain typed values, narrow errors).
- ``nvml``: that interface over the real NVML; the only module that imports ``pynvml``.
- ``simulated``: the same interface with scripted duty cycles, for demos, tests and benches.
- ``busy``: integration of driver utilization samples into a busy-seconds counter.
- ``sampler``: the background thread that reads the backend into immutable snapshots.
- ``ownership`` / ``raylookup``: which processes hold (or were given) each GPU, and their names.
- ``collector``: renders the latest snapshot for prometheus_client; never calls the backend.
- ``exporter`` / ``cli``: wiring, HTTP serving, signals.
"""
