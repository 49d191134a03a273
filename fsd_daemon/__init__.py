"""fsd_daemon: Prometheus file_sd discovery of RL rollout servers on Ray, and a GPU exporter.

The house, in the order the data goes (Ray -> recognition -> reconcile -> render -> write ->
Prometheus):

- ``discovery``: what the cluster runs now, as plain records (Ray's state API, the Ray bridge,
  Ray's export events, or a JSON file). Knows Ray, not verl.
- ``recognition``: what upstream creates, as tables (``verl``, ``engines``, ``endpoints``),
  and ``recognise``, which reads an actor's name against them. Used by the pipeline, the GPU
  exporter's ownership and the config's checks.
- ``pipeline``: one pass: ``reconcile`` (records -> the targets each file should hold),
  ``render`` (targets -> canonical file_sd bytes), ``poll`` (discover, reconcile, render,
  write; no threads, signals or servers), ``selfmetrics`` (what the pass records about itself).
- ``service``: the long-running daemon around the pipeline: loop, signals, reload, watching,
  its listener, HTTP service discovery, the Grafana session keeper.
- ``prometheus``: the Prometheus configs we print or patch in (scrape jobs, central store,
  client settings), with the YAML text patcher.
- ``gpu``: ``fsd-gpu-exporter`` (sampler / snapshot / collector).
- ``mixin`` (rules and dashboards as code, label and metric ``names``), ``assets`` (their
  generated files), ``report``, ``sim`` (simulated verl jobs for demos and tests).
- ``plumbing``: small shared parts with no domain knowledge (atomic file writes, backoff,
  periodic worker, problem logging, process set-up, HTTP listener, systemd notify).
- At the top: the commands (``cli``, ``doctor``, ``demo``, ``probe``) and ``config``.
"""

__version__ = "0.1.0"
