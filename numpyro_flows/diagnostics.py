"""Can the variational fit be trusted? PSIS k-hat, importance weights, resampling.

Yao, Vehtari, Simpson and Gelman (2018), *Yes, but Did It Work?: Evaluating Variational
Inference*, https://arxiv.org/abs/1802.02538: draw ``z ~ q``, form the log importance
ratios ``log p(x, z) - log q(z)``, Pareto-smooth them (ArviZ's :func:`arviz.psislw`) and
read the shape ``k-hat`` of the fitted tail: below 0.5 the guide is a good importance
proposal; 0.5-0.7 usable with care; above 0.7 the guide misses mass of the posterior and
its draws should not be trusted (Vehtari et al. 2024, https://arxiv.org/abs/1507.02646,
who also give the sample-size dependent threshold of :func:`khat_threshold`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer.util import constrain_fn, potential_energy
from scipy.special import logsumexp

from numpyro_flows._arviz_import import import_arviz
from numpyro_flows._compile import package_jit
from numpyro_flows._guide_support import check_params, ensure_setup, require_continuous
from numpyro_flows.hybrid import AutoHybridFlow

# k-hat thresholds of Vehtari et al. (2024); with S draws the "bad" threshold is
# min(1 - 1/log10(S), 0.7) (see khat_threshold).
KHAT_GOOD = 0.5
KHAT_BAD = 0.7

# An importance-sampling ESS below this (out of S draws) means one draw carries nearly all
# the weight: the weights are degenerate, whatever k-hat says.
DEGENERATE_ESS = 2.0

# ArviZ fits the Pareto tail to the largest ceil(S / 5) ratios (for small S) and needs
# more than 4 of them: below 21 draws k-hat cannot be estimated.
MIN_PSIS_SAMPLES = 21


class PSISResult(NamedTuple):
    """What :func:`psis_diagnostic` returns.

    Attributes:
        khat: Pareto shape of the importance-ratio tail (lower is better; above
            :func:`khat_threshold` (0.7 for S >= 2200 draws) the guide is not a reliable
            posterior approximation). ``inf`` when the weights are degenerate (see
            ``failure``), so that ``khat > 0.7`` flags them.
        log_weights: smoothed, normalised log importance weights ``(S,)``
            (``logsumexp(log_weights) == 0``).
        ess: importance-sampling effective sample size of the smoothed weights,
            ``1 / sum(w**2)``, between 1 and S.
        log_evidence: importance-sampling estimate of ``log p(x)`` from the raw ratios.
        log_p: ``log p(x, z)`` per draw, in the unconstrained space (including the
            log-Jacobian of the constraining maps) ``(S,)``.
        log_q: ``log q(z)`` per draw ``(S,)``.
        latent: the unconstrained latent draws ``(S, D)``.
        failure: ``None``, or what went wrong when the weights are degenerate: all
            finite ratios equal (float precision swamped the guide's density, typically
            data of huge magnitude), a failed tail fit, or an ESS of about 1 (one draw
            carries all the weight). A result with a failure is never "ok".
    """

    khat: float
    log_weights: np.ndarray
    ess: float
    log_evidence: float
    log_p: np.ndarray | None
    log_q: np.ndarray | None
    latent: np.ndarray | None
    failure: str | None = None

    @property
    def verdict(self) -> str:
        """k-hat's verdict in words (:func:`numpyro_flows.reports.khat_verdict`)."""
        from numpyro_flows.reports import khat_verdict

        return khat_verdict(self.khat, ess=self.ess, failure=self.failure)

    def __repr__(self) -> str:
        shapes = ", ".join(
            f"{name}={_shape(getattr(self, name))}"
            for name in ("log_weights", "log_p", "log_q", "latent")
        )
        return (
            f"PSISResult(khat={self.khat:.3g} [{self.verdict}], ess={self.ess:.1f} of "
            f"{len(self.log_weights)}, log_evidence={self.log_evidence:.4g}, {shapes})"
        )

    __str__ = __repr__


def _shape(value) -> str:
    """An array's shape for a short repr (``None`` stays ``None``)."""
    return "None" if value is None else str(tuple(np.shape(value)))


def khat_threshold(num_samples: int) -> float:
    """The k-hat above which PSIS with ``num_samples`` draws is unreliable.

    Vehtari et al. (2024), *Pareto Smoothed Importance Sampling*,
    https://arxiv.org/abs/1507.02646, Section 3: ``min(1 - 1 / log10(S), 0.7)``. With
    fewer draws the bound is stricter (0.67 for S = 1000, 0.5 for S = 100).

    Args:
        num_samples: number of importance draws ``S`` (> 10).

    Returns:
        The threshold as a float.
    """
    if num_samples <= 10:
        raise ValueError(f"num_samples must be > 10 for a k-hat threshold, got {num_samples}.")
    return float(min(1.0 - 1.0 / np.log10(num_samples), KHAT_BAD))


