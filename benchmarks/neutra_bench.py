"""NeuTra-NUTS against plain NUTS: min bulk ESS per gradient and per second, divergences
and r-hat, on Neal's funnel and eight schools (centred).

Each guide is trained with 10 000 SVI steps (8 particles, Adam with cosine decay
3e-3 -> 3e-5), then NUTS runs 4 chains x (1000 warmup + 1000 draws) in the warped space
with NumPyro's defaults. Two more rows: plain NUTS with ``target_accept_prob=0.99``
(what one tries first against divergences), and the set-up we recommend for funnels
(``RECOMMENDED``): a wider AutoIAF with a full affine layer, trained longer with more
particles, and NUTS at ``target_accept_prob=0.99``.

    python -m benchmarks.neutra_bench [--quick]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS

from benchmarks.common import cosine_adam, fit_svi, write_json
from benchmarks.guides import NUMPYRO, OURS
from benchmarks.models import MODELS
from numpyro_flows import AutoIAF
from numpyro_flows._arviz_import import import_arviz
from numpyro_flows.neutra import neutra_nuts

GUIDES = {**OURS, **{k: v for k, v in NUMPYRO.items() if "IAF" in k or "BNAF" in k}}

# NeuTra for a funnel-shaped posterior: the guide must follow the neck closely, so wider
# MADE layers and a full affine layer, started narrow (with AutoIAF's default scale 1 one
# run on eight schools left one divergence); trained longer and with more particles; NUTS
# with a high target acceptance for what the guide leaves of the neck.
RECOMMENDED = {
    "name": "NeuTra AutoIAF(hidden 32x32, full, init_scale 0.1) 20k steps, 16 particles, "
    "accept 0.99",
    "make_guide": lambda m: AutoIAF(m, hidden_dims=[32, 32], affine="full", init_scale=0.1),
    "steps": 20_000,
    "particles": 16,
    "target_accept_prob": 0.99,
}


def _metrics(samples: dict, stats: dict, seconds: float) -> dict:
    az = import_arviz()
    data = az.from_dict(posterior={k: np.asarray(v) for k, v in samples.items()})
    ess = az.ess(data, method="bulk")
    rhat = az.rhat(data)
    min_ess = float(min(np.min(ess[v].values) for v in ess.data_vars))
    max_rhat = float(max(np.max(rhat[v].values) for v in rhat.data_vars))
    gradients = int(np.sum(stats["num_steps"]))
    return {
        "min_bulk_ess": min_ess,
        "ess_per_gradient": min_ess / gradients,
        "ess_per_second": min_ess / seconds,
        "gradients": gradients,
        "divergences": int(np.sum(stats["diverging"])),
        "max_rhat": max_rhat,
        "seconds": seconds,
    }


def plain_nuts(model, warmup, draws, chains, seed, target_accept_prob=0.8) -> dict:
    mcmc = MCMC(
        NUTS(model, target_accept_prob=target_accept_prob),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    t0 = time.perf_counter()
    mcmc.run(jax.random.key(seed), extra_fields=("diverging", "num_steps"))
    seconds = time.perf_counter() - t0
    stats = mcmc.get_extra_fields(group_by_chain=True)
    return _metrics(mcmc.get_samples(group_by_chain=True), stats, seconds)


def neutra(
    model, make_guide, warmup, draws, chains, steps, seed, particles=8, target_accept_prob=0.8
) -> dict:
    guide = make_guide(model)
    params, _, fit_seconds, ok = fit_svi(
        model,
        guide,
        steps=steps,
        optimizer=cosine_adam(3e-3, 3e-5, steps),
        particles=particles,
        seed=seed,
    )
    if not ok:
        return {"error": "SVI diverged (non-finite loss)"}
    t0 = time.perf_counter()
    result = neutra_nuts(
        jax.random.key(seed + 1),
        guide,
        params,
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
        khat_samples=2000,
        nuts_kwargs={"target_accept_prob": target_accept_prob},
    )
    seconds = time.perf_counter() - t0
    return {
        **_metrics(result.samples, result.sample_stats, seconds),
        "khat": result.khat,
        "svi_seconds": fit_seconds,
    }


def run(quick: bool = False) -> dict:
    warmup, draws, chains = (300, 300, 2) if quick else (1000, 1000, 4)
    steps = 2000 if quick else 10_000
    out = {}
    for model_name in ("funnel10", "eight_schools_centered"):
        model = MODELS[model_name][0]
        rows = {"NUTS": plain_nuts(model, warmup, draws, chains, 0)}
        rows["NUTS, accept 0.99"] = plain_nuts(model, warmup, draws, chains, 0, 0.99)
        for name, make in GUIDES.items():
            rows[f"NeuTra {name}"] = neutra(model, make, warmup, draws, chains, steps, 0)
        r = RECOMMENDED
        rows[r["name"]] = neutra(
            model,
            r["make_guide"],
            warmup,
            draws,
            chains,
            steps * 2 if quick else r["steps"],
            0,
            particles=r["particles"],
            target_accept_prob=r["target_accept_prob"],
        )
        base = rows["NUTS"]["ess_per_gradient"]
        for name, row in rows.items():
            if "ess_per_gradient" in row:
                row["ess_per_gradient_ratio"] = row["ess_per_gradient"] / base
            print(f"{model_name:24s} {name:40s} {row}", flush=True)
        out[model_name] = rows
    write_json(
        "neutra",
        {"warmup": warmup, "draws": draws, "chains": chains, "svi_steps": steps, "results": out},
    )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
