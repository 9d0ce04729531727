"""ArviZ ``InferenceData`` for flow guides and NeuTra runs.

Look at a variational posterior the way you look at NUTS output::

    idata = numpyro_flows.to_inference_data(guide, params, data, rng_key=jax.random.key(1))
    az.summary(idata); az.plot_trace(idata); az.loo(idata)
    idata.sample_stats.attrs["psis_khat"]     # can the fit be trusted?

    result = numpyro_flows.neutra_nuts(jax.random.key(2), guide, params, data)
    idata = numpyro_flows.to_inference_data(result)

Plate names become dimension names (``numpyro.plate("school", 8)`` gives a ``school``
dimension; pass ``coords={"school": names}`` for labels); other axes get ArviZ's default
names (``{site}_dim_{i}``). The groups are built with :func:`arviz.from_dict`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer import MCMC, init_to_sample
from numpyro.infer.autoguide import AutoGuide
from numpyro.infer.util import log_likelihood as numpyro_log_likelihood

from numpyro_flows._arviz_import import import_arviz
from numpyro_flows._guide_support import check_params, ensure_setup, require_continuous
from numpyro_flows.diagnostics import (
    constrained_draws,
    importance_log_ratios,
    khat_threshold,
    model_with_fitted_params,
    psis_from_log_ratios,
)
from numpyro_flows.hybrid import AutoHybridFlow
from numpyro_flows.neutra import NeuTraResult

if TYPE_CHECKING:
    from arviz import InferenceData

DEFAULT_NUM_SAMPLES = 1000

# NumPyro's NUTS statistics under the names ArviZ uses (as arviz.from_numpyro does).
NUTS_STAT_NAMES = {
    "diverging": "diverging",
    "num_steps": "n_steps",
    "tree_depth": "tree_depth",
    "accept_prob": "acceptance_rate",
    "energy": "energy",
}


def to_inference_data(
    source,
    params: dict | None = None,
    *args,
    rng_key=None,
    num_samples: int | None = None,
    coords: Mapping[str, Sequence] | None = None,
    dims: Mapping[str, Sequence[str | None]] | None = None,
    log_likelihood: bool = True,
    rows=None,
    **kwargs,
) -> InferenceData:
    """An ArviZ ``InferenceData`` from a trained guide or a NeuTra run.

    **A guide** (any ``AutoContinuous``: ``AutoFlow`` and presets, or NumPyro's):
    ``num_samples`` draws ``z ~ q`` give

    - ``posterior``: every latent (constrained) and deterministic site, with a ``chain``
      dimension of size 1; the draws are the raw guide draws (reweight them with
      ``sample_stats.log_weight``, or use :func:`~numpyro_flows.diagnostics.psis_resample`);
    - ``sample_stats``: ``log_weight`` (Pareto-smoothed, normalised log importance
      weights), ``log_q`` (``log q(z)``) and ``lp`` (``log p(x, z)``), both in the
      unconstrained space; attrs ``psis_khat``, ``psis_khat_threshold``, ``psis_ess`` and
      ``log_evidence`` (Yao et al. 2018, https://arxiv.org/abs/1802.02538; Vehtari et al.
      2024, https://arxiv.org/abs/1507.02646);
    - ``log_likelihood``: pointwise ``log p(y_i | z)`` per observed site, for
      :func:`arviz.loo` (which treats the draws as posterior draws: trust it only when
      k-hat is small);
    - ``observed_data``: the observed sites.

    **A** :class:`~numpyro_flows.neutra.NeuTraResult`: ``posterior`` holds the model's
    original sites (not the internal shared latent) by chain; ``sample_stats`` the NUTS
    statistics as ArviZ names them (``diverging``, ``n_steps``, ``tree_depth``,
    ``acceptance_rate``, ``energy``, ``step_size``, and ``lp``, the log density of the
    warped space NUTS ran in); attrs ``psis_khat`` when the run measured it; and
    ``log_likelihood`` and ``observed_data`` as above. The model's arguments are those
    the run was given.

    Args:
        source: a trained ``AutoContinuous`` guide or a ``NeuTraResult``.
        params: the guide's fitted parameters (``svi.get_params(state)`` or
            ``svi.run(...).params``); not for a ``NeuTraResult``.
        *args, **kwargs: the model's arguments (the data), as given to SVI; not for a
            ``NeuTraResult``. (As with ``svi.run``, a model keyword named like one of
            this function's own cannot be passed by keyword.)
        rng_key: a JAX PRNG key for the guide draws (guides only).
        num_samples: number of guide draws (guides only; default 1000, at least 21).
        coords: coordinate values per dimension name, e.g. ``{"school": names}``.
        dims: dimension names per variable, overriding those taken from the plates,
            e.g. ``{"theta": ["school"]}``.
        log_likelihood: build the ``log_likelihood`` group.
        rows: for an :class:`~numpyro_flows.AutoHybridFlow` (a model with local latents
            in a subsampled plate), the rows whose local latents, observations and
            pointwise log-likelihoods to export (an int array, or ``{plate: rows}``);
            ``None``: every row. The plate's dimension gets the row numbers as
            coordinates. The draws and the PSIS weights are over the full data either
            way; deterministic sites are not exported for this guide (use
            ``Predictive``).

    Returns:
        An :class:`arviz.InferenceData`.

    Raises:
        TypeError: ``source`` is neither a guide nor a ``NeuTraResult``, or arguments are
            given that the source does not take.
        ValueError: the guide is untrained, ``rng_key`` is missing, or a plate
            subsamples the data.
    """
    if isinstance(source, NeuTraResult):
        given = {
            "params": params is not None,
            "model arguments": bool(args or kwargs),
            "rng_key": rng_key is not None,
            "num_samples": num_samples is not None,
        }
        extra = [name for name, is_given in given.items() if is_given]
        if extra:
            raise TypeError(
                f"A NeuTraResult already holds its draws and the model's arguments; do not "
                f"pass {', '.join(extra)}. Call to_inference_data(result, coords=..., dims=...)."
            )
        return _neutra_to_inference_data(source, coords, dims, log_likelihood)
    if isinstance(source, MCMC):
        raise TypeError(
            "For a plain numpyro MCMC use arviz.from_numpyro(mcmc); to_inference_data takes "
            "a trained guide or a NeuTraResult from numpyro_flows.neutra_nuts."
        )
    if not isinstance(source, AutoGuide):
        raise TypeError(
            "to_inference_data takes a trained guide (AutoFlow, AutoNeuralSpline, ... or a "
            f"NumPyro AutoContinuous) or a NeuTraResult, got {type(source).__name__}."
        )
    if rows is not None and not isinstance(source, AutoHybridFlow):
        raise TypeError(
            "rows= is for AutoHybridFlow (local latents in a subsampled plate); "
            f"{type(source).__name__} holds global latents only."
        )
    if not isinstance(source, AutoHybridFlow):
        require_continuous(source)
    if params is None:
        raise ValueError(
            "A guide needs its fitted parameters: to_inference_data(guide, params, *data, "
            "rng_key=...), with params = svi.get_params(state) or svi.run(...).params."
        )
    check_params(source, params)
    if rng_key is None:
        raise ValueError(
            "A guide's draws need a random key: pass rng_key=jax.random.key(0) (any key)."
        )
    num_samples = DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
    if isinstance(source, AutoHybridFlow):
        return _hybrid_to_inference_data(
            source, params, args, kwargs, rng_key, num_samples, rows, coords, dims, log_likelihood
        )
    return _guide_to_inference_data(
        source, params, args, kwargs, rng_key, num_samples, coords, dims, log_likelihood
    )


# ---------------------------------------------------------------------- guides
def _guide_to_inference_data(
    guide, params, args, kwargs, rng_key, num_samples, coords, dims, log_likelihood
):
    ensure_setup(guide, args, kwargs)
    model = model_with_fitted_params(guide, params)
    structure = _model_structure(model, args, kwargs)
    latent, log_p, log_q = importance_log_ratios(
        rng_key, guide, params, *args, num_samples=num_samples, **kwargs
    )
    draws = constrained_draws(guide, params, latent, *args, **kwargs)
    posterior = {name: np.array(value)[None] for name, value in draws.items()}
    method = f"guide draws ({type(guide).__name__})"
    draws = _guide_draws(posterior, log_p, log_q, num_samples, method)
    return _build(draws, model, structure, args, kwargs, coords, dims, log_likelihood)


def _guide_draws(posterior, log_p, log_q, num_samples, method) -> _Draws:
    """The draws' groups: the posterior, and the PSIS sample stats and attrs of the
    guide's draws (log p and log q per draw, the smoothed log weights, k-hat)."""
    log_p, log_q = np.asarray(log_p), np.asarray(log_q)
    psis = psis_from_log_ratios(log_p - log_q)
    # Writable NumPy copies (JAX hands out read-only views), with a chain dim of size 1.
    sample_stats = {
        "lp": np.array(log_p)[None],
        "log_q": np.array(log_q)[None],
        "log_weight": np.array(psis.log_weights)[None],
    }
    stats_attrs = {
        "psis_khat": psis.khat,
        "psis_khat_threshold": khat_threshold(num_samples),
        "psis_ess": psis.ess,
        "log_evidence": psis.log_evidence,
        "num_guide_draws": int(num_samples),
    }
    return _Draws(posterior, sample_stats, stats_attrs, (1, num_samples), method)


def _hybrid_to_inference_data(
    guide, params, args, kwargs, rng_key, num_samples, rows, coords, dims, log_likelihood
):
    ensure_setup(guide, args, kwargs)
    draws, log_p, log_q = guide.importance_draws(
        rng_key, params, *args, num_samples=num_samples, rows=rows, **kwargs
    )
    row_map = guide.all_rows(*args, **kwargs) if rows is None else guide.rows_map(rows)
    # The model on these rows: its plate takes them (as the guide's did), so the
    # observations, the dims and the pointwise log-likelihoods are those of the rows.
    model = handlers.substitute(model_with_fitted_params(guide, params), data=row_map)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        structure = _model_structure(model, args, kwargs, subsampled_ok=True)
        structure = structure._replace(sites=[name for name in structure.sites if name in draws])
        posterior = {name: np.array(draws[name])[None] for name in structure.sites}
        method = f"guide draws ({type(guide).__name__}, full data)"
        draws = _guide_draws(posterior, log_p, log_q, num_samples, method)
        coords = {**{name: np.asarray(r) for name, r in row_map.items()}, **(coords or {})}
        return _build(draws, model, structure, args, kwargs, coords, dims, log_likelihood)


# ---------------------------------------------------------------------- NeuTra
def _neutra_to_inference_data(result, coords, dims, log_likelihood):
    guide = result.reparam.guide
    if guide.model is None:
        raise ValueError(
            "The NeuTra guide has no model attached; set guide.model = model and try again."
        )
    # The model arguments the run was given (kept by neutra_nuts).
    args, kwargs = tuple(result.model_args), dict(result.model_kwargs)
    ensure_setup(guide, args, kwargs)
    model = model_with_fitted_params(guide, result.reparam.params)
    structure = _model_structure(model, args, kwargs)
    # The model's sites in the model's order; the shared latent is not one of them.
    posterior = {
        name: np.array(result.samples[name]) for name in structure.sites if name in result.samples
    }
    num_chains, num_draws = np.shape(next(iter(posterior.values())))[:2]
    stats = result.sample_stats
    sample_stats = {
        NUTS_STAT_NAMES[name]: np.array(stats[name]) for name in NUTS_STAT_NAMES if name in stats
    }
    if "potential_energy" in stats:
        sample_stats["lp"] = -np.array(stats["potential_energy"])
    if "step_size" in stats:
        # Constant after warm-up; ArviZ expects one value per draw.
        step_size = np.asarray(stats["step_size"]).reshape(num_chains, 1)
        sample_stats["step_size"] = np.broadcast_to(step_size, (num_chains, num_draws)).copy()
    stats_attrs = {} if result.khat is None else {"psis_khat": float(result.khat)}
    method = f"NeuTra NUTS ({type(guide).__name__})"
    draws = _Draws(posterior, sample_stats, stats_attrs, (num_chains, num_draws), method)
    return _build(draws, model, structure, args, kwargs, coords, dims, log_likelihood)


# ---------------------------------------------------------------------- shared
class _Draws(NamedTuple):
    """The groups one source gives: ``posterior`` and ``sample_stats`` (arrays of shape
    ``batch_shape + ...``, ``batch_shape = (chains, draws)``), the ``sample_stats`` attrs,
    and how the draws were made (``method``)."""

    posterior: dict
    sample_stats: dict
    stats_attrs: dict
    batch_shape: tuple
    method: str


class _Structure(NamedTuple):
    """Site names, dims and observations of one trace of the model.

    ``sites``: latent and deterministic sites in model order; ``latent``: the latent
    sample sites; ``observed``: ``{site: value}``; ``dims``: ``{site: [name or None]}``.
    """

    sites: list
    latent: list
    observed: dict
    dims: dict


def _model_structure(model, args, kwargs, subsampled_ok: bool = False) -> _Structure:
    """Traces the model once (compiled: faster than running it op by op) and reads the
    sites, their plates and the observations. Prior draws stand in for the latents
    (``init_to_sample`` also handles ImproperUniform, as ``arviz.from_numpyro`` does).
    ``subsampled_ok``: the model's subsampled plates take given rows (AutoHybridFlow)."""
    model = handlers.substitute(handlers.seed(model, rng_seed=0), substitute_fn=init_to_sample)
    layout = {}

    def observed_values():
        with handlers.block():
            trace = handlers.trace(model).get_trace(*args, **kwargs)
        # Plain Python facts only: no tracer leaves this function.
        for name, site in trace.items():
            kind = site["type"]
            if kind == "plate":
                size, subsample_size = site["args"]
                if not subsampled_ok and subsample_size is not None and subsample_size != size:
                    raise ValueError(
                        f"The plate '{name}' subsamples {subsample_size} of {size} "
                        "observations; the export needs all of them. Run the model without "
                        "subsampling for the export (e.g. subsample_size=None), keeping the "
                        "same guide and parameters."
                    )
            elif kind in ("deterministic", "sample"):
                is_obs = kind == "sample" and site["is_observed"]
                if is_obs and isinstance(site["fn"], dist.Unit):
                    continue  # numpyro.factor: no pointwise structure to export
                event_dim = site["fn"].event_dim if kind == "sample" else None
                layout[name] = (kind, is_obs, _site_dims(site, event_dim))
        return {name: trace[name]["value"] for name, (_, is_obs, _) in layout.items() if is_obs}

    observed = jax.jit(observed_values)()
    return _Structure(
        sites=[name for name, (_, is_obs, _) in layout.items() if not is_obs],
        latent=[
            name for name, (kind, is_obs, _) in layout.items() if kind == "sample" and not is_obs
        ],
        observed={name: np.array(value) for name, value in observed.items()},
        dims={name: dims for name, (_, _, dims) in layout.items()},
    )


def _site_dims(site, event_dim: int | None) -> list[str | None]:
    """Plate names for the batch axes of a site's value, ``None`` for the other axes.

    Sample sites know their event dims. Deterministic sites (``event_dim=None``) do not:
    take the fewest trailing event axes for which every enclosing plate lines up with an
    axis of its size (or of size 1, broadcast, which stays unnamed).
    """
    shape = jnp.shape(site["value"])
    frames = site["cond_indep_stack"]
    candidates = range(len(shape) + 1) if event_dim is None else [event_dim]
    for event_ndim in candidates:
        batch_ndim = len(shape) - event_ndim
        names: list[str | None] = [None] * len(shape)
        lined_up = batch_ndim >= 0
        for frame in frames if lined_up else ():
            axis = batch_ndim + frame.dim
            if axis >= 0 and shape[axis] == frame.size:
                names[axis] = frame.name
            elif axis < 0 or shape[axis] != 1:
                lined_up = False
        if lined_up or event_dim is not None:
            return names
    return [None] * len(shape)


def _log_likelihood_group(wanted, model, structure, posterior, args, kwargs, batch_shape):
    """Pointwise log-likelihoods of the observed sites at the latent draws, or ``None``."""
    if not (wanted and structure.observed):
        return None
    latents = {name: posterior[name] for name in structure.latent if name in posterior}
    return _pointwise_log_likelihood(model, latents, structure.observed, args, kwargs, batch_shape)


def _pointwise_log_likelihood(model, latents, observed, args, kwargs, batch_shape) -> dict:
    """``log p(y_i | z)`` per observed site, shaped ``batch_shape + site batch shape``."""
    flat = jax.tree.map(lambda x: jnp.reshape(x, (-1,) + jnp.shape(x)[len(batch_shape) :]), latents)
    seeded = handlers.seed(model, rng_seed=0)
    log_lik = jax.jit(
        lambda flat: numpyro_log_likelihood(seeded, flat, *args, parallel=True, **kwargs)
    )(flat)
    return {
        name: np.array(value).reshape(batch_shape + np.shape(value)[1:])
        for name, value in log_lik.items()
        if name in observed  # not numpyro.factor sites
    }


def _build(draws: _Draws, model, structure, args, kwargs, coords, dims, log_likelihood):
    """The ``InferenceData``: the draws' groups, the pointwise log-likelihood (if wanted)
    and the observations, with the plates' dims and the user's coords and dims."""
    log_lik = _log_likelihood_group(
        log_likelihood, model, structure, draws.posterior, args, kwargs, draws.batch_shape
    )
    az = import_arviz()
    all_dims = {name: list(value) for name, value in structure.dims.items()}
    for name, value in (dims or {}).items():
        all_dims[name] = list(value)
    coords = {name: np.asarray(value) for name, value in (coords or {}).items()}
    attrs = {
        "inference_library": "numpyro",
        "inference_library_version": numpyro.__version__,
        "method": draws.method,
    }
    return az.from_dict(
        posterior=draws.posterior,
        sample_stats=draws.sample_stats,
        log_likelihood=log_lik or None,
        observed_data=dict(structure.observed) or None,
        coords=coords,
        dims=all_dims,
        posterior_attrs=attrs,
        sample_stats_attrs={**attrs, **draws.stats_attrs},
        log_likelihood_attrs=attrs,
    )


__all__ = ["NUTS_STAT_NAMES", "to_inference_data"]
