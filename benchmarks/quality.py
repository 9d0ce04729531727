"""Quality at an equal wall-clock training budget.

The budget is the time NumPyro's ``AutoIAFNormal`` takes for 10 000 SVI steps (8
particles, Adam 3e-3), measured in the same run. Every guide trains for as many steps as
fit in that budget (its own step time, measured), with two recipes: constant Adam 3e-3
(NumPyro's recipe above) and Adam with cosine decay 3e-3 -> 3e-5 over its steps. Scored by
the ELBO with 10 000 particles, KL(q||p) where the normaliser is known (funnel: 0; dual
moon: quadrature) and the PSIS k-hat of 10 000 guide draws.

    python -m benchmarks.quality [--quick]
"""

from __future__ import annotations

import argparse
import statistics

import jax
import optax
from numpyro.infer import Trace_ELBO

from benchmarks.common import cosine_adam, fit_svi, write_json
from benchmarks.guides import all_guides
from benchmarks.models import MODELS, log_normaliser
from benchmarks.speed import first_step_seconds, step_microseconds
from numpyro_flows.diagnostics import psis_diagnostic

PARTICLES = 8
RECIPES = {
    "adam3e-3": lambda steps: optax.adam(3e-3),
    "cosine3e-3": lambda steps: cosine_adam(3e-3, 3e-5, steps),
}


def evaluate(model, guide, params, log_z, num_particles: int, seed: int) -> dict:
    loss = float(
        Trace_ELBO(num_particles=num_particles).loss(jax.random.key(seed), params, model, guide)
    )
    khat = psis_diagnostic(jax.random.key(seed + 1), guide, params, num_samples=num_particles).khat
    return {"elbo": -loss, "kl": None if log_z is None else loss + log_z, "khat": khat}


def run_model(model_name, guide_names, budget_steps, seeds, eval_particles) -> dict:
    model = MODELS[model_name][0]
    log_z = log_normaliser(model_name)
    guides = all_guides()
    # Per-step cost of each guide, interleaved, to turn the budget into step counts.
    per_step = {}
    compiled = {name: first_step_seconds(model, guides[name])[1:] for name in guide_names}
    samples = {name: [] for name in guide_names}
    for _ in range(3):
        for name in guide_names:
            samples[name].append(step_microseconds(*compiled[name], steps=300))
    for name in guide_names:
        per_step[name] = statistics.median(samples[name])
    budget_us = per_step["numpyro.AutoIAFNormal"] * budget_steps
    out = {"budget_seconds": budget_us / 1e6, "guides": {}}
    for name in guide_names:
        steps = int(budget_us / per_step[name])
        row = {"step_us": per_step[name], "steps": steps, "recipes": {}}
        for recipe, make_optim in RECIPES.items():
            scores = []
            for seed in seeds:
                guide = guides[name](model)
                params, _, _, ok = fit_svi(
                    model,
                    guide,
                    steps=steps,
                    optimizer=make_optim(steps),
                    particles=PARTICLES,
                    seed=seed,
                )
                if not ok:
                    scores.append({"elbo": float("-inf"), "kl": float("inf"), "khat": float("inf")})
                    continue
                scores.append(evaluate(model, guide, params, log_z, eval_particles, seed + 10))
            row["recipes"][recipe] = {
                key: statistics.median(s[key] for s in scores)
                if scores[0][key] is not None
                else None
                for key in ("elbo", "kl", "khat")
            } | {"per_seed": scores}
            r = row["recipes"][recipe]
            print(
                f"{model_name:24s} {name:32s} {recipe:11s} steps {steps:6d} "
                f"ELBO {r['elbo']:9.3f} KL {r['kl'] if r['kl'] is not None else float('nan'):7.3f} "
                f"k-hat {r['khat']:.2f}",
                flush=True,
            )
        out["guides"][name] = row
    return out


# The guides scored by default: ours, NumPyro's flows and mean-field, and FlowJAX's
# affine MAF and spline coupling flow when installed (``--guides`` for others).
DEFAULT_GUIDES = [
    "AutoIAF",
    "AutoRealNVP",
    "AutoNeuralSpline",
    "AutoNeuralSpline(coupling)",
    "numpyro.AutoDiagonalNormal",
    "numpyro.AutoIAFNormal",
    "numpyro.AutoBNAFNormal",
    "flowjax.MAF(affine)",
    "flowjax.coupling(spline)",
]


def run(quick: bool = False, models=None, guide_names=None) -> dict:
    # FlowJAX's guides are there only when FlowJAX is installed: drop missing defaults.
    guide_names = guide_names or [g for g in DEFAULT_GUIDES if g in all_guides()]
    # By default the two targets with a known normaliser, where the KL is exact.
    models = models or ["funnel10", "dual_moon"]
    budget_steps = 2000 if quick else 10_000
    seeds = (0,) if quick else (0, 1)
    result = {
        "budget": f"NumPyro AutoIAFNormal, {budget_steps} steps, {PARTICLES} particles",
        "models": {
            m: run_model(m, guide_names, budget_steps, seeds, 2000 if quick else 10_000)
            for m in models
        },
    }
    write_json("quality", result)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="*", choices=list(MODELS))
    parser.add_argument("--guides", nargs="*", choices=list(all_guides()))
    args = parser.parse_args(argv)
    run(args.quick, args.models, args.guides)


if __name__ == "__main__":
    main()
