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
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError as RoundTripError
from yaml.nodes import MappingNode, SequenceNode

from fsd_daemon.config import Config, prometheus_duration
from fsd_daemon.pipeline.reconcile import GPU_FILE, RAY_FILE, ROLLOUT_FILE
from fsd_daemon.plumbing.atomic_files import AtomicFileWriter, WriteError
from fsd_daemon.plumbing.httpclient import HttpFailed, http_request
from fsd_daemon.plumbing.problem_log import ProblemLog
from fsd_daemon.prometheus import yamltext

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


# Where a job of ours gets its targets: ours replace whatever the job had (verl's static
# unlabelled ``rollout`` targets, Ray's stale discovery file), so these keys are ours.
_DISCOVERY_KEYS = frozenset({"static_configs", "file_sd_configs", "http_sd_configs"})
# Lists to which our entries are added, keeping the user's own entries.
_MERGED_KEYS = frozenset({"metric_relabel_configs", "relabel_configs"})


def _owned_keys(theirs: Any, ours: dict[str, Any]) -> set[str]:
    """The keys of a job named like ours that the patch rewrites: our own settings and any
    target discovery. Everything else (scheme, tls_config, basic_auth, relabel_configs,
    scrape_interval, ...) is the user's and stays."""
    owned = {k for k in ours if k != "job_name" and k not in _MERGED_KEYS}
    if isinstance(theirs, dict):
        owned |= {k for k in theirs if k in _DISCOVERY_KEYS or str(k).endswith("_sd_configs")}
    return owned


def _merged_list(theirs: Any, ours: list[Any]) -> list[Any]:
    have = list(theirs) if isinstance(theirs, list) else []
    return have + [entry for entry in ours if entry not in have]


def merged_job(theirs: Any, ours: dict[str, Any]) -> dict[str, Any]:
    """A job of the user's named like one of ours, as the patch leaves it: our keys set,
    our list entries added, every other key of theirs kept."""
    if not isinstance(theirs, dict):
        return dict(ours)
    owned = _owned_keys(theirs, ours)
    job = {k: v for k, v in theirs.items() if k not in owned}
    for key, value in ours.items():
        if key in _MERGED_KEYS:
            job[key] = _merged_list(theirs.get(key), value)
        else:
            job[key] = value
    return job


def patched(doc: Any, config: Config) -> Any:
    """``doc`` with our jobs added or merged in (see :func:`merged_job`) and our rule files
    listed; nothing else changed. ``doc`` (plain data or a round-trip mapping) is changed in
    place where it is a mapping."""
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
            merged = merged_job(job, ours.pop(name))
            if isinstance(job, CommentedMap):  # ruamel: keep the job's comments
                for key in [k for k in job if k not in merged]:
                    del job[key]
                job.update(merged)
                merged = job
            jobs.append(merged)  # in place, keeping the user's order
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


def patch_text(text: str, config: Config) -> str:
    """``text`` (a prometheus.yml) patched; every character outside the keys we own is kept
    (indentation, quoting, comments), in time linear in its size. Raises PatchError."""
    try:
        root, data = yamltext.parse(text)
    except yaml.YAMLError as exc:
        raise PatchError(f"not valid YAML: {exc}") from exc
    expected = patched(_copy_top(data), config)
    try:
        edits = _edits(text, root, data, config)
        if not edits and expected == data:
            return text
        root = None  # the node tree of a large file is big: not kept while parsing again
        new = yamltext.apply(text, edits)
        if yamltext.load(new) == expected:
            return new
        log.debug("text patch did not give the expected document; rendering it whole")
    except (yamltext.LayoutNotHandled, yaml.YAMLError) as exc:
        log.debug("text patch not possible (%s); rendering the document whole", exc)
    # A layout the edits do not handle (flow style, ...): ruamel's round trip keeps the
    # comments, not the formatting.
    doc = _round_trip().load(text)
    out = io.StringIO()
    _round_trip().dump(patched(doc, config), out)
    return out.getvalue()


def _copy_top(data: Any) -> Any:
    """What :func:`patched` changes in place copied (the top mapping and its two lists), the
    rest shared: a deep copy of a large file would cost as much as parsing it."""
    if not isinstance(data, dict):
        return data
    top = dict(data)
    for key in ("scrape_configs", "rule_files"):
        if isinstance(top.get(key), list):
            top[key] = list(top[key])
    return top


