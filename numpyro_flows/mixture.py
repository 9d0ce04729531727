"""A mixture of flows as one guide, for posteriors with several separated modes.

One flow trained by the ELBO settles on one mode (module docstring of
:mod:`numpyro_flows.modes`). :class:`AutoFlowMixture` looks for the modes first and gives
each its own flow, started at that mode's Laplace approximation; the mixture weights
start at the Laplace masses and are learned with the flows:

    k ~ Categorical(w),    z ~ Normal(0, I),    x = m_k + L_k (loc_k + S_k flow_k(z))

with ``(m_k, L_k)`` the mode and inverse-Hessian Cholesky factor of mode ``k`` (fixed) and
``loc_k``, ``S_k``, ``flow_k``, ``w`` learned. Its density is the mixture's,
``q(x) = sum_k w_k q_k(x)``, so PSIS, ``log_prob`` and the ELBO see all modes.

It is trained with :class:`numpyro_flows.StratifiedELBO`, which draws from every
component: ``ELBO = sum_k w_k E_{q_k}[log p(x) - log q(x)]`` (Morningstar et al. 2021,
https://arxiv.org/abs/2003.01687, use the importance-weighted form of the same
stratification). The draw from each component is reparameterised and the weights enter
in closed form, so the gradient needs no score function; a component cannot starve for
lack of draws, as it would if the ELBO sampled the component index.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import LowerCholeskyAffine

from numpyro_flows import flows
from numpyro_flows._param_packing import packed_param, param_layouts
from numpyro_flows.autoguides import AutoFlow
from numpyro_flows.bijections import Chain
from numpyro_flows.bijections.base import _is_concrete
from numpyro_flows.flows import Flow
from numpyro_flows.modes import Modes, modes_from_starts, start_points

# The most components the set-up search keeps (the heaviest modes).
MAX_COMPONENTS = 16


def default_component_flow() -> Flow:
    """Each component's flow: two rational-quadratic spline coupling layers.

    Coupling layers are one pass in both directions; the mixture's density at a draw
    needs every component's inverse, which an autoregressive guide flow (IAF) computes in
    ``D`` sequential passes. The splines bend a component around a curved mode (a
    crescent), which an affine flow does poorly.
    """
    return flows.neural_spline(2, coupling=True)


class FlowMixture(dist.Distribution):
    """``sum_k w_k q_k``, with ``q_k`` the push-forward of ``Normal(0, I)`` by the bijection
    ``build(component_k)``.

    Args:
        logits: ``(K,)`` unnormalised log weights.
        components: a pytree whose leaves have a leading axis of size ``K``.
        build: ``component -> Transform`` (base to target, with ``inverse_and_log_det``).
        dim: the event size ``D``.
        stratum: ``None`` (draws from the mixture), or a component index: draws come from
            that component only, reparameterised, while ``log_prob`` stays the mixture's
            (what :class:`numpyro_flows.StratifiedELBO` uses).
    """

    arg_constraints = {}
    pytree_data_fields = ("logits", "components", "stratum")
    pytree_aux_fields = ("build",)

    def __init__(self, logits, components, build: Callable, dim: int, stratum=None):
        self.logits = logits
        self.components = components
        self.build = build
        self.stratum = stratum
        super().__init__(batch_shape=(), event_shape=(dim,))

    @property
    def num_components(self) -> int:
        """``K``."""
        return self.logits.shape[-1]

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self):
        """Real vectors."""
        return constraints.real_vector

    def component(self, k):
        """The bijection of component ``k`` (an int or a traced index)."""
        return self.build(jax.tree.map(lambda a: a[k], self.components))

    def sample(self, key, sample_shape=()):
        key_z, key_k = jax.random.split(key)
        z = jax.random.normal(key_z, sample_shape + self.event_shape, self.logits.dtype)
        if self.stratum is not None:
            return self.component(self.stratum)(z)
        every = self._each_component(lambda bijection, z: bijection(z), z)  # (K, *shape, D)
        index = jax.random.categorical(key_k, self.logits, shape=sample_shape)
        every = jnp.moveaxis(every, 0, -2)  # (*shape, K, D)
        return jnp.take_along_axis(every, index[..., None, None], axis=-2)[..., 0, :]

    def component_log_probs(self, x):
        """``log q_k(x)`` for every component, shape ``(*batch, K)``."""

        def one(bijection, x):
            z, log_det = bijection.inverse_and_log_det(x)
            base = -0.5 * jnp.sum(z**2, -1) - 0.5 * z.shape[-1] * jnp.log(2 * jnp.pi)
            return base + log_det

        return jnp.moveaxis(self._each_component(one, x), 0, -1)

    def _each_component(self, fn, x):
        """``fn(bijection_k, x)`` for every component, stacked on a leading axis ``K``.
        Outside jit (SVI.init, sample_posterior, an eager log_prob) component by component,
        so that each flow's layers run through their compiled loop, cached on its structure
        (bijections.Scan), instead of a new loop compiled under vmap on every call."""
        if _is_concrete((self.components, x)):
            return jnp.stack([fn(self.component(k), x) for k in range(self.num_components)])
        return jax.vmap(lambda c: fn(self.build(c), x))(self.components)

    def log_prob(self, value):
        log_weights = jax.nn.log_softmax(self.logits)
        return logsumexp(log_weights + self.component_log_probs(value), axis=-1)

    @property
    def mean(self):
        raise NotImplementedError("A flow mixture has no closed-form mean; average draws.")


class AutoFlowMixture(AutoFlow):
    """A mixture of flow guides, one per posterior mode (module docstring).

    At set-up (the first SVI step) it runs the mode search of :mod:`numpyro_flows.modes`
    on the model, unless ``modes`` are given. With one mode (or none: a funnel has no
    usable mode) it is a single flow and behaves as :class:`~numpyro_flows.AutoFlow`,
    NeuTra included. Train it with :class:`numpyro_flows.StratifiedELBO`;
    :func:`numpyro_flows.fit_guide` does so by default when the search finds several
    modes.

    Args:
        model: a NumPyro model.
        flow: each component's :class:`~numpyro_flows.flows.Flow` (default
            :func:`default_component_flow`; it needs a cheap inverse).
        modes: a :class:`~numpyro_flows.modes.Modes` (from
            :func:`~numpyro_flows.find_modes` on the same model), or ``None`` to search at
            set-up.
        max_components: keep at most this many modes (the heaviest).
        num_starts: starting points of the set-up search.
        affine: each component's affine layer, as for :class:`~numpyro_flows.AutoFlow`
            (default ``"full"``: a mode's correlations are learned directly).
        **kwargs: passed to :class:`~numpyro_flows.AutoFlow`: ``prefix``,
            ``init_loc_fn``, ``init_scale``, ``create_plates``. ``init_loc_fn`` and
            ``init_scale`` place the single component used when no mode is found. There is
            no ``warm_start``: the components start at the modes' Laplace approximations.

    Example::

        guide = AutoFlowMixture(model)
        svi = SVI(model, guide, optax.adam(3e-3), StratifiedELBO(num_particles=4))
    """

    def __init__(
        self,
        model: Callable | None,
        *,
        flow: Flow | None = None,
        modes: Modes | None = None,
        max_components: int = MAX_COMPONENTS,
        num_starts: int = 64,
        affine: str = "full",
        **kwargs,
    ):
        if "warm_start" in kwargs:
            raise TypeError(
                "AutoFlowMixture takes no warm_start: its components start at the Laplace "
                "approximations of the modes it finds."
            )
        if modes is not None and not isinstance(modes, Modes):
            raise TypeError(
                f"modes must be a numpyro_flows.Modes (from find_modes), got "
                f"{type(modes).__name__}."
            )
        if int(max_components) < 1:
            raise ValueError(f"max_components must be at least 1, got {max_components}.")
        self.modes = modes
        self.max_components = int(max_components)
        self.num_starts = int(num_starts)
        self._stratum = None
        flow = default_component_flow() if flow is None else flow
        super().__init__(model, flow=flow, affine=affine, **kwargs)

    # ------------------------------------------------------------------ set-up
    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        if self.modes is None:
            self.modes = self._search_modes(args, kwargs)
        modes = self.modes
        if modes.locs.shape[-1:] != (self.latent_dim,):
            raise ValueError(
                f"modes are for {modes.locs.shape[-1]} latent values, the model has "
                f"{self.latent_dim}: run find_modes on the same model and data."
            )
        dtype = jnp.result_type(self._init_latent)
        if modes.num_modes == 0:
            # No usable mode (a funnel): one component where init_loc_fn puts it.
            locs = self._init_latent[None]
            trils = (jnp.identity(self.latent_dim, dtype) * self._init_scale)[None]
            log_weights = jnp.zeros(1, dtype)
        else:
            count = min(modes.num_modes, self.max_components)
            locs = jnp.asarray(modes.locs[:count], dtype)
            trils = jnp.asarray(modes.scale_trils[:count], dtype)
            log_weights = jnp.asarray(modes.log_weights[:count], dtype)
        self.frame = (locs, trils)
        self._init_log_weights = log_weights

    def _search_modes(self, args, kwargs) -> Modes:
        if isinstance(self._init_latent, jax.core.Tracer):
            raise ValueError(
                "AutoFlowMixture searches for modes when it first meets the model; call "
                "svi.init outside jax.jit, or pass modes=find_modes(...)."
            )
        key = numpyro.prng_key()
        key = jax.random.key(0) if key is None else key

        potential = self._latent_potential()
        with numpyro.handlers.block():
            prototype = self._unpack_latent(self._init_latent)
            starts = start_points(key, self.model, args, kwargs, self.num_starts, prototype)
            return modes_from_starts(potential, starts, max_modes=self.max_components)

    @property
    def num_components(self) -> int:
        """``K`` (known after set-up)."""
        return int(self.frame[0].shape[0])

    # ------------------------------------------------------------------ the posterior
    def _flow_params(self):
        """The components' flow parameters, stacked (a leading axis of ``K``)."""
        count, dim = self.frame[0].shape
        dtype = jnp.result_type(self._init_latent)
        return packed_param(
            f"{self.prefix}_flow",
            lambda key: jax.vmap(lambda k: self.flow.init(k, dim, dtype=dtype))(
                jax.random.split(key, count)
            ),
            param_layouts(self),
        )

    def _component_params(self):
        locs, trils = self.frame
        count, dim = locs.shape
        dtype = jnp.result_type(self._init_latent)
        flow_params = self._flow_params()
        loc, scale = self._affine_params(jnp.zeros((count, dim), dtype), 1.0)
        return {"flow": flow_params, "loc": loc, "scale": scale, "frame": (locs, trils)}

    def _build_component(self, c):
        affine = self._affine_transform(c["loc"], c["scale"])
        frame_loc, frame_tril = c["frame"]
        return Chain(
            [self.flow.transform(c["flow"]), affine, LowerCholeskyAffine(frame_loc, frame_tril)]
        )

    def _get_posterior(self):
        logits = numpyro.param(f"{self.prefix}_logits", self._init_log_weights)
        return FlowMixture(
            logits,
            self._component_params(),
            self._build_component,
            self.latent_dim,
            self._stratum,
        )

    @contextmanager
    def stratum(self, k):
        """Within this context the guide draws from component ``k`` only (its density
        stays the mixture's): one stratum of :class:`~numpyro_flows.StratifiedELBO`."""
        previous, self._stratum = self._stratum, k
        try:
            yield self
        finally:
            self._stratum = previous

    def mixture_weights(self, params) -> jnp.ndarray:
        """The fitted component weights ``(K,)``."""
        return jax.nn.softmax(params[f"{self.prefix}_logits"])

    def get_posterior(self, params) -> FlowMixture:
        """The fitted mixture as a distribution over the unconstrained latent vector."""
        return numpyro.handlers.substitute(self._get_posterior, params)()

    def get_transform(self, params):
        """The base-to-latent map; only a single-component mixture has one."""
        if self.num_components > 1:
            raise ValueError(
                f"This AutoFlowMixture has {self.num_components} components (one per "
                "posterior mode): no single bijection maps a Gaussian onto it, so NeuTra "
                "and other transport uses cannot take it. Its draws (sample_posterior, "
                "PSIS-resampled) are the posterior approximation; for NeuTra on one mode "
                "train a single flow (fit_guide(..., modes=False))."
            )
        return self.get_posterior(params).component(0)


__all__ = ["AutoFlowMixture", "FlowMixture", "default_component_flow"]
