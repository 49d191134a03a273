"""Prometheus configs for metrics that outlive the head node.

Two standard Prometheus mechanisms, no store of our own:

- ``--http-sd BASE_URL``: the scrape jobs for a Prometheus that is not on the head node. It
  discovers the targets from the daemon's ``/sd/<job>`` endpoints (``fsd_daemon.service.httpsd``)
  instead of the files, with the client settings (basic auth, TLS) the daemon's web config
  asks for; the daemon's own metrics are scraped on the same listener.
- ``--remote-write URL``: the head-node config that also streams every sample (rules'
  results included) to a long-term store, with external labels that keep clusters apart;
  ``--agent`` prints the variant for ``prometheus --enable-feature=agent``, which keeps
  nothing locally and evaluates no rules (the store's ruler, e.g. vmalert, does that).

Runs within a cluster are told apart by the series' own labels (``ray_session``,
``ray_job_id`` on the rollout targets, ``ray_job_id`` on GPU ownership): external labels are
fixed for the life of a Prometheus, which sees many runs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fsd_daemon.config import LABEL_NAME_RE, Config, prometheus_duration
from fsd_daemon.mixin import names
from fsd_daemon.prometheus.client import ClientConfigError, HttpClient, check_http_url
from fsd_daemon.prometheus.scrape_config import (
    RESTORE_ENGINE_METRIC_COLONS,
    SELF_JOB,
    full_config,
    render_yaml,
)
from fsd_daemon.prometheus.sd_routes import sd_jobs, sd_path

EXIT_OK, EXIT_USAGE = 0, 2
# Prometheus' default for http_sd_configs is 60 s; a server that left would stay that long.
DEFAULT_SD_REFRESH_SECONDS = 15.0


@dataclass(frozen=True)
class CentralOptions:
    http_sd: str = ""
    sd_client: HttpClient = field(default_factory=HttpClient)
    remote_write: str = ""
    remote_write_client: HttpClient = field(default_factory=HttpClient)
    agent: bool = False
    external_labels: dict[str, str] = field(default_factory=dict)

    @property
    def wanted(self) -> bool:
        return bool(self.http_sd or self.remote_write or self.agent)


def http_sd_jobs(config: Config, base_url: str, client: HttpClient) -> list[dict[str, Any]]:
    """One job per served list (as the file_sd jobs, same names and relabelling), plus the
    daemon's own /metrics on the same listener."""
    base = base_url.rstrip("/")
    refresh = prometheus_duration(
        min(DEFAULT_SD_REFRESH_SECONDS, config.prometheus.scrape_interval_seconds)
    )
    jobs: list[dict[str, Any]] = []
    for job in sd_jobs(config):
        scrape: dict[str, Any] = {
            "job_name": job,
            "http_sd_configs": [
                {"url": f"{base}{sd_path(job)}", "refresh_interval": refresh, **client.fields()}
            ],
        }
        if job == names.JOB_ROLLOUT:
            scrape["metric_relabel_configs"] = [RESTORE_ENGINE_METRIC_COLONS]
        jobs.append(scrape)
    parts = urlsplit(base)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    jobs.append(
        {
            "job_name": SELF_JOB,
            "scheme": parts.scheme,
            "metrics_path": f"{parts.path}/metrics",
            **client.fields(),
            "static_configs": [{"targets": [f"{host}:{port}"]}],
        }
    )
    return jobs


def external_labels(config: Config, extra: dict[str, str]) -> dict[str, str]:
    """``cluster`` (the daemon's, the value its targets carry) and the user's own."""
    return {names.CLUSTER: config.daemon.cluster, **extra}


def central_config(config: Config, options: CentralOptions) -> dict[str, Any]:
    """The whole prometheus.yml for ``options`` (see the module docstring)."""
    doc = full_config(config)
    if options.http_sd:
        doc["scrape_configs"] = http_sd_jobs(config, options.http_sd, options.sd_client)
    if options.remote_write or options.agent:
        doc["global"]["external_labels"] = external_labels(config, options.external_labels)
    if options.agent:
        # Agent mode refuses rule_files and evaluates nothing.
        doc.pop("rule_files", None)
        doc["global"].pop("evaluation_interval", None)
    if options.remote_write:
        doc["remote_write"] = [
            {"url": options.remote_write, **options.remote_write_client.fields()}
        ]
    return doc


def parse_external_labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not LABEL_NAME_RE.match(name) or name.startswith("__"):
            raise ClientConfigError(
                f"--external-label must be NAME=VALUE with a label name (got {pair!r})"
            )
        if not value:
            raise ClientConfigError(f"--external-label {name}: the value is empty")
        labels[name] = value
    return labels


