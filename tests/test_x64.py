"""Runs the float64 checks in a separate process, since x64 is global JAX state.

The default run checks IAF, the flow of ``fit_guide``'s default guide; the run over every
registered flow (and Glow at D=50, far from the identity) is marked ``slow``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from registry import FACTORIES, IMAGE_FACTORIES

HERE = Path(__file__).parent


def run_x64_checks(names=None):
    """x64_checks.py in a fresh interpreter, over every factory or only ``names``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))
    if names is None:
        command = [str(HERE / "x64_checks.py")]
    else:
        only = (
            f"c.FACTORIES = {{n: c.FACTORIES[n] for n in {list(names)!r}}}; "
            "c.IMAGE_FACTORIES = {}"
        )
        command = ["-c", f"import x64_checks as c; {only}; c.main()"]
    result = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow  # moved to keep the default run under 7 minutes
def test_float64_end_to_end_for_the_default_guide_flow():
    assert run_x64_checks(["iaf"]).count("ok") == 1


@pytest.mark.slow
def test_float64_end_to_end_and_float32_preserved_under_x64():
    assert run_x64_checks().count("ok") == len(FACTORIES) + len(IMAGE_FACTORIES)
