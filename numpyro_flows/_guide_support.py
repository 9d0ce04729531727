"""Internals shared by the guide-facing modules (guides, diagnostics, NeuTra, ArviZ export,
monitoring, ``fit_guide``, the mode search and the Laplace warm start).

Plain names, no public API: the modules import from here instead of each other's
underscored helpers. What users call is re-exported where it belongs.

* A model's latent sample sites, read from one seeded run, and the clear error for a
  discrete one (:func:`latent_sites`, :func:`reject_discrete_latents`).
* Checks of a guide and its parameters before a diagnostic, NeuTra or an export uses them
  (:func:`require_continuous`, :func:`ensure_setup`, :func:`check_params`).
* The L-BFGS loop of the Laplace warm start and the mode search (:func:`minimise`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from numpyro import handlers, validation_enabled
from numpyro.infer.autoguide import AutoContinuous


# ---------------------------------------------------------------------- latent sites
def latent_sites(model, args: tuple, kwargs: dict, substitute_fn=None) -> dict | None:
    """``{name: site}`` of the unobserved sample sites of one run of ``model``, in order.

    The run is seeded, records nothing outside, and has argument validation off: only the
    sites' distributions and shapes are read, and a value where the model's computation
    blows up (a NaN loc) must not make a valid model fail here. ``substitute_fn`` (an
    init strategy) sets the values; by default they are prior draws.

    Returns:
        The sites, or ``None`` when the model cannot be run this way (its own set-up
        elsewhere reports that with the model).
    """
    model = handlers.seed(model, 0)
    if substitute_fn is not None:
        model = handlers.substitute(model, substitute_fn=substitute_fn)
    try:
        with handlers.block(), validation_enabled(False):
            trace = handlers.trace(model).get_trace(*args, **kwargs)
    except Exception:  # noqa: BLE001 - left to the caller's own set-up to report
        return None
    return {
        name: site
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def reject_discrete_latents(sites: dict, owner: str) -> None:
    """Raises a ``ValueError`` naming the first discrete site and the fix."""
    for name, site in sites.items():
        if site["fn"].support.is_discrete:
            raise ValueError(
                f"{owner} cannot guide the discrete latent site '{name}': flow guides are "
                "continuous. Marginalise it out of the model (sum over its values with "
                "numpyro.factor, or mark it infer={'enumerate': 'parallel'} and use "
                "TraceEnum_ELBO with a guide that hides it via numpyro.handlers.block)."
            )


def picklable_or_none(obj):
    """``obj`` if it pickles (a guide keeps it in its file), else ``None``."""
    import pickle

    try:
        pickle.dumps(obj)
    except Exception:  # noqa: BLE001 - whatever stops pickling, the guide drops it
        return None
    return obj


# ---------------------------------------------------------------------- guide checks
def require_continuous(guide) -> None:
    """A ``TypeError`` unless ``guide`` has a joint density over all latents."""
    if not isinstance(guide, AutoContinuous):
        raise TypeError(
            "PSIS diagnostics need a guide with a joint density over all latents (an "
            f"AutoContinuous such as AutoFlow or AutoIAFNormal), got {type(guide).__name__}."
        )


def is_set_up(guide) -> bool:
    """Whether the guide has met its model. NumPyro's guides hold the prototype trace;
    AutoHybridFlow keeps what it needs without it (a loaded one too), and is never set up
    twice: its encoder's input standardisation comes from the data it first met."""
    return guide.prototype_trace is not None or getattr(guide, "_is_set_up", False)


def ensure_setup(guide, args: tuple, kwargs: dict) -> None:
    """Sets the guide up with the model's arguments if it has not met the model yet."""
    if not is_set_up(guide):
        if guide.model is None:
            raise ValueError(
                "This guide was loaded without its model; the diagnostics need the model's "
                "log density. Set guide.model = model first."
            )
        with handlers.seed(rng_seed=0):
            guide._setup_prototype(*args, **kwargs)


def check_params(guide, params) -> None:
    """A clear error for params that cannot be the guide's fitted parameters."""
    if hasattr(params, "params") and hasattr(params, "losses"):
        raise TypeError(
            "Pass the fitted parameters, not the SVI result: use result.params (or "
            "svi.get_params(state))."
        )
    if not isinstance(params, dict):
        raise TypeError(
            f"params must be the dict of fitted parameters (svi.get_params(state) or "
            f"svi.run(...).params), got {type(params).__name__}."
        )
    prefix = f"{guide.prefix}_"
    if not any(name.startswith(prefix) for name in params):
        raise ValueError(
            f"params holds none of the guide's parameters ('{prefix}...'): the guide has not "
            "been trained, or these are another guide's parameters. Train it with SVI and "
            "pass svi.get_params(state) or svi.run(...).params."
        )


# ---------------------------------------------------------------------- optimisation
def minimise(potential, z0, max_iterations: int, tolerance: float, solver=None):
    """L-BFGS on ``potential`` from ``z0`` until the gradient norm is below ``tolerance``,
    ``max_iterations`` are spent or a value turns non-finite (traceable: jit or vmap it).

    Args:
        potential: ``(D,) -> scalar``.
        z0: the starting point ``(D,)``.
        max_iterations: iteration cap.
        tolerance: gradient-norm tolerance.
        solver: an optax L-BFGS (default ``optax.lbfgs()``, a zoom line search).

    Returns:
        ``(z, iterations, grad_norm)``.
    """
    solver = optax.lbfgs() if solver is None else solver
    value_and_grad = optax.value_and_grad_from_state(potential)

    def step(carry):
        z, state = carry
        value, grad = value_and_grad(z, state=state)
        updates, state = solver.update(grad, state, z, value=value, grad=grad, value_fn=potential)
        return optax.apply_updates(z, updates), state

    def keep_going(carry):
        z, state = carry
        count = optax.tree.get(state, "count")
        grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
        finite = (
            jnp.isfinite(optax.tree.get(state, "value"))
            & jnp.isfinite(grad_norm)
            & jnp.all(jnp.isfinite(z))
        )
        return (count == 0) | ((count < max_iterations) & (grad_norm >= tolerance) & finite)

    z, state = jax.lax.while_loop(keep_going, step, (z0, solver.init(z0)))
    return z, optax.tree.get(state, "count"), optax.tree.norm(optax.tree.get(state, "grad"))


def inverse_hessian(hessian):
    """``(covariance, scale_tril, positive)`` of the inverse of a (symmetrised) Hessian:
    ``positive`` says whether it is positive definite; where it is not, the covariance and
    its Cholesky factor mean nothing. Traceable (the mode search runs it under ``vmap``)."""
    hessian = 0.5 * (hessian + hessian.T)
    eigenvalues, vectors = jnp.linalg.eigh(hessian)
    positive = eigenvalues.min() > 0
    covariance = (vectors / jnp.where(positive, eigenvalues, 1.0)) @ vectors.T
    return covariance, jnp.linalg.cholesky(0.5 * (covariance + covariance.T)), positive
