"""Laplace warm start: the posterior mode and the curvature there, to centre and shape a
guide before SVI.

The mode is found with L-BFGS (``optax.lbfgs`` with a zoom line search) on the model's
potential in the unconstrained space; the curvature is the autodiff Hessian there. A
Gaussian ``N(mode, H^{-1})`` is the Laplace approximation (e.g. Bishop 2006, sec. 4.4);
flow guides start from it and learn what is not Gaussian. On posteriors that are nearly
Gaussian but badly scaled or strongly correlated (regressions with collinear predictors)
this saves SVI most of its work: Adam, a diagonal preconditioner, crawls along such
directions.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_flows._guide_support import inverse_hessian, minimise
from numpyro_flows.diagnostics import psis_from_log_ratios


class LaplaceResult(NamedTuple):
    """The mode and the Laplace scale.

    Attributes:
        loc: the mode ``(D,)`` (or the last iterate if the search did not converge).
        scale_tril: lower Cholesky factor of the inverse Hessian ``(D, D)``, or ``None``
            where the Hessian is not finite and positive definite (no usable curvature).
        converged: the gradient norm fell below the tolerance (or, from a mode search,
            the Newton step there is below ``modes.MAX_NEWTON_DISTANCE`` standard
            deviations).
        iterations: L-BFGS iterations used (``0`` when taken from a mode search).
        grad_norm: the final gradient norm (``nan`` when taken from a mode search).
    """

    loc: jnp.ndarray
    scale_tril: jnp.ndarray | None
    converged: bool
    iterations: int
    grad_norm: float


def laplace_approximation(
    potential_fn, z0, *, max_iterations: int = 1000, tolerance: float | None = None
) -> LaplaceResult:
    """Mode and Laplace scale of ``exp(-potential_fn)``.

    Args:
        potential_fn: ``(D,) -> scalar``, the negative log density (unconstrained).
        z0: starting point ``(D,)``.
        max_iterations: L-BFGS iteration cap.
        tolerance: gradient-norm tolerance (default ``sqrt(eps)`` of the dtype).

    Returns:
        A :class:`LaplaceResult`. ``scale_tril`` is ``None`` when the Hessian at the end
        point is not finite and positive definite, e.g. when there is no mode (the
        density grows without bound, as at a funnel's neck).
    """
    z0 = jnp.asarray(z0)
    if tolerance is None:
        # sqrt(eps): 1.5e-8 in float64, 3.5e-4 in float32.
        tolerance = float(jnp.sqrt(jnp.finfo(z0.dtype).eps))
    z, count, grad_norm = jax.jit(minimise, static_argnums=(0, 2, 3))(
        potential_fn, z0, max_iterations, tolerance
    )
    converged = bool(grad_norm < tolerance) and bool(jnp.all(jnp.isfinite(z)))
    scale_tril = None
    if bool(jnp.all(jnp.isfinite(z))):
        hessian = jax.jit(jax.hessian(potential_fn))(z)
        if bool(jnp.all(jnp.isfinite(hessian))):
            _, chol, positive = inverse_hessian(hessian)
            if bool(positive) and bool(jnp.all(jnp.isfinite(chol))):
                scale_tril = chol
    return LaplaceResult(z, scale_tril, converged, int(count), float(grad_norm))


def laplace_from_modes(modes) -> LaplaceResult | None:
    """The Laplace approximation at the one mode of a mode search
    (:func:`~numpyro_flows.find_modes`), or ``None`` unless it found exactly one.

    The search has found the mode and the inverse Hessian there already; a warm start
    from this result costs no second search (and no compilation of one).
    """
    if modes is None or modes.num_modes != 1:
        return None
    return LaplaceResult(
        jnp.asarray(modes.locs[0]), jnp.asarray(modes.scale_trils[0]), True, 0, float("nan")
    )


def laplace_khat(potential_fn, result: LaplaceResult, rng_key, num_samples: int = 500) -> float:
    """PSIS k-hat of the Laplace approximation as an importance proposal.

    A mode is not always a good place to start: a funnel's joint density has its mode
    deep in the neck, where the Laplace approximation is a needle. Drawing from
    ``N(mode, H^{-1})`` and Pareto-smoothing the ratios (Yao et al. 2018,
    https://arxiv.org/abs/1802.02538) tells a usable Gaussian (k-hat well below 0.7) from
    such a needle.

    Args:
        potential_fn: ``(D,) -> scalar``, the negative log density (unconstrained).
        result: a :class:`LaplaceResult` with a ``scale_tril``.
        rng_key: a JAX PRNG key.
        num_samples: draws from the approximation.

    Returns:
        k-hat (see :func:`khat_or_inf`; ``inf`` where the result has no scale).
    """
    if result.scale_tril is None:
        return float("inf")
    log_p, log_q = _laplace_log_densities(
        potential_fn, result.loc, result.scale_tril, rng_key, num_samples
    )
    return khat_or_inf(log_p, log_q)


def khat_or_inf(log_p, log_q) -> float:
    """PSIS k-hat of a proposal from ``log p`` and ``log q`` at its draws: ``inf`` where no
    ratio is finite (every draw lies where the target has no density: as bad as it gets),
    ``-inf`` where ``log p`` moves exactly with ``log q`` (the proposal is the posterior up
    to its normaliser, e.g. the Laplace Gaussian of a Gaussian model: equal weights, no
    tail to fit). The ratios are taken in float64, so float32 rounding of a large
    ``log p - log q`` cannot make them equal."""
    log_p, log_q = np.asarray(log_p, np.float64), np.asarray(log_q, np.float64)
    ratios = log_p - log_q
    finite = np.isfinite(ratios)
    if not np.any(finite):
        return float("inf")
    if np.ptp(ratios[finite]) == 0 and np.ptp(log_q[finite]) > 0:
        return float("-inf")
    return float(psis_from_log_ratios(ratios).khat)


# Module level, the potential static: a second check with the same potential (a guide
# trying two candidate modes) reuses the compiled function.
@functools.partial(jax.jit, static_argnums=(0, 4))
def _laplace_log_densities(potential_fn, loc, scale_tril, key, num_samples):
    """``(log p, log q)`` at draws from the Laplace Gaussian (both up to constants)."""
    eps = jax.random.normal(key, (num_samples, loc.shape[-1]), loc.dtype)
    z = loc + eps @ scale_tril.T
    log_q = -0.5 * jnp.sum(eps**2, -1) - jnp.sum(jnp.log(jnp.diag(scale_tril)))
    return -jax.vmap(potential_fn)(z), log_q


__all__ = [
    "LaplaceResult",
    "khat_or_inf",
    "laplace_approximation",
    "laplace_from_modes",
    "laplace_khat",
]
