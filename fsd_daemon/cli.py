"""``fsd-daemon``: run, targets, check-config, prometheus-config, demo, doctor."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import orjson
import tomli_w

from fsd_daemon import __version__
from fsd_daemon.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    load_config,
    resolve_config_path,
    to_toml_dict,
)
from fsd_daemon.mixin import names
from fsd_daemon.plumbing.process import configure_logging

log = logging.getLogger("fsd_daemon")

EXIT_OK, EXIT_RAY_UNREACHABLE, EXIT_BAD_CONFIG = 0, 1, 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML config file (default: $FSD_CONFIG, else {DEFAULT_CONFIG_PATH} if present, "
        "else built-in defaults)",
    )
    parser.add_argument(
        "--output-dir", metavar="DIR", help="directory of the target files (daemon.output_dir)"
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray GCS address or 'auto' (ray.address; default: $RAY_ADDRESS, else auto)",
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="daemon.log_level"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsd-daemon",
        description="Keep Prometheus file_sd target files in step with the rollout servers "
        "and nodes of a Ray cluster.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run the daemon (foreground; systemd Type=notify aware)")
    _common(run)
    run.add_argument(
        "--once",
        action="store_true",
        help="one pass, write, exit (1: Ray unreachable or a file could not be written)",
    )
    run.add_argument("--metrics-listen", metavar="HOST:PORT", help="daemon.metrics_listen")
    run.add_argument("--no-watch", action="store_true", help="do not watch files with watchdog")

    targets = sub.add_parser("targets", help="show what would be written, writing nothing")
    _common(targets)
    targets.add_argument("--json", action="store_true", help="print JSON instead of a table")

    check = sub.add_parser("check-config", help="print the effective config, or say what is wrong")
    _common(check)

    prom = sub.add_parser(
        "prometheus-config", help="print scrape jobs for Prometheus, or patch a prometheus.yml"
    )
    _common(prom)
    prom.add_argument("--patch", metavar="FILE", help="add or update the jobs in FILE, in place")
    prom.add_argument(
        "--reload-url",
        metavar="URL",
        help="POST URL/-/reload after a real change (prometheus.reload_url)",
    )
    from fsd_daemon.prometheus.central import add_arguments as add_central_arguments

    add_central_arguments(prom)

    demo = sub.add_parser(
        "demo",
        help="local Ray, simulated rollout servers and GPUs, the daemon and Prometheus",
    )
    _common(demo)
    demo.add_argument("--replicas", type=int, default=4, help="simulated rollout replicas per job")
    demo.add_argument("--gpus", type=int, default=8, help="simulated GPUs")
    demo.add_argument("--prometheus-port", type=int, default=9090)
    demo.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: Ctrl-C)")
    demo.add_argument("--workdir", metavar="DIR", help="where files go (default: a temp dir)")

    doctor = sub.add_parser(
        "doctor", help="check Ray, servers, metrics, exporters and Prometheus; say what to fix"
    )
    _common(doctor)
    from fsd_daemon.doctor import add_arguments

    add_arguments(doctor)
    demo.add_argument(
        "--scenario",
        choices=["long-tail"],
        help="one job with a scripted load (fsd_daemon/sim/scenario.py) instead of two random ones",
    )
    demo.add_argument(
        "--scrape-interval",
        type=_positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="Prometheus' scrape and rule interval (default 5)",
    )
    demo.add_argument(
        "--remote-write",
        metavar="URL",
        help="Prometheus also streams everything to this long-term store (remote_write)",
    )

    # report's commands: they need no daemon config (see main).
    from fsd_daemon.assets import command as assets_command
    from fsd_daemon.report import command as report_command

    assets_command.add_parser(sub)
    report_command.add_parser(sub)
    return parser


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"between 0.1 and 3600 seconds: {text!r}")
    return value


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "daemon.output_dir": getattr(args, "output_dir", None),
        "ray.address": getattr(args, "ray_address", None),
        "daemon.log_level": getattr(args, "log_level", None),
        "daemon.metrics_listen": getattr(args, "metrics_listen", None),
        "prometheus.reload_url": getattr(args, "reload_url", None),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "assets":
        from fsd_daemon.assets import command as assets_command

        return assets_command.run(args)
    if args.command == "report":
        from fsd_daemon.report import command as report_command

        return report_command.run(args)
    config_path = resolve_config_path(args.config)

    def load() -> Config:
        return load_config(config_path, overrides=cli_overrides(args))

    try:
        config = load()
    except ConfigError as exc:
        print(f"fsd-daemon: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    configure_logging(config.daemon.log_level)
    command = args.command
    if command == "check-config":
        return _check_config(config, config_path)
    if command == "run":
        from fsd_daemon.service.daemon import Service, StartupError

        service = Service(config, config_loader=load, config_path=config_path)
        try:
            return service.run(once=args.once, watch=not args.no_watch)
        except StartupError as exc:
            print(f"fsd-daemon: {exc}", file=sys.stderr)
            return EXIT_BAD_CONFIG
    if command == "targets":
        return _targets(config, as_json=args.json)
    if command == "prometheus-config":
        from fsd_daemon.prometheus.central import central_prometheus_config

        central = central_prometheus_config(config, args)
        if central is not None:
            return central
        from fsd_daemon.prometheus.scrape_config import prometheus_config_command

        return prometheus_config_command(config, patch=args.patch)
    if command == "demo":
        from fsd_daemon.demo import run_demo

        return run_demo(config, args)
    if command == "doctor":
        from fsd_daemon.doctor import doctor_command

        return doctor_command(config, args)
    raise AssertionError(command)  # pragma: no cover - argparse rejects unknown commands


def _check_config(config: Config, path: str | None) -> int:
    """The effective config as TOML that loads back as the same config."""
    sys.stdout.write(f"# effective config (file: {path or 'none, built-in defaults'})\n")
    sys.stdout.write(f"# daemon.cluster: {config.cluster_origin}\n\n")
    sys.stdout.write(tomli_w.dumps(to_toml_dict(config)))
    return EXIT_OK


def _targets(config: Config, *, as_json: bool) -> int:
    from fsd_daemon.discovery.base import SourceError
    from fsd_daemon.pipeline.oneshot import discover_once
    from fsd_daemon.pipeline.poll import default_components

    source, resolver = default_components(config)
    try:
        desired = discover_once(config, source, resolver).desired
    except SourceError as exc:
        print(f"fsd-daemon: Ray could not be reached: {exc}", file=sys.stderr)
        return EXIT_RAY_UNREACHABLE
    finally:
        resolver.close()
    if as_json:
        out = {name: orjson.loads(_render(targets)) for name, targets in desired.files.items()}
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    rows = [("FILE", "TARGET", "ENGINE", "ROLE", "REPLICA", "JOB", "NODE_IP", "ACTOR")]
    for name, targets in sorted(desired.files.items()):
        for t in targets:
            rows.append(
                (
                    name,
                    t.address,
                    t.label(names.ENGINE),
                    t.label(names.ROLE),
                    t.label(names.REPLICA),
                    t.label(names.RAY_JOB_ID),
                    t.label(names.NODE_IP),
                    t.label(names.ACTOR_NAME),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for d in desired.dropped:
        print(f"dropped from {d.file}: {d.who}: {d.message}", file=sys.stderr)
    return EXIT_OK


def _render(targets: Any) -> bytes:
    from fsd_daemon.pipeline.render import render

    return render(targets)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
