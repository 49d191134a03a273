"""Configuration: one TOML file, environment overrides, CLI flags.

Precedence, lowest first: built-in defaults < TOML file < environment < CLI flags.
Every key lives in a section (``[daemon]``, ``[ray]``, ...); its environment variable is
``FSD_<SECTION>_<KEY>`` in upper case (``FSD_DAEMON_POLL_INTERVAL_SECONDS``). ``RAY_ADDRESS`` is
honoured as an alias of ``FSD_RAY_ADDRESS``, as every Ray tool does.

Validation happens here, once, at load time: a bad value raises :class:`ConfigError` naming the
key and what is allowed, and the CLI turns that into one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsd_daemon.verl import (
    DEFAULT_GPU_ROLES,
    DEFAULT_METRICS_PATH,
    DEFAULT_PATTERNS,
    ENGINES,
    RecognitionPattern,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# One port, two users: the exporter listens on it and the daemon writes it into gpu.json.
DEFAULT_GPU_EXPORTER_PORT = 9847
DEFAULT_DAEMON_METRICS_PORT = 9848
DEFAULT_CONFIG_PATH = "/etc/fsd-daemon/fsd-daemon.toml"


def resolve_config_path(arg: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The config file both commands read: ``--config``, else ``$FSD_CONFIG``, else
    :data:`DEFAULT_CONFIG_PATH` when it exists, else none (built-in defaults)."""
    env = os.environ if environ is None else environ
    if arg:
        return arg
    if env.get("FSD_CONFIG"):
        return env["FSD_CONFIG"]
    return DEFAULT_CONFIG_PATH if os.path.isfile(DEFAULT_CONFIG_PATH) else None


LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class ConfigError(ValueError):
    """A bad configuration value. ``str()`` is the one line shown to the user."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config error: {key}: {message}")
        self.key = key


@dataclass(frozen=True)
class DaemonSection:
    output_dir: str = "/var/lib/fsd-daemon/targets"
    # The `cluster` label of every target. "" = derived (default_cluster): the Slurm job where
    # Slurm started us, else the host name, so that two clusters never share one by default.
    cluster: str = ""
    poll_interval_seconds: float = 2.0
    # After a poll that saw the cluster change, poll this often for a few seconds (a new
    # server's address is picked up sooner); a quiet cluster keeps poll_interval_seconds.
    # Never slower than poll_interval_seconds.
    fast_poll_interval_seconds: float = 0.5
    grace_period_seconds: float = 10.0
    max_backoff_seconds: float = 30.0
    log_level: str = "info"
    # "" disables the self-metrics listener; "127.0.0.1:9848" enables it.
    metrics_listen: str = ""
    # TLS and basic auth for that listener (/metrics, /healthz and the /sd/ lists), in the
    # exporter-toolkit web-config format fsd-gpu-exporter reads ("" = plain HTTP, open).
    web_config_file: str = ""
    # Restore target files deleted or edited by someone else as soon as it happens.
    watch_output_dir: bool = True


@dataclass(frozen=True)
class RaySection:
    address: str = "auto"
    request_timeout_seconds: float = 5.0
    resolve_timeout_seconds: float = 2.0
    actor_limit: int = 10_000
    node_limit: int = 2_000
    # Poll as soon as Ray logs an actor state change, where the cluster was started with
    # RAY_enable_export_api_write_config=EXPORT_ACTOR (read from
    # <prometheus.ray_temp_dir>/session_latest/logs/export_events; a doorbell only).
    watch_export_events: bool = True
    # Between quiet polls, ask this often whether the number of ALIVE actors changed (one
    # limit=1 listing) and poll at once when it did; 0 turns the probe off.
    change_probe_interval_seconds: float = 0.5
    # Keep the Ray bridge (the child with a Ray driver that resolves server addresses) connected
    # while the cluster is quiet, so the first new server after a quiet spell is resolved at
    # once (about 100 MiB more memory); false stops it after a minute without use.
    keep_bridge_connected: bool = True


@dataclass(frozen=True)
class DiscoverySection:
    # User patterns are tried before the defaults.
    extra_patterns: tuple[RecognitionPattern, ...] = ()
    use_default_patterns: bool = True


@dataclass(frozen=True)
class TargetsSection:
    gpu_exporter_port: int = DEFAULT_GPU_EXPORTER_PORT
    write_gpu: bool = True
    write_ray: bool = True
    # Longest label value written; longer values drop the target (a scrape config with
    # label_value_length_limit would otherwise fail every scrape of it).
    max_label_value_length: int = 1024


@dataclass(frozen=True)
class ExporterSection:
    listen: str = f"0.0.0.0:{DEFAULT_GPU_EXPORTER_PORT}"  # gpu.json names <node_ip>:port
    sample_interval_seconds: float = 1.0
    ownership_interval_seconds: float = 5.0
    nvml_retry_seconds: float = 30.0
    # Ray actor class name (or regex) -> role, merged over DEFAULT_GPU_ROLES.
    roles: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PrometheusSection:
    # A prometheus.yml the running daemon keeps patched with its scrape jobs ("" = none).
    config_file: str = ""
    # POST <url>/-/reload after a real change to a patched prometheus.yml ("" = never).
    reload_url: str = ""
    # Keep Ray's generated <ray_temp_dir>/session_latest/metrics/prometheus/prometheus.yml
    # patched, following Ray restarts.
    patch_ray_config: bool = False
    # Keep the shipped dashboards in <ray_temp_dir>/session_latest's Grafana dashboards
    # directory (fsd_daemon.grafana_session), following Ray restarts.
    ray_grafana_dashboards: bool = False
    ray_temp_dir: str = "/tmp/ray"
    rule_files: tuple[str, ...] = ()
    scrape_interval_seconds: float = 15.0


@dataclass(frozen=True)
class Config:
    daemon: DaemonSection = DaemonSection()
    ray: RaySection = RaySection()
    discovery: DiscoverySection = DiscoverySection()
    targets: TargetsSection = TargetsSection()
    exporter: ExporterSection = ExporterSection()
    prometheus: PrometheusSection = PrometheusSection()

    # Where daemon.cluster came from, for check-config and doctor (not a config key).
    cluster_origin: str = field(default="", compare=False)

    @property
    def patterns(self) -> tuple[RecognitionPattern, ...]:
        base = DEFAULT_PATTERNS if self.discovery.use_default_patterns else ()
        return self.discovery.extra_patterns + base

    @property
    def gpu_roles(self) -> dict[str, str]:
        return {**DEFAULT_GPU_ROLES, **self.exporter.roles}


_SECTION_TYPES = {
    "daemon": DaemonSection,
    "ray": RaySection,
    "discovery": DiscoverySection,
    "targets": TargetsSection,
    "exporter": ExporterSection,
    "prometheus": PrometheusSection,
}
LOG_LEVELS = ("debug", "info", "warning", "error")


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective configuration.

    ``path`` None means "no file" (built-in defaults); a path that does not exist is an error.
    ``overrides`` maps dotted keys (``"daemon.output_dir"``) to values from CLI flags.
    """
    raw: dict[str, dict[str, Any]] = {name: {} for name in _SECTION_TYPES}
    origin = ""
    if path is not None:
        for section, values in _read_toml(Path(path)).items():
            raw[section].update(values)
        if "cluster" in raw["daemon"]:
            origin = f"set in {path}"
    env = os.environ if environ is None else environ
    for section, values in _env_values(env).items():
        raw[section].update(values)
        if section == "daemon" and "cluster" in values:
            origin = "set by FSD_DAEMON_CLUSTER"
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in raw or not key:
            raise ConfigError(dotted, "unknown key")
        if value is not None:
            raw[section][key] = value
            if dotted == "daemon.cluster":
                origin = "set on the command line"
    if not raw["daemon"].get("cluster"):
        raw["daemon"]["cluster"], origin = default_cluster(env)
    sections = {name: _build_section(name, cls, raw[name]) for name, cls in _SECTION_TYPES.items()}
    return Config(**sections, cluster_origin=origin)


