"""NeuTra HMC: NUTS in the space warped by a trained flow guide.

Hoffman et al. (2019), *NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using
Neural Transport*, https://arxiv.org/abs/1903.03704. A trained guide ``x = T(z)``,
``z ~ Normal(0, I)``, makes the posterior of ``z`` close to a standard normal, which NUTS
samples easily; draws map back through ``T``. The chain targets the exact posterior
whatever the guide: the guide only changes the geometry.

This is a thin layer on :class:`numpyro.infer.reparam.NeuTraReparam`, which works with
every guide in :mod:`numpyro_flows.autoguides` unchanged.

What makes it work at the defaults (measured in ``benchmarks/neutra_bench.py``): a flow
alone cannot follow a hierarchical funnel all the way into its neck (its scales are
bounded, its networks saturate where it saw no draws), so the warped space keeps a small
funnel there and NUTS diverges. :func:`numpyro_flows.fit_guide` therefore trains the guide
on the model with a learned degree of non-centring of its hierarchical sites
(:mod:`numpyro_flows.reparam`), and :func:`neutra_nuts` samples that model with the
fitted centring, at a target acceptance of 0.9. Where plain NUTS already mixes well (a
nearly Gaussian posterior), NeuTra with an imperfect guide can need more gradients per
effective draw than plain NUTS: it pays where the geometry is bad.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS
from numpyro.infer.reparam import NeuTraReparam

from numpyro_flows._guide_support import ensure_setup, require_continuous
from numpyro_flows.diagnostics import (
    KHAT_BAD,
    MIN_PSIS_SAMPLES,
    model_with_fitted_params,
    psis_diagnostic,
)
from numpyro_flows.hybrid import AutoHybridFlow
from numpyro_flows.reparam import original_sites
from numpyro_flows.reports import MCMCReport, RunReportWarning, mcmc_report

# NUTS settings in the warped space, from benchmarks/neutra_bench.py (see the docstring of
# neutra_nuts); nuts_kwargs overrides them.
NUTS_DEFAULTS = {"target_accept_prob": 0.9}

EXTRA_FIELDS = ("diverging", "num_steps", "accept_prob", "energy", "potential_energy")


class NeuTraResult(NamedTuple):
    """What :func:`neutra_nuts` returns.

    Attributes:
        samples: draws of the model's original latent and deterministic sites, each of
            shape ``(num_chains, num_samples, ...)`` (not the internal shared latent).
        sample_stats: NUTS statistics ``(num_chains, num_samples)``: ``diverging``,
            ``num_steps``, ``tree_depth``, ``accept_prob``, ``energy``,
            ``potential_energy``; and ``step_size`` ``(num_chains,)``.
        khat: the guide's PSIS k-hat measured before sampling (``None`` if skipped).
        mcmc: the :class:`numpyro.infer.MCMC` object (for ``print_summary`` etc.).
        reparam: the :class:`numpyro.infer.reparam.NeuTraReparam` used.
        model_args, model_kwargs: the model's arguments the run was given.
    """

    samples: dict
    sample_stats: dict
    khat: float | None
    mcmc: MCMC
    reparam: NeuTraReparam
    model_args: tuple = ()
    model_kwargs: dict = {}

    def __repr__(self) -> str:
        samples = ", ".join(f"{name}: {np.shape(v)}" for name, v in self.samples.items())
        diverging = self.sample_stats.get("diverging")
        divergences = "?" if diverging is None else int(np.sum(diverging))
        khat = "None" if self.khat is None else f"{self.khat:.3g}"
        return f"NeuTraResult(khat={khat}, divergences={divergences}, samples={{{samples}}})"

    def summary(self) -> MCMCReport:
        """The run report: divergences, max r-hat, min bulk and tail ESS, and
        ``problems()`` naming the fix for each (``print(result.summary())``)."""
        return mcmc_report(self.samples, self.sample_stats)


def _reject_local_latents(guide) -> None:
    if isinstance(guide, AutoHybridFlow):
        raise TypeError(
            "NeuTra runs NUTS on the full data in the space one transform of all latents "
            "warps; AutoHybridFlow draws each row's locals from the row's data, and NUTS "
            "cannot subsample. Use the guide's draws (check them with psis_diagnostic, "
            "on the full data), or run NUTS on the model without subsampling."
        )


def neutra_reparam(guide, params) -> NeuTraReparam:
    """``NeuTraReparam(guide, params)`` with a clear error for a guide it cannot use."""
    _reject_local_latents(guide)
    require_continuous(guide)
    if guide.prototype_trace is None:
        raise ValueError(
            "The guide has not been set up with the model yet: train it with SVI (or call "
            "guide.sample_posterior once) before building a NeuTra reparameterisation."
        )
    return NeuTraReparam(guide, params)


def _chain_method(num_chains: int) -> str:
    return "parallel" if jax.local_device_count() >= num_chains else "sequential"


def neutra_nuts(
    rng_key,
    guide,
    params,
    *args,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 1,
    chain_method: str | Callable | None = None,
    progress_bar: bool = True,
    khat_samples: int = 1000,
    nuts_kwargs: dict[str, Any] | None = None,
    **kwargs,
) -> NeuTraResult:
    """Runs NUTS on the model warped by a trained guide; returns draws of the original sites.

    Args:
        rng_key: a JAX PRNG key.
        guide: a trained ``AutoContinuous`` guide (any of ours, or NumPyro's).
        params: its parameters (``svi.get_params(state)``).
        *args, **kwargs: the model's arguments (the data).
        num_warmup, num_samples, num_chains: as for :class:`numpyro.infer.MCMC`.
        chain_method: ``"parallel"`` (default when there are enough devices),
            ``"sequential"``, ``"vectorized"``, or a callable such as
            :func:`numpyro_flows.distributed.sharded_chains` (blocks of chains per device).
        progress_bar: NumPyro's progress bar.
        khat_samples: guide draws for the PSIS k-hat checked before sampling (0 skips it);
            a k-hat above 0.7 gives a warning: the chain is still exact, but a guide that
            misses posterior mass warps the geometry less well.
        nuts_kwargs: arguments for :class:`numpyro.infer.NUTS`, over ``NUTS_DEFAULTS``
            (``target_accept_prob=0.9``: in a well-warped space the step size this costs is
            small, and it removes the last divergences where the guide is loose; measured
            in ``benchmarks/neutra_bench.py``).

    The model's own ``numpyro.param`` sites (e.g. the learned centring of
    :func:`numpyro_flows.fit_guide`) take their fitted values from ``params``. After the
    run, a warning names each problem of the run report (divergences, r-hat above 1.01,
    too few effective draws) with its fix; ``result.summary()`` prints the report.

    Example::

        fit = fit_guide(jax.random.key(0), model, data)
        result = neutra_nuts(jax.random.key(1), fit.guide, fit.params, data, num_chains=4)
        print(result.summary())
    """
    _reject_local_latents(guide)
    require_continuous(guide)
    if khat_samples and khat_samples < MIN_PSIS_SAMPLES:
        raise ValueError(
            f"khat_samples must be 0 (skip the check) or at least {MIN_PSIS_SAMPLES}, got "
            f"{khat_samples}."
        )
    ensure_setup(guide, args, kwargs)
    # First: a guide with no transport map (a mixture of flows) fails here, not after PSIS.
    reparam = neutra_reparam(guide, params)
    key_khat, key_mcmc = jax.random.split(rng_key)
    khat = None
    if khat_samples:
        khat = psis_diagnostic(
            key_khat, guide, params, *args, num_samples=khat_samples, **kwargs
        ).khat
        if khat > KHAT_BAD:
            warnings.warn(
                f"The guide's PSIS k-hat is {khat:.2f} > {KHAT_BAD}: it misses part of the "
                "posterior. NeuTra-NUTS still targets the exact posterior, but expect slower "
                "mixing; train the guide longer or use a more flexible flow.",
                RunReportWarning,
                stacklevel=2,
            )
    model = reparam.reparam(model_with_fitted_params(guide, params))
    mcmc = MCMC(
        NUTS(model, **{**NUTS_DEFAULTS, **(nuts_kwargs or {})}),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method or _chain_method(num_chains),
        progress_bar=progress_bar,
    )
    mcmc.run(key_mcmc, *args, extra_fields=EXTRA_FIELDS, **kwargs)
    shared = f"{guide.prefix}_shared_latent"
    samples = {
        name: value
        for name, value in mcmc.get_samples(group_by_chain=True).items()
        if name != shared
    }
    samples = original_sites(guide.model, samples)
    result = NeuTraResult(samples, nuts_sample_stats(mcmc), khat, mcmc, reparam, args, kwargs)
    problems = result.summary().problems()
    if problems:
        warnings.warn(
            "NeuTra-NUTS run report: " + "; ".join(problems) + ".", RunReportWarning, stacklevel=2
        )
    return result


def nuts_sample_stats(mcmc: MCMC) -> dict:
    """NUTS statistics grouped by chain, with ``tree_depth`` derived from ``num_steps``."""
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {name: np.asarray(extra[name]) for name in EXTRA_FIELDS if name in extra}
    if "num_steps" in stats:
        stats["tree_depth"] = np.ceil(np.log2(stats["num_steps"] + 1)).astype(np.int64)
    step_size = getattr(getattr(mcmc.last_state, "adapt_state", None), "step_size", None)
    if step_size is not None:
        stats["step_size"] = np.asarray(step_size).reshape(-1)
    return stats


__all__ = [
    "EXTRA_FIELDS",
    "NUTS_DEFAULTS",
    "NeuTraResult",
    "neutra_nuts",
    "neutra_reparam",
    "nuts_sample_stats",
]
