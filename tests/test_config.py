"""Config loading: TOML, environment overrides, CLI overrides, and one clear error per bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsd_daemon.config import (
    DEFAULT_GPU_EXPORTER_PORT,
    ConfigError,
    load_config,
    prometheus_duration,
)
from tests.support.cli import run_cli

REPO = Path(__file__).resolve().parent.parent


def test_defaults_without_file() -> None:
    """No file, no environment: the documented defaults."""
    config = load_config(None, environ={})
    assert config.daemon.poll_interval_seconds == 2.0
    assert config.ray.address == "auto"
    assert config.targets.gpu_exporter_port == DEFAULT_GPU_EXPORTER_PORT
    assert config.exporter.listen == f"0.0.0.0:{DEFAULT_GPU_EXPORTER_PORT}"


def test_shipped_example_config_loads_and_matches_defaults() -> None:
    """configs/fsd-daemon.toml documents every key; loading it gives the built-in defaults."""
    path = REPO / "configs" / "fsd-daemon.toml"
    assert load_config(path, environ={}) == load_config(None, environ={})


def test_precedence_file_env_cli(tmp_path: Path) -> None:
    """The environment beats the file, CLI overrides beat both; RAY_ADDRESS is an alias."""
    f = tmp_path / "c.toml"
    f.write_text(
        '[daemon]\npoll_interval_seconds = 5\ncluster = "a"\n[ray]\naddress = "file-addr:1"\n'
    )
    config = load_config(f, environ={"FSD_DAEMON_CLUSTER": "b", "RAY_ADDRESS": "env-addr:2"})
    assert config.daemon.poll_interval_seconds == 5.0
    assert config.daemon.cluster == "b"
    assert config.ray.address == "env-addr:2"
    config = load_config(
        f, environ={"FSD_RAY_ADDRESS": "fsd-env:3"}, overrides={"daemon.cluster": "c"}
    )
    assert config.ray.address == "fsd-env:3"
    assert config.daemon.cluster == "c"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[daemon]\npoll_interval_seconds = 0\n", "daemon.poll_interval_seconds"),
        ("[daemon]\npoll_interval_seconds = 'fast'\n", "daemon.poll_interval_seconds"),
        ("[daemon]\nlog_level = 'loud'\n", "daemon.log_level"),
        ("[daemon]\npoll_intervall_seconds = 2\n", "daemon.poll_intervall_seconds"),
        ("[deamon]\n", "deamon"),
        ("[targets]\ngpu_exporter_port = 70000\n", "targets.gpu_exporter_port"),
        ("[exporter]\nlisten = 'nohost'\n", "exporter.listen"),
        ("[ray]\nactor_limit = 0\n", "ray.actor_limit"),
        (
            "[[discovery.extra_patterns]]\nclass_name = 'X'\nname = '('\nengine = 'vllm'\n",
            "discovery.extra_patterns[0].name",
        ),
        (
            "[[discovery.extra_patterns]]\nclass_name = 'X'\nengine = 'tgi'\n",
            "discovery.extra_patterns[0].engine",
        ),
        ("[daemon\n", "--config"),
    ],
)
def test_bad_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    """Each bad value raises ConfigError whose key and message name what is wrong."""
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f, environ={})
    assert info.value.key == key
    assert key in str(info.value)


def test_bad_environment_value_names_the_key() -> None:
    """A bad environment override is reported under its config key."""
    with pytest.raises(ConfigError, match=r"daemon\.grace_period_seconds"):
        load_config(None, environ={"FSD_DAEMON_GRACE_PERIOD_SECONDS": "-1"})


def test_extra_patterns_come_before_defaults(tmp_path: Path) -> None:
    """User patterns are tried first; defaults stay unless disabled."""
    f = tmp_path / "c.toml"
    f.write_text(
        "[[discovery.extra_patterns]]\nclass_name = 'MyServer'\n"
        "name = 'my_(?P<replica>\\\\d+)'\nengine = 'sglang'\n"
    )
    config = load_config(f, environ={})
    assert config.patterns[0].class_name == "MyServer"
    assert len(config.patterns) > 1


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    """check-config prints the effective config (exit 0) or one line naming the key (exit 2)."""
    ok = run_cli("check-config", "--output-dir", str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert f'output_dir = "{tmp_path}"' in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\npoll_interval_seconds = -3\n")
    result = run_cli("check-config", "--config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "daemon.poll_interval_seconds" in lines[0]
    missing = run_cli("run", "--once", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert "file not found" in missing.stderr


@pytest.mark.parametrize(
    "address",
    ["auto", "10.0.0.1:6379", "head-node.example:6379", "localhost:6379", "[::1]:6379",
     "file:/etc/fsd/cluster.json"],
)  # fmt: skip
def test_ray_addresses_ray_accepts_are_accepted(address: str) -> None:
    assert load_config(None, environ={}, overrides={"ray.address": address}).ray.address == address


@pytest.mark.parametrize(
    "address",
    ["foo", "http://x", "https://dash:8265", "ray://10.0.0.1:10001", "10.0.0.1", "10.0.0.1:0",
     "10.0.0.1:99999", "::1:6379", "host name:6379", "file:", "10.0.0.1:6379\n"],
)  # fmt: skip
def test_ray_address_garbage_is_refused_naming_the_key(address: str) -> None:
    with pytest.raises(ConfigError, match=r"ray\.address"):
        load_config(None, environ={}, overrides={"ray.address": address})


@pytest.mark.parametrize(
    "seconds, duration",
    [(15, "15s"), (0.5, "500ms"), (1.5, "1s500ms"), (90, "1m30s"), (3600, "1h"), (0.001, "1ms")],
)
def test_scrape_interval_is_written_as_a_prometheus_duration(seconds: float, duration: str) -> None:
    """Prometheus durations are whole units down to ms: promtool refuses "0.5s"."""
    assert prometheus_duration(seconds) == duration


@pytest.mark.parametrize("seconds", [0.0005, 0.0015, 0.0, -1.0])
def test_scrape_interval_prometheus_cannot_take_is_refused(seconds: float) -> None:
    with pytest.raises(ConfigError, match=r"prometheus\.scrape_interval_seconds"):
        load_config(None, environ={"FSD_PROMETHEUS_SCRAPE_INTERVAL_SECONDS": str(seconds)})
