"""Runs the float64 checks in a separate process, since x64 is global JAX state."""

import os
import subprocess
import sys
from pathlib import Path

from registry import FACTORIES


def test_float64_end_to_end_and_float32_preserved_under_x64():
    here = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(here.parent)]))
    result = subprocess.run(
        [sys.executable, str(here / "x64_checks.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok") == len(FACTORIES)