# ---------------------------------------------------------------------- input checks
def _check_num_samples(num_samples):
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise TypeError(f"num_samples must be an int, got {type(num_samples).__name__}.")
    if num_samples < MIN_PSIS_SAMPLES:
        raise ValueError(
            f"num_samples={num_samples} is too few for PSIS: k-hat needs at least "
            f"{MIN_PSIS_SAMPLES} draws, and is reliable from about 1000 on."
        )


# ---------------------------------------------------------------------- draws and ratios
def log_ratio_fn(guide, *args, num_samples: int = 1000, **kwargs) -> Callable:
    """A compiled ``(rng_key, params) -> (latent, log_p, log_q)`` for a set-up guide.

    Build it once and call it many times (e.g. every N steps of SVI): it compiles on the
    first call only. Draws are in the unconstrained space; ``log_p`` includes the
    log-Jacobian of the constraining maps, so ``log_p - log_q`` are the log importance
    ratios of Yao et al. (2018), https://arxiv.org/abs/1802.02538.

    Args:
        guide: an ``AutoContinuous`` guide (set up with the model on first use).
        *args, **kwargs: the model's arguments (the data), as given to SVI.
        num_samples: number of guide draws ``S`` per call.

    Returns:
        A jitted function returning JAX arrays ``latent (S, D)``, ``log_p (S,)``,
        ``log_q (S,)``.
    """
    require_continuous(guide)
    _check_num_samples(num_samples)
    ensure_setup(guide, args, kwargs)
    potential_fn = guide._potential_fn_gen(*args, **kwargs)
    trace = guide.prototype_trace
    has_model_params = any(site["type"] == "param" for site in trace.values())
    is_mixture = hasattr(guide, "mixture_weights")

    def log_density(params, z):
        if not has_model_params:
            return -potential_fn(guide._unpack_latent(z))
        # The model's own param sites (e.g. a learned centring) at their fitted values,
        # not the initial values the guide's potential function was built with.
        model = model_with_fitted_params(guide, params)
        return -potential_energy(model, args, kwargs, guide._unpack_latent(z))

    @package_jit
    def draw(rng_key, params):
        if is_mixture:
            # A mixture of flows (AutoFlowMixture) has a density but no single transform.
            posterior = guide.get_posterior(params)
            latent = posterior.sample(rng_key, (num_samples,))
            log_q = posterior.log_prob(latent)
        else:
            # Base + transform works for every AutoContinuous (NumPyro's diagonal and
            # multivariate normals return other posterior types from get_posterior).
            posterior = dist.TransformedDistribution(
                guide.get_base_dist(), guide.get_transform(params)
            )
            latent, intermediates = posterior.sample_with_intermediates(rng_key, (num_samples,))
            log_q = posterior.log_prob(latent, intermediates)
        log_p = jax.vmap(lambda z: log_density(params, z))(latent)
        return latent, log_p, log_q

    return draw


