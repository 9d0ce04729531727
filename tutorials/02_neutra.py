# %% [markdown]
# # NeuTra HMC on eight schools (centred)
#
# The centred eight-schools model is the textbook case of a funnel in a real model:
# when the between-school scale `tau` is small, every school effect `theta` is pinned
# to `mu`, and NUTS needs a tiny step size there and a large one elsewhere. It reports
# divergences and mixes slowly in `tau`. The usual cure is to rewrite the model
# (non-centring). NeuTra (Hoffman et al. 2019) leaves the model alone: train a flow
# guide `x = T(z)`, then run NUTS on `z`, where the posterior is close to a standard
# normal, and map the draws back through `T`. The chain still targets the exact
# posterior; the guide only changes the geometry NUTS sees.
#
# `numpyro_flows.neutra_nuts` does this in one call and returns draws of the model's
# own sites. We compare it with plain NUTS: trace plots, effective sample size (ESS)
# per gradient evaluation, and divergences.
#
# Run it as a script (`python tutorials/02_neutra.py`, add `--fast` for a smoke run) or
# open it as a notebook with jupytext.

# %%
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import arviz as az
import jax
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

from numpyro_flows import fit_guide, neutra_nuts, to_inference_data
from numpyro_flows.reports import RunReportWarning

# --fast (or NUMPYRO_FLOWS_FAST=1): tiny step counts, figures to a temporary directory.
FAST = "--fast" in sys.argv or os.environ.get("NUMPYRO_FLOWS_FAST") == "1"
if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
IMG = Path(tempfile.mkdtemp()) if FAST else HERE.parent / "docs" / "tutorials" / "img"
IMG.mkdir(parents=True, exist_ok=True)

FIT = {"max_steps": 600, "num_particles": 4} if FAST else {}  # fit_guide: its defaults
NUM_WARMUP, NUM_SAMPLES, NUM_CHAINS = (50, 50, 2) if FAST else (1000, 1000, 4)

# %% [markdown]
# ## The model

# %%
SCHOOLS = [
    "Choate",
    "Deerfield",
    "Phillips Andover",
    "Phillips Exeter",
    "Hotchkiss",
    "Lawrenceville",
    "St. Paul's",
    "Mt. Hermon",
]
y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(y, sigma):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(y)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


# %% [markdown]
# ## Plain NUTS
#
# Four chains, NumPyro's defaults. We keep the number of leapfrog steps of every draw
# (`num_steps`, one gradient each) and the divergence flags.

# %%
mcmc = MCMC(
    NUTS(eight_schools),
    num_warmup=NUM_WARMUP,
    num_samples=NUM_SAMPLES,
    num_chains=NUM_CHAINS,
    chain_method="vectorized",
    progress_bar=not FAST,
)
start = time.perf_counter()
mcmc.run(jax.random.key(0), y, sigma, extra_fields=("diverging", "num_steps"))
nuts_seconds = time.perf_counter() - start
nuts_stats = mcmc.get_extra_fields(group_by_chain=True)
nuts_idata = az.from_numpyro(
    mcmc, coords={"school": SCHOOLS}, dims={"theta": ["school"]}, log_likelihood=False
)

# %% [markdown]
# ## One call to fit the guide, one to run NeuTra-NUTS
#
# `fit_guide` is the recommended way to train a flow guide: it picks the guide (an IAF
# behind a full affine layer), the optimiser and a schedule driven by the loss (the
# learning rate drops when the loss stops improving, and training stops after three
# drops), and checks the fit with PSIS k-hat at the end.
#
# It also looks at the model. `theta ~ Normal(mu, tau)` with `mu` and `tau` latent is a
# *hierarchical location-scale site*, and the reason for the funnel. `fit_guide`
# rewrites it as `theta = mu + tau^(1-c) (theta_decentered - c mu)` with a degree of
# centring `c` learned along with the guide (Gorinova et al. 2020's variationally
# inferred parameterisation, `numpyro.infer.reparam.LocScaleReparam`), starting close
# to non-centred. A flow alone cannot follow the neck all the way down: its scales are
# bounded and its networks saturate where it has seen no draws, so without this NeuTra
# keeps a funnel in the warped space and diverges there (the NeuTra section of
# `benchmarks/RESULTS.md` has both side by side). `theta` stays in the model as a
# deterministic site, so the draws below are of the model's own sites.
#
# `neutra_nuts` then runs NUTS in the space the guide warps, at its defaults (target
# acceptance 0.9), and warns, naming the fix, when its run report finds divergences,
# an r-hat above 1.01 or too few effective draws. With `--fast` the budgets are tiny and
# the warnings are expected, so we show them as messages.

# %%
with warnings.catch_warnings():
    warnings.simplefilter("always", RunReportWarning)
    fit = fit_guide(jax.random.key(1), eight_schools, y, sigma, progress_bar=not FAST, **FIT)
    print(fit)
    print("learned centring of theta:", float(fit.params["theta_centered"]))
    start = time.perf_counter()
    result = neutra_nuts(
        jax.random.key(2),
        fit.guide,
        fit.params,
        y,
        sigma,
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="vectorized",
        progress_bar=not FAST,
    )
    neutra_seconds = time.perf_counter() - start
