"""``fsd-gpu-exporter``: serve per-GPU busy time, health and ownership on /metrics.

Exit status: 0 after SIGTERM/SIGINT, 1 when the listener cannot be bound, 2 on bad flags or
configuration (one line naming the key). A machine without a driver is not an error: the
exporter serves ``fsd_gpu_nvml_up 0`` and retries NVML, so systemd does not crash-loop it.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

from fsd_daemon import __version__
from fsd_daemon.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    load_config,
    parse_listen,
    resolve_config_path,
)
from fsd_daemon.plumbing.process import STOP_SIGNALS, configure_logging, handled_signals
from fsd_daemon.plumbing.sdnotify import SystemdNotifier
from fsd_daemon.plumbing.webconfig import WebConfigError, load_web_config

log = logging.getLogger("fsd_daemon.gpu")

EXIT_OK, EXIT_RUNTIME, EXIT_BAD_CONFIG = 0, 1, 2
# The interpreter's GIL switch interval in the exporter process (Python's default: 5 ms).
SWITCH_INTERVAL_SECONDS = 0.0005


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fsd-gpu-exporter",
        description="Prometheus exporter of per-GPU busy time (integrated from NVML's "
        "utilization samples), memory, power, health, and which Ray actor and rollout replica "
        "holds or reserved each GPU.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to serve /metrics and /healthz on (exporter.listen; default 0.0.0.0:9847: "
        "Prometheus scrapes <node_ip>:9847, as gpu.json says)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML config file shared with fsd-daemon (default: $FSD_CONFIG, else "
        f"{DEFAULT_CONFIG_PATH} if present, else built-in defaults)",
    )
    p.add_argument(
        "--simulate",
        metavar="N",
        type=_positive_int,
        help="serve N simulated GPUs with scripted bursty duty cycles instead of NVML",
    )
    p.add_argument(
        "--node",
        metavar="NAME",
        help="value of the node label (default: this machine's host name)",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth for the listener, in the Prometheus exporter-toolkit format "
        "(as node_exporter's flag of the same name); read once at start",
    )
    p.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="daemon.log_level"
    )
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be 1 to 1024 (got {value})")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(
            resolve_config_path(args.config),
            overrides={"exporter.listen": args.listen, "daemon.log_level": args.log_level},
        )
        listen = parse_listen(config.exporter.listen, "exporter.listen")
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except (ConfigError, WebConfigError) as exc:
        print(f"fsd-gpu-exporter: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    configure_logging(config.daemon.log_level)
    node = args.node or socket.gethostname()
    # A scrape's thread that finds a background pass (sampler tick, ownership scan) holding
    # the GIL waits a whole switch interval at every hand-over (5 ms by default, several per
    # request); a shorter one keeps a scrape's wait near a static file's on a busy node.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)

    # Imported here: the exporter's modules are not needed to print --help or a config error.
    from fsd_daemon.gpu.backend import GpuBackend
    from fsd_daemon.gpu.exporter import Exporter

    backend: GpuBackend
    if args.simulate:
        from fsd_daemon.gpu.simulated import SimulatedNvml

        # Processes of simulated jobs (fsd-daemon demo) announce the GPUs they hold.
        simulated = SimulatedNvml(args.simulate, holders_from_environment=True)
        backend, backend_name = simulated, "simulated"
    else:
        from fsd_daemon.gpu.nvml import NvmlBackend

        backend, backend_name = NvmlBackend(), "nvml"
    exporter = Exporter(
        backend,
        config,
        node=node,
        backend_name=backend_name,
        listen=listen,
        web_config=web_config,
    )
    try:
        exporter.start()
    except OSError as exc:
        exporter.stop()
        print(f"fsd-gpu-exporter: cannot listen on {listen[0]}:{listen[1]}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    notifier = SystemdNotifier()
    stop = threading.Event()
    try:
        with handled_signals({signum: stop.set for signum in STOP_SIGNALS}):
            notifier.notify(READY=1, STATUS=f"serving on port {exporter.port}")
            _serve(exporter, notifier, stop)
    finally:
        notifier.notify(STOPPING=1)
        exporter.stop()
        notifier.close()
    return EXIT_OK


def _serve(exporter: Any, notifier: SystemdNotifier, stop: threading.Event) -> None:
    """Wait for a signal; keep systemd's watchdog fed only while the sampler is healthy, so a
    sampler stuck in the driver gets the unit restarted (if WatchdogSec= is set)."""
    step = min(notifier.watchdog_interval or 5.0, 5.0)
    last_status = ""
    while not stop.wait(step):
        healthy, details = exporter.health()
        if healthy:
            notifier.notify(WATCHDOG=1)
        status = (
            f"NVML {'up' if details.get('nvml_up') else 'down'}, {details.get('gpus', 0)} GPU(s)"
            + ("" if healthy else ", sampler stalled")
        )
        if status != last_status:
            notifier.notify(STATUS=status)
            last_status = status


if __name__ == "__main__":
    sys.exit(main())
