"""The daemon's HTTP service discovery endpoints (``/sd/<job>``) against a described cluster
(StaticCluster) and its real listener on 127.0.0.1: each serves exactly its file's bytes,
never a half-written or emptier list (clients reading while the cluster changes), the file
found at start before the first write, 503 where there is none, 404 for a job not written;
over TLS with basic auth from a web-config file; a web config that does not parse is one line
and exit 2. The end-to-end run with a real Prometheus elsewhere is tests/test_http_sd_netns.py.
"""

from __future__ import annotations

import base64
import functools
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsd_daemon.config import Config, load_config
from fsd_daemon.service.daemon import Service
from fsd_daemon.sim.harness import wait_for as _wait_for
from fsd_daemon.sim.launch import free_port
from tests.support.clusterfile import cluster, node, server
from tests.support.tls import make_certs, write_web_config

wait_for = functools.partial(_wait_for, timeout=15.0, step=0.02)
PASSWORD = "sd-s3cret"


def get(
    url: str, *, ca: Path | None = None, user: str = "", password: str = ""
) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET."""
    headers = {}
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=10, context=context
        ) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def write_cluster(path: Path, replicas: int) -> None:
    servers = [server(i, port=21000 + i) for i in range(replicas)]
    path.write_bytes(orjson.dumps(cluster(*servers, nodes=[node()])))


def make_config(tmp_path: Path, **daemon: Any) -> Path:
    settings = {
        "output_dir": str(tmp_path / "targets"),
        "poll_interval_seconds": 0.05,
        "fast_poll_interval_seconds": 0.05,
        "grace_period_seconds": 0.0,
        "cluster": "sd-test",
        "metrics_listen": "127.0.0.1:0",
        **daemon,
    }
    lines = ["[daemon]", *(f"{k} = {orjson.dumps(v).decode()}" for k, v in settings.items())]
    lines += ["[ray]", f'address = "file:{tmp_path / "cluster.json"}"']
    path = tmp_path / "fsd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    write_cluster(tmp_path / "cluster.json", 2)
    service = start(tmp_path, make_config(tmp_path))
    try:
        yield service, tmp_path / "targets"
    finally:
        stop(service)


def start(tmp_path: Path, config_path: Path) -> Service:
    def load() -> Config:
        return load_config(config_path, environ={})

    service = Service(load(), config_loader=load, config_path=str(config_path))
    thread = threading.Thread(target=service.run, kwargs={"watch": False}, daemon=True)
    service._test_thread = thread  # type: ignore[attr-defined]
    thread.start()
    wait_for(lambda: service.metrics_port)
    return service


def stop(service: Service) -> None:
    service.request_stop()
    service._test_thread.join(timeout=10)  # type: ignore[attr-defined]


def base(service: Service) -> str:
    return f"http://127.0.0.1:{service.metrics_port}"


def test_each_endpoint_serves_its_files_bytes(running: tuple[Service, Path]) -> None:
    """/sd/rollout, /sd/gpu and /sd/ray answer application/json with the bytes of rollout.json,
    gpu.json and ray.json, before and after the cluster changes; anything else under /sd/ is
    404. (An endpoint takes the new bytes just after its file got them, once the rename is
    durable: never before, so for a moment it may still serve the previous list.)"""
    service, out = running
    cluster_file = out.parent / "cluster.json"
    for replicas in (2, 3, 1):
        write_cluster(cluster_file, replicas)
        wait_for(lambda n=replicas: len(orjson.loads(get_file(out / "rollout.json"))) == n)
        for job, name in (("rollout", "rollout.json"), ("gpu", "gpu.json"), ("ray", "ray.json")):
            status, body, ctype = get(f"{base(service)}/sd/{job}")
            assert (status, ctype) == (200, "application/json")
            wait_for(lambda j=job, f=name: get(f"{base(service)}/sd/{j}")[1] == get_file(out / f))
        status, body, _ = get(f"{base(service)}/sd/rollout")
        assert sum(len(g["targets"]) for g in orjson.loads(body)) == replicas
    assert get(f"{base(service)}/sd/nope")[0] == 404
    assert get(f"{base(service)}/sd/")[0] == 404


def get_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b"[]"


def test_never_half_written_nor_emptier_while_the_cluster_changes(
    running: tuple[Service, Path],
) -> None:
    """Four clients read /sd/rollout as fast as they can while the cluster goes between 1 and
    5 servers 40 times: every answer is a whole JSON list of 1 to 5 targets, never an empty
    or partial one, and at the end the answer is the file."""
    service, out = running
    cluster_file = out.parent / "cluster.json"
    url = f"{base(service)}/sd/rollout"
    wait_for(lambda: len(orjson.loads(get_file(out / "rollout.json"))) == 2)
    seen: list[int] = []
    bad: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            status, body, _ = get(url)
            try:
                targets = sum(len(g["targets"]) for g in orjson.loads(body))
            except (orjson.JSONDecodeError, TypeError, KeyError):
                bad.append(body[:200])
                continue
            if status != 200 or not 1 <= targets <= 5:
                bad.append(body[:200])
            seen.append(targets)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for r in readers:
        r.start()
    try:
        for i in range(40):
            n = i % 5 + 1
            write_cluster(cluster_file, n)
            wait_for(lambda n=n: len(orjson.loads(get_file(out / "rollout.json"))) == n)
    finally:
        done.set()
        for r in readers:
            r.join(timeout=10)
    assert not bad, bad[:3]
    assert len(set(seen)) == 5, sorted(set(seen))  # the readers saw every size
    wait_for(lambda: get(url)[1] == (out / "rollout.json").read_bytes())


def test_before_the_first_write_it_serves_the_file_found_at_start(tmp_path: Path) -> None:
    """A daemon that starts while Ray is unreachable (no cluster file) serves the rollout.json
    the previous run left, as the file still says it, and 503 for a list that has no file
    (Prometheus keeps its targets on a failed refresh): never an empty list."""
    out = tmp_path / "targets"
    out.mkdir()
    previous = orjson.dumps([{"targets": ["10.0.0.9:8000"], "labels": {"replica": "0"}}])
    (out / "rollout.json").write_bytes(previous)
    service = start(tmp_path, make_config(tmp_path))
    try:
        assert get(f"{base(service)}/sd/rollout")[:2] == (200, previous)
        assert get(f"{base(service)}/sd/gpu")[0] == 503
        assert get(f"{base(service)}/sd/ray")[0] == 503
        assert service.poll.failures >= 1  # really no Ray: the polls failed
    finally:
        stop(service)


def test_a_job_not_written_is_not_served(tmp_path: Path) -> None:
    """targets.write_gpu = false: no /sd/gpu (404, not a stale or empty list); a reload that
    turns it on serves it on the same address."""
    write_cluster(tmp_path / "cluster.json", 1)
    listen = f"127.0.0.1:{free_port()}"
    path = make_config(tmp_path, metrics_listen=listen)
    path.write_text(path.read_text() + "[targets]\nwrite_gpu = false\n")
    service = start(tmp_path, path)
    try:
        wait_for(lambda: get(f"{base(service)}/sd/rollout")[0] == 200)
        assert get(f"{base(service)}/sd/gpu")[0] == 404
        assert get(f"{base(service)}/sd/ray")[0] == 200
        make_config(tmp_path, metrics_listen=listen)
        assert service.reload_config() is True
        wait_for(lambda: get(f"http://{listen}/sd/gpu")[0] == 200)
        assert get(f"http://{listen}/sd/gpu")[1] == get_file(tmp_path / "targets" / "gpu.json")
    finally:
        stop(service)


def test_tls_and_basic_auth_from_the_web_config(tmp_path: Path) -> None:
    """With daemon.web_config_file: the right user gets the lists over TLS; a wrong password,
    an unknown user and no credentials get 401 on /sd/, /metrics and /healthz alike."""
    certs = make_certs(tmp_path, "127.0.0.1")
    web = write_web_config(tmp_path / "web.yml", certs, "prometheus", PASSWORD)
    write_cluster(tmp_path / "cluster.json", 2)
    service = start(tmp_path, make_config(tmp_path, web_config_file=str(web)))
    ca = certs / "ca.crt"
    url = f"https://127.0.0.1:{service.metrics_port}"
    try:
        wait_for(lambda: (tmp_path / "targets" / "rollout.json").exists())
        status, body, _ = get(f"{url}/sd/rollout", ca=ca, user="prometheus", password=PASSWORD)
        assert status == 200
        assert body == (tmp_path / "targets" / "rollout.json").read_bytes()
        for path in ("/sd/rollout", "/metrics", "/healthz"):
            assert get(f"{url}{path}", ca=ca, user="prometheus", password="wrong")[0] == 401
            assert get(f"{url}{path}", ca=ca, user="nobody", password=PASSWORD)[0] == 401
            assert get(f"{url}{path}", ca=ca)[0] == 401
    finally:
        stop(service)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("tls_server_config: [\n", "not valid YAML"),
        ("basic_auth_users:\n  prometheus: plaintext\n", "not a bcrypt hash"),
        ("tls_server_confg: {}\n", "unknown key"),
    ],
)
def test_a_web_config_that_does_not_parse_is_one_line_and_exit_2(
    content: str, says: str, tmp_path: Path
) -> None:
    web = tmp_path / "web.yml"
    web.write_text(content)
    write_cluster(tmp_path / "cluster.json", 1)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "fsd_daemon.cli", "run", "--config", str(make_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "FSD_DAEMON_WEB_CONFIG_FILE": str(web)},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("fsd-daemon: daemon.web_config_file: ")
    assert says in lines[0]


def test_reload_switches_the_web_config_or_keeps_the_running_one(tmp_path: Path) -> None:
    """A reload that names a web config which does not parse is refused: the listener keeps
    serving as before (plain HTTP here). One that parses puts TLS and auth on the same
    address."""
    write_cluster(tmp_path / "cluster.json", 1)
    port = free_port()
    listen = f"127.0.0.1:{port}"
    service = start(tmp_path, make_config(tmp_path, metrics_listen=listen))
    try:
        wait_for(lambda: get(f"{base(service)}/sd/rollout")[0] == 200)
        broken = tmp_path / "broken.yml"
        broken.write_text("basic_auth_users:\n  prometheus: plaintext\n")
        make_config(tmp_path, metrics_listen=listen, web_config_file=str(broken))
        assert service.reload_config() is False
        assert get(f"http://{listen}/sd/rollout")[0] == 200  # still plain HTTP, still there
        certs = make_certs(tmp_path, "127.0.0.1")
        web = write_web_config(tmp_path / "web.yml", certs, "prometheus", PASSWORD)
        make_config(tmp_path, metrics_listen=listen, web_config_file=str(web))
        assert service.reload_config() is True
        assert service.metrics_port == port
        url = f"https://{listen}/sd/rollout"
        ca = certs / "ca.crt"
        assert get(url, ca=ca, user="prometheus", password=PASSWORD)[0] == 200
        assert get(url, ca=ca)[0] == 401
    finally:
        stop(service)