_SLURM_JOB_RE = re.compile(r"[0-9][0-9_]{0,31}\Z")
_SLURM_CLUSTER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def default_cluster(environ: Mapping[str, str]) -> tuple[str, str]:
    """(value, where it came from) of ``daemon.cluster`` when none is set.

    Inside a Slurm job (the daemon in the job script): ``slurm-<cluster>-<job id>``, one per
    allocation. Otherwise the host name: a head node's is its own, and in Kubernetes it is the
    head pod's name. Two Ray clusters on one host need ``daemon.cluster`` set."""
    job = environ.get("SLURM_JOB_ID", "")
    if _SLURM_JOB_RE.match(job):
        name = environ.get("SLURM_CLUSTER_NAME", "")
        prefix = f"slurm-{name}-" if _SLURM_CLUSTER_RE.match(name) else "slurm-"
        return f"{prefix}{job}", "default: the Slurm job (SLURM_CLUSTER_NAME, SLURM_JOB_ID)"
    host = socket.gethostname()[:253] or "localhost"
    return host, "default: the host name (set daemon.cluster to choose a name)"


def holds_no_settings(data: bytes) -> bool:
    """True for config file bytes with no key in them: empty, blank, or comments only."""
    try:
        return not tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # not empty: loading it refuses it with the parser's own words


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    result: dict[str, dict[str, Any]] = {}
    for section, values in data.items():
        if section not in _SECTION_TYPES:
            allowed = ", ".join(f"[{s}]" for s in _SECTION_TYPES)
            raise ConfigError(section, f"unknown section; allowed: {allowed}")
        if not isinstance(values, dict):
            raise ConfigError(section, "must be a table ([section])")
        result[section] = dict(values)
    return result


# FSD_* variables that are not config keys: the config path, the simulations' knobs, and
# the tests' switch for regenerating reference files.
_OTHER_VARIABLES = frozenset({"FSD_CONFIG", "FSD_UPDATE_REFERENCE"})
_OTHER_PREFIXES = ("FSD_SIM_",)


def environment_variables() -> dict[str, tuple[str, str]]:
    """Every ``FSD_<SECTION>_<KEY>`` variable -> (section, key)."""
    return {
        f"FSD_{name}_{f.name}".upper(): (name, f.name)
        for name, cls in _SECTION_TYPES.items()
        for f in dataclasses.fields(cls)
    }