def _edits(text: str, root: Any, data: Any, config: Config) -> list[yamltext.Edit]:
    if root is None or not text.strip():
        return [
            yamltext.Edit(
                len(text),
                len(text),
                _tail(text) + yamltext.indented(yamltext.render(patched({}, config)), 0),
            )
        ]
    top = yamltext.block(root, MappingNode)
    values = {k.value: (k, v) for k, v in top.value if hasattr(k, "value")}
    edits: list[yamltext.Edit] = []
    appended: list[str] = []
    ours = {job["job_name"]: job for job in scrape_jobs(config)}
    if "scrape_configs" in values and data.get("scrape_configs"):
        _, seq = values["scrape_configs"]
        seq = yamltext.block(seq, SequenceNode)
        for item, job in zip(seq.value, data["scrape_configs"], strict=True):
            name = job.get("job_name") if isinstance(job, dict) else None
            if name in ours:
                edits.extend(_job_edits(text, item, job, ours.pop(name)))
        if ours:
            last = seq.value[-1]
            dash, content = yamltext.dash_column(text, last), int(last.start_mark.column)
            at = yamltext.line_end(text, yamltext.content_end(seq))
            items = [
                yamltext.sequence_item(yamltext.render(job), dash, content) for job in ours.values()
            ]
            edits.append(yamltext.Edit(at, at, "\n" + "\n".join(items)))
    elif "scrape_configs" in values:
        raise yamltext.LayoutNotHandled("scrape_configs empty or null")
    else:
        appended.append(
            yamltext.indented(yamltext.render({"scrape_configs": list(ours.values())}), 0)
        )
    wanted = list(config.prometheus.rule_files)
    if wanted:
        have = data.get("rule_files")
        if "rule_files" not in values:
            appended.append(yamltext.indented(yamltext.render({"rule_files": wanted}), 0))
        else:
            if not isinstance(have, list) or not have:
                raise yamltext.LayoutNotHandled("rule_files empty or not a list")
            missing = [r for r in wanted if r not in have]
            if missing:
                _, seq = values["rule_files"]
                seq = yamltext.block(seq, SequenceNode)
                last = seq.value[-1]
                dash, content = yamltext.dash_column(text, last), int(last.start_mark.column)
                at = yamltext.line_end(text, yamltext.content_end(seq))
                items = [yamltext.sequence_item(yamltext.render(r), dash, content) for r in missing]
                edits.append(yamltext.Edit(at, at, "\n" + "\n".join(items)))
    if appended:
        edits.append(yamltext.Edit(len(text), len(text), _tail(text) + "\n".join(appended) + "\n"))
    return edits


def _tail(text: str) -> str:
    """What must come before text appended at the end: a line break if the last line has none."""
    return "" if not text or text.endswith("\n") else "\n"


def _job_edits(text: str, item: Any, theirs: Any, ours: dict[str, Any]) -> list[yamltext.Edit]:
    """Edits that turn the job at ``item`` into ``merged_job(theirs, ours)``, touching only the
    keys we own; none when it is already so."""
    if merged_job(theirs, ours) == theirs:
        return []
    job = yamltext.block(item, MappingNode)
    owned = _owned_keys(theirs, ours)
    replace: dict[str, Any] = {k: v for k, v in ours.items() if k in owned}
    edits: list[yamltext.Edit] = []
    nodes = {k.value: (k, v) for k, v in job.value if hasattr(k, "value")}
    for key in sorted(_MERGED_KEYS & ours.keys()):
        value = _merged_list(theirs.get(key), ours[key])
        if value == theirs.get(key):
            continue
        node = nodes.get(key)
        if (
            node is None
            or not isinstance(node[1], SequenceNode)
            or node[1].flow_style
            or not node[1].value
        ):
            replace[key] = value
            owned.add(key)
            continue
        last = node[1].value[-1]
        dash, content = yamltext.dash_column(text, last), int(last.start_mark.column)
        at = yamltext.line_end(text, yamltext.content_end(node[1]))
        added = [e for e in ours[key] if e not in theirs.get(key)]
        items = [yamltext.sequence_item(yamltext.render(e), dash, content) for e in added]
        edits.append(yamltext.Edit(at, at, "\n" + "\n".join(items)))
    present = [(k, v) for k, v in job.value if getattr(k, "value", None) in owned]
    if present:
        first_key, first_value = present[0]
        col = int(first_key.start_mark.column)
        end = yamltext.line_end(text, yamltext.content_end(first_value))
        lines = yamltext.render(replace) if replace else []
        edits.append(
            yamltext.Edit(
                int(first_key.start_mark.index),
                end,
                yamltext.indented(lines, col, first="") if lines else "",
            )
        )
        if not lines and not yamltext.key_alone_on_line(text, first_key):
            raise yamltext.LayoutNotHandled("owned key first in its item")
        if not lines:  # nothing to put in its place: remove its whole lines
            edits[-1] = yamltext.Edit(
                yamltext.line_start(text, int(first_key.start_mark.index)),
                min(len(text), end + 1),
                "",
            )
        for key, value in present[1:]:
            if not yamltext.key_alone_on_line(text, key):
                raise yamltext.LayoutNotHandled("owned key first in its item")
            start = yamltext.line_start(text, int(key.start_mark.index))
            stop = min(len(text), yamltext.line_end(text, yamltext.content_end(value)) + 1)
            edits.append(yamltext.Edit(start, stop, ""))
    elif replace:
        first_key = job.value[0][0]
        col = int(first_key.start_mark.column)
        at = yamltext.line_end(text, yamltext.content_end(job))
        edits.append(yamltext.Edit(at, at, "\n" + yamltext.indented(yamltext.render(replace), col)))
    return edits


