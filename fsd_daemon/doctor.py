"""``fsd-daemon doctor``: walk the chain from Ray to Prometheus and say, per failing link, what
to change.

Links, in order: Ray reachable and authenticated; rollout servers found per Ray job and their
addresses resolved; each server's metrics path answering with the engine's series; each node's
GPU exporter answering; with ``--prometheus URL``: the scrape jobs configured, every target the
daemon would write scraped and up, the rule groups loaded.

Exit status: 0 when every check passes, 1 when one fails, 2 for bad usage (one line on stderr).
The verl keys named in the fixes are checked against verl main (1dda039b):
``verl/trainer/config/rollout/rollout.yaml`` (``disable_log_stats: True``,
``prometheus.enable: false``), ``sglang_rollout/async_sglang_server.py`` (``enable_metrics``
only with ``prometheus.enable``) and ``rollout/llm_server.py`` (``prometheus.enable`` refused
while ``disable_log_stats`` is True).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.parse
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from fsd_daemon import probe as probing
from fsd_daemon.config import Config
from fsd_daemon.mixin import names
from fsd_daemon.pipeline.render import Target
from fsd_daemon.plumbing.httpclient import http_request
from fsd_daemon.recognition import endpoints, verl

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ROLLOUT_FILE, GPU_FILE = "rollout.json", "gpu.json"

RAY, SERVERS, METRICS, EXPORTER, PROMETHEUS = "ray", "servers", "metrics", "exporter", "prometheus"
# The run's other metric endpoints: TransferQueue, verl-recipe AsyncFlow
# (fsd_daemon/recognition/endpoints.py).
ENDPOINTS = "endpoints"
CHECKS = (RAY, SERVERS, ENDPOINTS, METRICS, EXPORTER, PROMETHEUS)

_RESTART = " in the verl job's config (or on its command line) and restart the job"


@dataclass(frozen=True)
class Finding:
    check: str  # one of CHECKS: the link of the chain
    ok: bool
    subject: str  # what was checked
    detail: str  # what was seen
    fix: str = ""  # what to change; empty when ok


@dataclass(frozen=True)
class Options:
    prometheus: str | None = None  # base URL, validated
    timeout: float = 5.0
    concurrency: int = 32


class UsageError(ValueError):
    """Bad command-line input: one line for stderr, exit 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prometheus", metavar="URL", help="also check this Prometheus (e.g. http://host:9090)"
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per HTTP request (default 5)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="servers probed at once (default 32)"
    )


def options_from(args: argparse.Namespace) -> Options:
    if not 0 < args.timeout <= 300:
        raise UsageError(f"--timeout must be between 0 and 300 seconds, not {args.timeout}")
    if not 1 <= args.concurrency <= 1024:
        raise UsageError(f"--concurrency must be between 1 and 1024, not {args.concurrency}")
    url = args.prometheus
    if url is not None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(
                f"--prometheus must be an http(s) URL such as http://host:9090: {url!r}"
            )
        url = url.rstrip("/")
    return Options(prometheus=url, timeout=args.timeout, concurrency=args.concurrency)


