"""Layering (DESIGN.md): blocks never pull in the engine, the CLI, the recipes or Lightning, and
``import transferkit`` / the CLI's start import nothing heavy.

Each import runs in a fresh interpreter, so what another test imported cannot hide a violation.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

BLOCKS = ("transferkit.backbones", "transferkit.data", "transferkit.surgery", "transferkit.optim",
          "transferkit.regularizers", "transferkit.evaluation", "transferkit.transferability.scores",
          "transferkit.rundir", "transferkit.report", "transferkit.adaptation", "transferkit.tta",
          "transferkit.distill", "transferkit.selfsup", "transferkit.export", "transferkit.data.corruptions")
UPPER_LAYERS = ("transferkit.engine", "transferkit.cli", "transferkit.strategies", "lightning", "pytorch_lightning")
HEAVY = ("torch", "timm", "lightning", "pytorch_lightning", "matplotlib")


def imported_after(module: str, watched: tuple[str, ...]) -> list[str]:
    """The ``watched`` packages (or any of their submodules) in ``sys.modules`` after ``import module``
    (several: comma-separated, imported in one process)."""
    code = (f"import json, sys, {module}\n"
            f"watched = {watched!r}\n"
            "print(json.dumps(sorted({w for w in watched for m in sys.modules if m == w or m.startswith(w + '.')})))")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_blocks_do_not_import_upper_layers():
    if imported_after(", ".join(BLOCKS), UPPER_LAYERS):  # one process for all; on failure, name the block
        culprits = [b for b in BLOCKS if imported_after(b, UPPER_LAYERS)]
        pytest.fail(f"importing {', '.join(culprits)} imports upper layers")


@pytest.mark.parametrize("module", ["transferkit", "transferkit.cli"])
def test_package_and_cli_import_nothing_heavy(module):
    assert imported_after(module, HEAVY) == [], f"importing {module} imports heavy packages"
