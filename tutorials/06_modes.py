# %% [markdown]
# # Posteriors with several modes
#
# A flow guide trained by the ELBO minimises KL(q‖p), which punishes q for putting mass
# where p has none, but not for missing mass where p has some. Started near one mode, a
# flow learns that mode and stays there: on a posterior with two equal modes it returns
# half the posterior, with KL ≈ log 2, and nothing in the loss curve says so. Worse, the
# PSIS k-hat cannot see it either: no draw lands in the missing mode, so no importance
# ratio is large.
#
# `fit_guide` therefore looks before it trains. `find_modes` runs L-BFGS from many
# starting points and keeps the end points that are separated by a valley of low
# density; with two or more modes the guide is an `AutoFlowMixture`, one flow per mode,
# trained with the `StratifiedELBO` (every component gets its own draws; the weights are
# learned). Here are the draws before (one flow) and after (the defaults), over the exact
# density.
#
# Run it as a script (`python tutorials/06_modes.py`, add `--fast` for a smoke run) or
# open it as a notebook with jupytext.

# %%
import os
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from numpyro_flows import fit_guide, to_inference_data
from numpyro_flows.examples import (
    dual_moon,
    dual_moon_log_density,
    ring_of_gaussians,
    ring_of_gaussians_log_density,
)

# --fast (or NUMPYRO_FLOWS_FAST=1): tiny step counts, figures to a temporary directory.
FAST = "--fast" in sys.argv or os.environ.get("NUMPYRO_FLOWS_FAST") == "1"
if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
IMG = Path(tempfile.mkdtemp()) if FAST else HERE.parent / "docs" / "tutorials" / "img"
IMG.mkdir(parents=True, exist_ok=True)

FIT = {"num_steps": 300, "num_particles": 4, "khat_samples": 200} if FAST else {}
NUM_DRAWS = 500 if FAST else 5000

# %% [markdown]
# ## Two targets with a known density
#
# The dual moon (two crescents on a ring) and a ring of eight Gaussians (sd 0.5, radius
# 5), from `numpyro_flows.examples`. Both are a `numpyro.factor` on an improper flat prior
# over `z`, so the posterior *is* the density, and we can integrate it on a grid to get its
# normaliser, hence the exact KL(q‖p) of any guide.

# %%
GRID = np.linspace(-7.0, 7.0, 281)
POINTS = jnp.asarray(np.stack(np.meshgrid(GRID, GRID, indexing="ij"), -1))
CELL = (GRID[1] - GRID[0]) ** 2


def log_normaliser(log_density):
    values = np.asarray(log_density(POINTS), np.float64)
    top = values.max()
    return top + np.log(np.exp(values - top).sum() * CELL)


def report(name, fit, log_density):
    """KL(q||p) from the fit's PSIS draws, and the share of draws on the right."""
    psis = fit.psis
    kl = float(np.mean(psis.log_q - psis.log_p)) + log_normaliser(log_density)
    right = float(np.mean(psis.latent[:, 0] > 0))
    components = (
        "one flow"
        if fit.modes is None or fit.modes.num_modes < 2
        else (f"{fit.modes.num_modes} flows")
    )
    print(f"{name:22s} {components:9s} KL {kl:6.3f}  k-hat {fit.khat:5.2f}  right {right:.2f}")


def draws_of(fit, key=1):
    draws = fit.guide.sample_posterior(jax.random.key(key), fit.params, sample_shape=(NUM_DRAWS,))
    return np.asarray(draws["z"])


# %% [markdown]
# ## Before: one flow
#
# `modes=False` trains the default single flow, as `fit_guide` did before the mode search.
# KL(q‖p) comes out at about log 2 = 0.69: one crescent. Its k-hat looks fine.

# %%
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a short --fast run may have a doubtful k-hat
    one_flow = fit_guide(jax.random.key(0), dual_moon, modes=False, progress_bar=False, **FIT)
report("dual moon, one flow", one_flow, dual_moon_log_density)

# %% [markdown]
# ## After: the defaults
#
# The search finds the two crescents; the mixture keeps both, with weights close to ½.

# %%
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    mixture = fit_guide(jax.random.key(0), dual_moon, progress_bar=False, **FIT)
print(mixture.modes)
report("dual moon, defaults", mixture, dual_moon_log_density)
print("weights", np.round(mixture.guide.mixture_weights(mixture.params), 3))

# %% [markdown]
# ## Eight separated modes
#
# A ring of eight Gaussians, each 7.6 standard deviations from its neighbours: the
# search finds all eight and each component gets about an eighth of the draws.

# %%
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ring_fit = fit_guide(jax.random.key(0), ring_of_gaussians, progress_bar=False, **FIT)
ring_draws = draws_of(ring_fit)
sector = np.round(np.arctan2(ring_draws[:, 1], ring_draws[:, 0]) / (np.pi / 4)).astype(int) % 8
print(ring_fit.modes)
print("share of draws per mode", np.round(np.bincount(sector, minlength=8) / len(sector), 3))

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
panels = [
    (dual_moon_log_density, one_flow, "dual moon: one flow (modes=False)"),
    (dual_moon_log_density, mixture, "dual moon: fit_guide defaults"),
    (ring_of_gaussians_log_density, ring_fit, "ring of eight: fit_guide defaults"),
]
for ax, (log_density, fit, title) in zip(axes, panels, strict=True):
    density = np.exp(np.asarray(log_density(POINTS)))
    ax.contourf(GRID, GRID, density.T, levels=12, cmap="Blues")
    z = draws_of(fit)[:1500]
    ax.scatter(z[:, 0], z[:, 1], s=2, color="C3", alpha=0.4)
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.set_xlim(-7, 7)
    ax.set_ylim(-7, 7)
fig.tight_layout()
fig.savefig(IMG / "06_modes.png", dpi=80)

# %% [markdown]
# ## In ArviZ
#
# The mixture is an `AutoContinuous` guide like the others: `sample_posterior`,
# `Predictive`, PSIS and the ArviZ export see every mode. NeuTra needs one bijection from
# a Gaussian, which a mixture is not; `neutra_nuts` says so and points to
# `fit_guide(..., modes=False)`.

# %%
idata = to_inference_data(
    mixture.guide, mixture.params, num_samples=NUM_DRAWS, rng_key=jax.random.key(2)
)
z = idata.posterior["z"].values.reshape(-1, 2)
print(f"ArviZ posterior: {z.shape[0]} draws, {np.mean(z[:, 0] > 0):.2f} of them on the right")
