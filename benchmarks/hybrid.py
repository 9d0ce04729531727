"""``AutoHybridFlow`` on hierarchical models whose groups are subsampled (issue 15).

Three checks, side by side in one run (seeds 0 and 1 unless ``--seeds``; medians):

1. **Small models against NUTS** (50 groups, 5 observations each; 16 groups per step):
   a centred normal-normal model and a Poisson model with a log-rate per group. The
   reference is NUTS on the full-data model (4 chains x (1000 warmup + 2500 draws), its
   r-hat, bulk ESS and divergences reported). ``AutoHybridFlow`` and NumPyro's
   ``AutoNormal`` are fitted under one schedule (``SCHEDULE``, 20 000 steps, 8 particles);
   from 20 000 draws of each guide: the largest ``|mean - NUTS mean| / NUTS sd`` and
   ``|sd / NUTS sd - 1|`` over the globals (mu, tau) and over the locals (every group's
   theta). A split-half row (NUTS chains 1-2 against chains 3-4) shows the Monte Carlo
   noise of such a maximum.
2. **100 000 groups, 512 rows per step** (normal-normal, 4 observations per group):
   (a) the number of guide parameters at 10^3, 10^4 and 10^5 groups; (c) the step time of
   ``jax.jit(svi.update)`` per row, interleaved rounds, medians, at 1 and 8 particles;
   (b) the ELBO per group after equal wall budgets (``--budget`` seconds from constructing
   the guide, set-up and compilation included): each fit plans ``(budget - set-up) / step``
   steps of the schedule from the costs measured in (c) and stops early if the budget runs
   out. The ELBO is estimated on the training groups and on held-out groups (new groups
   from the same process): ours is the trained guide called on the held-out data (its
   plates follow the data; no training there); ``AutoNormal``, which has no parameters for new
   groups, gets a fresh fit on the held-out data under the same budget. The estimate
   averages ``-Trace_ELBO(16).loss`` over minibatches of 512 that partition a random
   permutation of the groups (the same minibatches for every guide), divided by the number
   of groups: unbiased, as every group has the same chance to be in. The reference above
   it is the log-likelihood per group at the maximum-likelihood globals, an upper bound of
   ``log p(y) / G`` and so of any ELBO.
3. **Data parallel**: :func:`numpyro_flows.distributed.data_parallel_svi` on 8 simulated
   CPU devices (a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``)
   against ``jax.jit(svi.update)`` on one device, a few steps of ``AutoHybridFlow`` on a
   model whose plate takes minibatch arrays: the largest absolute difference of the
   parameters and of the losses, with the plate drawing its rows and with the rows given
   (``subsample_plate=``).

    python -m benchmarks.hybrid [--quick] [--seeds 0 1] [--budget 60] [--parts ...]

Writes ``benchmarks/results/hybrid.json``; ``python -m benchmarks --report-only`` renders it.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.diagnostics import summary
from numpyro.handlers import seed as seed_handler
from numpyro.handlers import substitute, trace
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from benchmarks.common import fit_svi, read_json, write_json
from numpyro_flows import AutoHybridFlow
from numpyro_flows import hybrid as hybrid_module

GUIDES = {"AutoHybridFlow": AutoHybridFlow, "numpyro.AutoNormal": AutoNormal}
SCHEDULE = "clip_by_global_norm(10), Adam 3e-3 cosine-decayed to 3e-5 over the planned steps"
PLATE, GLOBAL_SITES, LOCAL_SITES = "groups", ("mu", "tau"), ("theta",)
ERRORS = ("globals_mean", "globals_sd", "locals_mean", "locals_sd")
PARTS = ("small", "large", "data_parallel")

# Part 1: small models, NUTS feasible.
SMALL = {"groups": 50, "obs": 5, "batch": 16, "steps": 20_000, "particles": 8, "draws": 20_000}
SMALL_QUICK = {**SMALL, "steps": 1_000, "draws": 2_000}
NUTS_RUN = {"chains": 4, "warmup": 1000, "samples": 2500}
NUTS_QUICK = {"chains": 2, "warmup": 150, "samples": 200}
TOLERANCE = 0.1

# Part 2: many groups, subsampled.
LARGE = {
    "groups": 100_000,
    "obs": 4,
    "batch": 512,
    "particles": 1,  # of the fits; the step time is measured at each timing_particles
    "eval_particles": 16,
    "count_sizes": (1_000, 10_000, 100_000),
    "timing_particles": (1, 8),
    "rounds": 7,
    "steps_per_round": 50,
}
LARGE_QUICK = {
    **LARGE,
    "groups": 10_000,
    "eval_particles": 4,
    "count_sizes": (1_000, 10_000),
    "timing_particles": (1,),
    "rounds": 2,
    "steps_per_round": 20,
}

# Part 3: data parallel.
DP = {"devices": 8, "groups": 1024, "batch": 64, "steps": 5, "particles": 8}


# ---------------------------------------------------------------------- models and data
def normal_groups(y, subsample):
    """Centred normal-normal: ``theta_i ~ N(mu, tau)``, ``y_ij ~ N(theta_i, 1)``."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    with numpyro.plate(PLATE, y.shape[0], subsample_size=subsample) as idx:
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta[:, None], 1.0).to_event(1), obs=y[idx])


