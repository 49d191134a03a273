"""Configuration: one TOML file, environment overrides, CLI flags.

Precedence, lowest first: built-in defaults < TOML file < environment < CLI flags.
Every key lives in a section (``[daemon]``, ``[ray]``, ...); its environment variable is
``FSD_<SECTION>_<KEY>`` in upper case (``FSD_DAEMON_POLL_INTERVAL_SECONDS``). ``RAY_ADDRESS`` is
honoured as an alias of ``FSD_RAY_ADDRESS``, as every Ray tool does.

Each section is a pydantic model: a key's type, default and rule sit on its one line, and a key
the model does not have is refused. Validation happens here, once, at load time: a bad value
raises :class:`ConfigError` naming the key and what is allowed, and the CLI turns that into one
line on stderr and exit status 2.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
)
from pydantic_core import ErrorDetails

from fsd_daemon.recognition.verl import (
    DECODE,
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
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A bad configuration value. ``str()`` is the one line shown to the user."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config error: {key}: {message}")
        self.key = key


def _host_port(value: str, min_port: int = 0) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a bind address; ValueError says what is wrong."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"must be HOST:PORT (got {value!r})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"[{host}] is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets: [{host}]:{port_text}")
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,252}[A-Za-z0-9])?", host):
                raise ValueError(
                    f"host must be an IP address or a hostname (got {host!r})"
                ) from None
    if not re.fullmatch(r"[0-9]{1,5}", port_text):
        raise ValueError(f"port must be an integer (got {port_text!r})")
    port = int(port_text)
    if not min_port <= port <= 65535:
        raise ValueError(f"port must be {min_port} to 65535 (got {port})")
    return host, port


def parse_listen(value: str, key: str, *, min_port: int = 0) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into a bind address; ConfigError names
    ``key``."""
    try:
        return _host_port(value, min_port)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _ray_address(value: str) -> None:
    if value == "auto" or (value.startswith("file:") and len(value) > len("file:")):
        return
    if not value:
        raise ValueError("must not be empty (use 'auto')")
    allowed = "'auto', the GCS address HOST:PORT (e.g. 10.0.0.1:6379) or file:PATH"
    if "://" in value:
        scheme = value.split("://", 1)[0]
        raise ValueError(f"{scheme}:// URLs are not supported; use {allowed} (got {value!r})")
    try:
        _host_port(value, min_port=1)
    except ValueError:
        raise ValueError(f"must be {allowed} (got {value!r})") from None


