"""``fsd-daemon assets``: where the shipped rules and dashboards are, and installing them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsd_daemon.assets import DASHBOARDS_DIR, GRAFANA_DIR, RULES_DIR
from fsd_daemon.assets.install import (
    Installed,
    install_dashboards,
    install_grafana_provisioning,
    install_prometheus_rules,
)
from fsd_daemon.plumbing.atomic_files import WriteError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    assets = sub.add_parser(
        "assets", help="print where the shipped rules and dashboards are, or install them"
    )
    verbs = assets.add_subparsers(dest="assets_command", metavar="ACTION", required=True)
    verbs.add_parser("path", help="print the directories of the shipped rules and dashboards")
    install = verbs.add_parser(
        "install", help="copy the rules and/or dashboards where Prometheus and Grafana read them"
    )
    install.add_argument(
        "--prometheus-rules",
        metavar="DIR",
        help="write the rule files (*.rules.yml) here; point prometheus.yml's rule_files at "
        "DIR/*.yml",
    )
    install.add_argument(
        "--grafana-provisioning",
        metavar="DIR",
        help="Grafana's provisioning directory (e.g. /etc/grafana/provisioning): writes "
        "dashboards/fsd-daemon/*.json and the provider dashboards/fsd-daemon.yml",
    )
    install.add_argument(
        "--prometheus-url",
        metavar="URL",
        help="with --grafana-provisioning: also write datasources/fsd-daemon.yml for this "
        "Prometheus",
    )
    install.add_argument(
        "--grafana-dashboards",
        metavar="DIR",
        help="only the dashboard JSON files, into a directory a provider already reads",
    )


def run(args: argparse.Namespace) -> int:
    if args.assets_command == "path":
        print(f"prometheus rules       {RULES_DIR}")
        print(f"grafana dashboards     {DASHBOARDS_DIR}")
        print(f"grafana provisioning   {GRAFANA_DIR / 'provisioning'}")
        return EXIT_OK
    wanted = (args.prometheus_rules, args.grafana_provisioning, args.grafana_dashboards)
    if not any(wanted):
        return _usage(
            "assets install needs --prometheus-rules DIR, --grafana-provisioning DIR "
            "or --grafana-dashboards DIR"
        )
    if args.prometheus_url and not args.grafana_provisioning:
        return _usage("--prometheus-url goes with --grafana-provisioning DIR")
    if args.prometheus_url and not args.prometheus_url.startswith(("http://", "https://")):
        return _usage(
            f"--prometheus-url must be an http:// or https:// URL: {args.prometheus_url!r}"
        )
    results: list[Installed] = []
    try:
        if args.prometheus_rules:
            results.append(install_prometheus_rules(Path(args.prometheus_rules)))
        if args.grafana_provisioning:
            results.append(
                install_grafana_provisioning(
                    Path(args.grafana_provisioning), args.prometheus_url or ""
                )
            )
        if args.grafana_dashboards:
            results.append(install_dashboards(Path(args.grafana_dashboards)))
    except (WriteError, OSError) as exc:
        print(f"fsd-daemon assets: cannot install: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for result in results:
        for path in result.changed:
            print(f"wrote      {path}")
        for path in result.unchanged:
            print(f"unchanged  {path}")
    return EXIT_OK


def _usage(message: str) -> int:
    print(f"fsd-daemon assets: {message}", file=sys.stderr)
    return EXIT_USAGE