def poisson_groups(y, subsample):
    """Counts with a log-rate per group: ``theta_i ~ N(mu, tau)``, ``y_ij ~ Poisson(e^theta_i)``."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    with numpyro.plate(PLATE, y.shape[0], subsample_size=subsample) as idx:
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Poisson(jnp.exp(theta)[:, None]).to_event(1), obs=y[idx])


def normal_data(groups: int, obs: int, seed: int) -> jnp.ndarray:
    """``(groups, obs)`` from ``theta_i ~ N(1, 1)``, ``y_ij ~ N(theta_i, 1)``."""
    rng = np.random.default_rng(seed)
    theta = 1.0 + rng.normal(size=groups)
    return jnp.asarray(theta[:, None] + rng.normal(size=(groups, obs)), jnp.float32)


def poisson_data(groups: int, obs: int, seed: int) -> jnp.ndarray:
    """``(groups, obs)`` counts from ``theta_i ~ N(0.5, 0.7)``, ``y_ij ~ Poisson(e^theta_i)``."""
    rng = np.random.default_rng(seed)
    theta = 0.5 + 0.7 * rng.normal(size=groups)
    return jnp.asarray(rng.poisson(np.exp(theta)[:, None], (groups, obs)), jnp.float32)


SMALL_MODELS = {
    "normal-normal (centred)": (normal_groups, normal_data),
    "Poisson log-rate": (poisson_groups, poisson_data),
}


def batched(model, size: int):
    """The model with its plate subsampled to ``size`` rows (static, so it jits)."""
    return functools.partial(model, subsample=size)


def optimizer(steps: int):
    """The one schedule of every fit (``SCHEDULE``)."""
    decay = optax.cosine_decay_schedule(3e-3, max(steps, 1), 0.01)
    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(decay))


def count_params(params: dict) -> int:
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))


# ---------------------------------------------------------------------- part 1: vs NUTS
def nuts_reference(model, y, seed: int, run: dict) -> tuple[dict, dict]:
    """Draws ``{site: (chains, draws, ...)}`` of NUTS on the full data, and diagnostics."""
    mcmc = MCMC(
        NUTS(batched(model, len(y))),
        num_warmup=run["warmup"],
        num_samples=run["samples"],
        num_chains=run["chains"],
        chain_method="vectorized",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.key(seed), y, extra_fields=("diverging",))
    seconds = time.perf_counter() - start
    draws = {k: np.asarray(v, np.float64) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    stats = summary(draws)
    diagnostics = {
        "max_rhat": max(float(np.max(s["r_hat"])) for s in stats.values()),
        "min_bulk_ess": min(float(np.min(s["n_eff"])) for s in stats.values()),
        "divergences": int(np.sum(mcmc.get_extra_fields()["diverging"])),
        "seconds": seconds,
        **run,
    }
    return draws, diagnostics


def moments(draws: dict) -> dict:
    """``{site: (mean, sd)}`` over the leading (draw) axis."""
    return {k: (np.mean(v, 0), np.std(v, 0)) for k, v in draws.items()}


def moment_errors(draws: dict, reference: dict) -> dict:
    """Largest ``|mean - ref mean| / ref sd`` and ``|sd / ref sd - 1|``, globals and locals."""
    ours, ref = moments(draws), moments(reference)
    out = {}
    for kind, sites in (("globals", GLOBAL_SITES), ("locals", LOCAL_SITES)):
        mean_error = max(float(np.max(np.abs(ours[s][0] - ref[s][0]) / ref[s][1])) for s in sites)
        sd_error = max(float(np.max(np.abs(ours[s][1] / ref[s][1] - 1.0))) for s in sites)
        out[f"{kind}_mean"], out[f"{kind}_sd"] = mean_error, sd_error
    return out


def split_half_errors(chains: dict) -> dict:
    """The same measures between two halves of the NUTS chains: the noise of a maximum."""
    half = next(iter(chains.values())).shape[0] // 2
    first = {k: v[:half].reshape(-1, *v.shape[2:]) for k, v in chains.items()}
    second = {k: v[half:].reshape(-1, *v.shape[2:]) for k, v in chains.items()}
    return moment_errors(first, second)


def guide_draws(guide, params, y, seed: int, num: int) -> dict:
    key = jax.random.key(seed)
    if isinstance(guide, AutoHybridFlow):
        rows = jnp.arange(len(y))
        draws = guide.sample_posterior(key, params, y, sample_shape=(num,), rows=rows)
    else:
        draws = guide.sample_posterior(key, params, y, sample_shape=(num,))
    return {k: np.asarray(v, np.float64) for k, v in draws.items()}


def fit_small(model, name: str, y, seed: int, setting: dict) -> tuple[dict, dict]:
    """One guide fitted under the schedule; its moment errors come from its draws."""
    model = batched(model, setting["batch"])
    start = time.perf_counter()
    guide = GUIDES[name](model)
    params, losses, _, ok = fit_svi(
        model,
        guide,
        steps=setting["steps"],
        optimizer=optimizer(setting["steps"]),
        particles=setting["particles"],
        seed=seed,
        model_kwargs={"y": y},
    )
    seconds = time.perf_counter() - start
    draws = guide_draws(guide, params, y, seed + 100, setting["draws"]) if ok else None
    return draws, {"seconds": seconds, "finite": bool(ok), "final_loss": float(losses[-1])}


def median_errors(per_seed: list[dict]) -> dict:
    keys = [k for k in per_seed[0] if isinstance(per_seed[0][k], float)]
    return {k: statistics.median(r[k] for r in per_seed) for k in keys}


def small_model_block(model_name: str, seeds, setting: dict, nuts_run: dict) -> dict:
    model, make_data = SMALL_MODELS[model_name]
    y = make_data(setting["groups"], setting["obs"], 0)
    chains, diagnostics = nuts_reference(model, y, 0, nuts_run)
    reference = {k: v.reshape(-1, *v.shape[2:]) for k, v in chains.items()}
    print(f"{model_name}: NUTS {diagnostics}", flush=True)
    block = {"nuts": diagnostics, "split_half_nuts": split_half_errors(chains), "guides": {}}
    for name in GUIDES:
        per_seed = []
        for seed in seeds:
            draws, info = fit_small(model, name, y, seed, setting)
            errors = moment_errors(draws, reference) if draws else dict.fromkeys(ERRORS, np.inf)
            per_seed.append({**errors, **info, "seed": seed})
            print(f"{model_name:24s} {name:20s} seed {seed} {per_seed[-1]}", flush=True)
        block["guides"][name] = {**median_errors(per_seed), "per_seed": per_seed}
    return block


def small_part(seeds, quick: bool) -> dict:
    setting = SMALL_QUICK if quick else SMALL
    nuts_run = NUTS_QUICK if quick else NUTS_RUN
    names = list(SMALL_MODELS)[:1] if quick else list(SMALL_MODELS)
    models = {name: small_model_block(name, seeds, setting, nuts_run) for name in names}
    return {"setting": setting, "tolerance": TOLERANCE, "models": models}


# ---------------------------------------------------------------------- part 2: 10^5 groups
def make_svi(name: str, model, steps: int, particles: int) -> SVI:
    return SVI(model, GUIDES[name](model), optimizer(steps), Trace_ELBO(particles))


def param_counts(setting: dict) -> dict:
    """Parameters of each guide, set up on data with each number of groups."""
    model = batched(normal_groups, setting["batch"])
    out = {}
    for groups in setting["count_sizes"]:
        y = normal_data(groups, setting["obs"], 0)
        row = {}
        for name in GUIDES:
            svi = make_svi(name, model, 1, 1)
            params = svi.get_params(svi.init(jax.random.key(0), y))
            row[name] = count_params(params)
            if name == "AutoHybridFlow":  # the guide's own count must agree with the tree
                row["AutoHybridFlow.num_params"] = svi.guide.num_params(params)
        out[str(groups)] = row
        print(f"parameters at {groups} groups: {row}", flush=True)
    return out


def compiled_step(name: str, model, y, particles: int, seed: int = 0):
    """Set-up + first jitted step (seconds), the jitted update and its state."""
    start = time.perf_counter()
    svi = make_svi(name, model, 10_000, particles)
    state = svi.init(jax.random.key(seed), y)
    update = jax.jit(svi.update)
    state, loss = update(state, y)
    jax.block_until_ready(loss)
    return time.perf_counter() - start, update, state


def timed_steps(update, state, y, steps: int) -> float:
    """Mean seconds per step over ``steps`` calls (after the first, compiled one)."""
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = update(state, y)
    jax.block_until_ready(loss)
    return (time.perf_counter() - start) / steps


def step_costs(y, setting: dict, particles: int, rounds: int, steps: int) -> dict:
    """Set-up + compile and median step time of each guide, interleaved rounds."""
    model = batched(normal_groups, setting["batch"])
    compiled = {name: compiled_step(name, model, y, particles) for name in GUIDES}
    times = {name: [] for name in GUIDES}
    for _ in range(rounds):
        for name, (_, update, state) in compiled.items():
            times[name].append(timed_steps(update, state, y, steps))
    ours, theirs = (np.asarray(times[name]) for name in GUIDES)
    out = {
        name: {
            "setup_compile_s": compiled[name][0],
            "step_ms": 1e3 * statistics.median(times[name]),
            "per_row_us": 1e6 * statistics.median(times[name]) / setting["batch"],
        }
        for name in GUIDES
    }
    out["ratio"] = float(np.median(ours / theirs))  # per round, then the median
    out["rounds"], out["steps_per_round"] = rounds, steps
    print(f"step costs, {particles} particle(s): {out}", flush=True)
    return out


def planned_steps(cost: dict, budget: float) -> int:
    return max(int((budget - cost["setup_compile_s"]) / (cost["step_ms"] * 1e-3)), 1)


def fit_for_budget(name: str, y, setting: dict, budget: float, steps: int, seed: int):
    """Trains from a fresh guide until ``steps`` are done or ``budget`` seconds have passed
    (set-up and compilation included); returns the guide, its params and what happened."""
    start = time.perf_counter()
    model = batched(normal_groups, setting["batch"])
    svi = make_svi(name, model, steps, setting["particles"])
    state = svi.init(jax.random.key(seed), y)
    update = jax.jit(svi.update)
    done, loss = 0, None
    while done < steps:
        state, loss = update(state, y)
        done += 1
        if done == 1 or done % 25 == 0:  # a sync every few steps keeps dispatch ahead
            jax.block_until_ready(loss)
            if time.perf_counter() - start >= budget:
                break
    loss = float(loss)
    info = {
        "steps": done,
        "planned_steps": steps,
        "seconds": time.perf_counter() - start,
        "final_loss": loss,
        "finite": bool(np.isfinite(loss)),
    }
    return svi.guide, svi.get_params(state), info


def elbo_per_group(guide, params, y, setting: dict, seed: int) -> dict:
    """``-Trace_ELBO(16).loss`` averaged over minibatches that partition a random
    permutation of the groups (a remainder of under one minibatch left out at random),
    divided by the number of groups; with the between-minibatch standard error."""
    groups, batch = y.shape[0], setting["batch"]
    order = np.random.default_rng(seed).permutation(groups)
    minibatches = jnp.asarray(order[: groups // batch * batch].reshape(-1, batch))
    keys = jax.random.split(jax.random.key(seed), len(minibatches))
    model = batched(normal_groups, batch)
    elbo = Trace_ELBO(num_particles=setting["eval_particles"])

    def loss(args):
        key, idx = args
        rows = {PLATE: idx}  # the same rows in the model and the guide
        return elbo.loss(key, params, substitute(model, data=rows), substitute(guide, data=rows), y)

    losses = np.asarray(jax.jit(lambda k, i: jax.lax.map(loss, (k, i)))(keys, minibatches))
    values = -losses / groups
    return {
        "elbo": float(np.mean(values)),
        "se": float(np.std(values, ddof=1) / np.sqrt(len(values))),
        "minibatches": len(values),
    }


def normal_log_likelihood_bound(y) -> float:
    """Log-likelihood per group at the maximum-likelihood (mu, tau) of the normal-normal
    model: ``y_i ~ N(mu 1, I + tau^2 1 1^T)``. It bounds ``log p(y) / G`` from above
    (``p(y) = E_prior p(y | g) <= max_g p(y | g)``), and so every ELBO."""
    y = np.asarray(y, np.float64)
    n = y.shape[1]
    means = y.mean(1)
    within = ((y - means[:, None]) ** 2).sum(1)
    mu = means.mean()
    spread = max(n * np.mean((means - mu) ** 2), 1.0)  # 1 + n tau^2 at its maximum
    log_lik = (
        -0.5 * n * np.log(2 * np.pi)
        - 0.5 * np.log(spread)
        - 0.5 * within
        - 0.5 * n * (means - mu) ** 2 / spread
    )
    return float(np.mean(log_lik))


def transfer_guide(params, y_heldout, seed: int) -> tuple[AutoHybridFlow, dict]:
    """A new ``AutoHybridFlow`` set up on the held-out data, and whether the trained
    parameters have its names and shapes (they do not depend on the data)."""
    model = batched(normal_groups, LARGE["batch"])
    guide = AutoHybridFlow(model)
    fresh = trace(seed_handler(guide, seed)).get_trace(y_heldout)
    fresh_params = {k: v["value"] for k, v in fresh.items() if v["type"] == "param"}
    shapes = jax.tree.map(jnp.shape, fresh_params) == jax.tree.map(jnp.shape, params)
    return guide, {"same_names_and_shapes": bool(shapes)}


def large_seed_row(y, y_heldout, setting: dict, budget: float, plans: dict, seed: int) -> dict:
    row = {}
    for name in GUIDES:
        guide, params, info = fit_for_budget(name, y, setting, budget, plans[name], seed)
        train = elbo_per_group(guide, params, y, setting, 1000 + seed)
        row[name] = {"fit": info, "train": train}
        if name == "AutoHybridFlow":
            # The trained guide on new groups: its plates follow the data, nothing trains.
            _, check = transfer_guide(params, y_heldout, seed)
            row[name]["heldout"] = elbo_per_group(guide, params, y_heldout, setting, 2000)
            row[name]["transfer_check"] = check
        else:
            guide, params, info = fit_for_budget(
                name, y_heldout, setting, budget, plans[name], seed
            )
            row[name]["heldout_fit"] = info
            row[name]["heldout"] = elbo_per_group(guide, params, y_heldout, setting, 2000)
        print(f"budget {budget:.0f} s, seed {seed}, {name}: {row[name]}", flush=True)
    return row


def large_part(seeds, quick: bool, budget: float) -> dict:
    setting = LARGE_QUICK if quick else LARGE
    y = normal_data(setting["groups"], setting["obs"], 0)
    y_heldout = normal_data(setting["groups"], setting["obs"], 1)
    counts = param_counts(setting)
    rounds, steps = setting["rounds"], setting["steps_per_round"]
    costs = {str(p): step_costs(y, setting, p, rounds, steps) for p in setting["timing_particles"]}
    train_cost = costs[str(setting["particles"])]
    plans = {name: planned_steps(train_cost[name], budget) for name in GUIDES}
    per_seed = [large_seed_row(y, y_heldout, setting, budget, plans, s) for s in seeds]
    return {
        "setting": setting,
        "budget_s": budget,
        "param_counts": counts,
        "step_costs": costs,
        "planned_steps": plans,
        "log_likelihood_bound": {
            "train": normal_log_likelihood_bound(y),
            "heldout": normal_log_likelihood_bound(y_heldout),
        },
        "summary": large_summary(per_seed),
        "per_seed": per_seed,
    }


def large_summary(per_seed: list[dict]) -> dict:
    """Medians over seeds of the ELBOs and the fits' steps and seconds."""
    out = {}
    for name in GUIDES:
        rows = [r[name] for r in per_seed]
        out[name] = {
            "train_elbo": statistics.median(r["train"]["elbo"] for r in rows),
            "heldout_elbo": statistics.median(r["heldout"]["elbo"] for r in rows),
            "steps": statistics.median(r["fit"]["steps"] for r in rows),
            "seconds": statistics.median(r["fit"]["seconds"] for r in rows),
        }
    return out


