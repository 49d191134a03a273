"""``fsd-daemon prometheus-config --http-sd / --remote-write / --agent``: what it prints is a
config the real promtool accepts (``check config``, ``--agent`` for the agent variant), with
the jobs, client settings, external labels and remote write asked for; bad input is one line
and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fsd_daemon.config import load_config
from fsd_daemon.prometheus.central import CentralOptions, central_config
from fsd_daemon.prometheus.client import HttpClient

pytestmark = [pytest.mark.prometheus]


def fsd(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "fsd_daemon.cli", "prometheus-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    for name in ("password", "token", "ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("x\n")
    return tmp_path


def promtool_check(promtool: str, path: Path, *flags: str) -> None:
    done = subprocess.run(
        [promtool, "check", "config", *flags, str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_http_sd_jobs_with_auth_and_tls(secrets: Path, promtool: str) -> None:
    done = fsd(
        "--http-sd", "https://head.example:9848",
        "--sd-username", "prometheus", "--sd-password-file", str(secrets / "password"),
        "--sd-ca-file", str(secrets / "ca.crt"), "--sd-cert-file", str(secrets / "client.crt"),
        "--sd-key-file", str(secrets / "client.key"),
        home=secrets,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (secrets / "prometheus.yml").write_text(done.stdout)
    promtool_check(promtool, secrets / "prometheus.yml")
    jobs = {j["job_name"]: j for j in yaml.safe_load(done.stdout)["scrape_configs"]}
    assert set(jobs) == {"rollout", "gpu", "ray", "fsd_daemon"}
    sd = jobs["rollout"]["http_sd_configs"][0]
    assert sd["url"] == "https://head.example:9848/sd/rollout"
    assert sd["basic_auth"] == {
        "username": "prometheus",
        "password_file": str(secrets / "password"),
    }
    assert sd["tls_config"]["ca_file"] == str(secrets / "ca.crt")
    assert jobs["fsd_daemon"]["scheme"] == "https"
    assert jobs["fsd_daemon"]["static_configs"] == [{"targets": ["head.example:9848"]}]
    (secrets / "password").write_text("the-secret\n")
    assert "the-secret" not in fsd("--http-sd", "http://h:1", "--sd-username", "u",
                                   "--sd-password-file", str(secrets / "password"),
                                   home=secrets).stdout  # fmt: skip


def test_remote_write_and_agent(secrets: Path, promtool: str) -> None:
    common = (
        "--remote-write", "https://store.example/api/v1/write",
        "--remote-write-bearer-token-file", str(secrets / "token"),
        "--external-label", "team=rl",
    )  # fmt: skip
    config = load_config(None, environ={"FSD_DAEMON_CLUSTER": "cluster-a"})
    doc = central_config(
        config,
        CentralOptions(
            remote_write="https://store.example/api/v1/write",
            remote_write_client=HttpClient(bearer_token_file=str(secrets / "token")),
            external_labels={"team": "rl"},
        ),
    )
    assert doc["global"]["external_labels"] == {"cluster": "cluster-a", "team": "rl"}
    for agent in (False, True):
        done = fsd(*common, *(["--agent"] if agent else []), home=secrets)
        assert done.returncode == 0, done.stderr
        path = secrets / f"prometheus-{agent}.yml"
        path.write_text(done.stdout)
        promtool_check(promtool, path, *(["--agent"] if agent else []))
        printed = yaml.safe_load(done.stdout)
        assert printed["remote_write"] == [
            {
                "url": "https://store.example/api/v1/write",
                "authorization": {"type": "Bearer", "credentials_file": str(secrets / "token")},
            }
        ]
        assert printed["global"]["external_labels"]["team"] == "rl"
        assert ("rule_files" in printed) is False  # none configured; agent mode allows none


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--remote-write", "ftp://store/write"], "--remote-write must be an http:// or https://"),
        (["--remote-write", "store:9090/write"], "--remote-write must be an http:// or https://"),
        (["--remote-write", "http://"], "--remote-write must be an http:// or https://"),
        (["--http-sd", "head:9848"], "--http-sd must be an http:// or https://"),
        (["--http-sd", "http://h:99999"], "--http-sd: not a URL"),
        (["--agent"], "--agent needs --remote-write"),
        (["--external-label", "team=rl"], "--external-label goes with --remote-write"),
        (["--remote-write", "http://s/w", "--external-label", "1x=y"], "NAME=VALUE"),
        (["--remote-write", "http://s/w", "--remote-write-password-file", "/p"], "needs"),
        (["--http-sd", "http://h:1", "--sd-cert-file", "/c"], "go together"),
        (["--http-sd", "http://h:1", "--patch", "/p.yml"], "not with --patch"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str, tmp_path: Path) -> None:
    done = fsd(*args, home=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert done.stdout == ""


def test_plain_config_notes_the_daemon_job_needs_credentials(tmp_path: Path) -> None:
    """With a web config on the listener, the file_sd config's fsd_daemon job (plain HTTP, no
    credentials) cannot scrape it: the command says so on stderr; stdout stays the config."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(tmp_path),
        "FSD_DAEMON_METRICS_LISTEN": "127.0.0.1:9848",
        "FSD_DAEMON_WEB_CONFIG_FILE": str(tmp_path / "web.yml"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "fsd_daemon.cli", "prometheus-config"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0
    assert "note: daemon.web_config_file is set" in done.stderr
    assert yaml.safe_load(done.stdout)["scrape_configs"]