def patch_file(path: str | Path, config: Config) -> bool:
    """Patch ``path`` in place, atomically, keeping its formatting, comments, mode and owner.
    A symlink is followed: the file it points to is patched (config management links it).
    True when the content changed."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    try:
        st = real.stat()
        raw = real.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PatchError(f"cannot read {path}: {exc}") from exc
    try:
        rendered = patch_text(text, config)
    except PatchError as exc:
        raise PatchError(
            f"{path} is {exc}" if str(exc).startswith("not valid") else f"{path}: {exc}"
        ) from exc
    except (yaml.YAMLError, RoundTripError) as exc:
        raise PatchError(f"{path} is not valid YAML: {exc}") from exc
    if rendered == text:
        return False
    writer = AtomicFileWriter(real.parent)
    backup = real.name + ".fsd-orig"
    try:
        if not (real.parent / backup).exists():
            writer.write(backup, raw, like=st)
        writer.write(real.name, rendered.encode(), like=st)
    except WriteError as exc:
        raise PatchError(str(exc)) from exc
    return True


def reload_prometheus(url: str, timeout: float = 10.0) -> bool:
    """POST ``<url>/-/reload``; log and return whether Prometheus accepted it."""
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/-/reload"):
        endpoint += "/-/reload"
    try:
        reply = http_request(endpoint, timeout=timeout, max_bytes=0, method="POST", data=b"")
    except HttpFailed as exc:
        if exc.kind != "status":
            log.error("Prometheus reload failed: %s unreachable: %s", endpoint, exc)
            return False
        body = exc.body[:300].decode(errors="replace").strip()
        if exc.status in (403, 404, 405) or "lifecycle" in body.lower():
            log.error(
                "Prometheus refused %s (HTTP %s: %s): start it with --web.enable-lifecycle, "
                "or reload it yourself (SIGHUP)",
                endpoint,
                exc.status,
                body,
            )
        else:
            log.error("Prometheus reload failed (%s: HTTP %s: %s)", endpoint, exc.status, body)
        return False
    log.info("Prometheus reloaded its config (%s: HTTP %s)", endpoint, reply.status)
    return True


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

    :meth:`check` looks (a stat and a readlink each) and patches what changed. The service
    runs it on the keeper's own thread (:meth:`start`, then :meth:`kick` after every poll),
    never on the poll loop: a large file takes its time to patch, and polls, health and the
    systemd watchdog go on meanwhile. A Ray restart or a rewrite by someone else (verl) is
    patched within a poll or two.
    """

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._kicked = threading.Event()
        self._stopping = False
        # path -> signature we last patched or judged (no work until it changes)
        self._done: dict[Path, tuple[int, int, int]] = {}
        # path -> (signature, first seen, unparsable looks) of a file that is changing
        self._seen: dict[Path, tuple[tuple[int, int, int], float, int]] = {}
        self._broken: dict[Path, ProblemLog] = {}

    def start(self) -> PrometheusConfigKeeper:
        """Run :meth:`check` on a thread of its own: at each :meth:`kick`, and again when a
        file that is still settling asks for it."""
        if self._thread is None and self.targets_configured():
            self._thread = threading.Thread(
                target=self._run, name="prometheus-config-keeper", daemon=True
            )
            self._thread.start()
        return self

    def kick(self) -> None:
        """Look again soon (from the poll loop: returns at once)."""
        self._kicked.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._kicked.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _run(self) -> None:
        again: float | None = None
        while True:
            self._kicked.wait(timeout=again)
            self._kicked.clear()
            if self._stopping:
                return
            try:
                again = self.check()
            except Exception:  # a bug here must not end the keeping for good
                log.exception("unexpected error keeping prometheus.yml patched; going on")
                again = None

    def targets_configured(self) -> bool:
        prometheus = self.config.prometheus
        return bool(prometheus.config_file) or prometheus.patch_ray_config

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
        broken = self._broken.setdefault(path, ProblemLog(log, f"cannot patch {path}"))
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
