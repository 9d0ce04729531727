"""Small models shared by the guide, NeuTra, diagnostics and ArviZ tests."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from numpyro_flows import examples

NORMAL_DATA = jnp.asarray(np.random.default_rng(0).normal(1.5, 1.0, size=20))
BERNOULLI_DATA = jnp.asarray((np.random.default_rng(1).uniform(size=30) < 0.7).astype(np.float32))
SCHOOLS_Y = jnp.asarray(examples.SCHOOLS_Y)
SCHOOLS_SIGMA = jnp.asarray(examples.SCHOOLS_SIGMA)


def normal_normal(y=NORMAL_DATA):
    """mu ~ N(0, 2^2), y_i ~ N(mu, 1): the posterior and the evidence are Gaussian."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def normal_normal_exact(y=NORMAL_DATA, prior_sd=2.0):
    """Posterior mean, posterior sd and log evidence of :func:`normal_normal`."""
    y = np.asarray(y, np.float64)
    n = len(y)
    post_var = 1.0 / (1.0 / prior_sd**2 + n)
    post_mean = post_var * y.sum()
    cov = np.eye(n) + prior_sd**2
    sign, logdet = np.linalg.slogdet(cov)
    log_evidence = -0.5 * (y @ np.linalg.solve(cov, y) + logdet + n * np.log(2 * np.pi))
    return post_mean, np.sqrt(post_var), log_evidence


def beta_bernoulli(x=BERNOULLI_DATA):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", dist.Bernoulli(p), obs=x)


# The shared example models (numpyro_flows.examples) with the tests' defaults: a 5-D
# funnel, and eight schools taking ``(sigma, y)`` with the data as JAX arrays.
def funnel(dim=5):
    """Neal's funnel (:func:`numpyro_flows.examples.funnel`), 5-D by default."""
    examples.funnel(dim)


def eight_schools(sigma=SCHOOLS_SIGMA, y=SCHOOLS_Y):
    """Non-centred eight schools: a plated hierarchical model with a deterministic site."""
    examples.eight_schools_noncentered(y, sigma)


def eight_schools_centered(sigma=SCHOOLS_SIGMA, y=SCHOOLS_Y):
    """Centred eight schools: the funnel between ``tau`` and ``theta``."""
    examples.eight_schools_centered(y, sigma)


def constrained():
    """Positive, interval, simplex and correlation-Cholesky sites."""
    numpyro.sample("scale", dist.HalfNormal(1.0))
    numpyro.sample("frac", dist.Uniform(-1.0, 2.0))
    numpyro.sample("weights", dist.Dirichlet(jnp.ones(3)))
    numpyro.sample("corr", dist.LKJCholesky(3, 2.0))


def one_latent():
    numpyro.sample("z", dist.Gamma(3.0, 2.0))


LOCAL_DATA = jnp.ones(100)


def local_latents(x=LOCAL_DATA):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0], subsample_size=10):
        z = numpyro.sample("z", dist.Normal(mu, 1.0))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=numpyro.subsample(x, event_dim=0))


def discrete_latent():
    numpyro.sample("k", dist.Bernoulli(0.3))
    numpyro.sample("z", dist.Normal(0.0, 1.0))


def key(seed=0):
    return jax.random.key(seed)
