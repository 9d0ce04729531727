# %% [markdown]
# # Writing your own bijection
#
# Every flow in `numpyro_flows` is built from three parts: an elementwise
# **transformer** (affine, rational-quadratic spline, ...), a **structure** that places
# it (autoregressive, coupling, elementwise), and a **conditioner** network that
# outputs the transformer's parameters. To add a new kind of flow you usually write
# only a transformer: two methods on arrays, and it works in every structure.
#
# We write the sinh-arcsinh transformer of Jones and Pewsey (2009),
#
#     y = sinh(delta * asinh(x) - epsilon),
#
# whose `epsilon` skews the distribution and `delta` makes its tails heavier
# (`delta > 1`) or lighter (`delta < 1`): something affine layers and splines with
# identity tails cannot do. Then we check it with `numpyro_flows.testing.check_transform`
# (the same contract checks the library's own bijections pass), watch the check catch
# a broken version, and use it as a guide for a heavy-tailed posterior.
#
# Run it as a script (`python tutorials/05_custom_bijection.py`, add `--fast` for a
# smoke run) or open it as a notebook with jupytext.

# %%
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDiagonalNormal

from numpyro_flows import AutoFlow, Flow, psis_diagnostic
from numpyro_flows.bijections import (
    Affine,
    ComposedTransformer,
    Elementwise,
    Transformer,
    bounded_log_scale,
)
from numpyro_flows.layers import AutoregressiveLayer, Repeat
from numpyro_flows.testing import check_transform, randomize_params

# --fast (or NUMPYRO_FLOWS_FAST=1): tiny step counts, figures to a temporary directory.
FAST = "--fast" in sys.argv or os.environ.get("NUMPYRO_FLOWS_FAST") == "1"
if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
IMG = Path(tempfile.mkdtemp()) if FAST else HERE.parent / "docs" / "tutorials" / "img"
IMG.mkdir(parents=True, exist_ok=True)

NUM_STEPS = 300 if FAST else 10_000
NUM_DRAWS = 200 if FAST else 4000

# %% [markdown]
# ## The transformer
#
# A transformer is a frozen dataclass (it is static data of the bijections that use
# it, so it must be hashable) with `num_params` raw parameters per dimension and two
# methods. `x`/`y` have shape `(..., D)`, the raw parameters `(..., D, num_params)`;
# each method returns the elementwise log-derivative, shape `(..., D)`. The contract
# (written in `numpyro_flows.bijections.base`) asks for three more things:
#
# - **all-zero raw parameters are the identity**, so a fresh flow starts at the
#   identity: here `epsilon = 0`, `delta = exp(0) = 1` gives `sinh(asinh(x)) = x`;
# - **scales are bounded smoothly**: `log delta` goes through the library's
#   `bounded_log_scale`, so that a stack of layers cannot blow up the tails;
# - **no overflow or NaN in the tails**: `log cosh` is computed as a `logaddexp` and
#   `log sqrt(1 + x^2)` with `hypot`.
#
# The derivative is `dy/dx = delta cosh(u) / sqrt(1 + x^2)` with
# `u = delta asinh(x) - epsilon`; the inverse is `x = sinh((asinh(y) + epsilon) / delta)`,
# and its log-derivative is minus the forward one at that `x`, so both methods share
# one helper.


# %%
def log_cosh(u):
    return jnp.logaddexp(u, -u) - jnp.log(2.0)


@dataclass(frozen=True)
class SinhArcsinh(Transformer):
    """``y = sinh(delta * asinh(x) - epsilon)`` (Jones and Pewsey 2009).

    Raw parameters per dimension: ``epsilon`` and ``raw_log_delta``; ``log delta`` is
    bounded smoothly to ``(-tail_bound, tail_bound)``.
    """

    tail_bound: float = 0.5
    num_params: int = 2

    def _epsilon_and_delta(self, params):
        log_delta = bounded_log_scale(params[..., 1], self.tail_bound)
        return params[..., 0], jnp.exp(log_delta)

    def _log_derivative(self, x, u, delta):
        """``log dy/dx`` at ``x``, with ``u = delta * asinh(x) - epsilon``."""
        return jnp.log(delta) + log_cosh(u) - jnp.log(jnp.hypot(1.0, x))

    def forward_and_log_det(self, x, params):
        epsilon, delta = self._epsilon_and_delta(params)
        u = delta * jnp.arcsinh(x) - epsilon
        return jnp.sinh(u), self._log_derivative(x, u, delta)

    def inverse_and_log_det(self, y, params):
        epsilon, delta = self._epsilon_and_delta(params)
        u = jnp.arcsinh(y)
        x = jnp.sinh((u + epsilon) / delta)
        return x, -self._log_derivative(x, u, delta)


# %% [markdown]
# ## Checking it
#
# `Elementwise(transformer, params)` is the simplest structure: free parameters, one
# set per dimension. We give it random parameters (the identity would pass almost any
# check) and inputs from the bulk out to `|x| = 1000`. `check_transform` verifies
# the inverse round trip, the log-det against `slogdet` of the autodiff Jacobian, finite
# values and gradients, dtype, `jit` and `vmap`; it raises an `AssertionError` naming
# the first property that fails.

# %%
key_params, key_x, key_flow = jax.random.split(jax.random.key(0), 3)
dim = 4
params = jax.random.normal(key_params, (dim, SinhArcsinh.num_params))
x = jnp.concatenate(
    [3.0 * jax.random.normal(key_x, (32, dim)), jnp.array([[1e3, -1e3, 0.0, 1e-3]])]
)
report = check_transform(Elementwise(SinhArcsinh(), params), x)
print("SinhArcsinh passes:", report.checked)
print(f"  round trip error {report.round_trip_error:.1e}, log-det error {report.log_det_error:.1e}")

