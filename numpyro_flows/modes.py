"""Mode search: does a posterior have several separated modes, where, and how heavy?

Training a guide by the ELBO (reverse KL) is mode-seeking: a flow started at one mode
learns that mode and never sees the others, so a two-mode posterior comes back as one
(KL ``log 2``) with nothing in the loss to say so. Before training we therefore look:

1. L-BFGS on the model's potential from ``num_starts`` points, half from NumPyro's
   ``init_to_uniform`` box (where NumPyro's own samplers start) and half from prior draws
   (``init_to_sample``, which falls back to the box for improper priors);
2. at each end point, the Laplace approximation (mode, inverse-Hessian Cholesky factor);
   end points with no positive curvature, or more than ``MAX_NEWTON_DISTANCE`` posterior
   standard deviations from the nearest mode (a Newton step away), are dropped: no mode
   there (a funnel's neck, a flat ridge);
3. two end points are the same mode when they are within one posterior standard
   deviation of each other or when the potential along the segment between them never
   rises ``barrier`` nats above its higher end: separate modes are separated by a valley of
   low density, a ridge or a curved single mode is not;
4. each mode is weighted by its Laplace mass ``exp(-U) |Sigma|^(1/2)``; modes below
   ``min_weight`` are dropped.

The result is what :class:`~numpyro_flows.AutoFlowMixture` starts its components from,
and what :func:`numpyro_flows.fit_guide` uses to decide between one flow and a mixture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers, validation_enabled
from numpyro.distributions.transforms import biject_to
from numpyro.infer.initialization import init_to_sample, init_to_uniform
from numpyro.infer.util import potential_energy
from scipy.special import logsumexp

from numpyro_flows._compile import package_jit
from numpyro_flows._guide_support import inverse_hessian, minimise
from numpyro_flows._random import numpy_generator

# An end point counts as a mode only if the Newton step to the Laplace mode is shorter
# than this, in posterior standard deviations (a scale-free convergence test).
MAX_NEWTON_DISTANCE = 0.1


# L-BFGS with a backtracking line search: it compiles in half the time of optax's default
# zoom search (1.5 s against 3 s for a small model, vectorised over starts), and a start
# that it leaves short of a mode is dropped by the Newton-distance test anyway.
def _solver():
    return optax.lbfgs(
        linesearch=optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=20, store_grad=True
        )
    )


# Points on each segment where the barrier between two candidate modes is looked for.
SEGMENT_POINTS = 33


class Modes(NamedTuple):
    """Separated modes of a posterior, heaviest first (unconstrained space).

    Attributes:
        locs: the modes, ``(K, D)``.
        scale_trils: Cholesky factors of the inverse Hessians there, ``(K, D, D)``, each
            standard deviation capped at half the distance to the nearest other mode.
        log_weights: normalised log Laplace masses, ``(K,)``.
        potentials: the potential (negative log density) at each mode, ``(K,)``.
        num_starts: starting points tried.
        num_converged: starts that ended at a mode with positive curvature.
    """

    locs: np.ndarray
    scale_trils: np.ndarray
    log_weights: np.ndarray
    potentials: np.ndarray
    num_starts: int
    num_converged: int

    @property
    def num_modes(self) -> int:
        """``K``."""
        return len(self.locs)

    @property
    def weights(self) -> np.ndarray:
        """The Laplace mass shares ``(K,)``."""
        return np.exp(self.log_weights)

    def __repr__(self) -> str:
        weights = ", ".join(f"{w:.2f}" for w in self.weights)
        return (
            f"Modes({self.num_modes} found from {self.num_starts} starts "
            f"({self.num_converged} converged), weights [{weights}])"
        )


def find_modes(
    rng_key,
    model: Callable,
    *model_args,
    num_starts: int = 64,
    max_modes: int = 16,
    barrier: float = 3.0,
    min_weight: float = 0.01,
    max_iterations: int = 200,
    **model_kwargs,
) -> Modes:
    """Looks for separated modes of a model's posterior (module docstring).

    Args:
        rng_key: a JAX PRNG key.
        model: a NumPyro model with continuous latent sites.
        *model_args, **model_kwargs: its arguments (the data).
        num_starts: L-BFGS runs (vectorised); more finds more modes of a many-mode target.
        max_modes: keep at most this many, the heaviest.
        barrier: nats the potential must rise between two end points for them to count as
            different modes.
        min_weight: drop modes with a smaller share of the Laplace mass.
        max_iterations: L-BFGS iterations per start.

    Returns:
        :class:`Modes` in the unconstrained space, flattened in the order of
        ``numpyro.infer.util.initialize_model`` (that of NumPyro's ``AutoContinuous``
        guides). ``num_modes`` is 0 when no start ended at a mode.
    """
    prototype = _unconstrained_prototype(model, model_args, model_kwargs)
    if not prototype:
        raise ValueError("find_modes: the model has no latent sample sites.")
    starts = start_points(rng_key, model, model_args, model_kwargs, num_starts, prototype)

    def potential(z):
        return potential_energy(model, model_args, model_kwargs, unravel_sites(z, prototype))

    return modes_from_starts(
        potential,
        starts,
        max_modes=max_modes,
        barrier=barrier,
        min_weight=min_weight,
        max_iterations=max_iterations,
    )


def ravel_sites(values: dict) -> jnp.ndarray:
    """Flattens ``{site: unconstrained value}`` in the sites' order (the model's), as
    NumPyro's ``AutoContinuous`` guides do."""
    return jnp.concatenate([jnp.reshape(v, -1) for v in values.values()])


