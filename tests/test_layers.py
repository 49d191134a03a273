"""The package's walls (pyproject.toml ``[tool.importlinter]``), checked by import-linter.

The directories follow the data (discovery -> recognition -> pipeline -> service); a lower room
importing a higher one is the tangle that makes a change in one place break another. The
contracts also keep ``plumbing`` free of any domain module, and keep the GPU exporter, the
Prometheus configs, the tables, the report and the mixin from reaching into the running daemon.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_import_contract_is_kept() -> None:
    # A child process: import-linter reads the source (it imports nothing of ours) and prints
    # its verdict; no cache, so a run never reads a graph built from another checkout.
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 3 kept, 0 broken." in run.stdout