def check_options(options: CentralOptions) -> None:
    """Raises ClientConfigError for anything Prometheus would refuse."""
    if options.http_sd:
        check_http_url(options.http_sd, "--http-sd")
        if urlsplit(options.http_sd).query:
            raise ClientConfigError("--http-sd: the base URL takes no query string")
    options.sd_client.check("--sd")
    if options.remote_write:
        check_http_url(options.remote_write, "--remote-write")
    elif options.agent:
        raise ClientConfigError("--agent needs --remote-write (an agent keeps nothing itself)")
    elif options.external_labels:
        raise ClientConfigError("--external-label goes with --remote-write")
    options.remote_write_client.check("--remote-write")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """prometheus-config's options for a Prometheus away from the head node, or streaming."""
    group = parser.add_argument_group("a Prometheus not on the head node (HTTP service discovery)")
    group.add_argument(
        "--http-sd",
        metavar="BASE_URL",
        help="print jobs that discover targets from the daemon at BASE_URL "
        "(e.g. https://head:9848; its daemon.metrics_listen)",
    )
    _client_arguments(group, "sd", "the daemon's listener (its daemon.web_config_file)")
    group = parser.add_argument_group("streaming to a long-term store (remote write)")
    group.add_argument(
        "--remote-write", metavar="URL", help="also send every sample to URL (remote_write)"
    )
    _client_arguments(group, "remote-write", "the store", bearer=True)
    group.add_argument(
        "--external-label",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an external label besides cluster (repeatable), e.g. team=rl",
    )
    group.add_argument(
        "--agent",
        action="store_true",
        help="the agent-mode variant (prometheus --enable-feature=agent): keep nothing locally",
    )


def _client_arguments(
    group: argparse._ArgumentGroup, prefix: str, what: str, *, bearer: bool = False
) -> None:
    group.add_argument(f"--{prefix}-username", metavar="USER", help=f"basic auth user for {what}")
    group.add_argument(
        f"--{prefix}-password-file", metavar="FILE", help="file holding that user's password"
    )
    if bearer:
        group.add_argument(
            f"--{prefix}-bearer-token-file", metavar="FILE", help="file holding a bearer token"
        )
    group.add_argument(f"--{prefix}-ca-file", metavar="FILE", help=f"CA that signed {what}'s cert")
    group.add_argument(f"--{prefix}-cert-file", metavar="FILE", help="client certificate")
    group.add_argument(f"--{prefix}-key-file", metavar="FILE", help="client certificate's key")
    group.add_argument(
        f"--{prefix}-server-name", metavar="NAME", help="name to verify the server's cert against"
    )


def _client(args: argparse.Namespace, prefix: str) -> HttpClient:
    def arg(name: str) -> str:
        return str(getattr(args, f"{prefix}_{name}", None) or "")

    return HttpClient(
        username=arg("username"),
        password_file=arg("password_file"),
        bearer_token_file=arg("bearer_token_file"),
        ca_file=arg("ca_file"),
        cert_file=arg("cert_file"),
        key_file=arg("key_file"),
        server_name=arg("server_name"),
    )


def options_from_args(args: argparse.Namespace) -> CentralOptions:
    """Raises ClientConfigError for a bad --external-label."""
    return CentralOptions(
        http_sd=args.http_sd or "",
        sd_client=_client(args, "sd"),
        remote_write=args.remote_write or "",
        remote_write_client=_client(args, "remote_write"),
        agent=bool(args.agent),
        external_labels=parse_external_labels(args.external_label),
    )


def central_prometheus_config(config: Config, args: argparse.Namespace) -> int | None:
    """``prometheus-config`` with any of this module's options: its exit status; None when
    none was given (the plain or --patch command runs)."""
    try:
        options = options_from_args(args)
        if options.wanted and args.patch:
            raise ClientConfigError(
                "--http-sd, --remote-write and --agent print a whole config; not with --patch"
            )
    except ClientConfigError as exc:
        print(f"fsd-daemon: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not options.wanted and not options.external_labels:
        if config.daemon.web_config_file and config.daemon.metrics_listen:
            # The file_sd config's fsd_daemon job scrapes plain HTTP without credentials.
            print(
                "fsd-daemon: note: daemon.web_config_file is set: give the fsd_daemon job "
                "scheme, basic_auth and tls_config (--http-sd BASE_URL with --sd-* prints them)",
                file=sys.stderr,
            )
        return None
    return central_config_command(config, options)


def central_config_command(config: Config, options: CentralOptions) -> int:
    try:
        check_options(options)
    except ClientConfigError as exc:
        print(f"fsd-daemon: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if options.agent:
        sys.stdout.write(
            "# Prometheus agent mode: prometheus --enable-feature=agent --config.file=THIS\n"
            "# No rules run here: load the rules into the store's ruler (e.g. vmalert).\n"
        )
    sys.stdout.write(render_yaml(central_config(config, options)))
    return EXIT_OK


__all__ = [
    "CentralOptions",
    "add_arguments",
    "central_config",
    "central_config_command",
    "central_prometheus_config",
    "external_labels",
    "http_sd_jobs",
    "options_from_args",
    "parse_external_labels",
]
