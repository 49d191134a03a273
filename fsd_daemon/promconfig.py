"""Prometheus configuration: the scrape jobs that read our target files, printed or patched in.

A patch adds or replaces exactly the jobs named in :data:`JOB_NAMES` and adds our rule files;
every other job and setting stays. Unchanged content means no write and no reload, so running
the patch again (or on every Ray restart) is free. Comments in the patched file are not kept
(the YAML is rewritten); a copy of the original is kept next to it as ``<name>.fsd-orig`` the
first time.
"""

from __future__ import annotations

import logging
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from fsd_daemon.config import Config
from fsd_daemon.reconcile import GPU_FILE, RAY_FILE, ROLLOUT_FILE
from fsd_daemon.writer import TargetFileWriter, WriteError

log = logging.getLogger(__name__)

JOB_NAMES = {"rollout": ROLLOUT_FILE, "gpu": GPU_FILE, "ray": RAY_FILE}
SELF_JOB = "fsd_daemon"

# vLLM and SGLang name every metric `vllm:...` / `sglang:...`. prometheus_client >= 0.22
# answers an OpenMetrics scrape (what Prometheus asks for first) with the colon turned into an
# underscore in the sample lines (prometheus/client_python#1177), so the same server is stored
# as `vllm_num_requests_running` or `vllm:num_requests_running` depending on library versions.
# Both engines use the colon prefix for all their own metrics, so turning the first underscore
# back is exact, and a no-op where the colon survived. Rules and dashboards use the colon names.
RESTORE_ENGINE_METRIC_COLONS: dict[str, Any] = {
    "source_labels": ["__name__"],
    "regex": "(vllm|sglang)_(.+)",
    "target_label": "__name__",
    "replacement": "${1}:${2}",
}


class PatchError(Exception):
    """The file to patch cannot be read as a Prometheus config."""


def scrape_jobs(config: Config) -> list[dict[str, Any]]:
    out_dir = Path(config.daemon.output_dir).absolute()
    jobs: list[dict[str, Any]] = []
    for job, file in JOB_NAMES.items():
        if job == "gpu" and not config.targets.write_gpu:
            continue
        if job == "ray" and not config.targets.write_ray:
            continue
        scrape: dict[str, Any] = {
            "job_name": job,
            # The directory is watched with inotify: a change is seen within Prometheus's
            # own 5 s ticks; refresh_interval is only the fallback re-read.
            "file_sd_configs": [{"files": [str(out_dir / file)], "refresh_interval": "5m"}],
        }
        if job == "rollout":
            scrape["metric_relabel_configs"] = [RESTORE_ENGINE_METRIC_COLONS]
        jobs.append(scrape)
    if config.daemon.metrics_listen:
        host, _, port = config.daemon.metrics_listen.rpartition(":")
        host = "127.0.0.1" if host in ("0.0.0.0", "", "[::]") else host
        jobs.append({"job_name": SELF_JOB, "static_configs": [{"targets": [f"{host}:{port}"]}]})
    return jobs


def full_config(config: Config) -> dict[str, Any]:
    interval = f"{config.prometheus.scrape_interval_seconds:g}s"
    doc: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
    }
    if config.prometheus.rule_files:
        doc["rule_files"] = list(config.prometheus.rule_files)
    doc["scrape_configs"] = scrape_jobs(config)
    return doc


def render_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100)


def patched(doc: Any, config: Config) -> dict[str, Any]:
    """``doc`` with our jobs added or replaced and our rule files listed; nothing else changed."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise PatchError("the top level is not a mapping")
    new = dict(doc)
    existing = new.get("scrape_configs") or []
    if not isinstance(existing, list):
        raise PatchError("scrape_configs is not a list")
    ours = {job["job_name"]: job for job in scrape_jobs(config)}
    jobs: list[Any] = []
    for job in existing:
        name = job.get("job_name") if isinstance(job, dict) else None
        if name in ours:
            jobs.append(ours.pop(name))  # replace in place, keeping the user's order
        else:
            jobs.append(job)
    jobs.extend(ours.values())
    new["scrape_configs"] = jobs
    if config.prometheus.rule_files:
        rules = list(new.get("rule_files") or [])
        rules.extend(r for r in config.prometheus.rule_files if r not in rules)
        new["rule_files"] = rules
    return new


def patch_file(path: str | Path, config: Config) -> bool:
    """Patch ``path`` in place, atomically. True when the content changed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PatchError(f"cannot read {path}: {exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PatchError(f"{path} is not valid YAML: {exc}") from exc
    new = patched(doc, config)
    if new == doc:
        return False
    backup = path.with_name(path.name + ".fsd-orig")
    if not backup.exists():
        shutil.copy2(path, backup)
    try:
        TargetFileWriter(path.parent).write(path.name, render_yaml(new).encode())
    except WriteError as exc:
        raise PatchError(str(exc)) from exc
    return True


def reload_prometheus(url: str, timeout: float = 10.0) -> bool:
    """POST ``<url>/-/reload``; log and return whether Prometheus accepted it."""
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/-/reload"):
        endpoint += "/-/reload"
    request = urllib.request.Request(endpoint, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            log.info("Prometheus reloaded its config (%s: HTTP %s)", endpoint, response.status)
            return True
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode(errors="replace").strip()
        if exc.code in (403, 404, 405) or "lifecycle" in body.lower():
            log.error(
                "Prometheus refused %s (HTTP %s: %s): start it with --web.enable-lifecycle, "
                "or reload it yourself (SIGHUP)",
                endpoint,
                exc.code,
                body,
            )
        else:
            log.error("Prometheus reload failed (%s: HTTP %s: %s)", endpoint, exc.code, body)
    except (urllib.error.URLError, OSError) as exc:
        log.error("Prometheus reload failed: %s unreachable: %s", endpoint, exc)
    return False


def prometheus_config_command(config: Config, patch: str | None) -> int:
    if patch is None:
        sys.stdout.write(render_yaml(full_config(config)))
        return 0
    try:
        changed = patch_file(patch, config)
    except PatchError as exc:
        print(f"fsd-daemon: {exc}", file=sys.stderr)
        return 1
    print(f"{patch}: {'patched' if changed else 'already up to date'}", file=sys.stderr)
    if changed and config.prometheus.reload_url:
        return 0 if reload_prometheus(config.prometheus.reload_url) else 1
    return 0
