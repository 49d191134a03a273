"""Prometheus configuration: the scrape jobs that read our target files, printed or patched in.

A patch adds or replaces exactly the jobs named in :data:`JOB_NAMES` and adds our rule files;
every other job and setting stays, the user's comments included (ruamel.yaml's round trip), and
so do the file's mode and owner (a prometheus.yml may hold a basic-auth password). Unchanged
content means no write and no reload, so running the patch again (or on every Ray restart) is
free. A copy of the original is kept next to it as ``<name>.fsd-orig`` the first time.

:class:`PrometheusConfigKeeper` keeps files patched while the daemon runs. verl's own
``update_prometheus_config`` (verl/workers/rollout/utils.py) overwrites the whole prometheus.yml
in place (open "w", yaml.dump: not atomic) and POSTs /-/reload; the keeper waits until the file
has stopped changing, patches it once (verl's static ``rollout`` job is replaced by ours) and
reloads once.
"""

from __future__ import annotations

import io
import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError as RoundTripError

from fsd_daemon.condition import Condition
from fsd_daemon.config import Config, prometheus_duration
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
    interval = prometheus_duration(config.prometheus.scrape_interval_seconds)
    doc: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
    }
    if config.prometheus.rule_files:
        doc["rule_files"] = list(config.prometheus.rule_files)
    doc["scrape_configs"] = scrape_jobs(config)
    return doc


def render_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100)


def patched(doc: Any, config: Config) -> Any:
    """``doc`` with our jobs added or replaced and our rule files listed; nothing else changed.

    ``doc`` is changed in place when it is a round-trip mapping (comments stay attached)."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise PatchError("the top level is not a mapping")
    new = doc
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
    if isinstance(existing, list) and existing:
        existing[:] = jobs  # the same sequence object keeps its comments
    else:
        new["scrape_configs"] = jobs
    if config.prometheus.rule_files:
        rules = new.get("rule_files") or []
        if not isinstance(rules, list):
            raise PatchError("rule_files is not a list")
        missing = [r for r in config.prometheus.rule_files if r not in rules]
        if not rules:
            new["rule_files"] = missing
        else:
            rules.extend(missing)
    return new


def _round_trip() -> YAML:
    rt = YAML(typ="rt")
    rt.width = 100
    rt.indent(mapping=2, sequence=2, offset=0)
    return rt


def patch_file(path: str | Path, config: Config) -> bool:
    """Patch ``path`` in place, atomically, keeping its comments, mode and owner.
    True when the content changed."""
    path = Path(path)
    try:
        st = path.stat()
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PatchError(f"cannot read {path}: {exc}") from exc
    try:
        before = yaml.safe_load(text)
        doc = _round_trip().load(text)
    except (yaml.YAMLError, RoundTripError) as exc:
        raise PatchError(f"{path} is not valid YAML: {exc}") from exc
    new = patched(doc, config)
    out = io.StringIO()
    _round_trip().dump(new, out)
    rendered = out.getvalue()
    if yaml.safe_load(rendered) == before:
        return False
    writer = TargetFileWriter(path.parent)
    backup = path.name + ".fsd-orig"
    try:
        if not (path.parent / backup).exists():
            writer.write(backup, raw, like=st)
        writer.write(path.name, rendered.encode(), like=st)
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


# A file that changed is patched only once it has kept the same size, inode and mtime for this
# long: a writer like verl's (truncate, then write) may be caught half-way.
SETTLE_SECONDS = 0.4
_MAX_UNPARSABLE_LOOKS = 3


class PrometheusConfigKeeper:
    """Keeps prometheus.yml files patched: a configured one, and Ray's generated one.

    :meth:`check` runs after every poll (a stat and a readlink each), watching or not; a Ray
    restart or a rewrite by someone else (verl) is patched within a poll or two.
    """

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        # path -> signature we last patched or judged (no work until it changes)
        self._done: dict[Path, tuple[int, int, int]] = {}
        # path -> (signature, first seen, unparsable looks) of a file that is changing
        self._seen: dict[Path, tuple[tuple[int, int, int], float, int]] = {}
        self._broken: dict[Path, Condition] = {}

    def targets(self) -> list[Path]:
        paths = []
        if self.config.prometheus.config_file:
            paths.append(Path(self.config.prometheus.config_file))
        if self.config.prometheus.patch_ray_config:
            latest = Path(self.config.prometheus.ray_temp_dir) / "session_latest"
            try:
                session = latest.resolve(strict=True)
            except OSError:
                return paths
            paths.append(session / "metrics" / "prometheus" / "prometheus.yml")
        return paths

    def check(self) -> float | None:
        """Patch what needs it. Returns the seconds after which it wants to look again (a file
        still settling), None when all is done. Never raises for file trouble."""
        again: float | None = None
        for path in self.targets():
            wait = self._check_one(path)
            if wait is not None:
                again = wait if again is None else min(again, wait)
        return again

    def _check_one(self, path: Path) -> float | None:
        try:
            st = path.stat()
        except OSError:
            return None  # Ray writes it a moment after the session starts: next time
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._done.get(path) == signature:
            return None
        now = self._clock()
        seen = self._seen.get(path)
        if seen is None or seen[0] != signature:
            looks = seen[2] if seen is not None else 0
            self._seen[path] = (signature, now, looks)
            return SETTLE_SECONDS
        if now - seen[1] < SETTLE_SECONDS:
            return SETTLE_SECONDS - (now - seen[1])
        broken = self._broken.setdefault(path, Condition(log, f"cannot patch {path}"))
        try:
            changed = patch_file(path, self.config)
        except PatchError as exc:
            looks = seen[2] + 1
            if "not valid YAML" in str(exc) and looks < _MAX_UNPARSABLE_LOOKS:
                # Maybe caught between a truncate and a write that stalled: look again.
                self._seen[path] = (signature, now, looks)
                return SETTLE_SECONDS
            broken.failing(f"{exc}; not retried until the file changes")
            self._done[path] = signature
            self._seen.pop(path, None)
            return None
        broken.fine()
        self._seen.pop(path, None)
        try:
            st = path.stat()
            self._done[path] = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            self._done.pop(path, None)
        if changed:
            log.info("patched %s with the rollout, gpu and ray scrape jobs", path)
            if self.config.prometheus.reload_url:
                reload_prometheus(self.config.prometheus.reload_url)
        return None
