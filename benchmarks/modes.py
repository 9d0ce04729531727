"""Posteriors with several modes: does the guide keep every mode?

Targets with a known normaliser, so that KL(q||p) = -ELBO - log Z is exact up to Monte
Carlo error (10 000 draws): the 2-D dual moon, a ring of eight Gaussians (sd 0.5,
radius 5), a mixture of two unit Gaussians in 20-D (means 8 apart), and Neal's 10-D
funnel as the unimodal control. Rows, two seeds each, side by side in one run:

* ``fit_guide`` at its defaults (mode search; a mixture of flows where it finds several);
* ``fit_guide(modes=False)``: one flow, what ``fit_guide`` did before the mode search;
* ``fit_guide(AutoNeuralSpline)``: the spline guide through ``fit_guide`` (the wall-time
  reference of the issue), and NumPyro's ``AutoBNAFNormal`` and FlowJAX's spline coupling
  flow through ``fit_guide`` (one flow, ``fit_guide``'s schedule: like for like with our
  rows);
* plain SVI, one schedule for all (Trace_ELBO with 8 particles, Adam 3e-3 with cosine
  decay to 3e-5 over ``--steps`` steps): our ``AutoBNAF``, NumPyro's ``AutoBNAFNormal`` and
  ``AutoIAFNormal``, FlowJAX's spline coupling flow (when installed).

Scored by KL, the share of draws in each mode (min and max over modes), the PSIS k-hat of
2 000 draws and the wall time (set-up and compilation included).

``--bnaf-speed`` measures the SVI step time of ``AutoBNAF`` against NumPyro's
``AutoBNAFNormal`` at the same architecture instead (interleaved, medians).

    python -m benchmarks.modes [--quick] [--models ...] [--rows ...] [--bnaf-speed]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import jax
import numpy as np
from numpyro.infer import Trace_ELBO

from benchmarks.common import cosine_adam, fit_svi, read_json, write_json
from benchmarks.guides import all_guides
from benchmarks.models import MODELS, log_normaliser, ring_mode_fractions
from benchmarks.speed import first_step_seconds, step_microseconds
from numpyro_flows import AutoNeuralSpline, fit_guide
from numpyro_flows.diagnostics import psis_diagnostic

TARGETS = ["dual_moon", "ring8", "gaussian_mixture20", "funnel10"]
FIT_ROWS = {
    "fit_guide": {},
    "fit_guide(modes=False)": {"modes": False},
    "fit_guide(AutoNeuralSpline)": {"guide": AutoNeuralSpline, "modes": False},
    # The reference guides under fit_guide's schedule too (like for like with our rows).
    "fit_guide(numpyro.AutoBNAFNormal)": {"guide": "numpyro.AutoBNAFNormal", "modes": False},
    "fit_guide(flowjax.coupling(spline))": {"guide": "flowjax.coupling(spline)", "modes": False},
}
SVI_ROWS = [
    "AutoBNAF",
    "numpyro.AutoBNAFNormal",
    "numpyro.AutoIAFNormal",
    "flowjax.coupling(spline)",
]
PARTICLES = 8


def mode_shares(model_name: str, z) -> list[float] | None:
    """Share of draws in each mode (``None`` for a unimodal target)."""
    z = np.asarray(z)
    if model_name == "ring8":
        return ring_mode_fractions(z).tolist()
    if model_name in ("dual_moon", "gaussian_mixture20"):
        right = float(np.mean(z[:, 0] > 0))
        return [right, 1.0 - right]
    return None


def score(model_name, model, guide, params, seed, num_draws) -> dict:
    log_z = log_normaliser(model_name)
    loss = float(
        Trace_ELBO(num_particles=num_draws).loss(jax.random.key(seed), params, model, guide)
    )
    draws = guide.sample_posterior(jax.random.key(seed + 1), params, sample_shape=(num_draws,))
    latent = next(iter(draws.values())) if model_name != "funnel10" else None
    shares = None if latent is None else mode_shares(model_name, latent)
    khat = psis_diagnostic(jax.random.key(seed + 2), guide, params, num_samples=2000).khat
    return {
        "kl": loss + log_z,
        "khat": khat,
        "min_share": None if shares is None else min(shares),
        "max_share": None if shares is None else max(shares),
    }


def run_fit_guide(model_name, row, seed, num_draws) -> dict:
    model = MODELS[model_name][0]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k-hat warnings: the score reports k-hat
        options = dict(FIT_ROWS[row])
        if isinstance(options.get("guide"), str):
            options["guide"] = all_guides()[options["guide"]]
        fit = fit_guide(jax.random.key(seed), model, progress_bar=False, **options)
    seconds = time.perf_counter() - start
    out = score(model_name, fit.guide.model, fit.guide, fit.params, seed + 10, num_draws)
    components = 1 if fit.modes is None or fit.modes.num_modes < 2 else fit.modes.num_modes
    return out | {"seconds": seconds, "steps": fit.num_steps, "components": components}


def run_svi(model_name, row, seed, steps, num_draws) -> dict:
    model = MODELS[model_name][0]
    guide = all_guides()[row](model)
    start = time.perf_counter()
    params, _, _, ok = fit_svi(
        model,
        guide,
        steps=steps,
        optimizer=cosine_adam(3e-3, 3e-5, steps),
        particles=PARTICLES,
        seed=seed,
    )
    seconds = time.perf_counter() - start
    if not ok:
        return {
            "kl": float("inf"),
            "khat": float("inf"),
            "min_share": None,
            "max_share": None,
            "seconds": seconds,
            "steps": steps,
            "components": 1,
        }
    out = score(model_name, model, guide, params, seed + 10, num_draws)
    return out | {"seconds": seconds, "steps": steps, "components": 1}


def bnaf_step_times(rounds: int = 5, steps: int = 300) -> dict:
    """SVI step time (µs, 8 particles) of ``AutoBNAF`` and NumPyro's ``AutoBNAFNormal`` at
    the same architecture, interleaved, medians over ``rounds``."""
    guides = all_guides()
    out = {}
    for model_name in ("funnel10", "dual_moon"):
        model = MODELS[model_name][0]
        for num_flows in (1, 2):
            makers = {
                name: (lambda m, name=name, n=num_flows: guides[name](m, num_flows=n))
                for name in ("AutoBNAF", "numpyro.AutoBNAFNormal")
            }
            compiled = {name: first_step_seconds(model, make)[1:] for name, make in makers.items()}
            samples = {name: [] for name in makers}
            for _ in range(rounds):
                for name in makers:
                    samples[name].append(step_microseconds(*compiled[name], steps=steps))
            row = {name: statistics.median(v) for name, v in samples.items()}
            row["ratio"] = row["AutoBNAF"] / row["numpyro.AutoBNAFNormal"]
            out[f"{model_name}, num_flows={num_flows}"] = row
            print(f"BNAF step time {model_name} num_flows={num_flows}: {row}", flush=True)
    return out


def median_row(per_seed: list[dict]) -> dict:
    out = {}
    for key in per_seed[0]:
        values = [r[key] for r in per_seed if r[key] is not None]
        out[key] = statistics.median(values) if values else None
    # The worst seed for the shares: a mode lost in one seed is a lost mode.
    shares = [r["min_share"] for r in per_seed if r["min_share"] is not None]
    out["min_share"] = min(shares) if shares else None
    shares = [r["max_share"] for r in per_seed if r["max_share"] is not None]
    out["max_share"] = max(shares) if shares else None
    return out | {"per_seed": per_seed}


def run(quick=False, models=None, rows=None) -> dict:
    models = models or TARGETS
    available = all_guides()
    usable = [
        r
        for r in FIT_ROWS
        if FIT_ROWS[r].get("guide") in (None, AutoNeuralSpline) or FIT_ROWS[r]["guide"] in available
    ]
    rows = rows or [*usable, *[r for r in SVI_ROWS if r in available]]
    seeds = (0,) if quick else (0, 1)
    steps = 2000 if quick else 10_000
    num_draws = 2000 if quick else 10_000
    previous = read_json("modes") or {}
    result = {
        **{k: v for k, v in previous.items() if k != "machine"},
        "svi_schedule": f"Trace_ELBO({PARTICLES}), Adam 3e-3 cosine to 3e-5, {steps} steps",
        "models": dict(previous.get("models", {})),
    }
    for model_name in models:
        block = dict(result["models"].get(model_name, {}))
        for row in rows:
            per_seed = []
            for seed in seeds:
                if row in FIT_ROWS:
                    r = run_fit_guide(model_name, row, seed, num_draws)
                else:
                    r = run_svi(model_name, row, seed, steps, num_draws)
                per_seed.append(r)
                shares = (
                    ""
                    if r["min_share"] is None
                    else (f" shares {r['min_share']:.3f}-{r['max_share']:.3f}")
                )
                print(
                    f"{model_name:20s} {row:30s} seed {seed} KL {r['kl']:8.4f} "
                    f"k-hat {r['khat']:5.2f}{shares} {r['seconds']:6.1f} s "
                    f"K={r['components']}",
                    flush=True,
                )
            block[row] = median_row(per_seed)
        result["models"][model_name] = block
        write_json("modes", result)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="*", choices=TARGETS)
    parser.add_argument("--rows", nargs="*")
    parser.add_argument(
        "--bnaf-speed", action="store_true", help="only the AutoBNAF step-time comparison"
    )
    args = parser.parse_args(argv)
    if args.bnaf_speed:
        result = read_json("modes") or {"models": {}}
        result.pop("machine", None)
        result["bnaf_step_time"] = bnaf_step_times(3 if args.quick else 5)
        write_json("modes", result)
        return
    run(args.quick, args.models, args.rows)


if __name__ == "__main__":
    main()