def importance_log_ratios(
    rng_key, guide, params, *args, num_samples: int = 1000, **kwargs
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws ``z ~ q`` and returns the pieces of the log importance ratios.

    Args:
        rng_key: a JAX PRNG key.
        guide: a fitted ``AutoContinuous`` guide.
        params: its fitted parameters (``svi.get_params(state)``).
        *args, **kwargs: the model's arguments (the data), as given to SVI.
        num_samples: number of guide draws ``S``.

    Returns:
        ``(latent, log_p, log_q)`` as NumPy arrays of shapes ``(S, D)``, ``(S,)``,
        ``(S,)``, all in the unconstrained space (``log_p`` includes the log-Jacobian of
        the constraining maps).
    """
    if isinstance(guide, AutoHybridFlow):
        # Locals per row: no flat latent vector; the ratios are over the full data.
        check_params(guide, params)
        _, log_p, log_q = guide.importance_draws(
            rng_key, params, *args, num_samples=num_samples, keep_draws=False, **kwargs
        )
        return None, np.asarray(log_p), np.asarray(log_q)
    require_continuous(guide)
    check_params(guide, params)
    draw = log_ratio_fn(guide, *args, num_samples=num_samples, **kwargs)
    latent, log_p, log_q = draw(rng_key, params)
    return np.asarray(latent), np.asarray(log_p), np.asarray(log_q)


def psis_from_log_ratios(log_ratios, latent=None, log_p=None, log_q=None) -> PSISResult:
    """Pareto-smooths log importance ratios with ArviZ and summarises them.

    Draws with a NaN or ``-inf`` ratio (the model's density is zero or undefined there)
    get weight zero. Degenerate weights (all finite ratios equal, a failed tail fit, or an
    ESS below ``DEGENERATE_ESS`` = 2) are reported in ``failure``, with ``khat = inf``
    where it could not be estimated.

    Args:
        log_ratios: ``log p(x, z) - log q(z)`` for ``S >= 21`` draws ``z ~ q``, shape
            ``(S,)``.
        latent, log_p, log_q: optional, stored in the result as they are.

    Returns:
        A :class:`PSISResult`; see Vehtari et al. (2024), https://arxiv.org/abs/1507.02646.
    """
    log_ratios = np.asarray(log_ratios, np.float64)
    if log_ratios.ndim != 1:
        raise ValueError(f"log_ratios must have shape (S,), got {log_ratios.shape}.")
    _check_num_samples(len(log_ratios))
    finite = np.isfinite(log_ratios)
    if not np.all(finite):
        # A draw where the model's density is 0 or NaN has weight 0, not NaN.
        log_ratios = np.where(finite, log_ratios, -np.inf)
    if not np.any(finite):
        raise ValueError(
            "Every importance ratio is -inf or NaN: the model's log density is not finite at "
            "any guide draw. Check the model and the fitted parameters."
        )
    failure = None
    if np.ptp(log_ratios[finite]) == 0:
        # Equal ratios: k-hat cannot be estimated. In floating point this is rarely an
        # exact guide; far more often log p(x, z) is so large that its rounding swamps
        # log q(z) (data of huge magnitude), and the "posterior" means nothing.
        smoothed = np.where(finite, -np.log(np.sum(finite)), -np.inf)
        khat = np.inf
        failure = (
            f"all {int(np.sum(finite))} finite importance ratios are equal "
            f"(log p - log q = {log_ratios[finite][0]:.4g}), so k-hat cannot be estimated: "
            "usually the model's log density is so large that float precision swamps the "
            "guide's (check the scale of the data)"
        )
    else:
        smoothed, khat = import_arviz().psislw(log_ratios[None, :].copy())
        smoothed, khat = np.asarray(smoothed)[0], float(np.asarray(khat).reshape(-1)[0])
    weights = np.exp(smoothed - logsumexp(smoothed))
    ess = float(1.0 / np.sum(weights**2))
    if failure is None and not np.isfinite(khat):
        failure = (
            f"the Pareto tail fit failed (k-hat = {khat}, ESS {ess:.2f} of "
            f"{len(log_ratios)}): a few draws carry nearly all the weight"
        )
        khat = np.inf
    if failure is None and ess < DEGENERATE_ESS:
        failure = (
            f"one draw carries {np.max(weights):.0%} of the importance weight (ESS "
            f"{ess:.2f} of {len(log_ratios)}): the guide misses the posterior"
        )
    return PSISResult(
        khat=khat,
        log_weights=smoothed,
        ess=ess,
        log_evidence=float(logsumexp(log_ratios) - np.log(len(log_ratios))),
        log_p=log_p,
        log_q=log_q,
        latent=latent,
        failure=failure,
    )


def psis_diagnostic(rng_key, guide, params, *args, num_samples: int = 1000, **kwargs) -> PSISResult:
    """PSIS diagnostic of a fitted guide: k-hat, smoothed weights, ESS, log evidence.

    Yao et al. (2018), *Yes, but Did It Work?: Evaluating Variational Inference*,
    https://arxiv.org/abs/1802.02538; Vehtari et al. (2024), *Pareto Smoothed Importance
    Sampling*, https://arxiv.org/abs/1507.02646.

    Args:
        rng_key: a JAX PRNG key.
        guide: a fitted ``AutoContinuous`` guide (``AutoFlow`` and presets, or NumPyro's).
        params: the fitted parameters (``svi.get_params(state)``).
        *args, **kwargs: the model's arguments (the data), as given to SVI.
        num_samples: number of guide draws ``S`` (at least 21; 1000 or more for a
            reliable k-hat).

    Returns:
        A :class:`PSISResult`. ``khat`` above :func:`khat_threshold` (at most 0.7) means
        the guide misses part of the posterior; ``failure`` says when the weights are
        degenerate (then ``khat`` is ``inf`` or the ESS about 1). ``print(result)`` shows
        k-hat with its verdict (:func:`numpyro_flows.reports.khat_verdict`), the ESS and
        the array shapes.

    Example::

        result = psis_diagnostic(jax.random.key(1), guide, params, data)
        if result.khat > 0.7:
            print("the guide misses part of the posterior")
    """
    latent, log_p, log_q = importance_log_ratios(
        rng_key, guide, params, *args, num_samples=num_samples, **kwargs
    )
    return psis_from_log_ratios(log_p - log_q, latent, log_p, log_q)


def _model_param_values(guide, params) -> dict:
    """The fitted values of the model's own ``numpyro.param`` sites."""
    trace = guide.prototype_trace or {}
    return {
        name: value
        for name, value in params.items()
        if name in trace and trace[name]["type"] == "param"
    }


def model_with_fitted_params(guide, params):
    """The guide's model with its own ``numpyro.param`` sites (e.g. the learned centring
    of :func:`numpyro_flows.fit_guide`) at their fitted values from ``params``."""
    return handlers.substitute(guide.model, data=_model_param_values(guide, params))


def constrained_draws(guide, params, latent, *args, **kwargs) -> dict:
    """Maps unconstrained guide draws to the model's latent and deterministic sites.

    Runs the model (with these arguments, so deterministic sites see this data) once per
    draw, vectorised.

    Args:
        guide: a set-up ``AutoContinuous`` guide.
        params: its fitted parameters (the model's own param sites are taken from here).
        latent: unconstrained draws of shape ``(S, D)``, e.g. ``PSISResult.latent``.
        *args, **kwargs: the model's arguments.

    Returns:
        ``{site: array (S, ...)}`` for every latent (constrained) and deterministic site.
    """
    require_continuous(guide)
    ensure_setup(guide, args, kwargs)
    model = handlers.seed(model_with_fitted_params(guide, params), rng_seed=0)
    unconstrained = guide._unpack_latent(jnp.asarray(latent))

    # One compiled function instead of many small eager ops (much faster to build).
    @jax.jit
    def constrain(unconstrained):
        return constrain_fn(
            model, args, kwargs, unconstrained, return_deterministic=True, batch_ndims=1
        )

    values = constrain(unconstrained)
    # Keep the model's site order (and drop model params, which are not draws).
    trace = guide.prototype_trace
    order = [name for name in trace if name in values and trace[name]["type"] != "param"]
    order += [name for name in values if name not in trace]
    return {name: values[name] for name in order}


def psis_resample(
    rng_key, guide, params, *args, num_samples: int = 1000, num_draws: int | None = None, **kwargs
) -> dict:
    """PSIS-corrected posterior draws: guide draws resampled by their smoothed weights.

    Draws ``num_samples`` from the guide, Pareto-smooths the importance weights and
    resamples ``num_draws`` of them with replacement (sampling-importance-resampling with
    PSIS weights; Vehtari et al. 2024, https://arxiv.org/abs/1507.02646). The result is
    closer to the posterior than raw guide draws when k-hat is small; check
    :func:`psis_diagnostic` first. Repeated draws are expected: at most ``ess`` of them
    are distinct in effect.

    Args:
        rng_key: a JAX PRNG key.
        guide: a fitted ``AutoContinuous`` guide.
        params: its fitted parameters (``svi.get_params(state)``).
        *args, **kwargs: the model's arguments (the data), as given to SVI.
        num_samples: number of guide draws to weight.
        num_draws: number of resampled draws (default ``num_samples``).

    Returns:
        ``{site: array (num_draws, ...)}`` of constrained latent and deterministic sites.
    """
    key_draw, key_pick = jax.random.split(rng_key)
    if isinstance(guide, AutoHybridFlow):
        check_params(guide, params)
        _check_num_samples(num_samples)
        draws, log_p, log_q = guide.importance_draws(
            key_draw, params, *args, num_samples=num_samples, **kwargs
        )
        result = psis_from_log_ratios(np.asarray(log_p - log_q))
        idx = _resample_indices(key_pick, result, num_samples, num_draws)
        return {name: value[idx] for name, value in draws.items()}
    result = psis_diagnostic(key_draw, guide, params, *args, num_samples=num_samples, **kwargs)
    idx = _resample_indices(key_pick, result, num_samples, num_draws)
    latent = jnp.asarray(result.latent)[idx]
    return constrained_draws(guide, params, latent, *args, **kwargs)


def _resample_indices(rng_key, result: PSISResult, num_samples: int, num_draws: int | None):
    num_draws = num_samples if num_draws is None else num_draws
    if num_draws < 1:
        raise ValueError(f"num_draws must be a positive integer, got {num_draws}.")
    return jax.random.categorical(rng_key, jnp.asarray(result.log_weights), shape=(num_draws,))


__all__ = [
    "DEGENERATE_ESS",
    "KHAT_BAD",
    "KHAT_GOOD",
    "MIN_PSIS_SAMPLES",
    "PSISResult",
    "constrained_draws",
    "importance_log_ratios",
    "khat_threshold",
    "log_ratio_fn",
    "model_with_fitted_params",
    "psis_diagnostic",
    "psis_from_log_ratios",
    "psis_resample",
]
