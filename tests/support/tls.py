"""A test CA and a server certificate signed by it (openssl, as an operator would make them),
and an exporter-toolkit web-config file that uses them with one basic-auth user."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import bcrypt
import pytest


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(directory: Path, ip: str) -> Path:
    """``ca.crt``, and ``server.crt``/``server.key`` for the IP address ``ip``, in
    ``directory``; returns it."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing (Debian package openssl)")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    d = directory
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=fsd test CA", cwd=d)  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={ip}",
            cwd=d)  # fmt: skip
    (d / "san.ext").write_text(f"subjectAltName=IP:{ip}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
            cwd=d)  # fmt: skip
    return d


def write_web_config(path: Path, certs: Path, user: str, password: str) -> Path:
    """TLS with ``certs``' server certificate, and ``user`` with a bcrypt hash of ``password``
    (cost 4: the format allows it, and the tests check many requests)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(
        "tls_server_config:\n"
        f"  cert_file: {certs / 'server.crt'}\n"
        f"  key_file: {certs / 'server.key'}\n"
        "basic_auth_users:\n"
        f"  {user}: {hashed}\n",
        encoding="utf-8",
    )
    return path