def unravel_sites(flat, prototype: dict) -> dict:
    """Inverse of :func:`ravel_sites`, with the shapes of ``prototype``."""
    out, start = {}, 0
    for name, value in prototype.items():
        size = int(np.prod(jnp.shape(value)))
        out[name] = jnp.reshape(flat[start : start + size], jnp.shape(value))
        start += size
    return out


def _unconstrained_values(model, model_args, model_kwargs, strategy) -> dict:
    """``{site: unconstrained value}`` of one run of ``model`` with values set by an init
    strategy (seeded by the caller)."""
    model = handlers.substitute(model, substitute_fn=strategy)
    with handlers.block(), validation_enabled(False):
        trace = handlers.trace(model).get_trace(*model_args, **model_kwargs)
    return {
        name: biject_to(site["fn"].support).inv(site["value"])
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def _unconstrained_prototype(model, model_args, model_kwargs) -> dict:
    """Shapes and dtypes of the unconstrained latent values, in the model's order, from an
    abstract run (no compilation, no op-by-op dispatch)."""
    seeded = handlers.seed(model, 0)
    names = []

    def values():
        out = _unconstrained_values(seeded, model_args, model_kwargs, init_to_uniform)
        names.extend(out)
        return list(out.values())

    # A list, not the dict: JAX rebuilds a returned dict with its keys sorted, and the
    # flattening order must be the model's (that of ravel_sites and of NumPyro's
    # AutoContinuous guides).
    shapes = jax.eval_shape(values)
    return dict(zip(names, shapes, strict=True))


def start_points(rng_key, model, model_args, model_kwargs, num_starts: int, prototype):
    """``num_starts`` starting points ``(S, D)`` in the unconstrained space: half uniform in
    NumPyro's ``init_to_uniform`` box ``(-2, 2)``, half prior draws (``init_to_sample``,
    which falls back to the box for improper priors). ``prototype`` gives the sites'
    shapes and order (:func:`ravel_sites`). Called outside ``jit``: the box points are
    drawn with NumPy, seeded by ``rng_key``'s data."""
    if num_starts < 2:
        raise ValueError(f"num_starts must be at least 2, got {num_starts}.")
    key_box, key_prior = jax.random.split(rng_key)
    dim = sum(int(np.prod(v.shape)) for v in prototype.values())
    dtype = jnp.result_type(*[v.dtype for v in prototype.values()])
    num_prior = num_starts // 2
    # Drawn on the host: a jax.random draw here compiled a kernel for each model size.
    box = numpy_generator(key_box).uniform(-2.0, 2.0, (num_starts - num_prior, dim))

    def prior_draw(key):
        seeded = handlers.seed(model, key)
        return ravel_sites(_unconstrained_values(seeded, model_args, model_kwargs, init_to_sample))

    # Vectorised but not compiled: one batched run of the model's ops costs less than
    # compiling it (the model has usually just been run, so its ops are cached).
    prior = jax.vmap(prior_draw)(jax.random.split(key_prior, num_prior)).astype(dtype)
    return jnp.concatenate([jnp.asarray(box, dtype), prior])


def modes_from_starts(
    potential_fn: Callable,
    starts,
    *,
    max_modes: int = 16,
    barrier: float = 3.0,
    min_weight: float = 0.01,
    max_iterations: int = 200,
) -> Modes:
    """:func:`find_modes` for a potential ``(D,) -> scalar`` and starts ``(S, D)``."""
    starts = jnp.asarray(starts)
    dtype = starts.dtype
    tolerance = float(jnp.sqrt(jnp.finfo(dtype).eps))
    ends, potentials, trils = _search(potential_fn, starts, max_iterations, tolerance)
    usable = np.isfinite(potentials) & np.all(np.isfinite(trils), axis=(1, 2))
    order = [int(i) for i in np.argsort(np.where(usable, potentials, np.inf)) if usable[i]]
    kept = _distinct(potential_fn, ends, trils, potentials, order, barrier)
    if not kept:
        dim = starts.shape[-1]
        return Modes(
            np.zeros((0, dim), dtype),
            np.zeros((0, dim, dim), dtype),
            np.zeros(0),
            np.zeros(0),
            len(starts),
            len(order),
        )
    kept = np.asarray(kept)
    trils = _capped_scales(ends[kept], trils[kept])
    log_mass = -potentials[kept] + np.log(np.diagonal(trils, axis1=1, axis2=2)).sum(-1)
    log_mass = log_mass - logsumexp(log_mass)
    # Heaviest first; stable, so equal masses keep the order of their potentials.
    heavy = [j for j in np.argsort(-log_mass, kind="stable") if log_mass[j] >= np.log(min_weight)]
    heavy = heavy[:max_modes]
    return Modes(
        locs=ends[kept[heavy]],
        scale_trils=trils[heavy],
        log_weights=log_mass[heavy] - logsumexp(log_mass[heavy]),
        potentials=potentials[kept[heavy]],
        num_starts=len(starts),
        num_converged=len(order),
    )


def _search(potential_fn, starts, max_iterations, tolerance):
    """L-BFGS from every start (vectorised), then the Laplace factor at each end point;
    ``nan`` where the curvature is not positive or the end point is not at a mode."""

    @package_jit
    def run(starts):
        def one(z0):
            z, _, _ = minimise(potential_fn, z0, max_iterations, tolerance, _solver())
            value, grad = jax.value_and_grad(potential_fn)(z)
            covariance, tril, positive = inverse_hessian(jax.hessian(potential_fn)(z))
            # Newton step length in posterior standard deviations: sqrt(g' H^-1 g).
            newton = jnp.sqrt(jnp.abs(grad @ covariance @ grad))
            ok = positive & (newton < MAX_NEWTON_DISTANCE) & jnp.isfinite(value)
            return z, jnp.where(ok, value, jnp.nan), jnp.where(ok, tril, jnp.nan)

        return jax.vmap(one)(starts)

    ends, potentials, trils = run(starts)
    return np.asarray(ends), np.asarray(potentials, np.float64), np.asarray(trils)


def _distinct(potential_fn, ends, trils, potentials, order, barrier) -> list[int]:
    """Greedy: the lowest-potential end points first; a point joins the kept modes unless
    it is within one standard deviation of one of them or no barrier separates them."""
    t = jnp.linspace(0.0, 1.0, SEGMENT_POINTS, dtype=ends.dtype)[:, None]
    segment_max = jax.jit(
        lambda a, b: jnp.max(jnp.nan_to_num(jax.vmap(potential_fn)(a + t * (b - a)), nan=jnp.inf))
    )
    kept: list[int] = []
    for i in order:
        same = False
        for k in kept:
            whitened = np.linalg.solve(trils[k], ends[i] - ends[k])
            if np.linalg.norm(whitened) < 1.0:
                same = True
                break
            rise = float(segment_max(ends[k], ends[i])) - max(potentials[i], potentials[k])
            if rise < barrier:
                same = True
                break
        if not same:
            kept.append(i)
    return kept


def _capped_scales(locs, trils):
    """The Laplace factors with every standard deviation capped at half the distance to
    the nearest other mode. A mode can be flat along some direction (the dual moon's crescent
    at its peak, ``H ~ 0`` along the ring), where ``H^-1`` is huge and meaningless; a mixture
    component started that wide would cover the other modes too."""
    if len(locs) < 2:
        return trils
    locs = np.asarray(locs, np.float64)
    distances = np.linalg.norm(locs[:, None] - locs[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    capped = []
    for tril, nearest in zip(np.asarray(trils, np.float64), distances.min(1), strict=True):
        eigenvalues, vectors = np.linalg.eigh(tril @ tril.T)
        eigenvalues = np.minimum(eigenvalues, (0.5 * nearest) ** 2)
        covariance = (vectors * eigenvalues) @ vectors.T
        capped.append(np.linalg.cholesky(0.5 * (covariance + covariance.T)))
    return np.asarray(capped, trils.dtype)


__all__ = ["Modes", "find_modes", "modes_from_starts", "start_points"]
