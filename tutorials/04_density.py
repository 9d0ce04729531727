# %% [markdown]
# # Density estimation: two moons, conditional flows, flows inside models
#
# A normalizing flow is also a distribution you can fit to data: a density with exact
# `log_prob` and fast `sample`. This tutorial
#
# 1. fits two flows to the two-moons data with `numpyro_flows.fit` (maximum likelihood
#    with minibatches, a validation split and early stopping) and compares their
#    held-out log-likelihood with a Gaussian's;
# 2. fits a **conditional** flow `p(x | c)` on a toy problem whose true conditional
#    density is known, and compares the two;
# 3. uses flows **inside NumPyro models**: a fitted flow as the prior of a Bayesian
#    model (sampled with NUTS), and `flow_module`, which makes a flow's parameters a
#    NumPyro `param` site so SVI can fit it as part of a model.
#
# Run it as a script (`python tutorials/04_density.py`, add `--fast` for a smoke run)
# or open it as a notebook with jupytext.

# %%
import os
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO

from numpyro_flows import FlowDistribution, fit, flow_module, flows

# --fast (or NUMPYRO_FLOWS_FAST=1): tiny step counts, figures to a temporary directory.
FAST = "--fast" in sys.argv or os.environ.get("NUMPYRO_FLOWS_FAST") == "1"
if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
IMG = Path(tempfile.mkdtemp()) if FAST else HERE.parent / "docs" / "tutorials" / "img"
IMG.mkdir(parents=True, exist_ok=True)

NUM_ROWS = 1000 if FAST else 4000  # training rows (10% held out for validation by fit)
NUM_EPOCHS = 2 if FAST else 300  # at most; fit stops early when validation stalls
NUM_SVI_STEPS = 50 if FAST else 3000
NUM_WARMUP, NUM_SAMPLES = (50, 100) if FAST else (500, 2000)

# %% [markdown]
# ## Two moons
#
# Two interleaved half circles with a little noise, standardised to about unit scale,
# and a separate test set.


# %%
def two_moons(num, rng, noise=0.1):
    t = rng.uniform(0.0, np.pi, num)
    upper = rng.random(num) < 0.5
    x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    points = np.stack([x, y], 1) + noise * rng.standard_normal((num, 2))
    return ((points - [0.5, 0.25]) / [0.87, 0.5]).astype(np.float32)


rng = np.random.default_rng(0)
data, test = two_moons(NUM_ROWS, rng), two_moons(2000, rng)

# %% [markdown]
# ## Fitting flows
#
# `fit(rng_key, flow, data)` holds out 10% of the rows for validation, shuffles the
# rest into minibatches, and stops when the validation loss (the mean negative
# log-likelihood) has not improved for `patience` epochs, returning the best
# parameters. Two coupling flows, both one pass in each direction: a neural spline
# flow (rational-quadratic splines, Durkan et al. 2019) and RealNVP (affine couplings,
# Dinh et al. 2017), four layers of two hidden layers of 64 each. `invert=True` puts each
# flow's map in the density direction, data to base, which is the direction maximum
# likelihood evaluates (the guide factories keep the sampling direction).

# %%
candidates = {
    "neural spline": flows.neural_spline(4, (64, 64), coupling=True, invert=True),
    "RealNVP": flows.realnvp(4, (64, 64), invert=True),
}
fits, densities = {}, {}
for name, flow in candidates.items():
    fits[name] = fit(
        jax.random.key(0), flow, data, num_epochs=NUM_EPOCHS, patience=20, progress_bar=not FAST
    )
    densities[name] = FlowDistribution(flow, fits[name].params)

# A full-covariance Gaussian as the baseline.
gaussian = dist.MultivariateNormal(data.mean(0), np.cov(data.T))
print(f"{'density':14s} {'test log-lik':>12s} {'epochs':>7s} {'stopped':>15s}")
print(f"{'Gaussian':14s} {float(gaussian.log_prob(test).mean()):12.3f}")
test_log_lik = {}
for name, density in densities.items():
    test_log_lik[name] = float(jnp.mean(jax.jit(density.log_prob)(test)))
    result = fits[name]
    epochs = len(result.train_losses)
    print(f"{name:14s} {test_log_lik[name]:12.3f} {epochs:7d} {result.stop_reason:>15s}")

# %% [markdown]
# `FlowDistribution(flow, params)` is a NumPyro distribution: `log_prob` evaluates the
# density (below on a grid), `sample` draws from it.