def _env_values(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    if environ.get("RAY_ADDRESS"):
        result.setdefault("ray", {})["address"] = environ["RAY_ADDRESS"]
    known = environment_variables()
    unknown = sorted(
        name
        for name in environ
        if name.startswith("FSD_")
        and name not in known
        and name not in _OTHER_VARIABLES
        and not name.startswith(_OTHER_PREFIXES)
    )
    if unknown:
        # A misspelt variable silently ignored is a setting the user believes in but does
        # not have; refuse it like an unknown key in the file.
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, [*known, *_OTHER_VARIABLES], n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise ConfigError("environment", f"unknown variable {', '.join(hints)}")
    for env_name, (section, key) in known.items():
        if env_name in environ:
            result.setdefault(section, {})[key] = environ[env_name]
    return result


def _build_section(section: str, cls: type, values: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{section}.{key}"
        if key not in known:
            raise ConfigError(dotted, f"unknown key; allowed: {', '.join(sorted(known))}")
        kwargs[key] = _convert(dotted, known[key], value)
    built = cls(**kwargs)
    _check_section(section, built)
    return built


def _convert(dotted: str, f: dataclasses.Field[Any], value: Any) -> Any:
    """Coerce one value (from TOML or a string from the environment) to the field's type."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
    if dotted == "discovery.extra_patterns":
        return _convert_patterns(dotted, value)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(dotted, f"must be true or false (got {value!r})")
    if isinstance(default, int):
        # int(1.5) would be 1: a fraction is refused, not truncated.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            return int(value)
        raise ConfigError(dotted, f"must be an integer (got {value!r})")
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ConfigError(dotted, f"must be a number (got {value!r})")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(dotted, f"must be a number (got {value!r})") from None
        if not math.isfinite(number):
            raise ConfigError(dotted, f"must be a finite number (got {value!r})")
        return number
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(dotted, f"must be a string (got {value!r})")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(dotted, f"must be a list of strings (got {value!r})")
        return tuple(value)
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(dotted, f"must be a table of strings (got {value!r})")
        return dict(value)
    raise ConfigError(dotted, "unsupported value")  # pragma: no cover - schema bug


# The keys of a [[discovery.extra_patterns]] table (what check-config prints of a pattern).
PATTERN_KEYS = (
    "class_name",
    "name",
    "engine",
    "every_index_serves_roles",
    "metrics_path",
    "has_metrics_route",
)


def _convert_patterns(dotted: str, value: Any) -> tuple[RecognitionPattern, ...]:
    if not isinstance(value, list):
        raise ConfigError(dotted, "must be an array of tables {class_name, name, engine}")
    patterns = []
    for i, item in enumerate(value):
        key = f"{dotted}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(key, "must be a table {class_name, name, engine}")
        unknown = set(item) - set(PATTERN_KEYS)
        if unknown:
            raise ConfigError(key, f"unknown keys {sorted(unknown)}")
        for part in ("class_name", "name"):
            regex = item.get(part, ".*")
            if not isinstance(regex, str):
                raise ConfigError(f"{key}.{part}", "must be a regular expression string")
            try:
                re.compile(regex)
            except re.error as exc:
                raise ConfigError(
                    f"{key}.{part}", f"not a valid regular expression: {exc}"
                ) from None
        engine = item.get("engine", "")
        if engine not in ENGINES:
            raise ConfigError(f"{key}.engine", f"must be one of {', '.join(ENGINES)}")
        roles = item.get("every_index_serves_roles", ["decode"])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ConfigError(f"{key}.every_index_serves_roles", "must be a list of strings")
        metrics_path = item.get("metrics_path", DEFAULT_METRICS_PATH)
        if not isinstance(metrics_path, str) or not re.fullmatch(
            r"/[A-Za-z0-9_\-./]{0,255}", metrics_path, re.ASCII
        ):
            raise ConfigError(f"{key}.metrics_path", "must be a URL path such as /metrics")
        has_route = item.get("has_metrics_route", True)
        if not isinstance(has_route, bool):
            raise ConfigError(f"{key}.has_metrics_route", "must be true or false")
        patterns.append(
            RecognitionPattern(
                class_name=item.get("class_name", ".*"),
                name=item.get("name", ".*"),
                engine=engine,
                every_index_serves_roles=tuple(roles),
                metrics_path=metrics_path,
                has_metrics_route=has_route,
            )
        )
    return tuple(patterns)


def _positive(section: Any, key: str, prefix: str) -> None:
    value = getattr(section, key)
    if not value > 0:
        raise ConfigError(f"{prefix}.{key}", f"must be > 0 (got {value!r})")


def _check_section(name: str, s: Any) -> None:
    if isinstance(s, DaemonSection):
        for key in ("poll_interval_seconds", "fast_poll_interval_seconds", "max_backoff_seconds"):
            _positive(s, key, name)
        if s.grace_period_seconds < 0:
            raise ConfigError(f"{name}.grace_period_seconds", "must be >= 0")
        if s.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(f"{name}.log_level", f"must be one of {', '.join(LOG_LEVELS)}")
        if not s.output_dir:
            raise ConfigError(f"{name}.output_dir", "must not be empty")
        if not s.cluster or len(s.cluster) > 256:
            raise ConfigError(f"{name}.cluster", "must be 1 to 256 characters")
        if s.metrics_listen:
            parse_listen(s.metrics_listen, f"{name}.metrics_listen")
    elif isinstance(s, RaySection):
        for key in ("request_timeout_seconds", "resolve_timeout_seconds"):
            _positive(s, key, name)
        if not s.change_probe_interval_seconds >= 0:
            raise ConfigError(f"{name}.change_probe_interval_seconds", "must be >= 0 (0: off)")
        for key in ("actor_limit", "node_limit"):
            value = getattr(s, key)
            if not 1 <= value <= 1_000_000:
                raise ConfigError(f"{name}.{key}", f"must be 1 to 1000000 (got {value})")
        check_ray_address(s.address, f"{name}.address")
    elif isinstance(s, TargetsSection):
        if not 1 <= s.gpu_exporter_port <= 65535:
            raise ConfigError(f"{name}.gpu_exporter_port", "must be a port, 1 to 65535")
        if not 16 <= s.max_label_value_length <= 65536:
            raise ConfigError(f"{name}.max_label_value_length", "must be 16 to 65536")
    elif isinstance(s, ExporterSection):
        parse_listen(s.listen, f"{name}.listen")
        for key in ("sample_interval_seconds", "ownership_interval_seconds", "nvml_retry_seconds"):
            _positive(s, key, name)
        for class_name, role in s.roles.items():
            if not LABEL_NAME_RE.match(role):
                raise ConfigError(
                    f"{name}.roles.{class_name}", "role must match [a-zA-Z_][a-zA-Z0-9_]*"
                )
    elif isinstance(s, PrometheusSection):
        prometheus_duration(s.scrape_interval_seconds, f"{name}.scrape_interval_seconds")
        if s.reload_url and not s.reload_url.startswith(("http://", "https://")):
            raise ConfigError(f"{name}.reload_url", "must be an http:// or https:// URL")


def parse_listen(value: str, key: str, *, min_port: int = 0) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into a bind address."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(key, f"must be HOST:PORT (got {value!r})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(key, f"[{host}] is not an IPv6 address") from None
    elif ":" in host:
        raise ConfigError(key, f"an IPv6 address goes in brackets: [{host}]:{port_text}")
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,252}[A-Za-z0-9])?", host):
                raise ConfigError(
                    key, f"host must be an IP address or a hostname (got {host!r})"
                ) from None
    if not re.fullmatch(r"[0-9]{1,5}", port_text):
        raise ConfigError(key, f"port must be an integer (got {port_text!r})")
    port = int(port_text)
    if not min_port <= port <= 65535:
        raise ConfigError(key, f"port must be {min_port} to 65535 (got {port})")
    return host, port


def check_ray_address(value: str, key: str) -> None:
    """What the daemon can use: ``auto`` (Ray's own discovery), the GCS address
    ``HOST:PORT`` / ``[v6]:PORT`` (what ``ray start --head`` prints and ``ray.init`` takes), or
    ``file:PATH`` (a described cluster). Ray Client (``ray://``) and dashboard URLs are not
    GCS addresses: refused here rather than failing at every poll."""
    if value == "auto" or (value.startswith("file:") and len(value) > len("file:")):
        return
    if not value:
        raise ConfigError(key, "must not be empty (use 'auto')")
    allowed = "'auto', the GCS address HOST:PORT (e.g. 10.0.0.1:6379) or file:PATH"
    if "://" in value:
        scheme = value.split("://", 1)[0]
        raise ConfigError(key, f"{scheme}:// URLs are not supported; use {allowed} (got {value!r})")
    try:
        parse_listen(value, key, min_port=1)
    except ConfigError:
        raise ConfigError(key, f"must be {allowed} (got {value!r})") from None


def prometheus_duration(seconds: float, key: str = "duration") -> str:
    """``seconds`` as a Prometheus duration (``15s``, ``500ms``, ``1m30s``).

    Prometheus durations are whole numbers of units down to milliseconds ("0.5s" is refused
    by promtool, "500ms" accepted): anything finer, or under 1 ms, is a ConfigError."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(key, f"must be > 0 (got {seconds!r})")
    ms = round(seconds * 1000)
    if ms < 1 or abs(ms - seconds * 1000) > 1e-6:
        raise ConfigError(
            key, f"must be a whole number of milliseconds, at least 0.001 (got {seconds!r})"
        )
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def to_toml_dict(config: Config) -> dict[str, Any]:
    """The effective config as plain data (lists, tables, strings, numbers), for
    ``check-config``: what it prints loads back as the same config."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    out = {name: plain(dataclasses.asdict(getattr(config, name))) for name in _SECTION_TYPES}
    out["discovery"]["extra_patterns"] = [
        {key: value for key, value in pattern.items() if key in PATTERN_KEYS}
        for pattern in out["discovery"]["extra_patterns"]
    ]
    return out
