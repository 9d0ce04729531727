"""NeuTra-NUTS at the defaults against plain NUTS: min bulk ESS per gradient, divergences,
r-hat, on Neal's funnel (10-D), eight schools (centred) and a centred hierarchical
regression with 60 groups.

Every NeuTra row is the one-call path with every other argument at its default::

    fit = fit_guide(key, model, guide=...)          # guide=None: the default guide
    result = neutra_nuts(key, fit.guide, fit.params, num_chains=4)

against plain NUTS at NumPyro's defaults, 4 chains x (1000 warmup + 1000 draws) on both
sides, two seeds. Rows: the default guide, each preset passed as ``guide=``, NumPyro's
``AutoIAFNormal`` through the same ``fit_guide`` (same schedule), and the default guide
without the learned non-centring (``reparam=False``) to show what it does.

    python -m benchmarks.neutra_bench [--quick] [--seeds 0 1] [--models ...]
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS
from numpyro.infer.autoguide import AutoIAFNormal

from benchmarks.common import read_json, write_json
from benchmarks.models import MODELS
from numpyro_flows import AutoIAF, AutoNeuralSpline, AutoRealNVP, fit_guide, neutra_nuts
from numpyro_flows.reports import mcmc_report

NEUTRA_MODELS = ("eight_schools_centered", "funnel10", "hierarchical60")

# name -> (fit_guide keyword arguments); every other argument at its default.
SETUPS = {
    "fit_guide defaults": {},
    "AutoIAF": {"guide": AutoIAF},
    "AutoRealNVP": {"guide": AutoRealNVP},
    "AutoNeuralSpline": {"guide": AutoNeuralSpline},
    "AutoNeuralSpline(coupling)": {"guide": lambda m: AutoNeuralSpline(m, coupling=True)},
    "numpyro.AutoIAFNormal": {"guide": AutoIAFNormal},
    "fit_guide(reparam=False)": {"reparam": False},
}


def _metrics(samples: dict, stats: dict, seconds: float) -> dict:
    report = mcmc_report(samples, stats)
    gradients = int(np.sum(stats["num_steps"]))
    return {
        "min_bulk_ess": report.min_ess_bulk,
        "min_tail_ess": report.min_ess_tail,
        "ess_per_gradient": report.min_ess_bulk / gradients,
        "gradients": gradients,
        "divergences": int(np.sum(stats["diverging"])),
        "max_rhat": report.max_rhat,
        "seconds": seconds,
    }


def _sampler(warmup, draws, chains) -> dict:
    """The chains' settings, the same for plain NUTS and NeuTra-NUTS."""
    return {
        "num_warmup": warmup,
        "num_samples": draws,
        "num_chains": chains,
        "chain_method": "vectorized",
        "progress_bar": False,
    }


def plain_nuts(model, warmup, draws, chains, seed) -> dict:
    mcmc = MCMC(NUTS(model), **_sampler(warmup, draws, chains))
    t0 = time.perf_counter()
    mcmc.run(jax.random.key(seed), extra_fields=("diverging", "num_steps"))
    seconds = time.perf_counter() - t0
    stats = mcmc.get_extra_fields(group_by_chain=True)
    return _metrics(mcmc.get_samples(group_by_chain=True), stats, seconds)


def neutra(model, setup: dict, warmup, draws, chains, seed, quick=False) -> dict:
    fit_kwargs = {"max_steps": 3000} if quick else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k-hat and run-report warnings: in the row
        fit = fit_guide(jax.random.key(seed), model, progress_bar=False, **setup, **fit_kwargs)
        t0 = time.perf_counter()
        result = neutra_nuts(
            jax.random.key(seed + 1),
            fit.guide,
            fit.params,
            **_sampler(warmup, draws, chains),
            khat_samples=0,
        )
        seconds = time.perf_counter() - t0
    return {
        **_metrics(result.samples, result.sample_stats, seconds),
        "khat": fit.khat,
        "fit_seconds": fit.seconds,
        "fit_steps": fit.num_steps,
    }


def run(quick: bool = False, seeds=(0, 1), models=NEUTRA_MODELS, setups=None) -> dict:
    warmup, draws, chains = (300, 300, 2) if quick else (1000, 1000, 4)
    setups = setups or list(SETUPS)
    out = {}
    for model_name in models:
        model = MODELS[model_name][0]
        out[model_name] = {}
        for seed in seeds:
            rows = {"NUTS": plain_nuts(model, warmup, draws, chains, seed)}
            for name in setups:
                rows[f"NeuTra {name}"] = neutra(
                    model, SETUPS[name], warmup, draws, chains, seed, quick
                )
            base = rows["NUTS"]["ess_per_gradient"]
            for name, row in rows.items():
                row["ess_per_gradient_ratio"] = row["ess_per_gradient"] / base
                print(f"{model_name:24s} seed {seed} {name:38s} {_line(row)}", flush=True)
            out[model_name][f"seed {seed}"] = rows
    payload = {"warmup": warmup, "draws": draws, "chains": chains, "seeds": list(seeds)}
    previous = read_json("neutra")
    if previous and all(previous.get(k) == v for k, v in payload.items()):
        out = {**previous["results"], **out}  # re-running some models keeps the others
        if previous.get("note"):
            payload["note"] = previous["note"]
    write_json("neutra", {**payload, "results": out})
    return out


def _line(row: dict) -> str:
    text = (
        f"ESS/grad x{row['ess_per_gradient_ratio']:.1f} div {row['divergences']} "
        f"r-hat {row['max_rhat']:.3f} min ESS {row['min_bulk_ess']:.0f}"
    )
    if "fit_seconds" in row:
        text += f" fit {row['fit_seconds']:.1f}s ({row['fit_steps']} steps) k-hat {row['khat']:.2f}"
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=list(NEUTRA_MODELS))
    parser.add_argument("--setups", nargs="*", choices=list(SETUPS), default=list(SETUPS))
    args = parser.parse_args(argv)
    run(args.quick, args.seeds, args.models, args.setups)


if __name__ == "__main__":
    main()
