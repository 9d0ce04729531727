"""Flow factories: ``iaf``, ``maf``, ``realnvp``, ``neural_spline``, ``planar``, ``radial``,
``glow``, ``bnaf``, ``nice``; for images ``multiscale_glow`` and ``multiscale_realnvp``.

Each factory is callable with no arguments and returns a :class:`Flow`::

    flow = neural_spline()
    params = flow.init(jax.random.key(0), dim=5)      # a pytree of arrays
    t = flow.transform(params)                        # a NumPyro Transform, base -> target
    y, log_det = t.forward_and_log_det(x)

Identical layers are stacked and run under :func:`jax.lax.scan` (compile time does not
grow with depth), and every fresh flow is the identity map.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from numpyro_flows.bijections import (
    Additive,
    Affine,
    Bijection,
    ComposedTransformer,
    RationalQuadraticSpline,
)
from numpyro_flows.bijections.image import MASKS
from numpyro_flows.image_layers import ConvCouplingLayer, MultiscaleLayer, PerPixelLayer
from numpyro_flows.layers import (
    ActNormLayer,
    AutoregressiveLayer,
    BatchNormLayer,
    BNAFLayer,
    CouplingLayer,
    ElementwiseLayer,
    InvertLayer,
    Layer,
    LULinearLayer,
    PlanarLayer,
    RadialLayer,
    Repeat,
    ReversedLayer,
    Sequential,
    build_layer,
    with_batch_norm_momentum,
)

Hidden = Sequence[int] | None


@dataclass(frozen=True)
class Flow:
    """A normalizing flow architecture: parameters in, a NumPyro ``Transform`` out.

    Args:
        layer: the root :class:`~numpyro_flows.layers.Layer` (usually a ``Repeat``).
        name: a short name, used in reprs and saved guide configs.
    """

    layer: Layer
    name: str = "flow"

    def init(self, rng_key, dim, context_dim: int = 0, dtype=None):
        """Fresh parameters (a pytree of arrays) for events of size ``dim``.

        Args:
            rng_key: a JAX PRNG key.
            dim: event size ``D``; for an image flow the event shape ``(H, W, C)``.
            context_dim: size of the context vector of a conditional flow (0: none).
            dtype: parameter dtype (default: JAX's default float).
        """
        if int(context_dim) != context_dim or context_dim < 0:
            raise ValueError(f"context_dim must be a non-negative integer, got {context_dim!r}.")
        # One compiled computation instead of hundreds of eager ops (a deep stack's init
        # would otherwise dominate a guide's set-up time).
        return _init(self.layer, rng_key, self._dim(dim), int(context_dim), dtype)

    def _dim(self, dim):
        """``dim`` as the layer takes it: ``D`` for a vector flow, ``(H, W, C)`` for images."""
        if self.layer.event_ndim == 3:
            return self.layer.check_shape(dim)
        if isinstance(dim, tuple | list) and len(dim) == 1:
            dim = dim[0]
        if isinstance(dim, tuple | list) or int(dim) != dim or dim < 1:
            raise ValueError(
                f"dim must be a positive integer (the event size D), got {dim!r}; image flows "
                "(flows.multiscale_glow, flows.multiscale_realnvp) take (H, W, C)."
            )
        return int(dim)

    def _dim_of(self, params):
        """What ``params`` were made for, as ``init`` takes it: ``D`` or ``(H, W, C)``."""
        return self.event_size(params) if self.layer.event_ndim == 1 else self.event_shape(params)

    def init_state(self, dim, dtype=None):
        """Non-trainable state (BatchNorm running statistics); ``None`` if there is none."""
        return self.layer.init_state(self._dim(dim), dtype)

    def event_size(self, params) -> int:
        """The event size ``D`` that ``params`` were initialised for (``H * W * C`` for
        an image flow)."""
        return self.layer.event_size(params)

    def event_shape(self, params) -> tuple[int, ...]:
        """The event shape ``params`` were initialised for: ``(D,)``, or ``(H, W, C)``."""
        return self.layer.event_shape(params)

    def transform(
        self, params, context=None, *, state=None, training: bool = False, rng_key=None
    ) -> Bijection:
        """The bijection (base -> target) for ``params`` and an optional ``context``.

        Args:
            params: from :meth:`init` (or trained).
            context: ``(..., context_dim)`` for a conditional flow.
            state: running statistics, for flows with BatchNorm layers.
            training: BatchNorm layers use batch statistics in the density direction; with
                an ``rng_key`` too, layers with dropout drop units.
            rng_key: a PRNG key for dropout in training mode (a fresh one per step, as
                :func:`~numpyro_flows.training.fit` passes). One key gives one fixed
                dropout mask, so the transform is still a bijection. Ignored when
                ``training`` is false: evaluation uses the full network.
        """
        if context is not None:
            context = jnp.asarray(context)
        if self.check_params(params) is None:  # a user layer that does not know its size
            return build_layer(self.layer, params, context, state, training, rng_key)
        bijection = build_layer(self.layer, params, context, state, training, rng_key)
        return EventSizeChecked(bijection, self.event_shape(params), self.name)

    def check_params(self, params) -> int | None:
        """Checks that ``params`` were made for this flow; returns their event size ``D``.

        The pytree structure and array shapes must be those :meth:`init` gives (for some
        ``D`` and context size), so the params of another flow or guide get a clear error
        here instead of a shape error deep inside a ``vmap``. Returns ``None`` (nothing
        checked) for a user-defined layer without ``event_size`` and for a flow of
        parameter-free layers only.

        Raises:
            ValueError: naming the first parameter that does not fit, what was expected
                and what was given.
        """
        try:
            event_size = self.layer.event_size(params)
            if event_size is None:  # only parameter-free layers: any size fits
                return None
            event_size = int(event_size)
        except NotImplementedError:
            return None
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise ValueError(self._mismatch(f"their layout does not fit ({error!r})")) from None
        if event_size < 1:
            raise ValueError(self._mismatch(f"they give an event size of {event_size}"))
        given = jax.tree.flatten_with_path(params)
        given_shapes = [jnp.shape(leaf) for _, leaf in given[0]]
        dim = self._dim_of(params)
        for context_dim in (0, 1):
            expected, treedef = _expected_shapes(self.layer, dim, context_dim)
            if treedef != given[1]:
                continue
            # Shapes that change with the context size are not compared.
            other, _ = _expected_shapes(self.layer, dim, context_dim + 1)
            other = expected if other is None else other
            for (path, _), want, want_other, got in zip(given[0], expected, other, given_shapes):
                if want == want_other and tuple(want) != tuple(got):
                    raise ValueError(
                        self._mismatch(
                            f"params{jax.tree_util.keystr(path)} has shape {tuple(got)}, but "
                            f"this flow on events of {_describe(dim)} expects {tuple(want)}"
                        )
                    )
            return event_size
        expected, _ = _expected_shapes(self.layer, dim, 0)
        if expected is None:  # init cannot be traced abstractly: nothing to compare with
            return event_size
        raise ValueError(
            self._mismatch(
                f"they hold {len(given_shapes)} arrays in another layout than the "
                f"{len(expected)} that init gives"
            )
        )

    def _mismatch(self, detail: str) -> str:
        return (
            f"These params do not fit the {self.name} flow: {detail}. They are the params of "
            "another flow or guide (or of this flow built with other settings); pass the "
            "params made by this flow's init, trained with it, or saved with this guide."
        )

    def data_init(self, params, data, context=None, state=None):
        """Data-dependent initialisation of ActNorm params and BatchNorm statistics.

        ``data`` (``(N, D)``, target side) is pushed through the flow towards the base;
        every ActNorm layer is set to normalise what reaches it, and every BatchNorm
        layer's running statistics are set to the statistics of what reaches it.

        Args:
            params: the flow's params (e.g. fresh from :meth:`init`).
            data: ``(N, D)`` rows.
            context: ``(N, C)`` contexts of a conditional flow.
            state: BatchNorm running statistics (default: :meth:`init_state`).

        Returns:
            ``(params, state)``: the new params and the new state (``None`` for a flow
            without BatchNorm layers).
        """
        state = self._state_for(params, state)
        params, state, _ = self.layer.propagate(params, state, jnp.asarray(data), context)
        return params, state

    def update_state(self, params, state, data, context=None, momentum: float | None = None):
        """Moves BatchNorm running statistics towards the statistics of ``data``.

        Each BatchNorm layer moves by its own ``momentum`` (0.1 by default); ``momentum``
        here overrides it for this call.
        """
        if state is None:
            return None
        layer = self.with_batch_norm_momentum(momentum).layer
        _, state, _ = layer.propagate(params, state, jnp.asarray(data), context, "update_state")
        return state

    def with_batch_norm_momentum(self, momentum: float | None) -> Flow:
        """This flow with every BatchNorm layer using ``momentum`` (``None``: unchanged)."""
        if momentum is None:
            return self
        return dataclasses.replace(self, layer=with_batch_norm_momentum(self.layer, momentum))

    def _state_for(self, params, state):
        if state is None:
            return self.init_state(self._dim_of(params), jnp.result_type(*_leaves(params)))
        return state


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _init(layer, rng_key, dim, context_dim, dtype):
    return layer.init(rng_key, dim, context_dim, dtype)


def _describe(dim) -> str:
    return f"shape {dim}" if isinstance(dim, tuple) else f"size {dim}"


@functools.lru_cache(maxsize=256)
def _expected_shapes(layer, dim, context_dim: int):
    """Leaf shapes and tree structure of ``layer.init(..., dim, context_dim)``, or
    ``(None, None)`` when that init fails."""
    try:
        shapes = jax.eval_shape(
            lambda key: layer.init(key, dim, context_dim, None), jax.random.key(0)
        )
    except Exception:  # e.g. a user layer that takes no context: (None, None)
        return None, None
    leaves, treedef = jax.tree.flatten(shapes)
    return [tuple(leaf.shape) for leaf in leaves], treedef


class EventSizeChecked(Bijection):
    """A flow's bijection, checking that its input has the event shape of the params.

    Without the check, a vector of the wrong size fails deep inside a network with a
    broadcasting error; with it the error names both sizes and the fix.
    """

    children = ("bijection",)
    static = ("event_shape", "flow_name")

    def __init__(self, bijection: Bijection, event_shape, flow_name: str = "flow"):
        self.bijection = bijection
        shape = event_shape if isinstance(event_shape, tuple | list) else (event_shape,)
        self.event_shape = tuple(int(n) for n in shape)
        self.flow_name = flow_name

    @property
    def event_size(self) -> int:
        """The number of values in one event."""
        return math.prod(self.event_shape)

    @property
    def domain(self):
        return self.bijection.domain

    @property
    def codomain(self):
        return self.bijection.codomain

    def _check(self, x, name: str):
        self._check_shape(jnp.shape(x), name)

    def _check_shape(self, shape, name: str):
        k = len(self.event_shape)
        if tuple(shape[len(shape) - k :]) == self.event_shape and len(shape) >= k:
            return
        if k == 1:
            given = "a scalar" if not shape else f"size {shape[-1]} (shape {tuple(shape)})"
            raise ValueError(
                f"The {self.flow_name} flow's params are for events of size "
                f"{self.event_size}, but its {name} was given {given}. Pass arrays whose last "
                f"axis has {self.event_size} entries, or params made for this size with "
                "flow.init(rng_key, dim); the params of another flow or guide give this too."
            )
        raise ValueError(
            f"The {self.flow_name} flow's params are for events of shape {self.event_shape}, "
            f"but its {name} was given shape {tuple(shape)}. Pass arrays of shape "
            f"(..., {', '.join(map(str, self.event_shape))}) (channels last), or params made "
            "for this shape with flow.init(rng_key, (H, W, C))."
        )

    def forward_and_log_det(self, x):
        self._check(x, "input x")
        return self.bijection.forward_and_log_det(x)

    def inverse_and_log_det(self, y):
        self._check(y, "inverse input y")
        return self.bijection.inverse_and_log_det(y)

    def forward_shape(self, shape):
        # Distributions ask for shapes first (TransformedDistribution), so check here too.
        self._check_shape(tuple(shape), "input x")
        return self.bijection.forward_shape(shape)

    def inverse_shape(self, shape):
        self._check_shape(tuple(shape), "inverse input y")
        return self.bijection.inverse_shape(shape)

    def __getattr__(self, name):
        # Transparent otherwise: e.g. a Scan's `layer(i)` and `num_layers` stay reachable.
        # (Only called for attributes not found; `bijection` itself may not be set yet
        # while unpickling or unflattening.)
        if name == "bijection" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.bijection, name)

    def __repr__(self):
        return repr(self.bijection)


def _leaves(tree):
    return jax.tree.leaves(tree) or [jnp.zeros(())]


# Conditioner defaults of the flows made for data (the density direction: maf and the
# ``invert=True`` forms). Guides see a posterior of tens to thousands of latents, with
# conditioners of ``max(2 D, 16)`` units and ELU; data sets often have few dimensions and
# many rows, where that is small. Measured on the four multi-dimensional sets of
# ``benchmarks/density.py`` (3 seeds each): 64 units instead of 16 gave the affine flows
# 0.01-0.24 nats more held-out log-likelihood (the spline coupling moved within +-0.03),
# and ReLU instead of ELU gave MAF 0.04-0.22 and the spline coupling up to 0.1; RealNVP
# was better with ReLU on two sets and worse on two, so it keeps ELU. RealNVP for data has 8
# coupling layers instead of 4 (see realnvp; 6 seeds, 0.05-0.28 nats on each set; MAF at
# 8 layers instead of 5 was better on two sets and worse on two, so it keeps 5). With twice
# the layers, RealNVP needs half the width: ``max(2 D, 32)`` gave the same held-out
# log-likelihood as ``max(2 D, 64)`` (-0.025 to +0.021 nats over the four sets, 6 seeds)
# in half the time per epoch.
DENSITY_DEFAULTS = {
    "min_width": 64,
    "nonlinearity": "relu",
    "coupling_layers": 8,
    "coupling_min_width": 32,
}


def _min_width(for_data: bool) -> int:
    """The smallest default conditioner width: for data, or the layers' own (guides)."""
    return DENSITY_DEFAULTS["min_width"] if for_data else CouplingLayer.min_width


def _hidden(hidden_dims: Hidden):
    return None if hidden_dims is None else tuple(int(h) for h in hidden_dims)


def _with_batch_norm(layer: Layer, batch_norm: bool) -> Layer:
    # Base -> target order: the layer, then BatchNorm, so that in the density direction
    # data is normalised before it reaches the layer's conditioner.
    return Sequential((layer, BatchNormLayer())) if batch_norm else layer


def iaf(
    num_flows: int = 3,
    hidden_dims: Hidden = None,
    *,
    skip_connections: bool = False,
    nonlinearity: str | Callable = "elu",
    permutation: str | None = "reverse",
    log_scale_bound: float | tuple[float, float] = (-5.0, 3.0),
    dropout: float = 0.0,
) -> Flow:
    """Inverse autoregressive flow: affine MADE layers, parallel in the sampling direction.

    Kingma et al. (2016), https://arxiv.org/abs/1606.04934.

    Args:
        num_flows: number of autoregressive layers.
        hidden_dims: MADE hidden widths (each ``>= D``); default two layers of
            ``max(2 D, 16)``.
        skip_connections: masked linear path from input to output in each MADE.
        nonlinearity: activation name or callable (NumPyro's ``stax.Elu`` etc. too).
        permutation: variable order across layers: ``"reverse"``, ``"random"`` or ``None``.
        log_scale_bound: each layer's log-scale lies in ``(low, high)`` (see
            :class:`~numpyro_flows.bijections.Affine`).
        dropout: probability of dropping each hidden unit of the MADEs, in ``[0, 1)``
            (inverted dropout, applied after each hidden activation). Only in training
            mode with a key, ``flow.transform(params, training=True, rng_key=key)``, which
            :func:`~numpyro_flows.training.fit` passes fresh at every step; everything
            else (validation losses, :class:`~numpyro_flows.density.FlowDistribution`,
            sampling, guides in SVI and at inference) uses the full, deterministic
            network.
    """
    layer = AutoregressiveLayer(
        Affine(log_scale_bound),
        _hidden(hidden_dims),
        nonlinearity,
        skip_connections,
        dropout=dropout,
    )
    return Flow(Repeat(layer, num_flows, permutation), "iaf")


def maf(
    num_flows: int = 5,
    hidden_dims: Hidden = None,
    *,
    skip_connections: bool = False,
    nonlinearity: str | Callable = "relu",
    permutation: str | None = "auto",
    log_scale_bound: float | tuple[float, float] = (-5.0, 3.0),
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> Flow:
    """Masked autoregressive flow: like :func:`iaf`, parallel in the density direction.

    Papamakarios et al. (2017), https://arxiv.org/abs/1705.07057. Sampling is sequential
    (``D`` network calls per layer); ``log_prob`` of data is one pass.

    A flow for data, so its conditioner defaults are those for data
    (:data:`DENSITY_DEFAULTS`): ``hidden_dims=None`` gives two layers of ``max(2 D, 64)``,
    and the activation is ReLU (measured better than ELU on all four multi-dimensional sets of
    ``benchmarks/density.py``). The variable order changes from layer to layer by a fixed
    random permutation where ``D > 2`` (``permutation="auto"``, as FlowJAX does), and is
    reversed from layer to layer in 2-D. Measured at ``fit``'s defaults (6 seeds, held-out
    log-likelihood, random against reversed orders): +0.31 nats on a 16-D chain of
    bananas, +0.02 on the 8-D one, +0.01 on a 6-D Gaussian mixture, -0.02 on the 8-D
    chain with its columns shuffled.

    Args:
        batch_norm: a :class:`~numpyro_flows.layers.BatchNormLayer` in every layer, the
            first thing data meets in the density direction (the paper's "MAF with batch
            norm"). Its running statistics are state, not params: see
            :meth:`Flow.init_state` and :func:`numpyro_flows.training.fit`.
        dropout: probability of dropping each hidden unit of the MADEs while
            :func:`~numpyro_flows.training.fit` trains (a fresh key every step, inverted
            dropout); validation losses, ``log_prob``, sampling and every other use are
            deterministic and use the full network (see :func:`iaf`).
        permutation: ``"auto"`` (above), or as for :func:`iaf`.
        The other arguments are those of :func:`iaf`.
    """
    layer = AutoregressiveLayer(
        Affine(log_scale_bound),
        _hidden(hidden_dims),
        nonlinearity,
        skip_connections,
        min_width=_min_width(for_data=True),
        dropout=dropout,
    )
    return Flow(
        Repeat(_with_batch_norm(InvertLayer(layer), batch_norm), num_flows, permutation), "maf"
    )


def nice(
    num_flows: int = 4,
    hidden_dims: Hidden = None,
    *,
    nonlinearity: str | Callable = "relu",
) -> Flow:
    """NICE: additive coupling layers, then a diagonal scaling layer.

    Dinh, Krueger and Bengio (2015), https://arxiv.org/abs/1410.8516. Each coupling layer
    shifts half of the vector by an MLP of the other half (log-det 0; halves alternate
    between layers); the last layer, ``y = x * exp(s) + b`` per coordinate (the paper's
    scaling layer, with a shift), carries all of the volume change. Both directions are
    one pass.

    Args:
        num_flows: number of additive coupling layers (the paper uses 4).
        hidden_dims: MLP hidden widths; default two layers of ``max(2 D, 16)``.
        nonlinearity: activation name or callable (the paper's ReLU by default).
    """
    coupling = Repeat(CouplingLayer(Additive(), _hidden(hidden_dims), nonlinearity), num_flows)
    return Flow(Sequential((coupling, ElementwiseLayer(Affine()))), "nice")


def realnvp(
    num_flows: int | None = None,
    hidden_dims: Hidden = None,
    *,
    nonlinearity: str | Callable = "elu",
    log_scale_bound: float | tuple[float, float] = (-5.0, 3.0),
    batch_norm: bool = False,
    invert: bool = False,
) -> Flow:
    """RealNVP: affine coupling layers; both directions are one pass.

    Dinh et al. (2017), https://arxiv.org/abs/1605.08803. The halves swap between
    consecutive layers, and each pair of layers starts from a new fixed order (see
    ``Repeat``'s ``"halves"``), so that every coordinate is transformed and, with ``D > 2``,
    coordinates of one half also condition each other.

    Args:
        num_flows: number of coupling layers (default 4, and 8 with ``invert=True``: at
            ``fit``'s defaults, 8 layers instead of 4 gained 0.05-0.28 nats of held-out
            log-likelihood on each of the four multi-dimensional sets of
            ``benchmarks/density.py``, 6 seeds; a coupling layer moves half of the
            coordinates).
        batch_norm: a :class:`~numpyro_flows.layers.BatchNormLayer` in every layer, the
            first thing data meets in the density direction (the paper's section 3.7).
            Its running statistics are state, not params (see :func:`maf`).
        invert: put the map ``y = x * scale + shift`` in the density direction (data to
            base) instead of the sampling direction. Use it to fit data with
            :func:`~numpyro_flows.training.fit`: the objective is then linear in the
            conditioner's shift, as for a guide (sampling direction) by default. Measured on
            two moons: held-out log-likelihood -2.01 against -2.23 nats (3 seeds). With
            ``invert=True``, ``hidden_dims=None`` gives two layers of ``max(2 D, 32)``, not
            ``max(2 D, 16)`` (:data:`DENSITY_DEFAULTS`: twice the layers of the sampling
            direction at half the width of the other flows for data; ELU stays: ReLU was
            better on two of four data sets and worse on two).
    """
    if num_flows is None:
        num_flows = DENSITY_DEFAULTS["coupling_layers"] if invert else 4
    min_width = DENSITY_DEFAULTS["coupling_min_width"] if invert else CouplingLayer.min_width
    layer = CouplingLayer(
        Affine(log_scale_bound), _hidden(hidden_dims), nonlinearity, min_width=min_width
    )
    layer = _with_batch_norm(InvertLayer(layer) if invert else layer, batch_norm)
    return Flow(Repeat(layer, num_flows, "halves"), "realnvp")


def neural_spline(
    num_flows: int = 3,
    hidden_dims: Hidden = None,
    *,
    num_bins: int = 8,
    bound: float = 5.0,
    coupling: bool = False,
    affine: bool = True,
    invert: bool = False,
    nonlinearity: str | Callable | None = None,
    permutation: str | None = "reverse",
    log_scale_bound: float | tuple[float, float] = (-5.0, 3.0),
) -> Flow:
    """Neural spline flow: rational-quadratic splines with identity tails.

    Durkan et al. (2019), https://arxiv.org/abs/1906.04032. Autoregressive (parallel in
    the sampling direction, as an IAF) by default; ``coupling=True`` gives the coupling
    form (one pass in both directions).

    Args:
        num_flows: number of spline layers.
        hidden_dims: conditioner hidden widths; default two layers of ``max(2 D, 16)``
            (``max(2 D, 64)`` with ``invert``).
        num_bins: spline bins per dimension.
        bound: the splines act on ``[-bound, bound]`` and are the identity outside.
        coupling: coupling layers instead of autoregressive ones.
        affine: follow each spline by a conditional affine map (``y = a s(x) + b``, one
            network for both). A spline with identity tails cannot change the scale of
            the tails; the affine part can, which is what funnels and scale mixtures need.
        invert: for density estimation. Autoregressive form: the MAF orientation, parallel
            in the density direction (one pass for ``log_prob`` of data, ``D`` passes to
            sample); the default is parallel in the sampling direction (guides). Coupling
            form: the spline (and affine map) act in the density direction, data to base,
            as the MAF's do (see :func:`realnvp`'s ``invert``). Either form then takes the
            conditioner defaults for data (:data:`DENSITY_DEFAULTS`): ``hidden_dims=None``
            gives two layers of ``max(2 D, 64)``, and the activation is ReLU.
        nonlinearity: activation name or callable (``None``: ELU, ReLU with ``invert``).
        permutation: variable order across layers (autoregressive form).
        log_scale_bound: the affine part's log-scale lies in ``(low, high)`` (see
            :class:`~numpyro_flows.bijections.Affine`).
    """
    transformer = RationalQuadraticSpline(num_bins, bound)
    if affine:
        transformer = ComposedTransformer((transformer, Affine(log_scale_bound)))
    if nonlinearity is None:
        nonlinearity = DENSITY_DEFAULTS["nonlinearity"] if invert else "elu"
    size = {"min_width": _min_width(invert)}
    if coupling:
        layer = CouplingLayer(transformer, _hidden(hidden_dims), nonlinearity, **size)
        layer = InvertLayer(layer) if invert else layer
        return Flow(Repeat(layer, num_flows, "halves"), "neural_spline_coupling")
    layer = AutoregressiveLayer(transformer, _hidden(hidden_dims), nonlinearity, **size)
    if invert:
        return Flow(Repeat(InvertLayer(layer), num_flows, permutation), "neural_spline_maf")
    return Flow(Repeat(layer, num_flows, permutation), "neural_spline")


def planar(num_flows: int = 8) -> Flow:
    """Planar flow (Rezende and Mohamed 2015, https://arxiv.org/abs/1505.05770)."""
    return Flow(Repeat(PlanarLayer(), num_flows, None), "planar")


def radial(num_flows: int = 8) -> Flow:
    """Radial flow (Rezende and Mohamed 2015, https://arxiv.org/abs/1505.05770)."""
    return Flow(Repeat(RadialLayer(), num_flows, None), "radial")


def glow(
    num_flows: int = 4,
    hidden_dims: Hidden = None,
    *,
    nonlinearity: str | Callable = "elu",
    log_scale_bound: float | tuple[float, float] = (-5.0, 3.0),
) -> Flow:
    """Glow-style steps: ActNorm, LU-linear (invertible 1x1) and affine coupling.

    Kingma and Dhariwal (2018), https://arxiv.org/abs/1807.03039. Use
    ``params, _ = flow.data_init(params, data)`` to initialise the ActNorm layers from
    data.
    """
    step = Sequential(
        (
            ActNormLayer(),
            LULinearLayer(),
            CouplingLayer(Affine(log_scale_bound), _hidden(hidden_dims), nonlinearity),
        )
    )
    return Flow(Repeat(step, num_flows, "reverse"), "glow")


def bnaf(
    num_flows: int = 1,
    hidden_factors: Sequence[int] = (8, 8),
    *,
    residual: str | None = "gated",
) -> Flow:
    """Block neural autoregressive flow (De Cao et al. 2019, https://arxiv.org/abs/1904.04676).

    Each layer is one monotone block-masked network
    (:class:`~numpyro_flows.bijections.BlockNeuralAutoregressive`), parallel in the
    forward (sampling) direction; the inverse is a numerical solve. The architecture of
    NumPyro's ``AutoBNAFNormal``: the variable order is reversed from one layer to the
    next, and every layer but the last has a gated residual connection. The first
    ``num_flows - 1`` layers are identical and run under ``lax.scan``.

    Args:
        num_flows: number of BNAF layers.
        hidden_factors: hidden units per dimension of each hidden layer (the width of a
            hidden layer is ``D`` times its factor).
        residual: the residual connection of all but the last layer: ``"gated"``
            (NumPyro's choice) or ``None``.
    """
    if int(num_flows) != num_flows or num_flows < 1:
        raise ValueError(f"num_flows must be a positive integer, got {num_flows!r}.")
    hidden_factors = tuple(hidden_factors)
    last = BNAFLayer(hidden_factors, None)
    if num_flows == 1:
        return Flow(last, "bnaf")
    stack = Repeat(BNAFLayer(hidden_factors, residual), num_flows - 1, "reverse")
    # The last layer continues the alternation of variable orders.
    last = ReversedLayer(last) if (num_flows - 1) % 2 else last
    return Flow(Sequential((stack, last)), "bnaf")


def multiscale_glow(
    num_levels: int = 2,
    num_steps: int = 4,
    hidden_channels: int = 64,
    *,
    num_blocks: int = 1,
    logit_alpha: float | None = 0.05,
    nonlinearity: str | Callable = "relu",
    log_scale_bound: float | tuple[float, float] = (-5.0, 3.0),
) -> Flow:
    """Glow on images: the multiscale architecture with Glow steps.

    Kingma and Dhariwal (2018), https://arxiv.org/abs/1807.03039. Events are images
    ``(H, W, C)``: ``flow.init(rng_key, (H, W, C))``. Each level squeezes, runs
    ``num_steps`` steps of ActNorm per channel, an invertible 1x1 convolution (LU) and an
    affine coupling whose conditioner is a small convolutional ResNet (channel mask), and
    factors out half of the channels (see :class:`~numpyro_flows.image_layers.MultiscaleLayer`).
    With ``logit_alpha`` the data are expected in ``[0, 1]`` (e.g. dequantized pixels,
    :mod:`numpyro_flows.images`) and the logit preprocessing comes first, its log-det
    included in ``log p(x)``.

    Args:
        num_levels: levels (``H`` and ``W`` divisible by ``2 ** num_levels``).
        num_steps: steps per level (run under ``lax.scan``).
        hidden_channels: width of the coupling networks.
        num_blocks: residual blocks of each coupling network.
        logit_alpha: ``alpha`` of :class:`~numpyro_flows.bijections.LogitPreprocess`;
            ``None`` for data that are not in ``[0, 1]``.
        nonlinearity: the coupling networks' activation.
        log_scale_bound: the couplings' log-scale lies in ``(low, high)``.
    """
    coupling = ConvCouplingLayer(
        Affine(log_scale_bound), int(hidden_channels), int(num_blocks), "channel", 0, nonlinearity
    )
    # The 1x1 convolution is a product in the density direction (as in Glow) and two
    # triangular solves when sampling: training pays for no solve.
    conv1x1 = PerPixelLayer(InvertLayer(LULinearLayer()))
    step = Sequential((coupling, conv1x1, PerPixelLayer(ActNormLayer())))
    # The channel order is reversed between steps, so that the two halves of the
    # couplings alternate from the start (the 1x1 convolutions start at the identity).
    layer = MultiscaleLayer(step, num_levels, num_steps, "reverse", logit_alpha)
    return Flow(layer, "multiscale_glow")


def multiscale_realnvp(
    num_levels: int = 2,
    num_steps: int = 4,
    hidden_channels: int = 64,
    *,
    mask: str = "channel",
    num_blocks: int = 1,
    logit_alpha: float | None = 0.05,
    nonlinearity: str | Callable = "relu",
    log_scale_bound: float | tuple[float, float] = (-5.0, 3.0),
) -> Flow:
    """RealNVP on images: the multiscale architecture with affine coupling steps.

    Dinh et al. (2017), https://arxiv.org/abs/1605.08803, section 3. Each level squeezes,
    then runs ``num_steps`` affine couplings with a convolutional ResNet conditioner, each
    followed (in the density direction, preceded) by ActNorm per channel, whose masks
    alternate: the two halves of the channels (``mask="channel"``, the paper's masks after
    a squeeze) or checkerboards of alternating parity (``mask="checkerboard"``, then
    ``num_steps`` must be even; the conditioner sees every channel of the whole image with
    the moving squares set to zero, so a step costs about twice as much); then it factors
    out half of the channels. ``mask="packed_checkerboard"`` is the checkerboard with the
    conditioner on the fixed squares only, packed to half the width (as the PyTorch
    library normflows does it): half the work of ``"checkerboard"``, and the width of the
    images at every level must be even. Other arguments as :func:`multiscale_glow`.
    """
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}.")
    if mask != "channel" and num_steps % 2:
        raise ValueError(
            f"With checkerboard masks the steps come in pairs of both parities: num_steps "
            f"must be even, got {num_steps}."
        )

    def step(parity):
        coupling = ConvCouplingLayer(
            Affine(log_scale_bound),
            int(hidden_channels),
            int(num_blocks),
            mask,
            parity,
            nonlinearity,
        )
        return (coupling, PerPixelLayer(ActNormLayer()))

    if mask != "channel":
        layer = MultiscaleLayer(
            Sequential(step(0) + step(1)), num_levels, num_steps // 2, None, logit_alpha
        )
    else:
        layer = MultiscaleLayer(Sequential(step(0)), num_levels, num_steps, "reverse", logit_alpha)
    return Flow(layer, "multiscale_realnvp")


__all__ = [
    "Flow",
    "bnaf",
    "glow",
    "iaf",
    "maf",
    "multiscale_glow",
    "multiscale_realnvp",
    "neural_spline",
    "nice",
    "planar",
    "radial",
    "realnvp",
]
