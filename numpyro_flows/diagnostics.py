"""Can the variational fit be trusted? PSIS k-hat, importance weights, resampling.

Yao, Vehtari, Simpson and Gelman (2018), *Yes, but Did It Work?: Evaluating Variational
Inference*, https://arxiv.org/abs/1802.02538: draw ``z ~ q``, form the log importance
ratios ``log p(x, z) - log q(z)``, Pareto-smooth them (ArviZ's :func:`arviz.psislw`) and
read the shape ``k-hat`` of the fitted tail: below 0.5 the guide is a good importance
proposal; 0.5-0.7 usable with care; above 0.7 the guide misses mass of the posterior and
its draws should not be trusted (Vehtari et al. 2024, https://arxiv.org/abs/1507.02646).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.infer.autoguide import AutoContinuous

from numpyro_flows._arviz_import import import_arviz

# k-hat thresholds of Vehtari et al. (2024) for S draws: min(1 - 1/log10(S), 0.7).
KHAT_GOOD = 0.5
KHAT_BAD = 0.7


class PSISResult(NamedTuple):
    """What :func:`psis_diagnostic` returns.

    Attributes:
        khat: Pareto shape of the importance-ratio tail (lower is better; > 0.7 is bad).
        log_weights: smoothed, normalised log importance weights ``(S,)``.
        ess: importance-sampling effective sample size of the smoothed weights.
        log_evidence: importance-sampling estimate of ``log p(x)`` (from the raw ratios).
        log_p: ``log p(x, z)`` per draw, in the unconstrained space ``(S,)``.
        log_q: ``log q(z)`` per draw ``(S,)``.
        latent: the unconstrained latent draws ``(S, D)``.
    """

    khat: float
    log_weights: np.ndarray
    ess: float
    log_evidence: float
    log_p: np.ndarray
    log_q: np.ndarray
    latent: np.ndarray


def _require_continuous(guide):
    if not isinstance(guide, AutoContinuous):
        raise TypeError(
            "PSIS diagnostics need a guide with a joint density over all latents (an "
            f"AutoContinuous such as AutoFlow or AutoIAFNormal), got {type(guide).__name__}."
        )


def _ensure_setup(guide, args, kwargs):
    if guide.prototype_trace is None:
        if guide.model is None:
            raise ValueError(
                "This guide was loaded without its model; the diagnostics need the model's "
                "log density. Set guide.model = model first."
            )
        with handlers.seed(rng_seed=0):
            guide._setup_prototype(*args, **kwargs)


def importance_log_ratios(rng_key, guide, params, *args, num_samples: int = 1000, **kwargs):
    """Draws ``z ~ q`` and returns ``(latent, log_p, log_q)``, all in the unconstrained
    space (``log_p`` includes the Jacobian of the constraining maps)."""
    _require_continuous(guide)
    _ensure_setup(guide, args, kwargs)
    potential_fn = guide._potential_fn_gen(*args, **kwargs)

    @jax.jit
    def draw(rng_key, params):
        # Base + transform works for every AutoContinuous (NumPyro's diagonal and
        # multivariate normals return other posterior types from get_posterior).
        posterior = dist.TransformedDistribution(guide.get_base_dist(), guide.get_transform(params))
        latent, intermediates = posterior.sample_with_intermediates(rng_key, (num_samples,))
        log_q = posterior.log_prob(latent, intermediates)
        log_p = -jax.vmap(lambda z: potential_fn(guide._unpack_latent(z)))(latent)
        return latent, log_p, log_q

    latent, log_p, log_q = draw(rng_key, params)
    return np.asarray(latent), np.asarray(log_p), np.asarray(log_q)


def psis_from_log_ratios(log_ratios, latent=None, log_p=None, log_q=None) -> PSISResult:
    """Pareto-smooths log importance ratios ``(S,)`` with ArviZ and summarises them."""
    log_ratios = np.asarray(log_ratios, np.float64)
    finite = np.isfinite(log_ratios)
    if not np.all(finite):
        # A draw where the model's density is 0 or NaN has weight 0, not NaN.
        log_ratios = np.where(finite, log_ratios, -np.inf)
    if not np.any(np.isfinite(log_ratios)):
        raise ValueError(
            "Every importance ratio is -inf or NaN: the model's log density is not finite at "
            "any guide draw. Check the model and the fitted parameters."
        )
    smoothed, khat = import_arviz().psislw(log_ratios[None, :].copy())
    smoothed = np.asarray(smoothed)[0]
    weights = np.exp(smoothed - logsumexp(smoothed))
    ess = float(1.0 / np.sum(weights**2))
    log_evidence = float(logsumexp(log_ratios) - np.log(len(log_ratios)))
    return PSISResult(
        float(np.asarray(khat).reshape(-1)[0]),
        smoothed,
        ess,
        log_evidence,
        log_p,
        log_q,
        latent,
    )


def psis_diagnostic(rng_key, guide, params, *args, num_samples: int = 1000, **kwargs) -> PSISResult:
    """PSIS diagnostic of a fitted guide: k-hat, smoothed weights, ESS, log evidence.

    Args:
        rng_key: a JAX PRNG key.
        guide: a fitted ``AutoContinuous`` guide (``AutoFlow`` and presets, or NumPyro's).
        params: the fitted parameters (``svi.get_params(state)``).
        *args, **kwargs: the model's arguments (the data), as given to SVI.
        num_samples: number of guide draws ``S``.

    Example::

        result = psis_diagnostic(jax.random.key(1), guide, params, data)
        if result.khat > 0.7:
            print("the guide misses part of the posterior")
    """
    latent, log_p, log_q = importance_log_ratios(
        rng_key, guide, params, *args, num_samples=num_samples, **kwargs
    )
    return psis_from_log_ratios(log_p - log_q, latent, log_p, log_q)


def psis_resample(
    rng_key, guide, params, *args, num_samples: int = 1000, num_draws: int | None = None, **kwargs
) -> dict:
    """PSIS-corrected posterior draws: guide draws resampled by their smoothed weights.

    Draws ``num_samples`` from the guide, Pareto-smooths the importance weights and
    resamples ``num_draws`` (default ``num_samples``) of them with replacement, returning
    ``{site: array (num_draws, ...)}`` of constrained latent and deterministic sites.
    The result is closer to the posterior than raw guide draws when k-hat < 0.7; check
    :func:`psis_diagnostic` first.
    """
    key_draw, key_pick = jax.random.split(rng_key)
    result = psis_diagnostic(key_draw, guide, params, *args, num_samples=num_samples, **kwargs)
    num_draws = num_samples if num_draws is None else num_draws
    idx = jax.random.categorical(key_pick, jnp.asarray(result.log_weights), shape=(num_draws,))
    latent = jnp.asarray(result.latent)[idx]
    return guide._unpack_and_constrain(latent, params)


__all__ = [
    "KHAT_BAD",
    "KHAT_GOOD",
    "PSISResult",
    "importance_log_ratios",
    "psis_diagnostic",
    "psis_from_log_ratios",
    "psis_resample",
]
