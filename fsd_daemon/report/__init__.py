"""``fsd-daemon report``: the long tail, idle rollout GPUs and rightsizing, from Prometheus.

Stages, one module each: :mod:`.prom` asks Prometheus' HTTP API; :mod:`.data` turns the answers
into aligned per-replica and per-GPU arrays; :mod:`.analysis` finds the rollout steps and
computes the numbers (pure functions); :mod:`.figures` draws the PNGs with matplotlib;
:mod:`.page` writes the self-contained HTML page; :mod:`.command` is the CLI around them.
"""