# %%
grid_x, grid_y = np.meshgrid(np.linspace(-2.5, 2.5, 200), np.linspace(-2.5, 2.5, 200))
grid = np.stack([grid_x.ravel(), grid_y.ravel()], -1).astype(np.float32)
fig, axes = plt.subplots(2, 3, figsize=(12, 8), sharex=True, sharey=True)
axes[0, 0].scatter(data[:, 0], data[:, 1], s=1, alpha=0.4, color="k")
axes[0, 0].set_title("training data")
gaussian_density = np.exp(np.asarray(gaussian.log_prob(grid))).reshape(grid_x.shape)
axes[1, 0].contourf(grid_x, grid_y, gaussian_density, levels=30, cmap="viridis")
axes[1, 0].set_title(f"Gaussian: {float(gaussian.log_prob(test).mean()):.3f} nats")
for col, (name, density) in enumerate(densities.items(), start=1):
    values = np.exp(np.asarray(jax.jit(density.log_prob)(grid))).reshape(grid_x.shape)
    axes[0, col].contourf(grid_x, grid_y, values, levels=30, cmap="viridis")
    axes[0, col].set_title(f"{name}: density, {test_log_lik[name]:.3f} nats")
    samples = np.asarray(density.sample(jax.random.key(1), (2000,)))
    axes[1, col].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4, color=f"C{col}")
    axes[1, col].set_title(f"{name}: 2000 samples")
for ax in axes.ravel():
    ax.set_xlim(-2.5, 2.5)
    ax.set_ylim(-2.5, 2.5)
    ax.set_aspect("equal")
fig.tight_layout()
fig.savefig(IMG / "04_two_moons.png", dpi=80)
plt.close(fig)

# %% [markdown]
# ## A conditional flow
#
# The toy: a context `c ~ Uniform(0, 2)`, and `x | c` an equal mixture of `N(c, 0.25^2)`
# and `N(-c, 0.25^2)`: one mode at `c = 0` that splits into two as `c` grows. A flow
# initialised with `context_dim = C` conditions every layer's network on the context;
# `fit(..., context=c)` fits `p(x | c)` (one context row per data row). With
# one-dimensional `x` we use the autoregressive spline flow in its MAF orientation
# (`invert=True`, one pass to evaluate the density); a coupling layer needs at least
# two dimensions to split.


# %%
def sample_conditional(num, rng):
    c = rng.uniform(0.0, 2.0, num)
    x = np.where(rng.random(num) < 0.5, c, -c) + 0.25 * rng.standard_normal(num)
    return x[:, None].astype(np.float32), c[:, None].astype(np.float32)


def true_conditional_log_density(x, c):
    return jnp.logaddexp(
        dist.Normal(c, 0.25).log_prob(x), dist.Normal(-c, 0.25).log_prob(x)
    ) - jnp.log(2.0)


x, c = sample_conditional(NUM_ROWS, rng)
x_test, c_test = sample_conditional(2000, rng)
conditional_flow = flows.neural_spline(4, (64, 64), invert=True)
conditional_fit = fit(
    jax.random.key(2),
    conditional_flow,
    x,
    context=c,
    num_epochs=NUM_EPOCHS,
    patience=20,
    progress_bar=not FAST,
)

# One context per test row: the density's batch shape is (2000,).
p_x_given_c = FlowDistribution(conditional_flow, conditional_fit.params, context=c_test)
flow_ll = float(jnp.mean(p_x_given_c.log_prob(x_test)))
true_ll = float(jnp.mean(true_conditional_log_density(x_test[:, 0], c_test[:, 0])))
print(f"conditional test log-lik: flow {flow_ll:.3f}, true density {true_ll:.3f}")

# %% [markdown]
# With a few fixed contexts the distribution has batch shape `(3,)`, and `log_prob` of a
# grid of shape `(G, 1, 1)` broadcasts to `(G, 3)`: three conditional densities at once.

# %%
contexts = np.array([[0.1], [0.8], [1.6]], np.float32)
p_x_given_c = FlowDistribution(conditional_flow, conditional_fit.params, context=contexts)
grid_1d = np.linspace(-3.0, 3.0, 400, dtype=np.float32)
flow_density = np.exp(np.asarray(p_x_given_c.log_prob(grid_1d[:, None, None])))  # (400, 3)
fig, ax = plt.subplots(figsize=(7, 3.8))
for i, c_value in enumerate(contexts[:, 0]):
    true_density = np.exp(np.asarray(true_conditional_log_density(grid_1d, c_value)))
    ax.plot(grid_1d, true_density, color=f"C{i}", lw=1, ls="--")
    ax.plot(grid_1d, flow_density[:, i], color=f"C{i}", lw=2, label=f"c = {c_value:.1f}")
