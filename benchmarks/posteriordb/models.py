"""The six posteriordb models, written for this benchmark from the Stan programs'
mathematics (https://github.com/stan-dev/posteriordb). Each takes the posterior's data
dict as keyword arguments and uses Stan's parameter names, so draws can be scored against
the reference draws. Transformed parameters Stan reports (e.g. ``theta``) are
``numpyro.deterministic`` sites. Run them with ``numpyro.enable_x64()``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints


def _flat(support):
    """Stan's implicit flat prior on a (constrained) scalar."""
    return dist.ImproperUniform(support, (), ())


def eight_schools_noncentered(J, y, sigma):
    theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0).expand([J]).to_event(1))
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))  # cauchy(0, 5) on tau > 0
    theta = numpyro.deterministic("theta", mu + tau * theta_trans)
    numpyro.sample("y", dist.Normal(theta, jnp.asarray(sigma)).to_event(1), obs=jnp.asarray(y))


def gp_pois_regr(N, x, k, y=None):
    x = jnp.asarray(x, jnp.float64)
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    f_tilde = numpyro.sample("f_tilde", dist.Normal(0.0, 1.0).expand([N]).to_event(1))
    sq_dist = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * jnp.exp(-0.5 * sq_dist / rho**2) + 1e-10 * jnp.eye(N)
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
    numpyro.sample("k", dist.Poisson(jnp.exp(f)).to_event(1), obs=jnp.asarray(k))


def diamonds(N, Y, K, X, prior_only=0):
    X = jnp.asarray(X, jnp.float64)
    centred = X[:, 1:] - X[:, 1:].mean(0)  # brms centres the predictors
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([K - 1]).to_event(1))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", _flat(constraints.positive))
    # student_t(3, 0, 10) truncated at 0: twice the density on sigma > 0.
    numpyro.factor("sigma_prior", dist.StudentT(3.0, 0.0, 10.0).log_prob(sigma) + jnp.log(2.0))
    if not prior_only:
        mean = intercept + centred @ b
        numpyro.sample("Y", dist.Normal(mean, sigma).to_event(1), obs=jnp.asarray(Y))


def kilpisjarvi(N, x, y, xpred, pmualpha, psalpha, pmubeta, psbeta):
    alpha = numpyro.sample("alpha", dist.Normal(pmualpha, psalpha))
    beta = numpyro.sample("beta", dist.Normal(pmubeta, psbeta))
    sigma = numpyro.sample("sigma", _flat(constraints.positive))
    mean = alpha + beta * jnp.asarray(x, jnp.float64)
    numpyro.sample("y", dist.Normal(mean, sigma).to_event(1), obs=jnp.asarray(y))


def garch11(T, y, sigma1):
    y = jnp.asarray(y, jnp.float64)
    mu = numpyro.sample("mu", _flat(constraints.real))
    alpha0 = numpyro.sample("alpha0", _flat(constraints.positive))
    alpha1 = numpyro.sample("alpha1", dist.Uniform(0.0, 1.0))
    # beta1 is flat on (0, 1 - alpha1): write it as (1 - alpha1) * u with u ~ U(0, 1) and
    # add the Jacobian log(1 - alpha1) so the joint density is flat in beta1, as in Stan.
    u = numpyro.sample("beta1_unit", dist.Uniform(0.0, 1.0))
    beta1 = numpyro.deterministic("beta1", (1.0 - alpha1) * u)
    numpyro.factor("beta1_jacobian", jnp.log1p(-alpha1))

    def volatility(sigma_prev, y_prev):
        sigma = jnp.sqrt(alpha0 + alpha1 * (y_prev - mu) ** 2 + beta1 * sigma_prev**2)
        return sigma, sigma

    first = jnp.asarray(sigma1, jnp.float64)
    _, rest = jax.lax.scan(volatility, first, y[:-1])
    sigma = jnp.concatenate([first[None], rest])
    numpyro.sample("y", dist.Normal(mu, sigma).to_event(1), obs=y)


def arK(K, T, y):
    y = jnp.asarray(y, jnp.float64)
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    # Column k holds y[t - 1 - k] for t = K .. T-1 (0-based): the k+1-th lag.
    lags = jnp.stack([y[K - 1 - k : T - 1 - k] for k in range(K)], axis=1)
    numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma).to_event(1), obs=y[K:])


MODELS = {
    "eight_schools-eight_schools_noncentered": eight_schools_noncentered,
    "gp_pois_regr-gp_pois_regr": gp_pois_regr,
    "diamonds-diamonds": diamonds,
    "kilpisjarvi_mod-kilpisjarvi": kilpisjarvi,
    "garch-garch11": garch11,
    "arK-arK": arK,
}
