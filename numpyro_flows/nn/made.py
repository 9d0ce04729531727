"""MADE: the masked autoencoder that conditions autoregressive bijections.

Germain, Gregor, Murray and Larochelle (2015), *MADE: Masked Autoencoder for Distribution
Estimation*, https://arxiv.org/abs/1502.03509.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_flows.nn.common import (
    as_context,
    cast_like,
    check_dropout_rate,
    dense_stack_init,
    dropout,
    get_activation,
)


@functools.lru_cache(maxsize=256)
def made_degrees(
    input_dim: int, hidden_dims: tuple[int, ...], context: bool = False
) -> tuple[np.ndarray, ...]:
    """Degrees of the input units (1..D) and of every hidden layer.

    Hidden units cycle through ``1..D-1``, so every degree is present when a layer is at
    least ``D`` wide. With a context they cycle through ``0..D-1``: degree-0 units see the
    context only, so that the first output, too, depends on the context (non-linearly).
    """
    degrees = [np.arange(1, input_dim + 1)]
    low = 0 if context or input_dim == 1 else 1
    for width in hidden_dims:
        degrees.append(np.arange(width) % (input_dim - low) + low)
    return tuple(degrees)


@functools.lru_cache(maxsize=256)
def made_masks(
    input_dim: int, hidden_dims: tuple[int, ...], num_params: int, context: bool = False
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Masks ``(hidden masks, output mask, skip mask)`` as float arrays.

    A unit of degree ``k`` may see inputs of degree ``<= k``; an output of degree ``d``
    sees hidden units of degree ``< d``. Output units are laid out parameter-major:
    unit ``p * D + d`` is parameter ``p`` of dimension ``d``.
    """
    degrees = made_degrees(input_dim, hidden_dims, context)
    hidden = tuple(
        (d_out[None, :] >= d_in[:, None]).astype(np.float32)
        for d_in, d_out in zip(degrees[:-1], degrees[1:])
    )
    out_degrees = np.tile(degrees[0], num_params)
    output = (out_degrees[None, :] > degrees[-1][:, None]).astype(np.float32)
    skip = (out_degrees[None, :] > degrees[0][:, None]).astype(np.float32)
    return hidden, output, skip


@dataclass(frozen=True)
class MADE:
    """A masked MLP whose output ``i`` depends only on inputs ``< i`` (and the context).

    Args:
        input_dim: D, the number of autoregressive variables.
        hidden_dims: widths of the hidden layers; each must be at least ``input_dim``.
        num_params: parameters the network outputs per dimension.
        context_dim: size of an optional context vector that every output may see.
        activation: a name from ``numpyro_flows.nn.ACTIVATIONS`` or a callable.
        skip_connections: add a masked linear path from the input to the output.
        residual: add residual connections between hidden layers of equal width.
        dropout: probability of zeroing each hidden unit after its activation (inverted
            dropout: the kept units are scaled by ``1 / (1 - dropout)``), applied only when
            ``apply`` is given an ``rng_key`` (training); without one the network is the
            full, deterministic one. Dropout keeps the masks' autoregressive structure.

    ``apply(params, x, context)`` maps ``(..., D)`` to ``(..., D, num_params)``. The last
    layer starts at zero so that a fresh bijection built on it is the identity.
    """

    input_dim: int
    hidden_dims: tuple[int, ...]
    num_params: int
    context_dim: int = 0
    activation: str | Callable = "elu"
    skip_connections: bool = False
    residual: bool = False
    dropout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        object.__setattr__(self, "dropout", check_dropout_rate(self.dropout))
        if self.input_dim < 1:
            raise ValueError(f"MADE needs input_dim >= 1, got {self.input_dim}.")
        too_narrow = [h for h in self.hidden_dims if h < self.input_dim]
        if too_narrow:
            raise ValueError(
                f"MADE hidden widths {list(self.hidden_dims)} include layers narrower than "
                f"the input dimension {self.input_dim}; such a layer cannot carry every "
                "autoregressive dependency. Use hidden widths >= the input dimension "
                f"(e.g. hidden_dims=[{max(2 * self.input_dim, 8)}] * 2)."
            )
        get_activation(self.activation)  # fail early on an unknown name

    def init(self, rng_key, dtype=None) -> dict:
        """Returns the parameter pytree (a dict of arrays)."""
        dims = (self.input_dim, *self.hidden_dims)
        out_dim = self.input_dim * self.num_params
        shapes = list(zip(dims[:-1], dims[1:]))
        if self.context_dim:
            # The context feeds the first hidden layer (or, with none, the zero output).
            first = self.hidden_dims[0] if self.hidden_dims else out_dim
            shapes.insert(0, (self.context_dim, first))
        layers = dense_stack_init(rng_key, [*shapes, (dims[-1], out_dim)], dtype=dtype)
        params = {}
        if self.context_dim:
            context = layers.pop(0)["w"]
            params["context"] = context if self.hidden_dims else jnp.zeros_like(context)
        params["hidden"], params["out"] = layers[:-1], layers[-1]
        if self.skip_connections:
            params["skip"] = jnp.zeros_like(params["out"]["w"], shape=(self.input_dim, out_dim))
        return params

    def apply(self, params: dict, x, context=None, rng_key=None):
        """Evaluates the network: ``(..., D)`` (and ``(..., C)``) to ``(..., D, P)``.

        With an ``rng_key`` and ``dropout > 0``, hidden units are dropped (one draw per
        unit and batch entry; the same key and shapes give the same units, so a bijection
        holding the key stays one invertible map). Without a key: no dropout.
        """
        params = cast_like(params, x)
        hidden_masks, out_mask, skip_mask = made_masks(
            self.input_dim, self.hidden_dims, self.num_params, self.context_dim > 0
        )
        act = get_activation(self.activation)
        use_dropout = rng_key is not None and self.dropout > 0 and self.hidden_dims
        keys = jax.random.split(rng_key, len(self.hidden_dims)) if use_dropout else None
        h = x
        for i, (layer, mask) in enumerate(zip(params["hidden"], hidden_masks)):
            pre = h @ (layer["w"] * mask) + layer["b"]
            if i == 0 and self.context_dim:
                pre = pre + as_context(context, x, self.context_dim) @ params["context"]
            new = act(pre)
            if use_dropout:
                new = dropout(keys[i], new, self.dropout)
            h = h + new if self.residual and new.shape == h.shape and i > 0 else new
        out = h @ (params["out"]["w"] * out_mask) + params["out"]["b"]
        if self.context_dim and not self.hidden_dims:
            out = out + as_context(context, x, self.context_dim) @ params["context"]
        if self.skip_connections:
            out = out + x @ (params["skip"] * skip_mask)
        out = out.reshape(out.shape[:-1] + (self.num_params, self.input_dim))
        return jnp.swapaxes(out, -1, -2)


def default_hidden_dims(
    dim: int, hidden_dims: Sequence[int] | None, factor: int = 2, min_width: int = 16
):
    """Hidden widths when the user gave none: two layers of ``max(factor * dim, min_width)``."""
    if hidden_dims is None:
        return (max(factor * dim, min_width),) * 2
    return tuple(int(h) for h in hidden_dims)
