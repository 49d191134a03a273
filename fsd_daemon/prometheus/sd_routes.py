"""Where each job's target list is served for HTTP service discovery: one contract for the
daemon's listener that serves it (:mod:`fsd_daemon.service.httpsd`) and the configs that point a
Prometheus elsewhere at it (:mod:`fsd_daemon.prometheus.central`)."""

from __future__ import annotations

from fsd_daemon.config import Config
from fsd_daemon.mixin import names
from fsd_daemon.pipeline.reconcile import GPU_FILE, RAY_FILE, ROLLOUT_FILE

SD_PATH_PREFIX = "/sd/"
# Scrape job -> the file whose list its endpoint serves.
SD_FILES = {names.JOB_ROLLOUT: ROLLOUT_FILE, names.JOB_GPU: GPU_FILE, names.JOB_RAY: RAY_FILE}


def sd_path(job: str) -> str:
    """The URL path of ``job``'s endpoint: ``/sd/rollout``."""
    return f"{SD_PATH_PREFIX}{job}"


def sd_jobs(config: Config) -> dict[str, str]:
    """The jobs whose lists ``config`` writes (hence serves): job -> file."""
    skip = set()
    if not config.targets.write_gpu:
        skip.add(names.JOB_GPU)
    if not config.targets.write_ray:
        skip.add(names.JOB_RAY)
    return {job: file for job, file in SD_FILES.items() if job not in skip}