def check_ray_address(value: str, key: str) -> None:
    """What the daemon can use: ``auto`` (Ray's own discovery), the GCS address
    ``HOST:PORT`` / ``[v6]:PORT`` (what ``ray start --head`` prints and ``ray.init`` takes), or
    ``file:PATH`` (a described cluster). Ray Client (``ray://``) and dashboard URLs are not
    GCS addresses: refused here rather than failing at every poll."""
    try:
        _ray_address(value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _duration_text(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be > 0 (got {seconds!r})")
    ms = round(seconds * 1000)
    if ms < 1 or abs(ms - seconds * 1000) > 1e-6:
        raise ValueError(
            f"must be a whole number of milliseconds, at least 0.001 (got {seconds!r})"
        )
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def prometheus_duration(seconds: float, key: str = "duration") -> str:
    """``seconds`` as a Prometheus duration (``15s``, ``500ms``, ``1m30s``).

    Prometheus durations are whole numbers of units down to milliseconds ("0.5s" is refused
    by promtool, "500ms" accepted): anything finer, or under 1 ms, is a ConfigError."""
    try:
        return _duration_text(seconds)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


# -- Value types. A TOML file gives typed values, the environment gives strings; each type
# takes its own kind of value and the spelling of it in a string, and nothing else: no value
# is silently truncated (1.5 for an integer) or guessed (1 for true).

_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


def _switch_from_text(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in _TRUE_WORDS:
        return True
    if isinstance(value, str) and value.lower() in _FALSE_WORDS:
        return False
    return value


def _integer_from_text(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,19}", value.strip()):
        return int(value)
    return value


def _number_from_text(value: Any) -> Any:
    """Integers and numeric strings as floats; anything else is left for the type to refuse
    (a bool is not a number here, and an integer too large for a float is not one either)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return value
    try:
        return float(value)
    except (ValueError, OverflowError):
        return value


def _list_from_text(value: Any) -> Any:
    if isinstance(value, str):
        return [item for item in (part.strip() for part in value.split(",")) if item]
    return value


# true/false, or 1/true/yes/on and 0/false/no/off in a string.
Switch = Annotated[bool, Strict(), BeforeValidator(_switch_from_text)]
# A whole number, or its digits in a string.
Integer = Annotated[int, Strict(), BeforeValidator(_integer_from_text)]
# A finite number (an integer is one), or its spelling in a string.
Number = Annotated[float, Strict(), AllowInfNan(False), BeforeValidator(_number_from_text)]
Text = Annotated[str, Strict()]
# A list of strings, or its items separated by commas in a string.
TextList = Annotated[tuple[Text, ...], BeforeValidator(_list_from_text)]


def _matching(pattern: str, wording: str) -> AfterValidator:
    """A rule: the whole string matches ``pattern`` (ASCII), else ``wording`` is the error."""
    compiled = re.compile(pattern, re.ASCII)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(wording)
        return value

    return AfterValidator(check)


def _rule(check: Callable[[Any], object]) -> AfterValidator:
    """A rule from a check that raises ValueError with the message for the user."""

    def run(value: Any) -> Any:
        check(value)
        return value

    return AfterValidator(run)


def _log_level(value: str) -> None:
    if value.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")


def _listen_or_off(value: str) -> None:
    if value:
        _host_port(value)


def _regex(value: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None


def _engine(value: str) -> None:
    if value not in ENGINES:
        raise ValueError(f"must be one of {', '.join(ENGINES)}")


def _http_url_or_off(value: str) -> None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")


class _Table(BaseModel):
    """A TOML table of the config: unknown keys are refused, values never change once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Seconds = Annotated[Number, Field(gt=0)]


class DaemonSection(_Table):
    output_dir: Annotated[Text, Field(min_length=1)] = "/var/lib/fsd-daemon/targets"
    # The `cluster` label of every target. "" = derived (default_cluster): the Slurm job where
    # Slurm started us, else the host name, so that two clusters never share one by default.
    cluster: Annotated[Text, Field(min_length=1, max_length=256)] = ""
    poll_interval_seconds: Seconds = 2.0
    # After a poll that saw the cluster change, poll this often for a few seconds (a new
    # server's address is picked up sooner); a quiet cluster keeps poll_interval_seconds.
    # Never slower than poll_interval_seconds: the service takes the smaller of the two, so a
    # short poll_interval_seconds alone is not refused for the default of this one.
    fast_poll_interval_seconds: Seconds = 0.5
    grace_period_seconds: Annotated[Number, Field(ge=0)] = 10.0
    max_backoff_seconds: Seconds = 30.0
    log_level: Annotated[Text, _rule(_log_level)] = "info"
    # "" disables the self-metrics listener; "127.0.0.1:9848" enables it.
    metrics_listen: Annotated[Text, _rule(_listen_or_off)] = ""
    # TLS and basic auth for that listener (/metrics, /healthz and the /sd/ lists), in the
    # exporter-toolkit web-config format fsd-gpu-exporter reads ("" = plain HTTP, open).
    web_config_file: Text = ""
    # Restore target files deleted or edited by someone else as soon as it happens.
    watch_output_dir: Switch = True


class RaySection(_Table):
    address: Annotated[Text, _rule(_ray_address)] = "auto"
    request_timeout_seconds: Seconds = 5.0
    resolve_timeout_seconds: Seconds = 2.0
    actor_limit: Annotated[Integer, Field(ge=1, le=1_000_000)] = 10_000
    node_limit: Annotated[Integer, Field(ge=1, le=1_000_000)] = 2_000
    # Poll as soon as Ray logs an actor state change, where the cluster was started with
    # RAY_enable_export_api_write_config=EXPORT_ACTOR (read from
    # <prometheus.ray_temp_dir>/session_latest/logs/export_events; a doorbell only).
    watch_export_events: Switch = True
    # Between quiet polls, ask this often whether an actor was created or finished starting (one
    # limit=1 listing of the actors PENDING_CREATION, filtered inside the GCS) and poll at once
    # when one was; 0 turns the probe off. Not asked while export events ring.
    change_probe_interval_seconds: Annotated[Number, Field(ge=0)] = 0.5
    # Keep the Ray bridge (the child with a Ray driver that resolves server addresses) connected
    # while the cluster is quiet, so the first new server after a quiet spell is resolved at
    # once (about 100 MiB more memory); false stops it after a minute without use.
    keep_bridge_connected: Switch = True


class PatternTable(_Table):
    """One ``[[discovery.extra_patterns]]`` table: a :class:`RecognitionPattern` as written."""

    class_name: Annotated[Text, _rule(_regex)] = ".*"
    name: Annotated[Text, _rule(_regex)] = ".*"
    engine: Annotated[Text, _rule(_engine)]
    every_index_serves_roles: tuple[Text, ...] = (DECODE,)
    metrics_path: Annotated[
        Text, _matching(r"/[A-Za-z0-9_\-./]{0,255}", "must be a URL path such as /metrics")
    ] = DEFAULT_METRICS_PATH
    has_metrics_route: Annotated[bool, Strict()] = True

    def recognition_pattern(self) -> RecognitionPattern:
        return RecognitionPattern(**self.model_dump())


# The keys of a [[discovery.extra_patterns]] table (what check-config prints of a pattern).
PATTERN_KEYS = tuple(PatternTable.model_fields)


class DiscoverySection(_Table):
    # User patterns are tried before the defaults.
    extra_patterns: tuple[PatternTable, ...] = ()
    use_default_patterns: Switch = True


class TargetsSection(_Table):
    gpu_exporter_port: Annotated[Integer, Field(ge=1, le=65535)] = DEFAULT_GPU_EXPORTER_PORT
    write_gpu: Switch = True
    write_ray: Switch = True
    # Longest label value written; longer values drop the target (a scrape config with
    # label_value_length_limit would otherwise fail every scrape of it).
    max_label_value_length: Annotated[Integer, Field(ge=16, le=65536)] = 1024


# A role is written as a label value that rules match on: a label-name-like word.
_ROLE = r"[a-zA-Z_][a-zA-Z0-9_]*"
RoleName = Annotated[Text, _matching(_ROLE, f"role must match {_ROLE}")]


class ExporterSection(_Table):
    # gpu.json names <node_ip>:port
    listen: Annotated[Text, _rule(_host_port)] = f"0.0.0.0:{DEFAULT_GPU_EXPORTER_PORT}"
    sample_interval_seconds: Seconds = 1.0
    ownership_interval_seconds: Seconds = 5.0
    nvml_retry_seconds: Seconds = 30.0
    # Ray actor class name (or regex) -> role, merged over DEFAULT_GPU_ROLES.
    roles: dict[Text, RoleName] = Field(default_factory=dict)


class PrometheusSection(_Table):
    # A prometheus.yml the running daemon keeps patched with its scrape jobs ("" = none).
    config_file: Text = ""
    # POST <url>/-/reload after a real change to a patched prometheus.yml ("" = never).
    reload_url: Annotated[Text, _rule(_http_url_or_off)] = ""
    # Keep Ray's generated <ray_temp_dir>/session_latest/metrics/prometheus/prometheus.yml
    # patched, following Ray restarts.
    patch_ray_config: Switch = False
    # Keep the shipped dashboards in <ray_temp_dir>/session_latest's Grafana dashboards
    # directory (fsd_daemon.service.grafana_session), following Ray restarts.
    ray_grafana_dashboards: Switch = False
    ray_temp_dir: Text = "/tmp/ray"
    rule_files: TextList = ()
    # Written into scrape configs as a Prometheus duration: whole milliseconds.
    scrape_interval_seconds: Annotated[Number, _rule(_duration_text)] = 15.0


class Config(_Table):
    daemon: DaemonSection = DaemonSection()
    ray: RaySection = RaySection()
    discovery: DiscoverySection = DiscoverySection()
    targets: TargetsSection = TargetsSection()
    exporter: ExporterSection = ExporterSection()
    prometheus: PrometheusSection = PrometheusSection()

    # Where daemon.cluster came from, for check-config and doctor. Not a setting: no file can
    # set it, and the same settings read from two files are equal configs.
    _cluster_origin: str = PrivateAttr(default="")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return self.__dict__ == other.__dict__

    @property
    def cluster_origin(self) -> str:
        return self._cluster_origin

    @property
    def patterns(self) -> tuple[RecognitionPattern, ...]:
        base = DEFAULT_PATTERNS if self.discovery.use_default_patterns else ()
        extra = tuple(table.recognition_pattern() for table in self.discovery.extra_patterns)
        return extra + base

    @property
    def gpu_roles(self) -> dict[str, str]:
        return {**DEFAULT_GPU_ROLES, **self.exporter.roles}


_SECTION_TYPES = {
    name: cast("type[_Table]", field.annotation) for name, field in Config.model_fields.items()
}


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
    raw: dict[str, Any] = {}
    origin = ""
    if path is not None:
        raw = _read_toml(Path(path))
        if "cluster" in _table(raw, "daemon"):
            origin = f"set in {path}"
    env = os.environ if environ is None else environ
    for section, values in _env_values(env).items():
        _table(raw, section).update(values)
        if section == "daemon" and "cluster" in values:
            origin = "set by FSD_DAEMON_CLUSTER"
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in _SECTION_TYPES or not key:
            raise ConfigError(dotted, "unknown key")
        if value is not None:
            _table(raw, section)[key] = value
            if dotted == "daemon.cluster":
                origin = "set on the command line"
    daemon = _table(raw, "daemon")
    if not daemon.get("cluster"):
        daemon["cluster"], origin = default_cluster(env)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc.errors(include_url=False)[0]) from None
    config._cluster_origin = origin
    return config


def _table(raw: dict[str, Any], section: str) -> dict[str, Any]:
    """The values given for ``section`` so far, to add to. A file whose section is not a table
    keeps it as written (validation refuses it); later values then go nowhere."""
    table = raw.setdefault(section, {})
    return table if isinstance(table, dict) else {}


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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None


# -- One line per refusal: pydantic's error for the first bad value, in the config's words.

# What each of pydantic's error types means here; {name} is the error's context value.
_WORDING = {
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "tuple_type": "must be a list",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "string_too_short": "must be at least {min_length} characters",
    "string_too_long": "must be at most {max_length} characters",
}


def _config_error(error: ErrorDetails) -> ConfigError:
    loc = error["loc"]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        return ConfigError(key, "must be set")
    if kind == "value_error" and "error" in error.get("ctx", {}):
        return ConfigError(key, str(error["ctx"]["error"]))
    if kind == "model_type" and len(loc) == 1:
        return ConfigError(key, f"must be a table ([{key}])")
    if kind == "string_too_short" and error.get("ctx", {}).get("min_length") == 1:
        return ConfigError(key, "must not be empty")
    context = {name: _shown(value) for name, value in error.get("ctx", {}).items()}
    wording = _WORDING.get(kind, error["msg"]).format(**context)
    return ConfigError(key, f"{wording} (got {_shown(error['input'], quote=True)})")


def _unknown_key(loc: tuple[int | str, ...]) -> ConfigError:
    *parent, name = (str(part) for part in loc)
    if not parent:
        allowed = list(_SECTION_TYPES)
        kind, shown = "section", ", ".join(f"[{s}]" for s in allowed)
    else:
        section = _SECTION_TYPES[parent[0]]
        allowed = list(section.model_fields if len(parent) == 1 else PATTERN_KEYS)
        kind, shown = "key", ", ".join(sorted(allowed))
    key = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in [*parent, name])[1:]
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(key, f"unknown {kind}{hint}; allowed: {shown}")


def _shown(value: Any, *, quote: bool = False) -> str:
    """A value as the user wrote it (whole numbers without ".0"), cut to a readable length."""
    if isinstance(value, float) and value.is_integer() and not quote:
        value = int(value)
    text = repr(value) if quote else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


# FSD_* variables that are not config keys: the config path, the simulations' knobs, and
# the tests' switch for regenerating reference files.
_OTHER_VARIABLES = frozenset({"FSD_CONFIG", "FSD_UPDATE_REFERENCE"})
_OTHER_PREFIXES = ("FSD_SIM_",)


def environment_variables() -> dict[str, tuple[str, str]]:
    """Every ``FSD_<SECTION>_<KEY>`` variable -> (section, key)."""
    return {
        f"FSD_{name}_{key}".upper(): (name, key)
        for name, section in _SECTION_TYPES.items()
        for key in section.model_fields
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


def to_toml_dict(config: Config) -> dict[str, Any]:
    """The effective config as plain data (lists, tables, strings, numbers), for
    ``check-config``: what it prints loads back as the same config."""
    return config.model_dump(mode="json")
