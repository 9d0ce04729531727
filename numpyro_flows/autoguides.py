"""Flow autoguides: ``AutoFlow`` and the presets ``AutoIAF``, ``AutoRealNVP``,
``AutoNeuralSpline``, ``AutoBNAF``.

Each is a :class:`numpyro.infer.autoguide.AutoContinuous`: the posterior over all latent
sites, flattened to one unconstrained vector ``x``, is

    z ~ Normal(0, I),    x = loc + L @ flow(z)

with ``flow`` a :class:`~numpyro_flows.flows.Flow` that starts at the identity and ``L``
diagonal (``affine="diagonal"``) or lower-triangular (``affine="full"``) starting at
``init_scale * I``. So at step 0 the guide is ``Normal(init_loc, init_scale^2)``, centred
where ``init_loc_fn`` puts it, and the flow layers work in a standardised space.

Everything NumPyro calls on an autoguide works: ``SVI``, ``Predictive``,
``sample_posterior``, ``median``, ``quantiles``, ``get_posterior``, ``get_transform`` and
``numpyro.infer.reparam.NeuTraReparam``.

Constants: ``LAPLACE_KHAT_MAX`` (0.7), the PSIS k-hat below which ``warm_start="auto"``
keeps a Laplace start; ``NUM_QUANTILE_SAMPLES`` (10 000), the Monte Carlo draws behind
``median`` and ``quantiles``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.example_libraries import stax
from numpyro.distributions import constraints
from numpyro.distributions.transforms import (
    AffineTransform,
    IndependentTransform,
    LowerCholeskyAffine,
    biject_to,
)
from numpyro.infer.autoguide import AutoContinuous
from numpyro.infer.initialization import init_to_uniform

from numpyro_flows import flows
from numpyro_flows._guide_support import (
    latent_sites,
    picklable_or_none,
    reject_discrete_latents,
)
from numpyro_flows._param_packing import packed_param, param_layouts
from numpyro_flows.bijections import Chain
from numpyro_flows.flows import Flow
from numpyro_flows.laplace import laplace_approximation, laplace_khat
from numpyro_flows.nn.common import activation_name

_AFFINES = ("diagonal", "full")
_WARM_STARTS = (None, "laplace", "auto")

# warm_start="auto" keeps a Laplace start only if its PSIS k-hat is below this.
LAPLACE_KHAT_MAX = 0.7

# Monte Carlo draws behind `median` and `quantiles` (a flow has no closed form for them).
NUM_QUANTILE_SAMPLES = 10_000


class AutoFlow(AutoContinuous):
    """A normalizing-flow guide over all latent sites of a model.

    Args:
        model: a NumPyro model.
        flow: a :class:`~numpyro_flows.flows.Flow` (e.g. ``numpyro_flows.flows.iaf()``);
            it maps a standard normal base to the standardised latent space.
        prefix: prefix of the param sites (``{prefix}_flow``, the flow's parameters as
            one vector, see :meth:`flow_params`; ``{prefix}_loc``; ``{prefix}_scale`` or
            ``{prefix}_scale_tril``).
        init_loc_fn: a NumPyro init strategy; the guide starts centred there.
        init_scale: initial scale of the affine layer (as ``AutoNormal``'s ``init_scale``).
        affine: ``"diagonal"`` (a per-dimension scale) or ``"full"`` (a lower-triangular
            scale, capturing linear correlations directly; ``O(D^2)`` parameters).
        warm_start: ``None``, or ``"laplace"``: before SVI, find the posterior mode with
            L-BFGS (from ``init_loc_fn``'s point) and start the guide as the Laplace
            approximation there (see :mod:`numpyro_flows.laplace`). The affine layer then
            works in the Laplace frame, ``x = mode + L (loc + scale * flow(z))`` with
            ``L L^T`` the inverse Hessian, ``loc = 0`` and ``scale = 1`` at the start
            (``guide.frame`` holds ``(mode, L)``): SVI's steps are then measured in
            posterior standard deviations, which keeps badly scaled, strongly correlated
            posteriors (collinear regressions) accurate. Where there is no mode or no
            positive curvature it centres at the end point with ``init_scale``, warning.
            ``"auto"``: the same where the search ends at a point with positive
            curvature whose Gaussian is a fair importance proposal (PSIS k-hat below
            ``LAPLACE_KHAT_MAX``), and silently the plain start (``init_loc_fn``,
            ``init_scale``) where it is not (no mode; a funnel, whose mode is a needle
            deep in its neck): what :func:`numpyro_flows.fit_guide` uses.
        create_plates: as in :class:`~numpyro.infer.autoguide.AutoGuide`.

    Example::

        guide = AutoFlow(model, flow=numpyro_flows.flows.neural_spline())
        svi = SVI(model, guide, optax.adam(3e-3), Trace_ELBO())
        result = svi.run(jax.random.key(0), 5000, data)
    """

    def __init__(
        self,
        model: Callable | None,
        *,
        flow: Flow,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        init_scale: float = 0.1,
        affine: str = "diagonal",
        warm_start: str | None = None,
        create_plates: Callable | None = None,
    ):
        # A preset whose architecture depends on the latent size makes its flow at set-up.
        makes_own_flow = type(self)._make_flow is not AutoFlow._make_flow
        if not isinstance(flow, Flow) and not (flow is None and makes_own_flow):
            raise TypeError(
                f"flow must be a numpyro_flows Flow (e.g. numpyro_flows.flows.iaf()), got "
                f"{type(flow).__name__}."
            )
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}.")
        if affine not in _AFFINES:
            raise ValueError(f"affine must be one of {_AFFINES}, got {affine!r}.")
        if warm_start not in _WARM_STARTS:
            raise ValueError(f"warm_start must be one of {_WARM_STARTS}, got {warm_start!r}.")
        self.flow = flow
        self.warm_start = warm_start
        self.laplace = None  # the LaplaceResult of a warm start, for inspection
        # A Laplace approximation known before set-up (fit_guide's mode search found the
        # one mode): used by the warm start instead of a second search of its own. With
        # `_check_known_laplace` False its PSIS check is the caller's: fit_guide checks the
        # fresh guide (then exactly this Gaussian) with the draws of its final PSIS, one
        # compiled function for both; `_laplace_unchecked` is True until then.
        self._known_laplace = None
        self._check_known_laplace = True
        self._laplace_unchecked = False
        self.frame = None  # (loc, scale_tril) the affine layer is relative to, see below
        self._init_scale = float(init_scale)
        self.affine = affine
        self._latent_layout = None
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn, create_plates=create_plates)

    # ------------------------------------------------------------------ set-up
    def _make_flow(self) -> Flow:
        """The flow, once the latent size (``self.latent_dim``) is known; a preset whose
        architecture depends on the size overrides this and passes ``flow=None``."""
        return self.flow

    def _setup_prototype(self, *args, **kwargs):
        # NumPyro would try to enumerate a discrete latent (and ask for funsor) before its
        # own check; find it first and say what to do.
        _reject_discrete_latents(self, args, kwargs)
        try:
            super()._setup_prototype(*args, **kwargs)
        except ValueError as error:
            if "local latent" in str(error):
                raise ValueError(_local_latent_message(self)) from None
            raise
        self.flow = self._make_flow()
        self._latent_layout = _latent_layout(self.prototype_trace, self._init_locs)
        if self.warm_start in ("laplace", "auto"):
            self._laplace_warm_start()

    def _laplace_warm_start(self):
        if isinstance(self._init_latent, jax.core.Tracer):
            if self.warm_start == "auto":
                return  # set up under jit: the plain start
            raise ValueError(
                "warm_start='laplace' runs an optimiser when the guide first meets the model; "
                "call svi.init outside jax.jit."
            )

        potential = self._latent_potential()
        result = self._usable_known_laplace(potential)
        if result is None:
            # Block: the guide runs inside SVI's trace handlers; the model's sites evaluated
            # by the optimiser must not be recorded there.
            with numpyro.handlers.block():
                result = laplace_approximation(potential, self._init_latent)
            if self.warm_start == "auto" and not _is_usable_mode(potential, result):
                self.laplace = result
                return
        self.laplace = result
        if not bool(jnp.all(jnp.isfinite(result.loc))):
            warnings.warn(
                "Laplace warm start: the mode search diverged; starting from init_loc_fn.",
                UserWarning,
                stacklevel=4,
            )
            return
        self._init_latent = result.loc
        if result.scale_tril is None:
            warnings.warn(
                "Laplace warm start: no positive-definite curvature at the end point (no "
                "mode, e.g. a funnel); centring there with init_scale.",
                UserWarning,
                stacklevel=4,
            )
            return
        # The learnable affine layer now lives in the whitened frame of the Laplace
        # approximation: x = mode + L (loc + scale * flow(z)), loc = 0 and scale = 1 at
        # the start. Adam's steps, about the learning rate in size whatever the gradient,
        # are then steps in posterior standard deviations: a coordinate with a tiny
        # posterior sd (a regression coefficient among collinear predictors) is not
        # jittered by more than its own width.
        self.frame = (result.loc, result.scale_tril)

    def _usable_known_laplace(self, potential):
        """The Laplace approximation known before set-up, where there is one and it is a
        usable start (:func:`_is_usable_mode`; where the caller checks it, one with
        curvature); otherwise ``None``, and the warm start searches from ``init_loc_fn``'s
        point as without one: the heaviest mode of a search need not be the one L-BFGS
        reaches from there."""
        known = _as_latent(self._known_laplace, self._init_latent)
        if known is None or not _has_curvature(known):
            return None
        if not self._check_known_laplace:
            self._laplace_unchecked = True
            return known
        return known if _is_usable_mode(potential, known) else None

    def _latent_potential(self):
        """The model's potential energy as a function of the unconstrained latent vector
        (a new function each call: jit caches static functions by identity)."""

        def potential(z):
            return self._potential_fn(self._unpack_latent(z))

        return potential

    # ------------------------------------------------------------------ the posterior
    def _flow_params(self):
        dim = self.latent_dim
        dtype = jnp.result_type(self._init_latent)
        return packed_param(
            f"{self.prefix}_flow",
            lambda key: self.flow.init(key, dim, dtype=dtype),
            param_layouts(self),
        )

    def flow_params(self, params: dict):
        """The flow's parameters from the guide's ``params`` (``svi.get_params(state)``):
        the pytree ``self.flow.init`` gives. The ``{prefix}_flow`` site holds them as one
        vector, which keeps the SVI state small (see :mod:`numpyro_flows._param_packing`)."""
        return numpyro.handlers.substitute(self._flow_params, params)()

    def _affine_params(self, init_loc, init_scale: float):
        """``(loc, scale)`` of the learnable affine layer, starting at ``init_loc`` and
        ``init_scale * I``: ``scale`` is lower-triangular for ``affine="full"``, a vector
        otherwise. Leading axes of ``init_loc`` give one layer each (mixture components)."""
        dtype = jnp.result_type(init_loc)
        shape = jnp.shape(init_loc)
        loc = numpyro.param(f"{self.prefix}_loc", init_loc)
        if self.affine == "full":
            identity = jnp.identity(shape[-1], dtype) * init_scale
            scale = numpyro.param(
                f"{self.prefix}_scale_tril",
                jnp.broadcast_to(identity, shape + shape[-1:]),
                constraint=constraints.scaled_unit_lower_cholesky,
            )
        else:
            scale = numpyro.param(
                f"{self.prefix}_scale",
                jnp.full(shape, init_scale, dtype),
                constraint=constraints.softplus_positive,
            )
        return loc, scale

    def _affine_transform(self, loc, scale):
        """The affine layer for ``(loc, scale)`` from :meth:`_affine_params`."""
        if self.affine == "full":
            return LowerCholeskyAffine(loc, scale)
        return IndependentTransform(AffineTransform(loc, scale), 1)

    def _affine(self):
        """The learnable affine layer (and the fixed warm-start frame after it)."""
        dtype = jnp.result_type(self._init_latent)
        if self.frame is None:
            init_loc, init_scale = self._init_latent, self._init_scale
        else:
            init_loc, init_scale = jnp.zeros(self.latent_dim, dtype), 1.0
        layers = [self._affine_transform(*self._affine_params(init_loc, init_scale))]
        if self.frame is not None:
            frame_loc, frame_tril = (jnp.asarray(a, dtype) for a in self.frame)
            layers.append(LowerCholeskyAffine(frame_loc, frame_tril))
        return layers

    def _get_posterior(self):
        flow_transform = self.flow.transform(self._flow_params())
        return dist.TransformedDistribution(self.get_base_dist(), [flow_transform, *self._affine()])

    def get_base_dist(self):
        return dist.Normal(
            jnp.zeros(self.latent_dim, jnp.result_type(self._init_latent)), 1.0
        ).to_event(1)

    def get_transform(self, params):
        """The map from the base ``Normal(0, I)`` to the unconstrained latent vector."""
        posterior = numpyro.handlers.substitute(self._get_posterior, params)()
        return Chain(posterior.transforms)

    # ------------------------------------------------------------------ summaries
    def _latent_draws(self, params, num_samples=NUM_QUANTILE_SAMPLES):
        posterior = self.get_posterior(params)
        return posterior.sample(jax.random.key(0), (num_samples,))

    def median(self, params):
        """Posterior median of each latent site.

        A flow has no closed-form median: this is the coordinate-wise median of
        ``NUM_QUANTILE_SAMPLES`` draws (fixed key) in the unconstrained space, constrained
        back (medians commute with the monotone constraining maps).
        """
        latent = jnp.median(self._latent_draws(params), axis=0)
        return self._unpack_and_constrain(latent, params)

    def quantiles(self, params, quantiles):
        """Posterior quantiles of each latent site, from Monte Carlo draws (see
        :meth:`median`); returns ``{site: array of shape (len(quantiles), *site_shape)}``."""
        q = jnp.asarray(quantiles)
        latent = jnp.quantile(self._latent_draws(params), q, axis=0)
        return self._unpack_and_constrain(latent, params)

    # ------------------------------------------------------------------ without the model
    def _unpack_and_constrain(self, latent_sample, params):
        if getattr(self, "_postprocess_fn", None) is not None:
            return super()._unpack_and_constrain(latent_sample, params)
        # A loaded or unpickled guide: constrain each latent site from the saved layout
        # (deterministic sites need the model: attach it and use Predictive).
        return _constrain_with_layout(self._latent_layout, latent_sample)

    def __getstate__(self):
        state = super().__getstate__()
        # Closures over the model and its data cannot be pickled; sampling needs only the
        # latent layout, which is kept.
        for name in ("_potential_fn", "_potential_fn_gen", "_postprocess_fn", "prototype_trace"):
            state[name] = None
        state["_unpack_latent"] = None
        state["model"] = picklable_or_none(state.get("model"))
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._latent_layout is not None:
            self._restore_from_layout()

    def _restore_from_layout(self):
        """Re-creates what sampling needs from the latent layout, without the model."""
        layout = self._latent_layout
        self.latent_dim = sum(
            int(np.prod(entry["unconstrained_shape"])) for entry in layout.values()
        )
        self._init_latent = jnp.zeros(self.latent_dim, _layout_dtype(layout))
        self._unpack_latent = _layout_unpacker(layout)

    def sample_posterior(self, rng_key, params, *args, sample_shape=(), **kwargs):
        if self.prototype_trace is None and self._latent_layout is None:
            with numpyro.handlers.seed(rng_seed=0):
                self._setup_prototype(*args, **kwargs)
        return super().sample_posterior(rng_key, params, *args, sample_shape=sample_shape, **kwargs)


class AutoIAF(AutoFlow):
    """Inverse autoregressive flow guide, taking NumPyro ``AutoIAFNormal``'s arguments.

    ``num_flows``, ``hidden_dims``, ``skip_connections`` and ``nonlinearity`` mean what
    they mean for :class:`numpyro.infer.autoguide.AutoIAFNormal` (``hidden_dims=None``
    is ``[latent_dim, latent_dim]`` there and here, worked out when the guide first meets
    the model), so switching is a change of class name. On top of that the guide honours
    ``init_loc_fn`` and has an affine layer (``affine``, ``init_scale``); the log-scale of
    each layer is bounded smoothly instead of clipped.

    The defaults are NumPyro's, so that the two can be compared like for like; that
    includes starting at scale 1 (``init_scale=1.0``; ``AutoIAFNormal``'s base is a
    standard normal), where the other guides start at ``0.1`` as ``AutoNormal`` does.
    Starting at scale 1 also paid off for NeuTra on a funnel and on posteriordb's
    non-centred eight schools; the layers run under ``lax.scan``, so a deep guide compiles
    once per layer type, not once per layer. Two changes measured to pay off:

    * for NeuTra on a funnel (eight schools, centred), ``hidden_dims=[32, 32]``,
      ``affine="full"`` and ``init_scale=0.1``, trained long with 16 particles, then NUTS
      with ``target_accept_prob=0.99``;
    * for regressions with correlated, badly scaled coefficients, ``affine="full"`` and
      ``warm_start="laplace"``.

    The measurements, with their dates, are on the Benchmarks page ("Guide defaults").

    Args:
        model: a NumPyro model.
        num_flows: number of IAF layers (default 3, as NumPyro).
        hidden_dims: MADE hidden widths (default ``[latent_dim, latent_dim]``).
        skip_connections: skip connections in each MADE.
        nonlinearity: activation: NumPyro's ``stax.Elu`` (default) etc., a name or callable.
        init_scale: initial scale of the affine layer (default 1.0, see above).
        **kwargs: passed to :class:`AutoFlow`: ``prefix``, ``init_loc_fn``, ``affine``,
            ``warm_start``, ``create_plates``.
    """

    def __init__(
        self,
        model: Callable | None,
        *,
        num_flows: int = 3,
        hidden_dims: Sequence[int] | None = None,
        skip_connections: bool = False,
        nonlinearity: str | Callable | tuple = stax.Elu,
        init_scale: float = 1.0,
        **kwargs,
    ):
        if int(num_flows) < 1:
            raise ValueError(f"num_flows must be a positive integer, got {num_flows}.")
        self.num_flows = num_flows
        self.hidden_dims = None if hidden_dims is None else tuple(hidden_dims)
        self.skip_connections = skip_connections
        self.nonlinearity = activation_name(nonlinearity)
        super().__init__(model, flow=None, init_scale=init_scale, **kwargs)

    def _make_flow(self) -> Flow:
        # NumPyro's default hidden width depends on the latent dimension.
        return flows.iaf(
            self.num_flows,
            self.hidden_dims or (self.latent_dim, self.latent_dim),
            skip_connections=self.skip_connections,
            nonlinearity=self.nonlinearity,
        )


class AutoRealNVP(AutoFlow):
    """RealNVP (affine coupling) guide.

    Args:
        model: a NumPyro model.
        num_flows: number of coupling layers (halves alternate).
        hidden_dims: MLP hidden widths (default two layers of ``max(2 D, 16)``).
        nonlinearity: activation name or callable.
        **kwargs: passed to :class:`AutoFlow`: ``prefix``, ``init_loc_fn``,
            ``init_scale``, ``affine``, ``warm_start``, ``create_plates``.
    """

    def __init__(
        self,
        model: Callable | None,
        *,
        num_flows: int = 4,
        hidden_dims: Sequence[int] | None = None,
        nonlinearity: str | Callable = "elu",
        **kwargs,
    ):
        self.num_flows = num_flows
        flow = flows.realnvp(num_flows, hidden_dims, nonlinearity=activation_name(nonlinearity))
        super().__init__(model, flow=flow, **kwargs)


class AutoNeuralSpline(AutoFlow):
    """Neural spline flow guide (rational-quadratic splines, identity tails).

    Autoregressive by default (parallel in the sampling direction, like an IAF);
    ``coupling=True`` gives the coupling form. Each spline is followed by a conditional
    affine map, whose scale carries funnels and scale mixtures.

    The defaults are what trained best on a 10-D Neal's funnel in the time NumPyro's
    ``AutoIAFNormal`` takes for 10 000 steps: a single autoregressive layer (each extra
    layer costs steps the budget does not have) whose affine log-scale lies in
    ``(-8, 6)``, wider than the ``(-5, 3)`` of NumPyro's IAF, since the funnel's neck and
    mouth need scales of ``e^±4.5`` and more. Coupling layers transform half the
    variables each, so the coupling form defaults to three. The measurements, with their
    dates, are on the Benchmarks page ("Guide defaults").

    Args:
        model: a NumPyro model.
        num_flows: number of spline layers (default 1 autoregressive, 3 coupling).
        hidden_dims: conditioner hidden widths (default two layers of ``max(2 D, 16)``).
        num_bins: spline bins per dimension.
        bound: splines act on ``[-bound, bound]`` of the standardised space.
        coupling: coupling layers instead of autoregressive ones.
        nonlinearity: activation name or callable.
        log_scale_bound: ``(low, high)`` of each affine part's log-scale.
        **kwargs: passed to :class:`AutoFlow`: ``prefix``, ``init_loc_fn``,
            ``init_scale``, ``affine``, ``warm_start``, ``create_plates``.
    """

    def __init__(
        self,
        model: Callable | None,
        *,
        num_flows: int | None = None,
        hidden_dims: Sequence[int] | None = None,
        num_bins: int = 8,
        bound: float = 5.0,
        coupling: bool = False,
        nonlinearity: str | Callable = "elu",
        log_scale_bound: float | tuple[float, float] = (-8.0, 6.0),
        **kwargs,
    ):
        if num_flows is None:
            num_flows = 3 if coupling else 1
        self.num_flows = num_flows
        flow = flows.neural_spline(
            num_flows,
            hidden_dims,
            num_bins=num_bins,
            bound=bound,
            coupling=coupling,
            nonlinearity=activation_name(nonlinearity),
            log_scale_bound=log_scale_bound,
        )
        super().__init__(model, flow=flow, **kwargs)


class AutoBNAF(AutoFlow):
    """Block neural autoregressive flow guide, taking NumPyro ``AutoBNAFNormal``'s arguments.

    De Cao et al. (2019), https://arxiv.org/abs/1904.04676; the flow is
    :func:`numpyro_flows.flows.bnaf`. ``num_flows`` and ``hidden_factors`` mean what they
    mean for :class:`numpyro.infer.autoguide.AutoBNAFNormal`, with its defaults (one
    layer, two hidden layers of 8 units per latent dimension; a reversed variable order
    and a gated residual between layers), so switching is a change of class name and the
    two compare like for like. On top of that the guide honours ``init_loc_fn`` (an
    affine layer centred there, the BNAF starting at the identity), maps onto all of
    ``R^D`` (the activation is a leaky ``tanh``, not ``tanh``, whose range is bounded),
    and works for a single latent dimension.

    ``init_scale`` defaults to 1.0, as for :class:`AutoIAF`: ``AutoBNAFNormal`` pushes a
    standard normal through its flow, so scale 1 keeps the comparison like for like
    (``AutoNormal``'s 0.1 is the other presets' choice).

    Args:
        model: a NumPyro model.
        num_flows: number of BNAF layers (default 1, as NumPyro).
        hidden_factors: hidden units per latent dimension of each hidden layer (default
            ``[8, 8]``, as NumPyro).
        init_scale: initial scale of the affine layer (default 1.0, see above).
        **kwargs: passed to :class:`AutoFlow`: ``prefix``, ``init_loc_fn``, ``affine``,
            ``warm_start``, ``create_plates``.
    """

    def __init__(
        self,
        model: Callable | None,
        *,
        num_flows: int = 1,
        hidden_factors: Sequence[int] = (8, 8),
        init_scale: float = 1.0,
        **kwargs,
    ):
        self.num_flows = num_flows
        self.hidden_factors = tuple(hidden_factors)
        flow = flows.bnaf(num_flows, self.hidden_factors)
        super().__init__(model, flow=flow, init_scale=init_scale, **kwargs)


# ---------------------------------------------------------------------- helpers
def _reject_discrete_latents(guide, args, kwargs):
    # Values from the guide's own init strategy, as NumPyro's prototype run makes them
    # (improper priors cannot be sampled; a uniform draw may be where the model blows up).
    sites = latent_sites(guide.model, args, kwargs, substitute_fn=guide.init_loc_fn)
    if sites is not None:
        reject_discrete_latents(sites, type(guide).__name__)


def _as_latent(result, init_latent):
    """A known :class:`LaplaceResult` in the latent vector's dtype, or ``None`` where there
    is none or it is not of the latent vector's size."""
    if result is None or np.shape(result.loc) != np.shape(init_latent):
        return None
    dtype = jnp.result_type(init_latent)
    tril = None if result.scale_tril is None else jnp.asarray(result.scale_tril, dtype)
    return result._replace(loc=jnp.asarray(result.loc, dtype), scale_tril=tril)


def _has_curvature(result) -> bool:
    """A finite end point with a positive-definite curvature (a Laplace scale)."""
    return result.scale_tril is not None and bool(jnp.all(jnp.isfinite(result.loc)))


def _is_usable_mode(potential, result) -> bool:
    """An end point with positive-definite curvature whose Gaussian is a fair importance
    proposal (not a needle in a funnel's neck). The PSIS check, not the gradient
    tolerance, decides: on large data sets L-BFGS can end a little short of it in float
    precision with a perfectly good approximation."""
    if not _has_curvature(result):
        return False
    with numpyro.handlers.block():
        return laplace_khat(potential, result, jax.random.key(0)) < LAPLACE_KHAT_MAX


def _local_latent_message(guide) -> str:
    full = guide._prototype_frame_full_sizes
    for name, site in guide.prototype_trace.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        for frame in site["cond_indep_stack"]:
            if frame.size != full.get(frame.name, frame.size):
                return (
                    f"{type(guide).__name__} cannot handle the local latent site '{name}': it "
                    f"sits in the subsampled plate '{frame.name}' ({frame.size} of "
                    f"{full[frame.name]}). This guide is one joint distribution over the "
                    "global latents. Use numpyro_flows.AutoHybridFlow (a flow over the "
                    "globals and an amortised flow over each row's locals), or do not "
                    "subsample that plate, or guide the local sites with AutoNormal "
                    "(AutoGuideList with this guide on numpyro.handlers.block(model, "
                    "hide=[...local sites...]) and AutoNormal on the rest)."
                )
    return f"{type(guide).__name__} does not support local latent variables."


def _latent_layout(prototype_trace, init_locs) -> dict:
    """Per latent site: unconstrained shape, support and event dim, in ravel order."""
    layout = {}
    for name in init_locs:  # the order AutoContinuous ravels them in
        site = prototype_trace[name]
        layout[name] = {
            "unconstrained_shape": tuple(jnp.shape(init_locs[name])),
            "support": site["fn"].support,
            "dtype": str(jnp.result_type(init_locs[name])),
        }
    return layout


def _layout_dtype(layout):
    dtypes = [entry["dtype"] for entry in layout.values()]
    return jnp.result_type(*dtypes) if dtypes else jnp.zeros(()).dtype


def _layout_unpacker(layout):
    sizes = [int(np.prod(entry["unconstrained_shape"])) for entry in layout.values()]
    offsets = np.cumsum([0] + sizes)

    def unpack(latent):
        return {
            name: latent[..., offsets[i] : offsets[i + 1]].reshape(
                latent.shape[:-1] + entry["unconstrained_shape"]
            )
            for i, (name, entry) in enumerate(layout.items())
        }

    return unpack


def _constrain_with_layout(layout, latent):
    unpack = _layout_unpacker(layout)

    def constrain_one(z):
        return {name: biject_to(layout[name]["support"])(v) for name, v in unpack(z).items()}

    # One draw at a time under lax.map, as NumPyro's AutoContinuous does with the model:
    # the same compiled computation, so a loaded guide's draws match to the last bit.
    sample_shape = latent.shape[:-1]
    if not sample_shape:
        return constrain_one(latent)
    draws = jax.lax.map(constrain_one, latent.reshape(-1, latent.shape[-1]))
    return jax.tree.map(lambda x: x.reshape(sample_shape + x.shape[1:]), draws)


__all__ = [
    "LAPLACE_KHAT_MAX",
    "NUM_QUANTILE_SAMPLES",
    "AutoBNAF",
    "AutoFlow",
    "AutoIAF",
    "AutoNeuralSpline",
    "AutoRealNVP",
]