# ---------------------------------------------------------------------- part 3: data parallel
def minibatch_model(y):
    """The normal-normal model fed minibatch rows: the plate is ``DP["groups"]`` long and
    subsampled to the minibatch, so the likelihood is scaled by ``N / B``."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    with numpyro.plate(PLATE, DP["groups"], subsample_size=y.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta[:, None], 1.0).to_event(1), obs=y)


def with_rows(svi: SVI, idx) -> SVI:
    """``svi`` with ``idx`` substituted for the plate's random draw (as data_parallel_svi
    does with ``subsample_plate``), for the single-device reference."""
    local = copy.copy(svi)
    local.model = substitute(svi.model, data={PLATE: idx})
    local.guide = substitute(svi.guide, data={PLATE: idx})
    return local


def max_differences(losses, params, ref_losses, ref_params) -> dict:
    """Largest absolute parameter difference; largest absolute and relative loss
    difference (a float32 loss of 10^4 has steps of 10^-3, so the loss is compared
    relative to its size)."""
    leaves = zip(jax.tree.leaves(params), jax.tree.leaves(ref_params))
    loss_diff = np.abs(np.asarray(losses) - ref_losses)
    return {
        "max_abs_param_diff": max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in leaves),
        "max_abs_loss_diff": float(np.max(loss_diff)),
        "max_rel_loss_diff": float(np.max(loss_diff / np.abs(ref_losses))),
    }


def single_device_run(svi, state, batches, rows=None):
    """The reference: ``jax.jit(svi.update)`` on one device, nothing sharded (with
    ``rows``, each step's rows substituted for the plate's draw)."""

    def step(state, y, idx):
        return (svi if idx is None else with_rows(svi, idx)).update(state, y)

    update = jax.jit(step)
    losses = []
    for k, y in enumerate(batches):
        state, loss = update(state, y, None if rows is None else rows[k])
        losses.append(float(loss))
    return np.array(losses), svi.get_params(state)


def data_parallel_worker(quick: bool = False) -> dict:
    from numpyro_flows.distributed import data_parallel_svi, make_mesh, replicate

    assert jax.device_count() == DP["devices"], jax.devices()
    rng = np.random.default_rng(0)
    y_all = np.asarray(normal_data(DP["groups"], SMALL["obs"], 0))
    rows = np.stack(
        [rng.choice(DP["groups"], DP["batch"], replace=False) for _ in range(DP["steps"])]
    )
    batches = [y_all[r] for r in rows]
    out = {}
    for given_rows in (False,) if quick else (False, True):
        svi = make_svi("AutoHybridFlow", minibatch_model, DP["steps"], DP["particles"])
        first = with_rows(svi, jnp.asarray(rows[0])) if given_rows else svi
        state0 = first.init(jax.random.key(0), batches[0])
        svi.constrain_fn = first.constrain_fn  # SVI.init sets it on the copy
        ref_losses, ref_params = single_device_run(
            svi, state0, batches, jnp.asarray(rows) if given_rows else None
        )
        plate = PLATE if given_rows else None
        dp = data_parallel_svi(svi, make_mesh(DP["devices"]), subsample_plate=plate)
        state, losses = replicate(state0, dp.mesh), []
        for k, y in enumerate(batches):
            state, loss = dp.update(state, y, indices=rows[k] if given_rows else None)
            losses.append(float(loss))
        key = "rows given (subsample_plate)" if given_rows else "plate draws its rows"
        out[key] = max_differences(losses, dp.get_params(state), ref_losses, ref_params)
    return out


def data_parallel_part(quick: bool) -> dict:
    """Runs :func:`data_parallel_worker` in a fresh process with 8 simulated devices."""
    flags = os.environ.get("XLA_FLAGS", "")
    root = Path(__file__).resolve().parent.parent
    env = dict(
        os.environ,
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={DP['devices']}".strip(),
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    )
    command = [sys.executable, "-m", "benchmarks.hybrid", "--data-parallel-worker"]
    command += ["--quick"] if quick else []
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root)
    seconds = time.perf_counter() - start
    if result.returncode:
        error = (result.stderr or result.stdout).strip().splitlines()[-20:]
        print("data-parallel check failed:\n" + "\n".join(error), flush=True)
        return {"setting": DP, "error": "\n".join(error), "seconds": seconds}
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    worst = max(max(r["max_abs_param_diff"], r["max_rel_loss_diff"]) for r in rows.values())
    print(f"data-parallel check: {rows}", flush=True)
    return {"setting": DP, "results": rows, "passes_1e-5": worst <= 1e-5, "seconds": seconds}


# ---------------------------------------------------------------------- driver
def source_digest() -> str:
    """Short SHA-256 of ``numpyro_flows/hybrid.py``: which version of the guide ran."""
    return hashlib.sha256(Path(hybrid_module.__file__).read_bytes()).hexdigest()[:12]


def run(quick: bool, seeds, budget: float, parts) -> dict:
    previous = read_json("hybrid") or {}
    result = {k: v for k, v in previous.items() if k != "machine"}
    result["schedule"] = SCHEDULE
    with warnings.catch_warnings():
        # Given rows differ in number from subsample_size when drawing every group.
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        for part in parts:
            start = time.perf_counter()
            if part == "small":
                result["small"] = small_part(seeds, quick)
            elif part == "large":
                result["large"] = large_part(seeds, quick, budget)
            else:
                result["data_parallel"] = data_parallel_part(quick)
            result[part].update(
                part_seconds=time.perf_counter() - start,
                quick=quick,
                seeds=list(seeds),
                hybrid_py_sha256=source_digest(),
            )
            write_json("hybrid", result)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small budgets")
    parser.add_argument("--seeds", type=int, nargs="+", help="default 0 1 (quick: 0)")
    parser.add_argument("--budget", type=float, help="wall seconds per fit (default 60; quick 5)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--data-parallel-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.data_parallel_worker:
        print(json.dumps(data_parallel_worker(args.quick)))
        return
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    budget = args.budget or (5.0 if args.quick else 60.0)
    run(args.quick, seeds, budget, args.parts)


if __name__ == "__main__":
    main()