# %% [markdown]
# ## A broken version
#
# The classic slip: forgetting the chain rule through `asinh` (the `1 / sqrt(1 + x^2)`
# factor). The map is still a bijection and its inverse is still right, so samples
# look fine; only the density is wrong, which is the worst kind of bug to find in a
# fitted model. The check catches it at once.


# %%
@dataclass(frozen=True)
class BrokenSinhArcsinh(SinhArcsinh):
    def _log_derivative(self, x, u, delta):
        return jnp.log(delta) + log_cosh(u)  # missing: - log sqrt(1 + x^2)


try:
    check_transform(Elementwise(BrokenSinhArcsinh(), params), x)
    broken_message = None
except AssertionError as error:
    broken_message = str(error)
print("BrokenSinhArcsinh fails:", broken_message)

# %% [markdown]
# ## Into a flow
#
# The same transformer in an autoregressive structure with a MADE conditioner, three
# layers deep, with the variable order reversed between layers. `ComposedTransformer`
# follows each sinh-arcsinh map by an affine one (`y = a * s(x) + b`): the affine part
# moves and scales, the sinh-arcsinh part skews and reshapes the tails. `Repeat` stacks
# identical layers and runs them with `jax.lax.scan`, and `Flow` gives it the interface
# every factory in `numpyro_flows.flows` has: `init(rng_key, dim)` and
# `transform(params)`.
#
# Checking the whole flow at random parameters also checks our transformer inside the
# autoregressive structure (the sequential inverse of a MADE layer included).

# %%
transformer = ComposedTransformer((SinhArcsinh(), Affine()))
flow = Flow(Repeat(AutoregressiveLayer(transformer), 3), name="sinh_arcsinh_iaf")
flow_params = randomize_params(flow.init(key_flow, dim), jax.random.key(1), scale=0.3)
report = check_transform(flow.transform(flow_params), x)
print(f"{flow.name} passes: {report.checked}")

# %% [markdown]
# ## As a guide
#
# `AutoFlow(model, flow=flow)` makes it a guide. The target has heavy tails: a Student-t
# with 3 degrees of freedom, and a skewed Gumbel. A Gaussian guide (`AutoDiagonalNormal`)
# has Gaussian tails whatever its scale, and its importance weights show it (k-hat);
# the sinh-arcsinh flow can grow its tails.


# %%
def heavy_tails():
    numpyro.sample("t", dist.StudentT(3.0, 0.0, 1.0))
    numpyro.sample("g", dist.Gumbel(0.0, 1.0))


guides = {
    "Gaussian (AutoDiagonalNormal)": AutoDiagonalNormal(heavy_tails),
    "sinh-arcsinh flow (AutoFlow)": AutoFlow(heavy_tails, flow=flow),
}
draws, khats = {}, {}
for name, guide in guides.items():
    schedule = optax.cosine_decay_schedule(3e-3, NUM_STEPS, alpha=0.01)
    svi = SVI(heavy_tails, guide, optax.adam(schedule), Trace_ELBO(num_particles=8))
    result = svi.run(jax.random.key(2), NUM_STEPS, progress_bar=not FAST)
    khats[name] = psis_diagnostic(
        jax.random.key(3), guide, result.params, num_samples=NUM_DRAWS
    ).khat
    draws[name] = guide.sample_posterior(
        jax.random.key(4), result.params, sample_shape=(NUM_DRAWS,)
    )
    print(f"{name:30s} k-hat {khats[name]:.2f}")

# %% [markdown]
# Tail densities on a log scale: the Gaussian guide's density falls off as `exp(-t^2)`,
# far below the Student-t's, while the flow follows it much further out.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
targets = {"t": dist.StudentT(3.0, 0.0, 1.0), "g": dist.Gumbel(0.0, 1.0)}
ranges = {"t": (-12, 12), "g": (-4, 10)}
for ax, (site, target) in zip(axes, targets.items()):
    bins = np.linspace(*ranges[site], 61)
    grid = np.linspace(*ranges[site], 400)
    ax.plot(grid, np.exp(target.log_prob(grid)), "k", label=f"exact ({site})")
    for i, (name, samples) in enumerate(draws.items(), start=1):
        ax.hist(
            np.asarray(samples[site]),
            bins,
            density=True,
            histtype="step",
            color=f"C{i}",
            label=f"{name}, k-hat {khats[name]:.2f}",
        )
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1)
    ax.set_xlabel(site)
    ax.legend(fontsize=7, loc="upper right")
axes[0].set_title("Student-t(3)")
axes[1].set_title("Gumbel(0, 1)")
fig.tight_layout()
fig.savefig(IMG / "05_tails.png", dpi=90)
plt.close(fig)
print(f"figures in {IMG}")

# %% [markdown]
# ## Takeaways
#
# - A new transformer is one small class: `num_params`, `forward_and_log_det` and
#   `inverse_and_log_det` on arrays, identity at zero parameters. It then works in
#   every structure (`AutoregressiveLayer`, `CouplingLayer`, `ElementwiseLayer`) and in
#   every place a `Flow` goes: `AutoFlow` guides, NeuTra, `FlowDistribution`, `fit`.
# - Run it through `numpyro_flows.testing.check_transform` at random parameters and
#   over a wide range of inputs before using it: a wrong log-det gives plausible
#   samples and a wrong density, and nothing else will tell you.
# - To contribute it to the library: one file in `numpyro_flows/bijections/`, one
#   import, and one entry in the test registry (`tests/registry.py`), which runs it
#   through the same checks in every structure.
