"""Set-up + compile time of the guides, as a notebook user meets it, before and after a
change, in one run.

The protocol of issue 17: funnel-10, 8 ELBO particles, ``svi.run(key, 1)``; each guide is
run once in a fresh process (first use: JAX's own warm-up), then the figure is the wall
time of a *second* ``svi.run`` with a new guide instance of the same kind (set-up,
tracing, compilation and one step: what every change of model or data costs). Depths 2
to 32 show whether it grows with the number of layers.

"Before" is the package at a git ref (checked out into a temporary worktree), "after" is
the working tree; worker processes alternate between the two, two repeats each (seeds 0
and 1), and the table gives medians.

    python -m benchmarks.compile_time [--before-ref REF] [--repeats 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTICLES = 8
GUIDES = (
    "numpyro.AutoNormal",
    "numpyro.AutoMultivariateNormal",
    "numpyro.AutoIAFNormal",
    "numpyro.AutoBNAFNormal",
    "AutoIAF",
    "AutoRealNVP",
    "AutoNeuralSpline",
    "AutoNeuralSpline(coupling)",
    "AutoBNAF",
)
DEPTH_GUIDES = ("AutoIAF", "AutoRealNVP", "AutoNeuralSpline(coupling)", "AutoBNAF")


def _make(name: str, depth: int | None):
    from numpyro.infer import autoguide

    import numpyro_flows as nf

    kw = {} if depth is None else {"num_flows": depth}
    makers = {
        "numpyro.AutoNormal": lambda m: autoguide.AutoNormal(m),
        "numpyro.AutoMultivariateNormal": lambda m: autoguide.AutoMultivariateNormal(m),
        "numpyro.AutoIAFNormal": lambda m: autoguide.AutoIAFNormal(m, **kw),
        "numpyro.AutoBNAFNormal": lambda m: autoguide.AutoBNAFNormal(m, **kw),
        "AutoIAF": lambda m: nf.AutoIAF(m, **kw),
        "AutoRealNVP": lambda m: nf.AutoRealNVP(m, **kw),
        "AutoNeuralSpline": lambda m: nf.AutoNeuralSpline(m, **kw),
        "AutoNeuralSpline(coupling)": lambda m: nf.AutoNeuralSpline(m, coupling=True, **kw),
        "AutoBNAF": lambda m: nf.AutoBNAF(m, **kw),
    }
    return makers[name]


def _svi_run_seconds(name: str, depth: int | None, seed: int) -> float:
    import jax
    import optax
    from numpyro.infer import SVI, Trace_ELBO

    from numpyro_flows.examples import funnel as model

    t0 = time.perf_counter()
    svi = SVI(model, _make(name, depth)(model), optax.adam(1e-3), Trace_ELBO(PARTICLES))
    result = svi.run(jax.random.key(seed), 1, progress_bar=False)
    jax.block_until_ready(result.losses)
    return time.perf_counter() - t0


def worker(cases: list[tuple[str, int | None]], seed: int) -> dict:
    """In this process: for each case, one warm-up ``svi.run`` and one timed."""
    import numpyro_flows

    out = {"package": str(Path(numpyro_flows.__file__).parent)}
    for name, depth in cases:
        _svi_run_seconds(name, depth, seed)
        out[f"{name}|{depth}"] = _svi_run_seconds(name, depth, seed)
    return out


def _run_worker(pythonpath: Path, cases, seed: int) -> dict:
    return run_in_worker(__file__, pythonpath, ["--worker", json.dumps(cases), "--seed", str(seed)])


def run_in_worker(script, pythonpath: Path, args: list[str], env: dict | None = None) -> dict:
    """The JSON a worker ``script`` prints last, run with the ``numpyro_flows`` of
    ``pythonpath`` (and ``env`` added to the environment); it reports the package it
    imported under ``"package"``."""
    # Run as a script from a neutral directory, so that `numpyro_flows` is the one on
    # PYTHONPATH (the worktree's, for "before"), not the working tree's.
    env = dict(os.environ, **(env or {}), PYTHONPATH=str(pythonpath))
    command = [sys.executable, str(script), *args]
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result.pop("package")).resolve() != (pythonpath / "numpyro_flows").resolve():
        raise RuntimeError(f"the worker imported the wrong numpyro_flows for {pythonpath}")
    return result


def _worktree(ref: str) -> tuple[Path, callable]:
    path = Path(tempfile.mkdtemp(prefix="compile-before-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=ROOT, check=True)

    def remove():
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)

    return path, remove


def alternating_versions(before_ref: str | None, repeats: int):
    """Yields ``(seed, version, path)``: for each seed, the working tree ("after") and, with
    ``before_ref``, that ref in a temporary worktree ("before"), alternating so that the
    machine's noise hits both; the worktree is removed at the end."""
    versions = {"after": ROOT}
    cleanup = None
    if before_ref:
        versions["before"], cleanup = _worktree(before_ref)
    try:
        for seed in range(repeats):
            for version, path in versions.items():
                yield seed, version, path
    finally:
        if cleanup:
            cleanup()


def run(before_ref: str | None, repeats: int, quick: bool) -> dict:
    depths = (2, 32) if quick else (2, 8, 32)
    cases = [(name, None) for name in GUIDES]
    cases += [(name, d) for name in DEPTH_GUIDES for d in depths]
    samples: dict[str, dict[str, list[float]]] = {}
    for seed, version, path in alternating_versions(before_ref, repeats):
        for key, seconds in _run_worker(path, cases, seed).items():
            samples.setdefault(version, {}).setdefault(key, []).append(seconds)
        print(f"seed {seed} {version} done", flush=True)
    medians = {v: {k: statistics.median(s) for k, s in rows.items()} for v, rows in samples.items()}
    for key in medians["after"]:
        before = medians.get("before", {}).get(key)
        after = medians["after"][key]
        print(f"{key:40s} before {before or float('nan'):5.2f} s  after {after:5.2f} s")
    return {
        "particles": PARTICLES,
        "before_ref": before_ref,
        "repeats": repeats,
        "depths": list(depths),
        "seconds": medians,
        "samples": samples,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before-ref", default=None, help="git ref of the 'before' code")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        cases = [tuple(c) for c in json.loads(args.worker)]
        print(json.dumps(worker(cases, args.seed)))
        return
    from benchmarks.common import write_json

    write_json("compile_time", run(args.before_ref, args.repeats, args.quick))


if __name__ == "__main__":
    main()
