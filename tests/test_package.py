"""The package as a user gets it: the wheel, the sdist, and the wheel installed in a new venv.

One build (``python -m build``: the sdist, then the wheel built from that sdist) serves all the
tests. The installed-wheel test is the issue's "tried as a new user would": a fresh venv, the
wheel installed with pip (dependencies from pip's cache or the index, as a user's pip does),
``cd /tmp``, ``fsd-daemon demo --duration 60`` (its Prometheus has the shipped rules loaded,
checked through Prometheus' API) and ``fsd-daemon report`` against that Prometheus.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fsd_daemon.assets import ASSETS_DIR
from fsd_daemon.report.figures import FIGURE_SIZES, IDLENESS_PNG, LONG_TAIL_PNG
from tests.report.helpers import (
    DemoProcess,
    clean_env,
    free_port,
    png_size,
    prometheus_api,
    run_command,
)

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# What the sdist must hold besides the package: all it takes to test, deploy and bench.
SDIST_DIRS = ("tests", "configs", "systemd", "scripts", "bench")
SDIST_FILES = ("LICENSE", "README.md", "pyproject.toml", "BENCHMARKS.md")
# Run from the unpacked sdist: fast tests that read the tree's files (assets, rules, configs).
SDIST_TESTS = (
    "tests/test_assets.py",
    "tests/test_render.py",
    "tests/test_writer.py",
    "tests/report/test_report_args.py",
)


class Built:
    def __init__(self, sdist: Path, wheel: Path) -> None:
        self.sdist = sdist
        self.wheel = wheel


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Built(sdist, wheel)


def shipped_assets() -> list[str]:
    """Every asset file in the checkout, as a path inside the package."""
    return sorted(
        str(p.relative_to(ASSETS_DIR.parent.parent))
        for p in ASSETS_DIR.rglob("*")
        if p.is_file() and p.suffix in (".yml", ".json")
    )


def test_wheel_holds_every_asset_and_the_license(built: Built) -> None:
    """The installed commands read rules, rule tests, dashboards and provisioning from the
    package: all of them are in the wheel, and so is the license text."""
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = wheel.read(metadata).decode()
    assets = shipped_assets()
    assert any("rules" in a for a in assets) and any("dashboards" in a for a in assets)
    assert set(assets) <= names, sorted(set(assets) - names)
    assert "fsd_daemon/report/command.py" in names and "fsd_daemon/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in meta
    # The report's drawing libraries are an extra: an exporter-only node does not pull them.
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist: ")]
    drawing = [r for r in requires if r.split()[1].startswith(("matplotlib", "numpy"))]
    assert drawing and all('extra == "report"' in r for r in drawing), drawing


def test_sdist_holds_the_tree_and_its_tests_pass(built: Built, tmp_path: Path) -> None:
    """The sdist holds tests, configs, systemd units, scripts, bench and the license, and a
    fast subset of the tests (SDIST_TESTS) passes from the unpacked directory, importing the
    package from there."""
    with tarfile.open(built.sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (root,) = tmp_path.iterdir()
    for name in SDIST_DIRS:
        assert (root / name).is_dir() and any((root / name).iterdir()), name
    for name in SDIST_FILES:
        assert (root / name).is_file(), name
    assert (root / "systemd" / "fsd-daemon.service").is_file()
    assert not list(root.rglob("__pycache__"))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import fsd_daemon; print(fsd_daemon.__file__)"],
        capture_output=True, text=True, cwd=root, env=env, timeout=60,
    )  # fmt: skip
    assert where.stdout.strip() == str(root / "fsd_daemon" / "__init__.py")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SDIST_TESTS],
        capture_output=True, text=True, cwd=root, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


@pytest.fixture(scope="module")
def user_venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel installed by pip: its own site-packages, no checkout."""
    home = tmp_path_factory.mktemp("user")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=True, symlinks=True).create(env_dir)
    pip_env = {**clean_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    shutil.rmtree(pip_env.pop("RAY_TMPDIR"), ignore_errors=True)  # pip runs no Ray
    if "PIP_INDEX_URL" in os.environ:
        pip_env["PIP_INDEX_URL"] = os.environ["PIP_INDEX_URL"]
    result = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", f"{built.wheel}[report]"],
        capture_output=True, text=True, env=pip_env, cwd="/tmp", timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    yield env_dir


def test_installed_wheel_demo_and_report(user_venv: Path, tmp_path: Path) -> None:
    """From /tmp, the installed ``fsd-daemon demo --duration 60``: its Prometheus loaded every
    shipped rule group; ``fsd-daemon report`` against it draws both figures; the demo stops
    by itself with exit 0."""
    bin_dir = user_venv / "bin"
    env = clean_env(PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    env["HOME"] = str(tmp_path)
    check = run_command(
        [str(bin_dir / "python"), "-c", "import fsd_daemon; print(fsd_daemon.__file__)"],
        env, Path("/tmp"),
    )  # fmt: skip
    assert check.stdout.strip().startswith(str(user_venv)), check  # the wheel, not the checkout
    demo = DemoProcess(
        [str(bin_dir / "fsd-daemon"), "demo", "--duration", "60",
         "--prometheus-port", str(free_port())],
        tmp_path / "demo",
        {**env, "HOME": "/tmp"},  # the demo runs from /tmp (DemoProcess: cwd = HOME)
    )  # fmt: skip
    try:
        state = demo.wait_ready()
        base = f"http://127.0.0.1:{state['ports']['prometheus']}"
        groups = prometheus_api(base, "/api/v1/rules")["data"]["groups"]
        loaded = {g["file"] for g in groups}
        expected = {str(tmp_path / "demo" / "rules" / p.name) for p in
                    (ASSETS_DIR / "prometheus" / "rules").glob("*.yml")}  # fmt: skip
        assert loaded == expected and all(g["rules"] for g in groups)
        ready = time.monotonic()
        # The demo stops 60 s after it is ready. Data for a report: the rollout and GPU
        # targets up, then most of a rollout step (30 s); the report ends well before 60 s.
        query = "/api/v1/query?query=count(up%7Bjob%3D~%22rollout%7Cgpu%22%7D%3D%3D1)"
        while not prometheus_api(base, query)["data"]["result"]:
            assert time.monotonic() - ready < 30, "no rollout or GPU target up within 30 s"
            time.sleep(1)
        time.sleep(max(0.0, 35 - (time.monotonic() - ready)))
        result = run_command(
            [str(bin_dir / "fsd-daemon"), "report", "--prometheus", base, "--since", "5m",
             "--output", str(tmp_path / "report")],
            env, Path("/tmp"),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "report: " in result.stdout
        for name in (LONG_TAIL_PNG, IDLENESS_PNG):
            assert png_size(tmp_path / "report" / name) == FIGURE_SIZES[name]
        summary = orjson.loads((tmp_path / "report" / "summary.json").read_bytes())
        assert summary["not_drawn"] == [] and len(summary["jobs"]) == 2
        assert demo.proc.wait(timeout=150) == 0, demo.log_text()
    finally:
        demo.stop()
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def test_the_oldest_environment_pins_every_floor() -> None:
    """scripts/oldest-constraints.txt, which CI's second run installs, pins each dependency of
    pyproject.toml (and the report extra) at exactly its floor: the floors are what is tested."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {}
    for line in [*project["dependencies"], *project["optional-dependencies"]["report"]]:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        [floor] = [s.version for s in requirement.specifier if s.operator == ">="]
        wanted[requirement.name.lower().replace("_", "-")] = Version(floor)
    pinned = {}
    for line in (REPO / "scripts" / "oldest-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[name.lower().replace("_", "-")] = Version(version)
    # Ray's floor is a minor line (>=2.44); a patch release of it is pinned.
    assert pinned.pop("ray").release[:2] == wanted.pop("ray").release[:2]
    assert pinned == wanted
