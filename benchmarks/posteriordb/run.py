"""Accuracy against posteriordb reference posteriors.

For each posterior and guide: fit with two seeds, either with the one-call
``fit_guide(key, model, **data)`` at its defaults (rows ``fit_guide ...``; NumPyro's
``AutoIAFNormal`` through the same call for a like-for-like reference) or with the fixed
baseline recipe (20 000 SVI steps, 4 particles, Adam with cosine decay 5e-3 -> 5e-5);
draw 10 000 posterior samples and score every scalar parameter against the reference draws:

* standardised mean error ``|mean_q - mean_ref| / sd_ref``;
* log sd ratio ``|log(sd_q / sd_ref)|``;

reporting the worst over parameters (and the worse of the seeds). A guide passes at
0.1 / 0.1. NeuTra-NUTS with a trained guide is scored the same way.

    python -m benchmarks.posteriordb.run [--quick] [--guides ...] [--posteriors ...]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import numpyro

numpyro.enable_x64()

from numpyro.infer import autoguide  # noqa: E402

from benchmarks.common import cosine_adam, fit_svi, write_json  # noqa: E402
from benchmarks.posteriordb.models import MODELS  # noqa: E402
from numpyro_flows import (  # noqa: E402
    AutoIAF,
    AutoNeuralSpline,
    AutoRealNVP,
    fit_guide,
    neutra_nuts,
)

DATA = Path(__file__).parent / "data"
TOLERANCE = 0.1

# Rows trained by fit_guide at its defaults: name -> its `guide` argument.
FIT_GUIDE = {
    "fit_guide defaults": None,
    "fit_guide(numpyro.AutoIAFNormal)": autoguide.AutoIAFNormal,
}

GUIDES = {
    **FIT_GUIDE,
    "numpyro.AutoIAFNormal": lambda m: autoguide.AutoIAFNormal(m),
    "numpyro.AutoMultivariateNormal": lambda m: autoguide.AutoMultivariateNormal(m),
    "AutoIAF": lambda m: AutoIAF(m),
    "AutoRealNVP": lambda m: AutoRealNVP(m),
    "AutoNeuralSpline": lambda m: AutoNeuralSpline(m),
    "AutoNeuralSpline(coupling)": lambda m: AutoNeuralSpline(m, coupling=True),
    "AutoIAF(full)": lambda m: AutoIAF(m, affine="full"),
    "AutoNeuralSpline(full)": lambda m: AutoNeuralSpline(m, affine="full"),
    "AutoIAF(full,laplace)": lambda m: AutoIAF(m, affine="full", warm_start="laplace"),
    "AutoNeuralSpline(full,laplace)": lambda m: AutoNeuralSpline(
        m, affine="full", warm_start="laplace"
    ),
    "AutoNeuralSpline(laplace)": lambda m: AutoNeuralSpline(m, warm_start="laplace"),
}


# The default run: NumPyro's AutoIAFNormal and each of our presets, as they come and in
# the set-up we recommend for regressions (full affine, Laplace warm start). The other
# entries of GUIDES are there for ablations (--guides).
DEFAULT_GUIDES = [
    "fit_guide defaults",
    "fit_guide(numpyro.AutoIAFNormal)",
    "numpyro.AutoIAFNormal",
    "AutoIAF",
    "AutoRealNVP",
    "AutoNeuralSpline",
    "AutoNeuralSpline(coupling)",
    "AutoIAF(full,laplace)",
    "AutoNeuralSpline(full,laplace)",
]
NEUTRA_GUIDES = ["fit_guide defaults", "AutoIAF(full,laplace)"]


def load(name: str):
    with gzip.open(DATA / f"{name}.data.json.gz", "rt") as f:
        data = json.load(f)
    reference = json.loads((DATA / f"{name}.reference.json").read_text())["parameters"]
    return data, reference


def scalar_draws(draws: dict) -> dict:
    """``{site: (S, ...)}`` to ``{stan_name: (S,)}`` with 1-based ``[i]`` indices."""
    out = {}
    for site, values in draws.items():
        values = np.asarray(values, np.float64)
        if values.ndim == 1:
            out[site] = values
            continue
        flat = values.reshape(values.shape[0], -1)
        for i in range(flat.shape[1]):
            index = np.unravel_index(i, values.shape[1:])
            out[f"{site}[{','.join(str(j + 1) for j in index)}]"] = flat[:, i]
    return out


def score(draws: dict, reference: dict) -> dict:
    scalars = scalar_draws(draws)
    missing = set(reference) - set(scalars)
    if missing:
        raise KeyError(f"draws lack reference parameters {sorted(missing)}")
    mean_err = {p: abs(scalars[p].mean() - r["mean"]) / r["sd"] for p, r in reference.items()}
    sd_err = {p: abs(np.log(scalars[p].std(ddof=1) / r["sd"])) for p, r in reference.items()}
    worst_mean = max(mean_err, key=mean_err.get)
    worst_sd = max(sd_err, key=sd_err.get)
    return {
        "mean_error": mean_err[worst_mean],
        "mean_error_param": worst_mean,
        "log_sd_ratio": sd_err[worst_sd],
        "log_sd_ratio_param": worst_sd,
    }


def run_guide(name, guide_name, steps, seeds, num_draws=10_000, neutra=False):
    data, reference = load(name)
    model = MODELS[name]
    rows = []
    for seed in seeds:
        if guide_name in FIT_GUIDE:
            guide, params, losses, seconds, ok = _fit_guide(model, guide_name, seed, data, steps)
        else:
            guide = GUIDES[guide_name](model)
            params, losses, seconds, ok = fit_svi(
                model,
                guide,
                steps=steps,
                optimizer=cosine_adam(5e-3, 5e-5, steps),
                particles=4,
                seed=seed,
                model_kwargs=data,
            )
        row = {"seed": seed, "fit_seconds": seconds, "finite": ok, "final_loss": float(losses[-1])}
        if guide_name in FIT_GUIDE:
            row["fit_steps"] = len(losses)
        if ok:
            draws = guide.sample_posterior(
                jax.random.key(seed + 100), params, sample_shape=(num_draws,), **data
            )
            row.update(score(draws, reference))
            if neutra:
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the run report: in the row
                    result = neutra_nuts(
                        jax.random.key(seed + 200),
                        guide,
                        params,
                        num_warmup=1000,
                        num_samples=1000,
                        num_chains=4,
                        chain_method="vectorized",
                        progress_bar=False,
                        khat_samples=0,
                        **data,
                    )
                flat = {
                    k: np.asarray(v).reshape((-1,) + v.shape[2:]) for k, v in result.samples.items()
                }
                neutra_score = score(flat, reference)
                row["neutra"] = {
                    **neutra_score,
                    "seconds": time.perf_counter() - t0,
                    "divergences": int(np.sum(result.sample_stats["diverging"])),
                    "max_rhat": result.summary().max_rhat,
                }
        rows.append(row)
    return rows


def _fit_guide(model, guide_name, seed, data, steps):
    """fit_guide at its defaults (``--quick``: at most ``steps`` steps); wall time includes
    set-up and compilation."""
    extra = {"max_steps": steps} if steps < 20_000 else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the k-hat warning: the score is in the row
            fit = fit_guide(
                jax.random.key(seed),
                model,
                guide=FIT_GUIDE[guide_name],
                progress_bar=False,
                khat_samples=0,
                **extra,
                **data,
            )
    except FloatingPointError:
        return None, None, np.array([np.nan]), float("nan"), False
    return fit.guide, fit.params, fit.losses, fit.seconds, True


def summarise(rows):
    finite = [r for r in rows if r["finite"]]
    if len(finite) < len(rows):
        return {"mean_error": float("inf"), "log_sd_ratio": float("inf"), "passes": False}
    mean_error = max(r["mean_error"] for r in rows)
    log_sd = max(r["log_sd_ratio"] for r in rows)
    return {
        "mean_error": mean_error,
        "log_sd_ratio": log_sd,
        "passes": mean_error <= TOLERANCE and log_sd <= TOLERANCE,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posteriors", nargs="*", default=list(MODELS))
    parser.add_argument("--guides", nargs="*", choices=list(GUIDES), default=DEFAULT_GUIDES)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument(
        "--neutra",
        nargs="*",
        choices=list(GUIDES),
        default=NEUTRA_GUIDES,
        help="guides whose fit is also used for NeuTra-NUTS (4 chains x 1000)",
    )
    parser.add_argument("--quick", action="store_true", help="2 000 steps, one seed")
    parser.add_argument("--out", default="posteriordb")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds = 2000, [0]
    results = {}
    for name in args.posteriors:
        results[name] = {}
        for guide_name in args.guides:
            neutra = guide_name in args.neutra
            rows = run_guide(name, guide_name, args.steps, args.seeds, neutra=neutra)
            summary = summarise(rows)
            results[name][guide_name] = {"summary": summary, "runs": rows}
            print(
                f"{name:42s} {guide_name:28s} mean err {summary['mean_error']:.3f} "
                f"log sd {summary['log_sd_ratio']:.3f} {'PASS' if summary['passes'] else 'fail'}",
                flush=True,
            )
    write_json(args.out, {"steps": args.steps, "seeds": args.seeds, "results": results})
    return results


if __name__ == "__main__":
    main()
