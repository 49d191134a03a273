"""Config loading: TOML, environment overrides, CLI overrides, and one clear error per bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsd_daemon.config import (
    DEFAULT_GPU_EXPORTER_PORT,
    ConfigError,
    environment_variables,
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
        ("daemon = 3\n", "daemon"),
        ("[daemon]\ngrace_period_seconds = -0.5\n", "daemon.grace_period_seconds"),
        ("[daemon]\noutput_dir = ''\n", "daemon.output_dir"),
        (f"[daemon]\ncluster = '{'c' * 257}'\n", "daemon.cluster"),
        ("[daemon]\nmetrics_listen = '::1:9848'\n", "daemon.metrics_listen"),
        ("[ray]\nnode_limit = 1000001\n", "ray.node_limit"),
        ("[ray]\nresolve_timeout_seconds = 0\n", "ray.resolve_timeout_seconds"),
        ("[targets]\nmax_label_value_length = 15\n", "targets.max_label_value_length"),
        ("[exporter]\nsample_interval_seconds = -1\n", "exporter.sample_interval_seconds"),
        ("[exporter]\nroles = {MyActor = 'two words'}\n", "exporter.roles.MyActor"),
        ('[exporter]\nroles = {MyActor = "reward\\n"}\n', "exporter.roles.MyActor"),
        ("[prometheus]\nreload_url = 'localhost:9090'\n", "prometheus.reload_url"),
        ("[prometheus]\nrule_files = ['a.yml', 3]\n", "prometheus.rule_files[1]"),
        (
            "[[discovery.extra_patterns]]\nengine = 'vllm'\nmetrics_path = 'metrics'\n",
            "discovery.extra_patterns[0].metrics_path",
        ),
        (
            "[[discovery.extra_patterns]]\nengine = 'vllm'\nclas_name = 'X'\n",
            "discovery.extra_patterns[0].clas_name",
        ),
        ("[[discovery.extra_patterns]]\nclass_name = 'X'\n", "discovery.extra_patterns[0].engine"),
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


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "[daemon]\npoll_interval_seconds = -1\n",
            "config error: daemon.poll_interval_seconds: must be > 0 (got -1)",
        ),
        (
            "[daemon]\npoll_intervall_seconds = 2\n",
            "config error: daemon.poll_intervall_seconds: unknown key (did you mean "
            "poll_interval_seconds?); allowed: cluster, fast_poll_interval_seconds, "
            "grace_period_seconds, log_level, max_backoff_seconds, metrics_listen, output_dir, "
            "poll_interval_seconds, watch_output_dir, web_config_file",
        ),
        (
            "[deamon]\n",
            "config error: deamon: unknown section (did you mean daemon?); allowed: [daemon], "
            "[ray], [discovery], [targets], [exporter], [prometheus]",
        ),
        (
            "[ray]\nactor_limit = 0\n",
            "config error: ray.actor_limit: must be >= 1 (got 0)",
        ),
        (
            "[targets]\ngpu_exporter_port = 70000\n",
            "config error: targets.gpu_exporter_port: must be <= 65535 (got 70000)",
        ),
    ],
)
def test_refusal_is_one_line_naming_key_rule_and_value(
    tmp_path: Path, text: str, line: str
) -> None:
    """The whole message: the key, the rule it broke, and the value as written (an integer
    written for a number is shown as written); an unknown key or section suggests the near one."""
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f, environ={})
    assert str(info.value) == line


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[daemon]\nwatch_output_dir = 1\n", "daemon.watch_output_dir"),
        ("[daemon]\nwatch_output_dir = 't'\n", "daemon.watch_output_dir"),
        ("[daemon]\npoll_interval_seconds = true\n", "daemon.poll_interval_seconds"),
        ("[daemon]\nlog_level = 3\n", "daemon.log_level"),
        ("[ray]\nactor_limit = 1.0\n", "ray.actor_limit"),
        ("[ray]\nactor_limit = true\n", "ray.actor_limit"),
        ("[ray]\naddress = 6379\n", "ray.address"),
        ("[exporter]\nroles = {MyActor = 1}\n", "exporter.roles.MyActor"),
        (
            "[[discovery.extra_patterns]]\nengine = 'vllm'\nhas_metrics_route = 'yes'\n",
            "discovery.extra_patterns[0].has_metrics_route",
        ),
        (
            "[[discovery.extra_patterns]]\nengine = 'vllm'\nevery_index_serves_roles = 'a'\n",
            "discovery.extra_patterns[0].every_index_serves_roles",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_not_converted(
    tmp_path: Path, text: str, key: str
) -> None:
    """No guessing: 1 is not true, 1.0 is not an integer, true is not a number, 3 is not a
    string; a pattern's flag and roles take TOML's own types only."""
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f, environ={})
    assert info.value.key == key


def test_environment_strings_become_each_keys_type(tmp_path: Path) -> None:
    """Environment values are strings: each is read as its key's type (yes/no words, signed
    digits, a number's spelling, a comma list); an integer in the file is a number too."""
    f = tmp_path / "c.toml"
    f.write_text("[daemon]\nmax_backoff_seconds = 5\n")
    config = load_config(
        f,
        environ={
            "FSD_DAEMON_WATCH_OUTPUT_DIR": "No",
            "FSD_TARGETS_WRITE_RAY": "on",
            "FSD_RAY_ACTOR_LIMIT": " +12 ",
            "FSD_DAEMON_POLL_INTERVAL_SECONDS": "1e1",
            "FSD_PROMETHEUS_RULE_FILES": "a.yml, b.yml,,c.yml",
        },
    )
    assert config.daemon.watch_output_dir is False
    assert config.targets.write_ray is True
    assert config.ray.actor_limit == 12
    assert config.daemon.poll_interval_seconds == 10.0
    assert config.prometheus.rule_files == ("a.yml", "b.yml", "c.yml")
    assert type(config.daemon.max_backoff_seconds) is float


def test_a_number_too_large_for_a_float_is_refused_not_a_crash(tmp_path: Path) -> None:
    """TOML integers have no size limit in tomllib; one too large for a float is a bad value
    (one line naming the key), not an OverflowError out of the loader."""
    f = tmp_path / "bad.toml"
    f.write_text(f"[daemon]\npoll_interval_seconds = 1{'0' * 400}\n")
    with pytest.raises(ConfigError) as info:
        load_config(f, environ={})
    assert info.value.key == "daemon.poll_interval_seconds"
    assert len(str(info.value)) < 200


def test_same_settings_from_two_files_are_equal_configs(tmp_path: Path) -> None:
    """Where daemon.cluster came from is reported, but it is not a setting: two files with the
    same keys load as equal configs, and no file can set it."""
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("[daemon]\ncluster = 'x'\n")
    b.write_text("[daemon]\ncluster = 'x'\n")
    config_a, config_b = load_config(a, environ={}), load_config(b, environ={})
    assert config_a.cluster_origin == f"set in {a}"
    assert config_a == config_b
    assert config_a != load_config(None, environ={"FSD_DAEMON_CLUSTER": "y"})
    a.write_text("cluster_origin = 'x'\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(a, environ={})


def test_shipped_example_config_names_every_key() -> None:
    """configs/fsd-daemon.toml is the reference a user reads: a key added to a section model
    is written there too, with its default."""
    import tomllib

    shipped = tomllib.loads((REPO / "configs" / "fsd-daemon.toml").read_text())
    written = {(section, key) for section, table in shipped.items() for key in table}
    assert set(environment_variables().values()) == written
