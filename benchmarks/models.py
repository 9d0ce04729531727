"""Benchmark models: Neal's funnel (10-D), a 2-D dual moon, eight schools (centred), a
logistic regression with 25 features, a centred hierarchical regression with 60
groups, and two multimodal targets (a ring of eight Gaussians, a two-Gaussian mixture in
20-D). Data are generated with fixed seeds."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp


def funnel(dim: int = 10):
    """Neal's funnel: v ~ N(0, 3^2), x_i | v ~ N(0, e^v). Normalised: -ELBO = KL(q||p)."""
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)).expand([dim - 1]).to_event(1))


def dual_moon_log_density(z):
    """Unnormalised log density of the dual moon (Rezende and Mohamed 2015, U_3-style)."""
    radius = jnp.linalg.norm(z, axis=-1)
    ring = -0.5 * ((radius - 2.0) / 0.4) ** 2
    modes = logsumexp(
        jnp.stack([-0.5 * ((z[..., 0] - 2.0) / 0.6) ** 2, -0.5 * ((z[..., 0] + 2.0) / 0.6) ** 2]),
        axis=0,
    )
    return ring + modes


def dual_moon():
    z = numpyro.sample("z", dist.ImproperUniform(dist.constraints.real_vector, (), (2,)))
    numpyro.factor("moon", dual_moon_log_density(z))


def dual_moon_log_normaliser(grid_points: int = 2001, half_width: float = 6.0) -> float:
    """log of the dual moon's normalising constant, by quadrature on a fine grid."""
    t = np.linspace(-half_width, half_width, grid_points)
    zz = np.stack(np.meshgrid(t, t, indexing="ij"), -1)
    log_density = np.asarray(dual_moon_log_density(jnp.asarray(zz)), np.float64)
    cell = (t[1] - t[0]) ** 2
    peak = log_density.max()
    return float(peak + np.log(np.exp(log_density - peak).sum() * cell))


def ring_of_gaussians_log_density(z, num_modes: int = 8, radius: float = 5.0, sd: float = 0.5):
    """Normalised log density of an equal mixture of 2-D Gaussians on a circle."""
    angles = jnp.arange(num_modes) * 2 * jnp.pi / num_modes
    means = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
    log_components = -0.5 * jnp.sum((z[..., None, :] - means) ** 2, -1) / sd**2
    return logsumexp(log_components, -1) - jnp.log(2 * jnp.pi * sd**2 * num_modes)


def ring_of_gaussians():
    """Eight Gaussians (sd 0.5) on a circle of radius 5: separated modes, normalised."""
    z = numpyro.sample("z", dist.ImproperUniform(dist.constraints.real_vector, (), (2,)))
    numpyro.factor("ring", ring_of_gaussians_log_density(z))


def ring_mode_fractions(z, num_modes: int = 8) -> np.ndarray:
    """Share of draws ``(S, 2)`` nearest to each mode of :func:`ring_of_gaussians`."""
    angle = np.arctan2(np.asarray(z)[:, 1], np.asarray(z)[:, 0])
    nearest = np.round(angle / (2 * np.pi / num_modes)).astype(int) % num_modes
    return np.bincount(nearest, minlength=num_modes) / len(nearest)


GAUSSIAN_MIXTURE_DIM = 20


def gaussian_mixture_log_density(z, separation: float = 8.0):
    """Normalised log density of an equal mixture of two unit Gaussians in 20-D whose
    means lie ``separation`` apart along the first axis (at +-separation/2)."""
    shift = jnp.zeros(z.shape[-1]).at[0].set(separation / 2)
    log_components = jnp.stack(
        [-0.5 * jnp.sum((z - shift) ** 2, -1), -0.5 * jnp.sum((z + shift) ** 2, -1)], -1
    )
    return logsumexp(log_components, -1) - 0.5 * z.shape[-1] * jnp.log(2 * jnp.pi) - jnp.log(2.0)


def gaussian_mixture20():
    """Two unit Gaussians in 20-D, means 8 apart along one axis: normalised."""
    z = numpyro.sample(
        "z", dist.ImproperUniform(dist.constraints.real_vector, (), (GAUSSIAN_MIXTURE_DIM,))
    )
    numpyro.factor("mixture", gaussian_mixture_log_density(z))


SCHOOLS = {
    "y": np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
    "sigma": np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
}


def eight_schools_centered(y=SCHOOLS["y"], sigma=SCHOOLS["sigma"]):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(y)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def hierarchical_data(num_groups: int = 60, seed: int = 0) -> dict:
    """Radon-like data: 1-7 observations in each of ``num_groups`` groups, a group-level
    intercept spread (0.3) small against the noise (1.0), so the centred posterior is a
    funnel in the group spread."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 8, size=num_groups)
    group = np.repeat(np.arange(num_groups), counts)
    x = rng.normal(size=len(group))
    intercept = 1.0 + 0.3 * rng.normal(size=num_groups)
    y = intercept[group] - 0.5 * x + rng.normal(size=len(group))
    return {"group": group, "x": x, "y": y, "num_groups": num_groups}


HIERARCHICAL = hierarchical_data()


def hierarchical_centered(
    group=HIERARCHICAL["group"],
    x=HIERARCHICAL["x"],
    y=HIERARCHICAL["y"],
    num_groups=HIERARCHICAL["num_groups"],
):
    """A centred varying-intercept regression (radon-like), 60 groups, 64 latents."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma_group = numpyro.sample("sigma_group", dist.HalfNormal(2.0))
    slope = numpyro.sample("slope", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("group", num_groups):
        intercept = numpyro.sample("intercept", dist.Normal(mu, sigma_group))
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", dist.Normal(intercept[group] + slope * x, sigma), obs=y)


def logistic_data(num_data: int = 500, num_features: int = 25, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_data, num_features))
    w = rng.normal(size=num_features) * 0.5
    y = (rng.uniform(size=num_data) < 1 / (1 + np.exp(-(x @ w - 0.3)))).astype(np.float64)
    return {"x": x, "y": y}


LOGISTIC = logistic_data()


def logistic_regression(x=LOGISTIC["x"], y=LOGISTIC["y"]):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


# name -> (model, log normaliser if known: -ELBO - log Z = KL)
MODELS = {
    "funnel10": (funnel, 0.0),
    "dual_moon": (dual_moon, None),  # filled lazily: quadrature
    "eight_schools_centered": (eight_schools_centered, None),
    "logistic25": (logistic_regression, None),
    "hierarchical60": (hierarchical_centered, None),
    "ring8": (ring_of_gaussians, 0.0),
    "gaussian_mixture20": (gaussian_mixture20, 0.0),
}


def log_normaliser(name: str) -> float | None:
    if name == "dual_moon":
        return dual_moon_log_normaliser()
    return MODELS[name][1]
