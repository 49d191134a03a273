"""``fsd-gpu-exporter --web.config.file``: TLS and basic auth in the exporter-toolkit format.

The exporter runs as users run it (the console script, a clean environment); a real Prometheus
scrapes it over TLS (a CA and a server certificate made here with openssl) with basic auth
(a bcrypt hash made here), a second scrape job with a wrong password is refused with 401, and
a plain-HTTP client gets nothing. A bad file is one line on stderr and exit 2.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import psutil
import pytest

from fsd_daemon.plumbing.webconfig import BasicAuth, WebConfigError, load_web_config
from fsd_daemon.sim.harness import wait_for
from fsd_daemon.sim.launch import free_port

EXPORTER = str(Path(sys.executable).parent / "fsd-gpu-exporter")
PASSWORD = "s3cret-scrape"
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.crt, and server.crt/server.key for 127.0.0.1 signed by it."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing (Debian package openssl)")
    d = tmp_path_factory.mktemp("tls")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=fsd test CA",
        cwd=d,
    )
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=d,
    )
    return d


def web_config(path: Path, certs: Path, **extra: Any) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    path.write_text(
        "tls_server_config:\n"
        f"  cert_file: {certs / 'server.crt'}\n"
        f"  key_file: {certs / 'server.key'}\n"
        "  min_version: TLS12\n"
        "basic_auth_users:\n"
        f"  prometheus: {hashed}\n" + "".join(f"{k}: {v}\n" for k, v in extra.items()),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def exporter(tmp_path: Path, certs: Path) -> Iterator[tuple[int, Path]]:
    with running_exporter(tmp_path, certs) as (_, port, log):
        yield port, log


@contextlib.contextmanager
def running_exporter(
    tmp_path: Path, certs: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    config = web_config(tmp_path / "web.yml", certs)
    log = tmp_path / "exporter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                EXPORTER,
                "--simulate",
                "2",
                "--listen",
                f"127.0.0.1:{port}",
                "--web.config.file",
                str(config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=CLEAN_ENV,
        )
    try:
        wait_for(lambda: proc.poll() is not None or b"serving" in log.read_bytes(), 60, 0.1)
        assert proc.poll() is None, log.read_text()
        yield proc, port, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(url: str, ca: Path | None, user: str = "", password: str = "") -> int:
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
    headers = {}
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=10, context=ctx
        ) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_https_with_basic_auth_over_urllib(exporter: tuple[int, Path], certs: Path) -> None:
    """The right password gets the metrics over TLS; a wrong one, an unknown user and no
    credentials get 401 on /metrics and /healthz alike; plain HTTP gets no answer."""
    port, _ = exporter
    base = f"https://127.0.0.1:{port}"
    ca = certs / "ca.crt"
    assert get(f"{base}/metrics", ca, "prometheus", PASSWORD) == 200
    assert get(f"{base}/metrics", ca, "prometheus", "wrong") == 401
    assert get(f"{base}/metrics", ca, "nobody", PASSWORD) == 401
    assert get(f"{base}/metrics", ca) == 401
    assert get(f"{base}/healthz", ca) == 401
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    # The listener survives the plain-HTTP client.
    assert get(f"{base}/healthz", ca, "prometheus", PASSWORD) == 200


def test_prometheus_scrapes_over_tls_with_basic_auth(
    exporter: tuple[int, Path], certs: Path, tmp_path: Path, prometheus_bin: str
) -> None:
    """A real Prometheus with ``scheme: https``, the CA and the password scrapes it (up); the
    same with a wrong password is down with a 401."""
    port, _ = exporter
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    jobs = ""
    for job, password in (("good", PASSWORD), ("wrong", "not-it")):
        jobs += (
            f"  - job_name: {job}\n"
            "    scrape_interval: 1s\n"
            "    scrape_timeout: 1s\n"
            "    scheme: https\n"
            f"    tls_config: {{ca_file: '{certs / 'ca.crt'}'}}\n"
            f"    basic_auth: {{username: prometheus, password: '{password}'}}\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        )
    config.write_text("scrape_configs:\n" + jobs, encoding="utf-8")
    prom = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def targets() -> dict[str, dict[str, Any]]:
            url = f"http://127.0.0.1:{prom_port}/api/v1/targets?state=active"
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    active = json.loads(resp.read())["data"]["activeTargets"]
            except OSError:
                return {}
            return {t["labels"]["job"]: t for t in active}

        def settled() -> bool:
            found = targets()
            return (
                found.get("good", {}).get("health") == "up"
                and found.get("wrong", {}).get("health") == "down"
            )

        try:
            wait_for(settled, 60, 0.5)
        except AssertionError:
            pytest.fail(f"targets: {targets()}")
        assert "401" in targets()["wrong"]["lastError"]
    finally:
        prom.terminate()
        prom.wait(timeout=30)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("tls_server_config: [\n", "not valid YAML"),
        ("tls_server_config:\n  cert_file: /nonexistent.crt\n", "needs both cert_file"),
        ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /x.key\n", "cannot load"),
        ("tls_server_confg: {}\n", "unknown key 'tls_server_confg'"),
        ("tls_server_config:\n  cipher_suites: [X]\n", "cipher_suites is not supported"),
        ("http_server_config: {http2: false}\n", "http_server_config is not supported"),
        ("basic_auth_users:\n  prometheus: plaintext\n", "not a bcrypt hash"),
        ("basic_auth_users: [a]\n", "must be a mapping"),
        ("- 1\n", "expected a mapping"),
    ],
)
def test_bad_web_config_is_one_line_and_exit_2(content: str, says: str, tmp_path: Path) -> None:
    """Each unusable file: exit 2, one line on stderr naming the file and what is wrong."""
    path = tmp_path / "web.yml"
    path.write_text(content, encoding="utf-8")
    done = subprocess.run(
        [EXPORTER, "--simulate", "1", "--listen", "127.0.0.1:0", "--web.config.file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=CLEAN_ENV,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and str(path) in lines[0], done.stderr


def test_client_auth_that_python_cannot_verify_is_refused(tmp_path: Path, certs: Path) -> None:
    """RequireAnyClientCert (accept any certificate unverified) cannot be done with Python's
    ssl: refused rather than quietly weakened or strengthened."""
    path = web_config(tmp_path / "web.yml", certs)
    text = path.read_text().replace(
        "  min_version: TLS12\n", "  min_version: TLS12\n  client_auth_type: RequireAnyClientCert\n"
    )
    path.write_text(text)
    with pytest.raises(WebConfigError, match="client_auth_type 'RequireAnyClientCert'"):
        load_web_config(path)


def test_basic_auth_checks() -> None:
    """Malformed headers are refused without an exception; a good password is accepted again
    from the cache."""
    auth = BasicAuth({"u": bcrypt.hashpw(b"p", bcrypt.gensalt(rounds=4))})
    good = "Basic " + base64.b64encode(b"u:p").decode()
    assert auth(good) and auth(good)
    for header in (
        None,
        "",
        "Bearer x",
        "Basic !!!",
        "Basic " + base64.b64encode(b"u").decode(),
        "Basic " + "A" * 5000,
    ):
        assert not auth(header)


def test_failed_logins_cost_no_hash_each(tmp_path: Path, certs: Path) -> None:
    """200 requests with the same wrong password, then 200 with a new wrong password each (a
    stranger guessing), on the exporter run as users run it: the exporter spends well under
    the 200 x 50 ms of bcrypt each would cost (a failed check is remembered; new ones are
    rate-limited), and the right password still gets the metrics at once."""
    with running_exporter(tmp_path, certs) as (proc, port, _):
        base = f"https://127.0.0.1:{port}"
        ca = certs / "ca.crt"
        assert get(f"{base}/metrics", ca, "prometheus", PASSWORD) == 200
        cpu = psutil.Process(proc.pid)
        before = sum(cpu.cpu_times()[:2])
        for _ in range(200):
            assert get(f"{base}/metrics", ca, "prometheus", "wrong") == 401
        for i in range(200):
            assert get(f"{base}/metrics", ca, "prometheus", f"guess-{i}") == 401
        spent = sum(cpu.cpu_times()[:2]) - before
        assert get(f"{base}/metrics", ca, "prometheus", PASSWORD) == 200
        print(f"400 failed logins cost the exporter {spent:.2f} CPU-s")
        # bcrypt at cost 10 is ~50 ms a check: 400 checks would be ~20 s.
        assert spent < 5.0


def test_basic_auth_remembers_failures_and_limits_new_checks() -> None:
    """At the seam: a repeated wrong password is hashed once; new ones beyond the bucket are
    refused without hashing until it refills; the good password, cached, is never refused."""
    now = [0.0]
    auth = BasicAuth(
        {"u": bcrypt.hashpw(b"p", bcrypt.gensalt(rounds=4))},
        checks_per_second=5,
        clock=lambda: now[0],
    )

    def header(password: str) -> str:
        return "Basic " + base64.b64encode(f"u:{password}".encode()).decode()

    assert auth(header("p"))
    for _ in range(50):
        assert not auth(header("wrong"))
    assert auth.hashes == 2
    for i in range(50):
        assert not auth(header(f"guess-{i}"))
    assert auth.hashes == 5  # the bucket: 5, two of them spent above
    assert auth(header("p"))  # cached: no token needed
    now[0] += 1.0
    assert not auth(header("guess-new"))
    assert auth.hashes == 6
