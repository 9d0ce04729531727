"""Layer specs: how to initialise parameters for a bijection and build it from them.

A layer is a small frozen dataclass (static, hashable architecture) with

* ``init(rng_key, dim, context_dim=0, dtype=None) -> params`` (a pytree of arrays),
* ``init_state(dim, dtype=None) -> state`` (non-trainable state, ``None`` for most layers),
* ``build(params, context=None, state=None, training=False) -> Bijection`` (a layer with
  randomness in training mode, dropout, also takes ``rng_key=None``; see
  :meth:`Layer.needs_rng_key` and :func:`build_layer`),
* ``event_size(params) -> int`` (the ``D`` its parameters were made for),
* ``propagate(params, state, y, context, op) -> (params, state, x)``: pushes data ``y``
  from the output (target) side to the input side, letting each layer look at the data
  that reaches it. ``op="data_init"`` sets data-dependent initial parameters (ActNorm) and
  running statistics (BatchNorm); ``op="update_state"`` moves running statistics
  (BatchNorm, with the momentum stored on the layer).

:class:`Sequential` and :class:`Repeat` compose layers; :class:`Repeat` stacks the
parameters of identical layers and builds a :class:`~numpyro_flows.bijections.Scan`.

A layer also answers questions about its own kind, so that code walking a flow needs no
list of layer classes: :meth:`Layer.is_data_dependent` (does ``data_init`` change it?),
:meth:`Layer.is_affine_in_one_dimension` and :meth:`Layer.needs_rng_key` (does training
mode use randomness?). :func:`sublayers` walks the tree of layers and
:func:`with_batch_norm_momentum` rebuilds it with another BatchNorm momentum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions.transforms import ParameterFreeTransform, Transform

from numpyro_flows.bijections import (
    ActNorm,
    Affine,
    BatchNorm,
    Chain,
    Coupling,
    Elementwise,
    Invert,
    LULinear,
    MaskedAutoregressive,
    Permuted,
    Planar,
    Radial,
    Reversed,
    Scan,
    lift_elementwise,
)
from numpyro_flows.bijections.batchnorm import batch_statistics
from numpyro_flows.bijections.bnaf import BlockNeuralAutoregressive
from numpyro_flows.bijections.bnaf import init_params as bnaf_init_params
from numpyro_flows.nn import MADE, MLP, default_hidden_dims
from numpyro_flows.nn.common import check_dropout_rate


class Layer:
    """Base class of layer specs; see the module docstring for the protocol."""

    def init(self, rng_key, dim: int, context_dim: int = 0, dtype=None) -> Any:
        """Fresh parameters (a pytree of arrays) for events of size ``dim``; the bijection
        built from them is the identity (or close to it)."""
        raise NotImplementedError

    def init_state(self, dim: int, dtype=None) -> Any:
        """Non-trainable state (running statistics), or ``None`` when the layer has none."""
        return None

    def build(self, params, context=None, state=None, training: bool = False, rng_key=None):
        """The :class:`~numpyro_flows.bijections.Bijection` for ``params`` (and a context,
        state, training flag where the layer uses them).

        ``rng_key`` drives the randomness of training mode (dropout). Only a layer whose
        :meth:`needs_rng_key` is true is given one (see :func:`build_layer`), so a layer
        without randomness may leave the argument out of its own ``build``.
        """
        raise NotImplementedError

    event_ndim = 1
    """Axes of the events it takes: 1 for vectors, 3 for images (``(H, W, C)``)."""

    def event_size(self, params) -> int:
        """The event size ``D`` that ``params`` were initialised for."""
        raise NotImplementedError

    def event_shape(self, params) -> tuple[int, ...] | None:
        """The event shape ``params`` were initialised for: ``(D,)`` for a vector layer
        (``None`` when any size fits)."""
        size = self.event_size(params)
        return None if size is None else (size,)

    def propagate(self, params, state, y, context=None, op="data_init"):
        """Pushes data ``y`` from the target side to the base side: returns
        ``(params, state, x)``, where a data-dependent layer may update its params
        (``op="data_init"``) or state (``op="data_init"`` or ``"update_state"``) from what
        reaches it."""
        x = self.build(params, context, state).inverse_and_log_det(y)[0]
        return params, state, x

    def is_data_dependent(self) -> bool:
        """Whether :meth:`propagate` with ``op="data_init"`` sets params or state from
        data (ActNorm, BatchNorm). A layer holding other layers is data dependent when one
        of them is."""
        return any(child.is_data_dependent() for child in _child_layers(self))

    def needs_rng_key(self) -> bool:
        """Whether :meth:`build` in training mode uses an ``rng_key`` (dropout). A layer
        holding other layers needs one when one of them does."""
        return any(child.needs_rng_key() for child in _child_layers(self))

    def is_affine_in_one_dimension(self) -> bool:
        """Whether this layer, on 1-D events without a context, is an affine map.

        A layer holding other layers is affine when all of them are; any other layer is
        assumed non-linear unless it says otherwise (planar, radial, user layers).
        """
        children = _child_layers(self)
        return bool(children) and all(child.is_affine_in_one_dimension() for child in children)


def _child_layers(layer: Layer) -> tuple[Layer, ...]:
    """The layers held directly by ``layer`` (its dataclass fields, or tuples of them)."""
    children = []
    for field in dataclasses.fields(layer) if dataclasses.is_dataclass(layer) else ():
        value = getattr(layer, field.name)
        children.extend(value if isinstance(value, tuple) else (value,))
    return tuple(child for child in children if isinstance(child, Layer))


def build_layer(layer: Layer, params, context=None, state=None, training=False, rng_key=None):
    """``layer.build(params, context, state, training)``, giving it ``rng_key`` only in
    training mode and only when :meth:`Layer.needs_rng_key`: layers without randomness
    (user layers among them) keep their four-argument ``build``, and evaluation mode is
    deterministic whatever key is passed."""
    if training and rng_key is not None and layer.needs_rng_key():
        return layer.build(params, context, state, training, rng_key=rng_key)
    return layer.build(params, context, state, training)


def _split_key(rng_key, num: int):
    """``num`` keys from ``rng_key`` (``num`` ``None`` s without one)."""
    return (None,) * num if rng_key is None else tuple(jax.random.split(rng_key, num))


def sublayers(layer: Layer) -> Iterator[Layer]:
    """Every layer spec inside ``layer`` (itself included), depth first."""
    yield layer
    for child in _child_layers(layer):
        yield from sublayers(child)


def with_batch_norm_momentum(layer: Layer, momentum: float) -> Layer:
    """``layer`` rebuilt with every :class:`BatchNormLayer` inside it using ``momentum``."""
    if isinstance(layer, BatchNormLayer):
        return dataclasses.replace(layer, momentum=momentum)
    if not _child_layers(layer):
        return layer

    def swap(value):
        if isinstance(value, tuple):
            return tuple(swap(v) for v in value)
        return with_batch_norm_momentum(value, momentum) if isinstance(value, Layer) else value

    fields = (f.name for f in dataclasses.fields(layer) if f.init)
    return dataclasses.replace(layer, **{name: swap(getattr(layer, name)) for name in fields})


def _no_context(layer: Layer, context):
    if context is not None:
        raise ValueError(
            f"{type(layer).__name__} takes no context; initialise the flow with "
            "context_dim > 0 and use a conditional layer (autoregressive or coupling)."
        )


def _context_dim(params, key="context") -> int:
    return params[key].shape[-2] if key in params else 0


def _check_context(layer: Layer, params, context):
    if context is not None and not _context_dim(params):
        raise ValueError(
            f"A context was given but this {type(layer).__name__} was initialised with "
            "context_dim=0; pass context_dim to flow.init(rng_key, dim, context_dim)."
        )


@dataclass(frozen=True)
class AutoregressiveLayer(Layer):
    """A :class:`~numpyro_flows.bijections.MaskedAutoregressive` bijection with a MADE.

    Args:
        transformer: the elementwise transformer.
        hidden_dims: MADE hidden widths; ``None`` gives two layers of
            ``max(2 D, min_width)``.
        activation, skip_connections, residual: see :class:`~numpyro_flows.nn.MADE`.
        min_width: the smallest default hidden width.
        dropout: probability of dropping each hidden unit of the MADE in training mode
            (``build(..., training=True, rng_key=key)``, as :func:`~numpyro_flows.training.fit`
            does with a fresh key every step); in evaluation mode (no key, or
            ``training=False``) the full network is used, unscaled (inverted dropout).
    """

    transformer: Any
    hidden_dims: tuple[int, ...] | None = None
    activation: str | Callable = "elu"
    skip_connections: bool = False
    residual: bool = False
    min_width: int = 16
    dropout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "dropout", check_dropout_rate(self.dropout))

    def _made(self, dim, hidden_dims, context_dim):
        return MADE(
            dim,
            hidden_dims,
            self.transformer.num_params,
            context_dim,
            self.activation,
            self.skip_connections,
            self.residual,
            self.dropout,
        )

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        hidden = default_hidden_dims(dim, self.hidden_dims, min_width=self.min_width)
        made = self._made(dim, hidden, context_dim)
        return made.init(rng_key, dtype)

    def event_size(self, params):
        return params["out"]["b"].shape[-1] // self.transformer.num_params

    def build(self, params, context=None, state=None, training=False, rng_key=None):
        _check_context(self, params, context)
        hidden = tuple(layer["b"].shape[-1] for layer in params["hidden"])
        made = self._made(self.event_size(params), hidden, _context_dim(params))
        key = rng_key if training and self.dropout > 0 else None
        return MaskedAutoregressive(self.transformer, made, params, context, key)

    def needs_rng_key(self):
        """True with ``dropout > 0``."""
        return self.dropout > 0

    def is_affine_in_one_dimension(self):
        """Affine with an :class:`~numpyro_flows.bijections.Affine` transformer: the first
        (only) coordinate sees no other input, so its shift and scale are constants."""
        return isinstance(self.transformer, Affine)


@dataclass(frozen=True)
class CouplingLayer(Layer):
    """A :class:`~numpyro_flows.bijections.Coupling` bijection with an MLP conditioner.

    The first ``D // 2`` coordinates condition the transformer on the rest.

    Args:
        transformer: the elementwise transformer.
        hidden_dims: MLP hidden widths; ``None`` gives two layers of ``max(2 D, min_width)``.
        activation, residual: see :class:`~numpyro_flows.nn.MLP`.
        min_width: the smallest default hidden width.
    """

    transformer: Any
    hidden_dims: tuple[int, ...] | None = None
    activation: str | Callable = "elu"
    residual: bool = False
    min_width: int = 16

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        split = dim // 2
        mlp = MLP(
            split,
            default_hidden_dims(dim, self.hidden_dims, min_width=self.min_width),
            (dim - split) * self.transformer.num_params,
            context_dim,
            self.activation,
            self.residual,
        )
        return mlp.init(rng_key, dtype)

    def _in_out(self, params):
        first = params["hidden"][0]["w"] if params["hidden"] else params["out"]["w"]
        return first.shape[-2], params["out"]["b"].shape[-1]

    def event_size(self, params):
        in_dim, out_dim = self._in_out(params)
        return in_dim + out_dim // self.transformer.num_params

    def build(self, params, context=None, state=None, training=False):
        _check_context(self, params, context)
        in_dim, out_dim = self._in_out(params)
        hidden = tuple(layer["b"].shape[-1] for layer in params["hidden"])
        mlp = MLP(in_dim, hidden, out_dim, _context_dim(params), self.activation, self.residual)
        return Coupling(self.transformer, mlp, params, context)

    def is_affine_in_one_dimension(self):
        """Affine with an :class:`~numpyro_flows.bijections.Affine` transformer: the first
        (only) coordinate sees no other input, so its shift and scale are constants."""
        return isinstance(self.transformer, Affine)


@dataclass(frozen=True)
class ElementwiseLayer(Layer):
    """A transformer with free per-dimension parameters (starts at the identity)."""

    transformer: Any

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        return jnp.zeros((dim, self.transformer.num_params), dtype)

    def event_size(self, params):
        return params.shape[-2]

    def build(self, params, context=None, state=None, training=False):
        _no_context(self, context)
        return Elementwise(self.transformer, params)

    def is_affine_in_one_dimension(self):
        """Affine with an :class:`~numpyro_flows.bijections.Affine` transformer: the first
        (only) coordinate sees no other input, so its shift and scale are constants."""
        return isinstance(self.transformer, Affine)


@dataclass(frozen=True)
class BNAFLayer(Layer):
    """A :class:`~numpyro_flows.bijections.BlockNeuralAutoregressive` bijection (BNAF).

    Starts as the identity. A context (``context_dim > 0``) enters the first layer's
    pre-activations through weights that start at zero.

    Args:
        hidden_factors: hidden units per dimension of each hidden layer (NumPyro's
            ``hidden_factors``).
        residual: ``None`` or ``"gated"`` (``g f(x) + (1 - g) x``, a learnable ``g``).
    """

    hidden_factors: tuple[int, ...] = (8, 8)
    residual: str | None = None

    def __post_init__(self):
        factors = tuple(self.hidden_factors)
        if not factors or any(int(f) != f or f < 1 for f in factors):
            raise ValueError(
                f"hidden_factors must be a non-empty sequence of positive integers (hidden "
                f"units per dimension of each hidden layer), got {self.hidden_factors!r}."
            )
        if self.residual not in (None, "gated"):
            raise ValueError(f"residual must be None or 'gated', got {self.residual!r}.")
        object.__setattr__(self, "hidden_factors", tuple(int(f) for f in factors))

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        return bnaf_init_params(
            rng_key, dim, self.hidden_factors, context_dim, self.residual, dtype
        )

    def event_size(self, params):
        return params["weights"][-1].shape[-1]

    def build(self, params, context=None, state=None, training=False):
        _check_context(self, params, context)
        return BlockNeuralAutoregressive(params, self.hidden_factors, self.residual, context)


@dataclass(frozen=True)
class _WrappedLayer(Layer):
    """A layer whose parameters, state and size are those of the layer it wraps; only
    ``build`` differs."""

    layer: Layer

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        return self.layer.init(rng_key, dim, context_dim, dtype)

    def init_state(self, dim, dtype=None):
        return self.layer.init_state(dim, dtype)

    def event_size(self, params):
        return self.layer.event_size(params)


@dataclass(frozen=True)
class ReversedLayer(_WrappedLayer):
    """Another layer conjugated by the reversal of the event axis: ``y = R f(R x)``.

    Continues the alternating variable order of a ``Repeat`` (``permutation="reverse"``)
    in a layer that follows it; identity at init when the wrapped layer is.
    """

    def build(self, params, context=None, state=None, training=False, rng_key=None):
        return Reversed(build_layer(self.layer, params, context, state, training, rng_key))


@dataclass(frozen=True)
class InvertLayer(_WrappedLayer):
    """The inverse of another layer (e.g. an autoregressive layer in MAF orientation).

    Data propagation goes through the inverse without refreshing the wrapped layer.
    """

    def build(self, params, context=None, state=None, training=False, rng_key=None):
        return Invert(build_layer(self.layer, params, context, state, training, rng_key))


@dataclass(frozen=True)
class ActNormLayer(Layer):
    """:class:`~numpyro_flows.bijections.ActNorm`; identity until data-initialised."""

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        return {"loc": jnp.zeros(dim, dtype), "raw_log_scale": jnp.zeros(dim, dtype)}

    def event_size(self, params):
        return params["loc"].shape[-1]

    def build(self, params, context=None, state=None, training=False):
        _no_context(self, context)
        return ActNorm(params["loc"], params["raw_log_scale"])

    def propagate(self, params, state, y, context=None, op="data_init"):
        if op == "data_init":
            fresh = ActNorm.init_params_from_data(y)
            params = jax.tree.map(lambda new, old: new.astype(old.dtype), fresh, params)
        return super().propagate(params, state, y, context, op)

    def is_data_dependent(self):
        """True: ``data_init`` normalises the data reaching the layer."""
        return True

    def is_affine_in_one_dimension(self):
        """True: an elementwise affine map."""
        return True


@dataclass(frozen=True)
class LULinearLayer(Layer):
    """:class:`~numpyro_flows.bijections.LULinear`, starting at the identity."""

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        zeros = jnp.zeros((dim, dim), dtype)
        return {
            "lower": zeros,
            "upper": zeros,
            "raw_log_diag": jnp.zeros(dim, dtype),
            "bias": jnp.zeros(dim, dtype),
        }

    def event_size(self, params):
        return params["bias"].shape[-1]

    def build(self, params, context=None, state=None, training=False):
        _no_context(self, context)
        return LULinear(params["lower"], params["upper"], params["raw_log_diag"], params["bias"])

    def is_affine_in_one_dimension(self):
        """True: a linear map plus a bias."""
        return True


@dataclass(frozen=True)
class PlanarLayer(Layer):
    """:class:`~numpyro_flows.bijections.Planar`; ``u = 0`` at init (the identity)."""

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        dtype = dtype or jnp.zeros(()).dtype
        w = jax.random.normal(rng_key, (dim,), dtype) / np.sqrt(dim)
        return {"w": w, "u": jnp.zeros(dim, dtype), "b": jnp.zeros((), dtype)}

    def event_size(self, params):
        return params["w"].shape[-1]

    def build(self, params, context=None, state=None, training=False):
        _no_context(self, context)
        return Planar(params["w"], params["u"], params["b"])


@dataclass(frozen=True)
class RadialLayer(Layer):
    """:class:`~numpyro_flows.bijections.Radial`; ``beta = 0`` at init (the identity)."""

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        dtype = dtype or jnp.zeros(()).dtype
        return {
            "x0": jax.random.normal(rng_key, (dim,), dtype),
            "raw_alpha": jnp.zeros((), dtype),
            "raw_beta": jnp.zeros((), dtype),
        }

    def event_size(self, params):
        return params["x0"].shape[-1]

    def build(self, params, context=None, state=None, training=False):
        _no_context(self, context)
        return Radial(params["x0"], params["raw_alpha"], params["raw_beta"])


@dataclass(frozen=True)
class BatchNormLayer(Layer):
    """:class:`~numpyro_flows.bijections.BatchNorm` with running statistics as state.

    Args:
        eps: added to the variance.
        momentum: how far each ``op="update_state"`` moves the running statistics towards
            the batch's: ``new = (1 - momentum) * old + momentum * batch``.
    """

    eps: float = 1e-5
    momentum: float = 0.1

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        return {"log_gamma": jnp.zeros(dim, dtype), "beta": jnp.zeros(dim, dtype)}

    def init_state(self, dim, dtype=None):
        return {"mean": jnp.zeros(dim, dtype), "var": jnp.ones(dim, dtype)}

    def event_size(self, params):
        return params["beta"].shape[-1]

    def build(self, params, context=None, state=None, training=False):
        _no_context(self, context)
        if state is None:
            raise ValueError(
                "This flow has BatchNorm layers, which need their running statistics: pass "
                "state=flow.init_state(dim) (or the state returned by fitting)."
            )
        return BatchNorm(
            state["mean"], state["var"], params["log_gamma"], params["beta"], training, self.eps
        )

    def propagate(self, params, state, y, context=None, op="data_init"):
        mean, var = batch_statistics(y)
        if op == "data_init":
            state = {
                "mean": mean.astype(state["mean"].dtype),
                "var": var.astype(state["var"].dtype),
            }
        elif op == "update_state":
            momentum = self.momentum
            state = jax.tree.map(
                lambda old, new: (1 - momentum) * old + momentum * new.astype(old.dtype),
                state,
                {"mean": mean, "var": var},
            )
        return super().propagate(params, state, y, context, op)

    def is_data_dependent(self):
        """True: ``data_init`` sets the running statistics from the data."""
        return True

    def is_affine_in_one_dimension(self):
        """True: an elementwise affine map."""
        return True


@dataclass(frozen=True, eq=False)
class TransformLayer(Layer):
    """A fixed NumPyro transform as a layer without parameters.

    An elementwise transform (``event_dim == 0``: ``SigmoidTransform``, ``TanhTransform``,
    ``SoftplusTransform``, ``PowerTransform``, ...) acts on every coordinate of the vector
    (:class:`~numpyro_flows.bijections.ElementwiseTransform`); a vector transform is used
    as it is. A context, if the flow has one, does not reach it. :class:`Sequential` wraps
    transforms given among its layers in this automatically::

        flows.Flow(Sequential((CouplingLayer(Affine()), SigmoidTransform())))
    """

    transform: Any

    def __post_init__(self):
        if not isinstance(self.transform, Transform):
            raise TypeError(
                f"TransformLayer takes a NumPyro Transform, got {type(self.transform).__name__}."
            )
        if self.transform.domain.event_dim > 1:
            raise ValueError(
                f"{self.transform!r} acts on events of {self.transform.domain.event_dim} "
                "dimensions; flow layers act on vectors (event_dim 0 or 1)."
            )

    # Static data of jitted functions: hashable. NumPyro transforms define __eq__ (equal
    # when of one parameter-free type) and so no hash; parameterised ones compare by identity.
    def _key(self):
        t = self.transform
        return type(t) if isinstance(t, ParameterFreeTransform) else id(t)

    def __eq__(self, other):
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        return ()

    def event_size(self, params):
        return None  # any size: it has no parameters

    def build(self, params, context=None, state=None, training=False):
        return lift_elementwise(self.transform)


@dataclass(frozen=True)
class Sequential(Layer):
    """Layers applied in order (base -> target); params and state are tuples."""

    layers: tuple[Layer, ...]

    def __post_init__(self):
        layers = tuple(TransformLayer(x) if isinstance(x, Transform) else x for x in self.layers)
        object.__setattr__(self, "layers", layers)

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        keys = jax.random.split(rng_key, len(self.layers))
        return tuple(layer.init(k, dim, context_dim, dtype) for layer, k in zip(self.layers, keys))

    def init_state(self, dim, dtype=None):
        states = tuple(layer.init_state(dim, dtype) for layer in self.layers)
        return None if all(s is None for s in states) else states

    def event_size(self, params):
        # The first layer that knows it (parameter-free layers fit any size).
        sizes = (layer.event_size(p) for layer, p in zip(self.layers, params))
        return next((size for size in sizes if size is not None), None)

    def _states(self, state):
        return (None,) * len(self.layers) if state is None else state

    def build(self, params, context=None, state=None, training=False, rng_key=None):
        keys = _split_key(rng_key, len(self.layers))
        return Chain(
            [
                build_layer(layer, p, context, s, training, k)
                for layer, p, s, k in zip(self.layers, params, self._states(state), keys)
            ]
        )

    def propagate(self, params, state, y, context=None, op="data_init"):
        params, states = list(params), list(self._states(state))
        for i in reversed(range(len(self.layers))):
            params[i], states[i], y = self.layers[i].propagate(params[i], states[i], y, context, op)
        return tuple(params), None if state is None else tuple(states), y


@dataclass(frozen=True)
class Repeat(Layer):
    """``num_layers`` copies of one layer with stacked parameters, run as a ``Scan``.

    Layer ``i`` is conjugated by a permutation of the event axis (``y = P_i^T f(P_i x)``)
    so that autoregressive orders and coupling halves change from layer to layer, while the
    stack stays the identity at init.

    Args:
        layer: the repeated layer.
        num_layers: how many copies.
        permutation: ``"reverse"`` (every other layer reversed), ``"random"`` (a fixed
            random permutation per layer, from ``seed``), ``"halves"`` (for coupling
            layers: layers come in pairs, the second of a pair in the reverse order of the
            first, so that the two halves swap roles, and each pair after the first starts
            from a fixed random order, so that coordinates meet new partners; with ``D <= 2``
            this is ``"reverse"``), ``"auto"`` (``"reverse"`` with ``D <= 2``, where the
            identity and its reverse are the only orders, ``"random"`` beyond) or ``None``.
            Alternating halves alone never lets a coupling flow model the dependence between
            two coordinates of the same half.
        seed: seed of the random permutations.
    """

    layer: Layer
    num_layers: int
    permutation: str | None = "reverse"
    seed: int = 0

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}.")
        if self.permutation not in ("reverse", "random", "halves", "auto", None):
            raise ValueError(
                "permutation must be 'reverse', 'random', 'halves', 'auto' or None, got "
                f"{self.permutation!r}."
            )

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        keys = jax.random.split(rng_key, self.num_layers)
        return jax.vmap(lambda k: self.layer.init(k, dim, context_dim, dtype))(keys)

    def init_state(self, dim, dtype=None):
        state = self.layer.init_state(dim, dtype)
        if state is None:
            return None
        return jax.tree.map(lambda a: jnp.broadcast_to(a, (self.num_layers,) + a.shape), state)

    def event_size(self, params):
        return self.layer.event_size(params)

    def permutations(self, dim: int) -> np.ndarray | None:
        """The ``(num_layers, dim)`` variable orders, or ``None`` for no permutation."""
        if self.permutation is None:
            return None
        if self._alternate_reverse(dim):
            orders = [np.arange(dim)[:: -1 if i % 2 else 1] for i in range(self.num_layers)]
        elif self.permutation == "halves":
            rng = np.random.default_rng(self.seed)
            starts = [np.arange(dim)] + [rng.permutation(dim) for _ in range(self.num_layers // 2)]
            orders = [starts[i // 2][:: -1 if i % 2 else 1] for i in range(self.num_layers)]
        else:
            rng = np.random.default_rng(self.seed)
            orders = [np.arange(dim)] + [rng.permutation(dim) for _ in range(self.num_layers - 1)]
        return np.stack(orders).astype(np.int32)

    def _alternate_reverse(self, dim: int) -> bool:
        return self.permutation == "reverse" or (
            self.permutation in ("halves", "auto") and dim <= 2
        )

    def _wrap(self, bijection, perm):
        return bijection if perm is None else Permuted(bijection, perm)

    def build(self, params, context=None, state=None, training=False, rng_key=None):
        # The reversed order is a static flip inside the loop (see Scan), not a gather.
        dim = self.event_size(params)
        alternate_reverse = self._alternate_reverse(dim)
        perms = None if alternate_reverse else self.permutations(dim)
        # One key per layer, stacked as the params are.
        keys = None if rng_key is None else jax.random.split(rng_key, self.num_layers)

        def one(p, s, perm, key):
            return self._wrap(build_layer(self.layer, p, context, s, training, key), perm)

        in_axes = (0, *(None if a is None else 0 for a in (state, perms, keys)))
        layers = jax.vmap(one, in_axes=in_axes)(params, state, perms, keys)
        return Scan(layers, alternate_reverse=alternate_reverse)

    def propagate(self, params, state, y, context=None, op="data_init"):
        perms = self.permutations(self.event_size(params))
        xs = (params, state, perms)

        def body(y, xs):
            p, s, perm = xs
            if perm is not None:
                y = jnp.take(y, perm, -1)
            p, s, x = self.layer.propagate(p, s, y, context, op)
            if perm is not None:
                x = jnp.take(x, jnp.argsort(perm), -1)
            return x, (p, s)

        x, (params, state) = jax.lax.scan(body, y, xs, reverse=True)
        return params, state, x


__all__ = [
    "ActNormLayer",
    "AutoregressiveLayer",
    "BNAFLayer",
    "BatchNormLayer",
    "CouplingLayer",
    "ElementwiseLayer",
    "InvertLayer",
    "LULinearLayer",
    "Layer",
    "PlanarLayer",
    "RadialLayer",
    "Repeat",
    "ReversedLayer",
    "Sequential",
    "TransformLayer",
    "build_layer",
    "sublayers",
    "with_batch_norm_momentum",
]
