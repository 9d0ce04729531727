"""Learned (partial) non-centring of hierarchical sites, before a flow guide meets them.

A centred hierarchical model, ``theta ~ Normal(mu, tau)`` with ``tau`` itself latent, has
a funnel: as ``tau`` shrinks, ``theta`` is squeezed to ``mu``, and the density there grows
without bound. A flow can follow the funnel only as far as its conditioner extrapolates:
its scales are bounded smoothly and its networks saturate in the far tail, so the neck
stays a funnel in the warped space, and NeuTra-NUTS diverges there (measured in
``benchmarks/neutra_bench.py``). Writing ``theta = mu + tau * eps`` removes the neck
exactly, but is the wrong choice where the data pin ``theta`` down (then the non-centred
form has the funnel).

Gorinova, Moore and Hoffman (2020), *Automatic Reparameterisation of Probabilistic
Programs*, https://arxiv.org/abs/1906.03028, learn the degree of centring ``c`` in
``[0, 1]`` per site by variational inference; NumPyro implements it as
:class:`numpyro.infer.reparam.LocScaleReparam` with ``centered=None``. This module finds
the sites where it applies (latent location-scale sites whose prior depends on another
latent site, found with :func:`numpyro.infer.inspect.get_dependencies`) and wraps the
model; the flow guide then learns its transport on the better-conditioned model and
``c`` with it. The original sites stay in the model as deterministic sites, so draws,
``Predictive`` and ArviZ exports still show them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.infer.inspect import get_dependencies
from numpyro.infer.reparam import LocScaleReparam
from numpyro.primitives import Messenger

from numpyro_flows._guide_support import latent_sites

# Families LocScaleReparam can decentre, with the shape parameters it copies unchanged.
LOC_SCALE_FAMILIES = {
    dist.Normal: (),
    dist.Cauchy: (),
    dist.Laplace: (),
    dist.StudentT: ("df",),
}

DECENTERED_SUFFIX = "_decentered"

# Where the learned centring starts (NumPyro's LocScaleReparam starts at 0.5).
INIT_CENTERED = 0.1


class NonCentredModel:
    """A model with learned partial non-centring at ``sites`` (a picklable callable).

    Args:
        model: the original NumPyro model.
        sites: names of the latent location-scale sites to reparameterise.
        centered: ``None`` to learn the centring per site and element (a model param
            ``{site}_centered`` in ``[0, 1]``, trained by SVI with the guide); ``0`` for
            full non-centring; ``1`` leaves the site as it is.
        init_centered: where a learned centring starts.
    """

    def __init__(
        self,
        model: Callable,
        sites: Sequence[str],
        centered: float | None = None,
        init_centered: float = INIT_CENTERED,
    ):
        self.model = model
        self.sites = tuple(sites)
        self.centered = centered
        self.init_centered = float(init_centered)

    def __call__(self, *args, **kwargs):
        reparameterised = handlers.reparam(self.model, config=self._config)
        if self.centered is not None:
            return reparameterised(*args, **kwargs)
        names = {f"{site}_centered" for site in self.sites}
        return _InitialValue(reparameterised, names, self.init_centered)(*args, **kwargs)

    def _config(self, msg):
        if msg["name"] not in self.sites:
            return None
        family = _loc_scale_family(msg["fn"])
        return LocScaleReparam(self.centered, shape_params=LOC_SCALE_FAMILIES[family])

    @property
    def added_sites(self) -> tuple[str, ...]:
        """The latent sites the reparameterisation adds (``{site}_decentered``)."""
        return tuple(f"{name}{DECENTERED_SUFFIX}" for name in self.sites)

    def __repr__(self) -> str:
        name = getattr(self.model, "__name__", type(self.model).__name__)
        return f"NonCentredModel({name}, sites={list(self.sites)}, centered={self.centered})"


def hierarchical_sites(model: Callable, *args, **kwargs) -> list[str]:
    """Latent location-scale sites whose prior depends on another latent site.

    Those are the sites where centring matters (``theta ~ Normal(mu, tau)`` with ``mu`` or
    ``tau`` latent). A model the dependency tracer cannot follow gives an empty list (the
    model is then used as it is).

    Args:
        model: a NumPyro model.
        *args, **kwargs: its arguments (the data).
    """
    latent = latent_sites(model, args, kwargs)
    if not latent:
        return []
    try:
        with handlers.block():
            dependencies = get_dependencies(model, args, kwargs)["prior_dependencies"]
    except Exception:  # noqa: BLE001 - any model the tracer cannot follow is left alone
        return []
    sites = []
    for name, site in latent.items():
        parents = set(dependencies.get(name, {})) - {name}
        fn = site["fn"]
        if parents & set(latent) and _loc_scale_family(fn) is not None and _is_real(fn):
            sites.append(name)
    return sites


def non_centred(model: Callable, *args, centered: float | None = None, **kwargs) -> Callable:
    """``model`` with learned non-centring at its :func:`hierarchical_sites`.

    Returns the model unchanged when it has none (regressions, models without latent
    hyperparameters) or is already a :class:`NonCentredModel`.

    Args:
        model: a NumPyro model.
        *args, **kwargs: its arguments (the data), to find the sites.
        centered: see :class:`NonCentredModel`.
    """
    if isinstance(model, NonCentredModel):
        return model
    sites = hierarchical_sites(model, *args, **kwargs)
    return NonCentredModel(model, sites, centered) if sites else model


def original_sites(model: Callable, samples: dict) -> dict:
    """``samples`` without the sites a :class:`NonCentredModel` added."""
    if not isinstance(model, NonCentredModel):
        return samples
    added = set(model.added_sites)
    return {name: value for name, value in samples.items() if name not in added}


class _InitialValue(Messenger):
    """Sets the initial value of the named param sites (SVI's values take over after)."""

    def __init__(self, fn, names, value):
        self.names = names
        self.value = value
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "param" and msg["name"] in self.names and msg["value"] is None:
            init = msg["args"][0]
            msg["args"] = (jnp.full(jnp.shape(init), self.value, jnp.result_type(init)),) + tuple(
                msg["args"][1:]
            )


def _loc_scale_family(fn):
    while isinstance(fn, dist.Independent | dist.ExpandedDistribution):
        fn = fn.base_dist
    return type(fn) if type(fn) in LOC_SCALE_FAMILIES else None


def _is_real(fn) -> bool:
    support = fn.support
    if isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


__all__ = [
    "DECENTERED_SUFFIX",
    "LOC_SCALE_FAMILIES",
    "NonCentredModel",
    "hierarchical_sites",
    "non_centred",
    "original_sites",
]