print(result.summary())

# %% [markdown]
# `result.samples` holds `mu`, `tau` and `theta` by chain, the sites of the model
# (not the flow's internal latent), and `to_inference_data` turns the run into an
# ArviZ `InferenceData` with NUTS's sample statistics and the `school` dimension.

# %%
neutra_idata = to_inference_data(result, coords={"school": SCHOOLS}, log_likelihood=False)
print({name: value.shape for name, value in result.samples.items()})

# %% [markdown]
# ## ESS per gradient and divergences
#
# The cost of NUTS is the number of gradient evaluations; the yield is the effective
# sample size of the worst-mixing quantity (here `tau`). NeuTra's gradients are a
# little dearer (each goes through the flow), but what matters is how many it needs.


# %%
def min_bulk_ess(idata):
    ess = az.ess(idata, var_names=["mu", "tau", "theta"], method="bulk")
    return min(float(ess[name].min()) for name in ess.data_vars)


rows = {
    "NUTS": (nuts_idata, np.asarray(nuts_stats["num_steps"]), nuts_seconds),
    "NeuTra-NUTS": (neutra_idata, result.sample_stats["num_steps"], neutra_seconds),
}
table = {}
print(
    f"{'sampler':12s} {'min ESS':>8s} {'gradients':>10s} {'ESS/grad':>9s} {'divergent':>9s}"
    f" {'ESS(tau)':>8s} {'r_hat(tau)':>10s} {'time (s)':>8s}"
)
for name, (idata, num_steps, seconds) in rows.items():
    ess = min_bulk_ess(idata)
    gradients = int(num_steps.sum())
    divergent = int(idata.sample_stats["diverging"].sum())
    ess_tau = float(az.ess(idata, var_names=["tau"])["tau"])
    rhat_tau = float(az.rhat(idata, var_names=["tau"])["tau"])
    table[name] = (ess, gradients, divergent)
    print(
        f"{name:12s} {ess:8.0f} {gradients:10d} {ess / gradients:9.4f} {divergent:9d}"
        f" {ess_tau:8.0f} {rhat_tau:10.3f} {seconds:8.1f}"
    )
print(f"(fit_guide: {fit.num_steps} SVI steps, {fit.seconds:.1f} s; times include compilation)")

# %% [markdown]
# ## Trace plots
#
# `az.plot_trace` on both runs (divergent draws are marked under the traces). Plain
# NUTS gets stuck for long stretches at small `tau`, and its divergences sit there;
# NeuTra moves through the whole range of `tau`.

# %%
for name, idata in [("nuts", nuts_idata), ("neutra", neutra_idata)]:
    axes = az.plot_trace(idata, var_names=["mu", "tau"], figsize=(10, 4.5))
    fig = axes[0, 0].figure
    fig.suptitle("plain NUTS" if name == "nuts" else "NeuTra-NUTS")
    fig.tight_layout()
    fig.savefig(IMG / f"02_trace_{name}.png", dpi=80)
    plt.close(fig)

# %% [markdown]
# ## The funnel itself
#
# `log tau` against `theta[0]` (Choate): the funnel that gives NUTS trouble. Divergent
# transitions (red) cluster in the neck, which plain NUTS barely enters.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True, sharey=True)
for ax, (name, idata) in zip(axes, [("plain NUTS", nuts_idata), ("NeuTra-NUTS", neutra_idata)]):
    log_tau = np.log(idata.posterior["tau"].values.ravel())
    theta0 = idata.posterior["theta"].values[..., 0].ravel()
    diverging = idata.sample_stats["diverging"].values.ravel().astype(bool)
    ax.scatter(theta0, log_tau, s=3, alpha=0.3, label="draws")
    ax.scatter(theta0[diverging], log_tau[diverging], s=8, color="red", label="divergent")
    ax.set_title(f"{name}: {int(diverging.sum())} divergent")
    ax.set_xlabel("theta[Choate]")
axes[0].set_ylabel("log tau")
axes[0].legend(loc="lower right")
fig.tight_layout()
fig.savefig(IMG / "02_funnel.png", dpi=90)
plt.close(fig)
print(f"figures in {IMG}")

# %% [markdown]
# ## Takeaways
#
# - `neutra_nuts(rng_key, guide, params, *data)` is NUTS in the space of a trained flow
#   guide; draws come back in the model's own sites, ready for ArviZ via
#   `to_inference_data`.
# - `fit = fit_guide(rng_key, model, *data)` then
#   `neutra_nuts(rng_key, fit.guide, fit.params, *data, num_chains=4)` is the whole
#   recipe; every choice `fit_guide` makes is an argument you can override.
# - It pays off where plain NUTS struggles with geometry (funnels, strong
#   correlations): more ESS per gradient and no divergences, without rewriting the
#   model by hand: the learned non-centring does the part a flow cannot.
# - `print(result.summary())` is the run report (divergences, r-hat, bulk and tail
#   ESS); the guide does not need to be perfect, only good at the geometry, and NUTS
#   keeps the answer exact.
