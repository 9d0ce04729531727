"""Example models: the posteriors that the tests, the benchmarks and ``numpyro-flows demo``
fit, in one place.

Each is a plain NumPyro model whose data are default arguments, so ``fit_guide(key,
funnel)`` runs as it is and other data can be passed in their place. They are chosen for
what makes a posterior hard for a guide or a sampler:

* a funnel, whose scale changes by orders of magnitude along one direction
  (:func:`funnel`, :func:`eight_schools_centered`, :func:`hierarchical_centered`);
* separated modes (:func:`dual_moon`, :func:`ring_of_gaussians`,
  :func:`gaussian_mixture`);
* a well-conditioned, many-dimensional posterior, to measure speed rather than
  difficulty (:func:`logistic_regression`);
* the same hierarchical posterior without its funnel (:func:`eight_schools_noncentered`).

The targets written as a log density (dual moon, ring, mixture) have one site ``z``, an
improper flat prior and a ``numpyro.factor`` holding the density; :func:`funnel`, the ring
and the mixture are normalised, so there ``-ELBO = KL(q || p)``.

Constants (NumPy arrays, so importing this module does not start a JAX backend):

* ``SCHOOLS_Y``, ``SCHOOLS_SIGMA``: eight schools' estimated treatment effects and their
  standard errors (Rubin 1981), shape ``(8,)``.
* ``HIERARCHICAL``: :func:`hierarchical_data` at its defaults (60 groups, seed 0).
* ``LOGISTIC``: :func:`logistic_data` at its defaults (500 rows, 25 features, seed 0).
* ``GAUSSIAN_MIXTURE_DIM``: the dimension of :func:`gaussian_mixture` (20).

Example::

    import jax

    from numpyro_flows import fit_guide, neutra_nuts
    from numpyro_flows.examples import eight_schools_centered

    fit = fit_guide(jax.random.key(0), eight_schools_centered)
    result = neutra_nuts(jax.random.key(1), fit.guide, fit.params)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
GAUSSIAN_MIXTURE_DIM = 20


def _flat_vector(dim: int):
    """A site ``z`` of shape ``(dim,)`` with an improper flat prior, for a log density."""
    return numpyro.sample("z", dist.ImproperUniform(dist.constraints.real_vector, (), (dim,)))


# ---------------------------------------------------------------------- funnels
def funnel(dim: int = 10) -> None:
    """Neal's funnel: ``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, e^v)`` for ``dim - 1`` entries.

    The scale of ``x`` spans several orders of magnitude along ``v``: a guide must learn a
    scale that depends on another latent, and NUTS with one step size diverges in the
    neck. Normalised, so ``-ELBO = KL(q || p)`` (Neal 2003, "Slice sampling").

    Args:
        dim: the number of latent dimensions (``v`` and ``dim - 1`` entries of ``x``).
    """
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)).expand([dim - 1]).to_event(1))


def eight_schools_centered(y=SCHOOLS_Y, sigma=SCHOOLS_SIGMA) -> None:
    """Eight schools, centred: ``theta_j ~ N(mu, tau)``, ``y_j ~ N(theta_j, sigma_j)``.

    The classic hierarchical funnel between ``tau`` and ``theta`` on real data: small
    (10 latents), with a plate, a positive site and a funnel that makes plain NUTS
    diverge, which learned non-centring and NeuTra are meant to fix.

    Args:
        y: the schools' estimated effects, shape ``(J,)``.
        sigma: their standard errors, shape ``(J,)``.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(y)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(y=SCHOOLS_Y, sigma=SCHOOLS_SIGMA) -> None:
    """Eight schools, non-centred: ``theta = mu + tau * theta_raw``, ``theta_raw ~ N(0, 1)``.

    The same posterior as :func:`eight_schools_centered` without the funnel in the latent
    space; ``theta`` is a deterministic site, so it exercises guides, ``Predictive`` and
    ArviZ export on a plated model with a deterministic site.

    Args:
        y, sigma: as in :func:`eight_schools_centered`.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(y)):
        theta_raw = numpyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_raw)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def hierarchical_data(num_groups: int = 60, seed: int = 0) -> dict:
    """Radon-like data for :func:`hierarchical_centered`.

    1-7 observations in each of ``num_groups`` groups, with a group-level intercept spread
    (0.3) small against the noise (1.0), so the centred posterior is a funnel in the group
    spread.

    Returns:
        ``{"group": (N,) int, "x": (N,), "y": (N,), "num_groups": int}``.
    """
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
) -> None:
    """A centred varying-intercept regression (radon-like): 60 groups, 64 latents.

    A funnel like eight schools' but larger and with little data per group, so the
    posterior reaches far into the funnel's neck, where a flow has to extrapolate its
    scales furthest.

    Args:
        group: each row's group index, shape ``(N,)``.
        x: the predictor, shape ``(N,)``.
        y: the response, shape ``(N,)``.
        num_groups: the number of groups.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma_group = numpyro.sample("sigma_group", dist.HalfNormal(2.0))
    slope = numpyro.sample("slope", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("group", num_groups):
        intercept = numpyro.sample("intercept", dist.Normal(mu, sigma_group))
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", dist.Normal(intercept[group] + slope * x, sigma), obs=y)


# ---------------------------------------------------------------------- many dimensions
def logistic_data(num_data: int = 500, num_features: int = 25, seed: int = 0) -> dict:
    """Simulated data for :func:`logistic_regression`: standard normal features, weights
    ``N(0, 0.5^2)``, intercept -0.3.

    Returns:
        ``{"x": (num_data, num_features), "y": (num_data,) of 0.0 / 1.0}``.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_data, num_features))
    w = rng.normal(size=num_features) * 0.5
    y = (rng.uniform(size=num_data) < 1 / (1 + np.exp(-(x @ w - 0.3)))).astype(np.float64)
    return {"x": x, "y": y}


LOGISTIC = logistic_data()


def logistic_regression(x=LOGISTIC["x"], y=LOGISTIC["y"]) -> None:
    """Bayesian logistic regression: ``w ~ N(0, 1)``, ``b ~ N(0, 2^2)``, Bernoulli logits
    ``x @ w + b``; 25 features at the default data (26 latents).

    Close to Gaussian and well conditioned: it measures what a guide costs per step
    in more dimensions, not how it copes with a hard geometry.

    Args:
        x: the features, shape ``(N, F)``.
        y: the labels, shape ``(N,)``.
    """
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


# ---------------------------------------------------------------------- several modes
def dual_moon_log_density(z):
    """Unnormalised log density of the dual moon (Rezende and Mohamed 2015, U_3-style):
    a ring of radius 2 weighted towards two modes at ``z_0 = +-2``; ``z`` is ``(..., 2)``.
    """
    radius = jnp.linalg.norm(z, axis=-1)
    ring = -0.5 * ((radius - 2.0) / 0.4) ** 2
    modes = logsumexp(
        jnp.stack([-0.5 * ((z[..., 0] - 2.0) / 0.6) ** 2, -0.5 * ((z[..., 0] + 2.0) / 0.6) ** 2]),
        axis=0,
    )
    return ring + modes


def dual_moon() -> None:
    """The dual moon in 2-D (:func:`dual_moon_log_density`): two curved modes on a ring,
    joined by arcs of low density.

    Small enough to plot and to normalise by quadrature
    (:func:`dual_moon_log_normaliser`), and hard for one flow, which tends to cover one
    mode or to put mass on the arcs between them.
    """
    numpyro.factor("moon", dual_moon_log_density(_flat_vector(2)))


def dual_moon_log_normaliser(grid_points: int = 2001, half_width: float = 6.0) -> float:
    """The log of :func:`dual_moon`'s normalising constant, by quadrature on a
    ``grid_points`` x ``grid_points`` grid over ``[-half_width, half_width]^2``."""
    t = np.linspace(-half_width, half_width, grid_points)
    zz = np.stack(np.meshgrid(t, t, indexing="ij"), -1)
    log_density = np.asarray(dual_moon_log_density(jnp.asarray(zz)), np.float64)
    cell = (t[1] - t[0]) ** 2
    peak = log_density.max()
    return float(peak + np.log(np.exp(log_density - peak).sum() * cell))


def ring_of_gaussians_log_density(z, num_modes: int = 8, radius: float = 5.0, sd: float = 0.5):
    """Normalised log density of an equal mixture of ``num_modes`` 2-D Gaussians (standard
    deviation ``sd``) evenly spaced on a circle of ``radius``; ``z`` is ``(..., 2)``."""
    angles = jnp.arange(num_modes) * 2 * jnp.pi / num_modes
    means = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
    log_components = -0.5 * jnp.sum((z[..., None, :] - means) ** 2, -1) / sd**2
    return logsumexp(log_components, -1) - jnp.log(2 * jnp.pi * sd**2 * num_modes)


def ring_of_gaussians(num_modes: int = 8, radius: float = 5.0, sd: float = 0.5) -> None:
    """Eight Gaussians (sd 0.5) on a circle of radius 5 in 2-D: separated modes, normalised.

    Many modes with almost no mass between them: a single flow drops some of them, so the
    share of draws per mode shows whether a guide found them all.

    Args:
        num_modes, radius, sd: as in :func:`ring_of_gaussians_log_density`.
    """
    z = _flat_vector(2)
    numpyro.factor("ring", ring_of_gaussians_log_density(z, num_modes, radius, sd))


def gaussian_mixture_log_density(z, separation: float = 8.0):
    """Normalised log density of an equal mixture of two unit Gaussians whose means lie
    ``separation`` apart along the first axis (at ``+-separation / 2``); ``z`` is
    ``(..., D)``."""
    shift = jnp.zeros(z.shape[-1]).at[0].set(separation / 2)
    log_components = jnp.stack(
        [-0.5 * jnp.sum((z - shift) ** 2, -1), -0.5 * jnp.sum((z + shift) ** 2, -1)], -1
    )
    return logsumexp(log_components, -1) - 0.5 * z.shape[-1] * jnp.log(2 * jnp.pi) - jnp.log(2.0)


def gaussian_mixture(dim: int = GAUSSIAN_MIXTURE_DIM, separation: float = 8.0) -> None:
    """Two unit Gaussians in 20-D, means 8 apart along one axis: normalised.

    Two modes far apart in more dimensions than can be plotted or searched on a grid:
    a guide started between them, or trained with too few particles, keeps one.

    Args:
        dim: the dimension of ``z``.
        separation: the distance between the two means.
    """
    numpyro.factor("mixture", gaussian_mixture_log_density(_flat_vector(dim), separation))


__all__ = [
    "GAUSSIAN_MIXTURE_DIM",
    "HIERARCHICAL",
    "LOGISTIC",
    "SCHOOLS_SIGMA",
    "SCHOOLS_Y",
    "dual_moon",
    "dual_moon_log_density",
    "dual_moon_log_normaliser",
    "eight_schools_centered",
    "eight_schools_noncentered",
    "funnel",
    "gaussian_mixture",
    "gaussian_mixture_log_density",
    "hierarchical_centered",
    "hierarchical_data",
    "logistic_data",
    "logistic_regression",
    "ring_of_gaussians",
    "ring_of_gaussians_log_density",
]