def doctor_command(config: Config, args: argparse.Namespace) -> int:
    try:
        options = options_from(args)
    except UsageError as exc:
        print(f"fsd-daemon doctor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "log_level", None) is None:
        # The report is the output; the daemon's info lines (bridge connected, ...) are noise.
        logging.getLogger("fsd_daemon").setLevel(logging.WARNING)
    findings = diagnose(config, options)
    # Which cluster label the targets get, and why: two clusters must not share one.
    cluster = {"cluster": config.daemon.cluster, "cluster_origin": config.cluster_origin}
    if args.json:
        out = {
            "ok": all(f.ok for f in findings),
            **cluster,
            "findings": [asdict(f) for f in findings],
        }
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(f"cluster label {config.daemon.cluster!r}: {config.cluster_origin}\n")
        sys.stdout.write(format_text(findings))
    return EXIT_OK if all(f.ok for f in findings) else EXIT_FAILED


def format_text(findings: Sequence[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{'OK  ' if f.ok else 'FAIL'}  {f.check:<10}  {f.subject}: {f.detail}")
        if f.fix:
            lines.append(f"{'':16}fix: {f.fix}")
    failed = sum(not f.ok for f in findings)
    lines.append(
        f"{len(findings)} checks, {failed} failed."
        if failed
        else f"All {len(findings)} checks passed."
    )
    return "\n".join(lines) + "\n"


# --- The chain --------------------------------------------------------------------------------


def diagnose(config: Config, options: Options) -> list[Finding]:
    findings: list[Finding] = []
    desired = _discover(config, findings, options.timeout)
    if desired is not None:
        rollout = desired.get(ROLLOUT_FILE, ())
        findings += _check_servers(rollout, options)
        if config.targets.write_gpu:
            findings += _check_exporters(desired.get(GPU_FILE, ()), options)
    if options.prometheus is not None:
        findings += check_prometheus(options.prometheus, config, desired, options.timeout)
    return findings


def _discover(
    config: Config, findings: list[Finding], timeout: float = 5.0
) -> dict[str, tuple[Target, ...]] | None:
    """Ray, then the servers it lists, as ``fsd-daemon targets`` sees them, and the run's other
    metric endpoints (:mod:`fsd_daemon.recognition.endpoints`)."""
    from fsd_daemon.discovery.base import SourceError
    from fsd_daemon.pipeline.oneshot import discover_once
    from fsd_daemon.pipeline.poll import default_components

    where = f"Ray at {config.ray.address}"
    try:
        source, resolver = default_components(config)
    except Exception as exc:  # a broken address or missing Ray install: report, don't crash
        findings.append(Finding(RAY, False, where, _one_line(exc), _ray_fix(str(exc))))
        return None
    try:
        found = discover_once(config, source, resolver)
    except SourceError as exc:
        findings.append(Finding(RAY, False, where, _one_line(exc), _ray_fix(str(exc))))
        return None
    finally:
        resolver.close()
    snapshot, desired = found.snapshot, found.desired
    findings.append(
        Finding(
            RAY,
            True,
            where,
            f"{len(snapshot.nodes)} nodes, {len(snapshot.actors)} alive actors listed",
        )
    )
    findings += endpoint_findings(endpoints.locate(snapshot), timeout)
    files = dict(desired.files)
    for dropped in desired.dropped:
        findings.append(
            Finding(
                SERVERS,
                False,
                f"{dropped.who} ({dropped.file})",
                dropped.message,
                "the name or address breaks Prometheus' rules; see the daemon's log and the "
                "recognition patterns (fsd-daemon check-config)",
            )
        )
    findings += _servers_per_job(files.get(ROLLOUT_FILE, ()), found.unresolved)
    return files


def _servers_per_job(rollout: Sequence[Target], unresolved: bool) -> list[Finding]:
    by_job: dict[str, list[Target]] = defaultdict(list)
    for target in rollout:
        by_job[target.label(names.RAY_JOB_ID) or "?"].append(target)
    findings = []
    for job, targets in sorted(by_job.items()):
        engines = sorted({t.label(names.ENGINE) for t in targets})
        findings.append(
            Finding(
                SERVERS,
                True,
                f"Ray job {job}",
                f"{len(targets)} rollout servers with an address ({', '.join(engines)})",
            )
        )
    if unresolved:
        findings.append(
            Finding(
                SERVERS,
                False,
                "rollout servers",
                "some recognised servers did not tell their address (get_server_address)",
                "the server is still starting or hangs: look at the actor's log in the Ray "
                "dashboard; run `fsd-daemon targets` again in a minute",
            )
        )
    if not rollout:
        findings.append(
            Finding(
                SERVERS,
                False,
                "rollout servers",
                "Ray lists no recognised rollout server",
                "start the verl job; if it runs, compare its actors' names and classes in the "
                "Ray dashboard with the recognition patterns (fsd-daemon check-config)",
            )
        )
    return findings


def endpoint_findings(located: Sequence[endpoints.Located], timeout: float) -> list[Finding]:
    """Per TransferQueue controller or AsyncFlow metrics server found: where its port is known,
    whether its /metrics answers at the node's address (from here, as Prometheus would reach
    it); else what to set. fsd-daemon writes no target for them (docs/doctor.md)."""
    findings = []
    for found in located:
        kind = found.kind
        subject = f"{kind.component} {found.actor_name} on {found.node_ip or 'an unlisted node'}"
        fix = kind.fix.replace("NODE_IP", found.node_ip or "NODE_IP")
        address = found.address
        if address is None:
            detail = "serves /metrics at a port chosen at run time (or not at all): not scraped"
            findings.append(Finding(ENDPOINTS, False, subject, detail, fix))
            continue
        result = probing.probe(Target(address, ()), timeout=timeout)
        if result.verdict == probing.OK:
            findings.append(
                Finding(
                    ENDPOINTS,
                    True,
                    f"{subject} {result.url}",
                    f"HTTP 200; add {address} to a static scrape job (fsd-daemon does not "
                    "write it)",
                )
            )
        else:
            seen = (
                f"HTTP {result.http_status}"
                if result.http_status
                else f"no answer ({result.error})"
            )
            findings.append(Finding(ENDPOINTS, False, f"{subject} {result.url}", seen, fix))
    return findings


def _check_servers(rollout: Sequence[Target], options: Options) -> list[Finding]:
    ordered = sorted(rollout, key=lambda t: (t.label(names.RAY_JOB_ID), t.label(names.ACTOR_NAME)))
    results = probing.probe_all(ordered, timeout=options.timeout, concurrency=options.concurrency)
    return [_server_finding(r) for r in results]


def _server_finding(result: probing.ProbeResult) -> Finding:
    t = result.target
    engine = t.label(names.ENGINE)
    subject = (
        f"{t.label(names.ACTOR_NAME) or t.address} (Ray job {t.label(names.RAY_JOB_ID)}, "
        f"{engine}) {result.url}"
    )
    verdict = result.verdict
    if verdict == probing.OK:
        series = "" if result.engine_series < 0 else f" with {result.engine_series} engine series"
        return Finding(METRICS, True, subject, f"HTTP 200{series}")
    if verdict == probing.NO_ENGINE_SERIES:
        prefix = names.ENGINE_PREFIXES[engine]
        return Finding(
            METRICS,
            False,
            subject,
            f"HTTP 200 but no {prefix} series: the engine's statistics are off",
            f"set {verl.METRICS_FIX_BY_ENGINE[engine]}{_RESTART}",
        )
    if verdict == probing.ROUTE_MISSING:
        return Finding(METRICS, False, subject, "HTTP 404: no metrics route", _route_fix(t))
    if verdict == probing.HTTP_ERROR:
        return Finding(
            METRICS,
            False,
            subject,
            f"HTTP {result.http_status} {result.error}".rstrip(),
            "the server answers but not with metrics: look at the actor's log in the Ray dashboard",
        )
    return Finding(
        METRICS,
        False,
        subject,
        f"no answer ({result.error})",
        f"the server at {t.address} does not answer from here: it hangs or is firewalled; look "
        "at the actor's log in the Ray dashboard and check that this host (and Prometheus) can "
        f"reach {t.label(names.NODE_IP) or t.address}",
    )


def _route_fix(target: Target) -> str:
    engine = target.label(names.ENGINE)
    # vLLM always serves /metrics, so a vLLM 404 is a verl <= 0.5 server as well, even one
    # listed without the label (e.g. by a static target file).
    if (
        target.label(names.METRICS_ROUTE) == names.METRICS_ROUTE_ABSENT
        or engine == names.ENGINE_VLLM
    ):
        return (
            "a verl <= 0.5 server has no metrics route at all: upgrade verl to >= 0.6 for metrics"
        )
    if engine == names.ENGINE_SGLANG:
        return (
            f"set {verl.METRICS_FIX_BY_ENGINE[engine]}{_RESTART} (SGLang gets --enable-metrics); "
            f"verl's RL-Insight switch {verl.RL_INSIGHT} (with trainer.logger including "
            f"{verl.RL_INSIGHT_LOGGER}) turns SGLang's metrics on as well, also with "
            f"{verl.LOG_STATS.dotted}={verl.LOG_STATS.on}"
        )
    if engine == names.ENGINE_TRTLLM:
        return (
            f"TRT-LLM serves Prometheus text at {verl.TRTLLM_METRICS_PATH} only with its perf "
            "metrics on: enable them in the engine's config"
        )
    # Dynamo: where its frontend serves metrics is taken from verl-recipe's comments only.
    return f"the {engine or 'unknown'} server has no metrics route here: look at its configuration"


def _check_exporters(gpu: Sequence[Target], options: Options) -> list[Finding]:
    findings = []
    results = probing.probe_all(
        gpu, timeout=options.timeout, concurrency=options.concurrency, prefix=names.GPU_PREFIX
    )
    for r in results:
        node = r.target.label(names.NODE_NAME) or r.target.label(names.NODE_IP) or "?"
        subject = f"fsd-gpu-exporter on node {node} {r.url}"
        if r.verdict == probing.OK:
            findings.append(Finding(EXPORTER, True, subject, f"{r.engine_series} GPU series"))
            continue
        seen = f"no answer ({r.error})" if r.http_status == 0 else f"HTTP {r.http_status}"
        if r.verdict == probing.NO_ENGINE_SERIES:
            seen = "HTTP 200 but no fsd_gpu_ series (another program on that port?)"
        findings.append(
            Finding(
                EXPORTER,
                False,
                subject,
                seen,
                f"on node {node}: `systemctl start fsd-gpu-exporter` (journalctl -u "
                f"fsd-gpu-exporter); it must listen on {r.target.address} (FSD_EXPORTER_LISTEN in "
                "/etc/default/fsd-daemon)",
            )
        )
    return findings


# --- Prometheus ---------------------------------------------------------------------------------

_PATCH_FIX = (
    "add fsd-daemon's scrape jobs and rule files: `fsd-daemon prometheus-config --patch "
    "PATH/prometheus.yml --reload-url {url}` (Prometheus needs --web.enable-lifecycle)"
)


def _get_json(url: str, timeout: float) -> Any:
    # HttpFailed is an OSError: the caller's except clause covers it.
    return json.loads(http_request(url, timeout=timeout, max_bytes=64 * 1024 * 1024).body)


def check_prometheus(
    url: str,
    config: Config,
    desired: dict[str, tuple[Target, ...]] | None,
    timeout: float,
) -> list[Finding]:
    subject = f"Prometheus at {url}"
    try:
        targets = _get_json(f"{url}/api/v1/targets?state=active", timeout)["data"]
        status = _get_json(f"{url}/api/v1/status/config", timeout)["data"]["yaml"]
        rules = _get_json(f"{url}/api/v1/rules", timeout)["data"]["groups"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [
            Finding(
                PROMETHEUS,
                False,
                subject,
                f"its HTTP API does not answer: {_one_line(exc)}",
                "check the --prometheus URL and that Prometheus runs",
            )
        ]
    findings = [Finding(PROMETHEUS, True, subject, "HTTP API answers")]
    findings += _jobs_findings(url, config, status)
    findings += _targets_findings(targets.get("activeTargets", []), desired)
    loaded = {g.get("name") for g in rules}
    missing = [g for g in names.RULE_GROUPS if g not in loaded]
    findings.append(
        Finding(
            PROMETHEUS,
            not missing,
            "rule groups",
            f"missing: {', '.join(missing)}" if missing else "all fsd rule groups loaded",
            _PATCH_FIX.format(url=url) if missing else "",
        )
    )
    return findings


def _wanted_jobs(config: Config) -> list[str]:
    wanted = [names.JOB_ROLLOUT]
    if config.targets.write_gpu:
        wanted.append(names.JOB_GPU)
    if config.targets.write_ray:
        wanted.append(names.JOB_RAY)
    return wanted


def _jobs_findings(url: str, config: Config, config_yaml: str) -> list[Finding]:
    try:
        scrape = yaml.safe_load(config_yaml).get("scrape_configs") or []
        jobs = {s.get("job_name") for s in scrape}
    except (yaml.YAMLError, AttributeError):
        jobs = set()
    missing = [j for j in _wanted_jobs(config) if j not in jobs]
    return [
        Finding(
            PROMETHEUS,
            not missing,
            "scrape jobs",
            f"missing: {', '.join(missing)}" if missing else f"{', '.join(_wanted_jobs(config))}",
            _PATCH_FIX.format(url=url) if missing else "",
        )
    ]


def _targets_findings(
    active: list[dict[str, Any]], desired: dict[str, tuple[Target, ...]] | None
) -> list[Finding]:
    findings = []
    scraped: dict[str, set[str]] = defaultdict(set)
    for target in active:
        labels = target.get("labels", {})
        job = labels.get(names.JOB, "")
        if job not in names.TARGET_JOBS:
            continue
        instance = labels.get(names.INSTANCE, "")
        scraped[job].add(instance)
        if target.get("health") != "up":
            error = str(target.get("lastError") or target.get("health"))[:300]
            findings.append(
                Finding(
                    PROMETHEUS,
                    False,
                    f"target {instance} (job {job})",
                    f"not up: {error}",
                    "see the matching metrics/exporter check above for what to change"
                    if job != names.JOB_RAY
                    else "Ray's node metrics port does not answer: check the node's raylet",
                )
            )
    for file, job in ((ROLLOUT_FILE, names.JOB_ROLLOUT), (GPU_FILE, names.JOB_GPU)):
        expected = {t.address for t in (desired or {}).get(file, ())}
        absent = sorted(expected - scraped[job])
        if absent:
            findings.append(
                Finding(
                    PROMETHEUS,
                    False,
                    f"job {job}",
                    f"{len(absent)} targets fsd-daemon would write are not scraped: "
                    f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}",
                    "is fsd-daemon running (systemctl status fsd-daemon) and does prometheus.yml's "
                    "file_sd point at its output directory (fsd-daemon prometheus-config)?",
                )
            )
    if not findings:
        counts = ", ".join(f"{job} {len(scraped[job])}" for job in names.TARGET_JOBS)
        findings.append(Finding(PROMETHEUS, True, "targets", f"all up ({counts})"))
    return findings


# --- Helpers ----------------------------------------------------------------------------------


def _ray_fix(message: str) -> str:
    lowered = message.lower()
    if "auth" in lowered or "token" in lowered:
        return (
            "Ray has token authentication on: give fsd-daemon the cluster's token (`ray "
            "get-auth-token` on the head node prints it) in ~/.ray/auth_token of the user that "
            "runs it, or in RAY_AUTH_TOKEN_PATH / RAY_AUTH_TOKEN; it turns token mode on by "
            "itself when it finds one (docs/ray.md)"
        )
    return (
        "check --ray-address / RAY_ADDRESS (ray.address) and that Ray's dashboard runs on the "
        "head node (`ray start --head`, pip package ray[default])"
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
