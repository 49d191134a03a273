"""The report's drawing libraries are the ``report`` extra: fsd-gpu-exporter and fsd-daemon run
without matplotlib and numpy, and ``fsd-daemon report`` without them says which extra to
install, in one line. Absent libraries are made absent for real: ``sys.modules[name] = None``
makes every import of them fail, as on a machine where they are not installed."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from fsd_daemon.sim.harness import wait_for
from fsd_daemon.sim.launch import free_port

WITHOUT_DRAWING = "import sys; sys.modules['matplotlib'] = None; sys.modules['numpy'] = None; "


def test_exporter_serves_without_matplotlib_and_numpy(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "exporter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c",
             WITHOUT_DRAWING + "from fsd_daemon.gpu.cli import main; sys.exit(main())",
             "--simulate", "1", "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp_path)},
        )  # fmt: skip

    def serving() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return b"fsd_gpu_busy_seconds_total" in r.read()
        except OSError:
            return False

    try:
        wait_for(serving, 60, 0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_daemon_commands_run_without_them(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c",
         WITHOUT_DRAWING + "from fsd_daemon.cli import main; sys.exit(main())",
         "prometheus-config", "--remote-write", "http://store/api/v1/write"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "remote_write" in done.stdout


def test_report_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.modules['matplotlib'] = None; "
         "from fsd_daemon.cli import main; sys.exit(main())",
         "report", "--prometheus", "http://127.0.0.1:9", "--output", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "matplotlib is not installed" in done.stderr
    assert "pip install 'fsd-daemon[report]'" in done.stderr
