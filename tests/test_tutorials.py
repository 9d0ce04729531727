"""Every tutorial runs, in fast mode, so that none can rot.

Fast mode (``NUMPYRO_FLOWS_FAST=1``) uses tiny step counts and writes the figures to a
temporary directory, never over the committed ones in ``docs/tutorials/img/``. The
tutorials run in this process, under the suite's warnings-as-errors filters.
"""

import runpy
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))


def test_every_tutorial_has_a_docs_page():
    assert len(TUTORIALS) == 5
    for path in TUTORIALS:
        page = ROOT / "docs" / "tutorials" / f"{path.stem}.md"
        assert page.exists(), page
        assert f'--8<-- "tutorials/{path.name}"' in page.read_text(), page


@pytest.fixture
def run_tutorial(monkeypatch, tmp_path):
    def run(name):
        (path,) = [p for p in TUTORIALS if p.stem == name]
        monkeypatch.setenv("NUMPYRO_FLOWS_FAST", "1")
        monkeypatch.setattr(sys, "argv", [str(path)])
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        namespace = runpy.run_path(str(path), run_name="__main__")
        img = Path(namespace["IMG"])
        assert img.is_relative_to(tmp_path)  # fast mode never touches docs/tutorials/img
        figures = sorted(p.name for p in img.glob("*.png"))
        assert figures and all(name.startswith(path.stem[:2]) for name in figures), figures
        return namespace

    return run


def test_01_flow_guides(run_tutorial):
    ns = run_tutorial("01_flow_guides")
    for score in ns["scores"].values():
        assert np.isfinite(score["elbo"]) and np.isfinite(score["khat"])


def test_02_neutra(run_tutorial):
    ns = run_tutorial("02_neutra")
    assert ns["result"].samples["theta"].shape == (ns["NUM_CHAINS"], ns["NUM_SAMPLES"], 8)
    assert set(ns["table"]) == {"NUTS", "NeuTra-NUTS"}


def test_03_arviz(run_tutorial):
    ns = run_tutorial("03_arviz")
    assert np.isfinite(ns["loos"]["flow"].elpd_loo)
    assert "log_likelihood" in ns["idata"]["flow"].groups()