ax.set_xlabel("x")
ax.set_ylabel("p(x | c)")
ax.set_title("conditional flow (solid) vs true conditional density (dashed)")
ax.legend()
fig.tight_layout()
fig.savefig(IMG / "04_conditional.png", dpi=90)
plt.close(fig)

# %% [markdown]
# ## A flow as the prior of a model
#
# A fitted `FlowDistribution` goes wherever a NumPyro distribution goes. Here the
# two-moons density becomes a learned prior: a point `z` on the moons is observed
# with Gaussian noise, and NUTS samples its posterior, the prior restricted to what is
# compatible with the observation. Its `log_prob` is one inverse pass of the coupling
# flow, and differentiable, so NUTS needs nothing else. We take the RealNVP density:
# NUTS differentiates the prior at every leapfrog step, and affine couplings are
# cheaper to differentiate (and to compile) than splines.

# %%
moons_prior = densities["RealNVP"]
y_obs = jnp.array([-0.6, 0.4])


def denoise(y_obs):
    z = numpyro.sample("z", moons_prior)
    numpyro.sample("y", dist.Normal(z, 0.5).to_event(1), obs=y_obs)


mcmc = MCMC(NUTS(denoise), num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES, progress_bar=not FAST)
mcmc.run(jax.random.key(3), y_obs)
z = np.asarray(mcmc.get_samples()["z"])
print(f"posterior mean of z: {z.mean(0).round(2)}, sd: {z.std(0).round(2)}")

prior_density = np.exp(np.asarray(jax.jit(moons_prior.log_prob)(grid))).reshape(grid_x.shape)
fig, ax = plt.subplots(figsize=(5, 5))
levels = prior_density.max() * np.array([0.02, 0.1, 0.3, 0.6])
ax.contour(grid_x, grid_y, prior_density, levels=levels, colors="0.5", linewidths=0.8)
ax.scatter(z[:, 0], z[:, 1], s=2, alpha=0.3, color="C3", label="posterior draws (NUTS)")
ax.scatter(*np.asarray(y_obs), marker="x", s=80, color="k", label="observation")
# Two noise standard deviations around the observation: where the likelihood is.
ax.add_patch(plt.Circle(np.asarray(y_obs), 1.0, fill=False, ls="--", color="k"))
ax.set_xlim(-2.5, 2.5)
ax.set_ylim(-2.5, 2.5)
ax.set_aspect("equal")
ax.legend(loc="lower left", fontsize=8)
ax.set_title("flow prior (contours) and posterior draws")
fig.tight_layout()
fig.savefig(IMG / "04_flow_prior.png", dpi=90)
plt.close(fig)

# %% [markdown]
# ## `flow_module`: a flow's parameters as a model's param site
#
# `flow_module(name, flow, dim)` returns a `FlowDistribution` whose parameters are the
# NumPyro `param` site `name`, like `flax_module` for networks. A model that observes
# the data through it, with an empty guide, is maximum likelihood by SVI; the flow can
# equally be one part of a larger model trained the same way. (`fit` is the better
# tool when the flow *is* the model: minibatches, validation and early stopping.)


# %%
def moons_model(x):
    flow_dist = flow_module("moons_flow", flows.realnvp(4, (64, 64)), dim=2)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", flow_dist, obs=x)


def empty_guide(x):
    pass


svi = SVI(moons_model, empty_guide, optax.adam(1e-3), Trace_ELBO())
svi_result = svi.run(jax.random.key(4), NUM_SVI_STEPS, data, progress_bar=not FAST)
svi_density = FlowDistribution(flows.realnvp(4, (64, 64)), svi_result.params["moons_flow"])
print(
    f"RealNVP by SVI with flow_module: test log-lik {float(svi_density.log_prob(test).mean()):.3f}"
)
print(f"figures in {IMG}")

# %% [markdown]
# ## Takeaways
#
# - `fit(rng_key, flow, data)` is maximum likelihood with the usual safeguards;
#   `FlowDistribution(flow, result.params)` turns the result into a NumPyro
#   distribution.
# - Conditional flows are the same flows initialised with a context dimension:
#   `fit(..., context=c)` and `FlowDistribution(..., context=c)`.
# - A flow can be a prior, a likelihood or a learned component inside any NumPyro
#   model, fitted by SVI through `flow_module`.
