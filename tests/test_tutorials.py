"""Every tutorial runs, in fast mode, so that none can rot.

Fast mode (``NUMPYRO_FLOWS_FAST=1``) uses tiny step counts and writes the figures to a
temporary directory, never over the committed ones in ``docs/tutorials/img/``. The
tutorials run in this process, under the suite's warnings-as-errors filters.

The default run compiles every tutorial and checks that what it imports from the package
exists; the tutorials themselves, whose calls the unit tests cover (test_autoguides,
test_arviz, test_density, test_modes, test_images, test_hybrid), run in fast mode in the
``slow`` run.
"""

import ast
import importlib
import importlib.util
import runpy
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))


def load_docs_hook():
    spec = importlib.util.spec_from_file_location("hook", ROOT / "docs/hooks/tutorials.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_every_tutorial_has_a_docs_page_with_its_figures():
    hook = load_docs_hook()
    assert len(TUTORIALS) == 8
    for path in TUTORIALS:
        page = ROOT / "docs" / "tutorials" / f"{path.stem}.md"
        assert page.exists(), page
        assert f"<!-- tutorial: tutorials/{path.name} -->" in page.read_text(), page
        source = path.read_text()
        rendered = hook.render(source)
        assert "```python" in rendered and "# %%" not in rendered
        saved = [name for kind, text in hook.cells(source) for name in hook.figures(text)]
        assert saved, path  # every tutorial shows at least one figure
        for name in saved:
            assert (hook.IMG / name).exists(), f"{name}: run python {path} to make it"


def test_every_tutorial_compiles_and_its_package_imports_exist():
    """A cheap smoke of every tutorial: a renamed or removed import fails the default run."""
    for path in TUTORIALS:
        tree = ast.parse(path.read_text(), str(path))
        compile(tree, str(path), "exec")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("numpyro_flows"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    name = alias.name
                    assert hasattr(module, name) or importlib.util.find_spec(
                        f"{node.module}.{name}"
                    ), f"{path.name}: from {node.module} import {name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("numpyro_flows"):
                        importlib.import_module(alias.name)


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


@pytest.mark.slow
def test_01_flow_guides(run_tutorial):
    ns = run_tutorial("01_flow_guides")
    for score in ns["scores"].values():
        assert np.isfinite(score["elbo"]) and np.isfinite(score["khat"])


@pytest.mark.slow
def test_02_neutra(run_tutorial):
    ns = run_tutorial("02_neutra")
    assert ns["result"].samples["theta"].shape == (ns["NUM_CHAINS"], ns["NUM_SAMPLES"], 8)
    assert set(ns["table"]) == {"NUTS", "NeuTra-NUTS"}


@pytest.mark.slow
def test_03_arviz(run_tutorial):
    ns = run_tutorial("03_arviz")
    assert np.isfinite(ns["loos"]["flow"].elpd_loo)
    assert "log_likelihood" in ns["idata"]["flow"].groups()


@pytest.mark.slow
def test_04_density(run_tutorial):
    ns = run_tutorial("04_density")
    assert all(np.isfinite(v) for v in ns["test_log_lik"].values())
    assert ns["z"].shape == (ns["NUM_SAMPLES"], 2)


@pytest.mark.slow
def test_05_custom_bijection(run_tutorial):
    ns = run_tutorial("05_custom_bijection")
    assert "log-det differs from slogdet(jacfwd)" in ns["broken_message"]


@pytest.mark.slow
def test_06_modes(run_tutorial):
    ns = run_tutorial("06_modes")
    assert ns["z"].shape == (ns["NUM_DRAWS"], 2) and np.all(np.isfinite(ns["z"]))
    assert ns["ring_draws"].shape == (ns["NUM_DRAWS"], 2)


@pytest.mark.slow
def test_07_images(run_tutorial):
    ns = run_tutorial("07_images")
    assert all(np.isfinite(v) for v in ns["scores"].values())
    assert ns["glow_bits"] < np.log2(17)  # better than uniform after two short epochs
    assert ns["samples"].shape == (32, 8, 8, 1)


@pytest.mark.slow
def test_08_local_latents(run_tutorial):
    ns = run_tutorial("08_local_latents")
    assert ns["draws"]["AutoHybridFlow"]["theta"].shape == (ns["NUM_DRAWS"], ns["G"])
    assert ns["large_draws"]["theta"].shape == (ns["NUM_DRAWS"], 3)
    assert ns["codes"]["AutoHybridFlow"].shape == (ns["N"], 2)
    assert all(np.isfinite(v) for v in ns["elbo"].values())
