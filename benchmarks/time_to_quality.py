"""Time to quality: KL(q||p) on the 10-D funnel at equal wall budgets *including* set-up
and compile, under one schedule for every guide (both schedules shown), and what long runs
do to each guide.

For each wall budget ``B`` and guide: the set-up + first-step time ``c`` (a new guide of a
kind already used in this process, as in a notebook) and the median step time ``s`` are
measured, and the guide trains ``(B - c) / s`` steps (8 particles) with constant Adam 3e-3
and with Adam 3e-3 cosine-decayed to 3e-5 over those steps; two seeds, medians. The long
runs train NumPyro's ``AutoIAFNormal`` and our ``AutoIAF`` (the same architecture) for
many steps under both schedules and report the final KL, or where the loss stopped being
finite.

    python -m benchmarks.time_to_quality [--quick]
"""

from __future__ import annotations

import argparse
import statistics

import jax
import numpy as np
import optax
from numpyro.infer import Trace_ELBO

from benchmarks.common import cosine_adam, fit_svi, write_json
from benchmarks.guides import all_guides
from benchmarks.models import MODELS
from benchmarks.speed import first_step_seconds, step_microseconds

PARTICLES = 8
MODEL = "funnel10"  # normalised: KL(q||p) = -ELBO
GUIDES = ("AutoIAF", "AutoNeuralSpline", "numpyro.AutoIAFNormal", "numpyro.AutoMultivariateNormal")
LONG_RUN_GUIDES = ("AutoIAF", "numpyro.AutoIAFNormal")
SCHEDULES = {
    "constant Adam 3e-3": lambda steps: optax.adam(3e-3),
    "cosine 3e-3 to 3e-5": lambda steps: cosine_adam(3e-3, 3e-5, steps),
}


def kl(model, guide, params, seed: int, particles: int = 10_000) -> float:
    loss = Trace_ELBO(num_particles=particles).loss(jax.random.key(seed), params, model, guide)
    return float(loss)


def costs(model, names) -> dict:
    """Set-up + compile (second use of the guide kind) and median step time, per guide."""
    guides = all_guides()
    out = {}
    for name in names:
        first_step_seconds(model, guides[name])  # first use in the process: JAX warm-up
        seconds, update, state = first_step_seconds(model, guides[name])
        steps = [step_microseconds(update, state, 300) for _ in range(3)]
        out[name] = {"setup_compile_s": seconds, "step_us": statistics.median(steps)}
        print(f"{name:32s} set-up + compile {seconds:.2f} s, step {out[name]['step_us']:.0f} us")
    return out


def budget_row(model, name, cost, budget, seeds) -> dict:
    steps = max(int((budget - cost["setup_compile_s"]) / (cost["step_us"] * 1e-6)), 0)
    row = {"steps": steps}
    for schedule, make in SCHEDULES.items():
        values = []
        for seed in seeds:
            guide = all_guides()[name](model)
            if steps == 0:
                values.append(float("nan"))
                continue
            params, _, _, ok = fit_svi(
                model, guide, steps=steps, optimizer=make(steps), particles=PARTICLES, seed=seed
            )
            values.append(kl(model, guide, params, seed + 10) if ok else float("inf"))
        row[schedule] = {"kl": statistics.median(values), "per_seed": values}
        print(f"budget {budget:5.1f} s {name:32s} {schedule:20s} steps {steps:7d} KL {values}")
    return row


def long_run(model, name, steps, seed) -> dict:
    out = {}
    for schedule, make in SCHEDULES.items():
        guide = all_guides()[name](model)
        params, losses, seconds, ok = fit_svi(
            model, guide, steps=steps, optimizer=make(steps), particles=PARTICLES, seed=seed
        )
        finite = np.isfinite(losses)
        first_bad = None if ok else int(np.argmin(finite))
        value = kl(model, guide, params, seed + 10) if ok else None
        out[schedule] = {"steps": steps, "kl": value, "first_non_finite_step": first_bad}
        print(f"long run {name} {schedule}, {steps} steps: KL {value}, non-finite at {first_bad}")
    return out


def run(quick: bool = False) -> dict:
    model = MODELS[MODEL][0]
    budgets = (4.0,) if quick else (4.0, 12.0)
    seeds = (0,) if quick else (0, 1)
    long_steps = 20_000 if quick else 200_000
    cost = costs(model, GUIDES)
    result = {
        "model": MODEL,
        "particles": PARTICLES,
        "costs": cost,
        "budgets": {
            str(b): {name: budget_row(model, name, cost[name], b, seeds) for name in GUIDES}
            for b in budgets
        },
        "long_runs": {name: long_run(model, name, long_steps, 0) for name in LONG_RUN_GUIDES},
    }
    write_json("time_to_quality", result)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
