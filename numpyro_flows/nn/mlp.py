"""A plain MLP conditioner (coupling layers), with an optional context input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp

from numpyro_flows.nn.common import as_context, cast_like, dense_stack_init, get_activation


@dataclass(frozen=True)
class MLP:
    """A dense network ``(..., in_dim)`` (and ``(..., context_dim)``) to ``(..., out_dim)``.

    Args:
        in_dim: input size (may be 0: the output then depends on the context only).
        hidden_dims: widths of the hidden layers.
        out_dim: output size.
        context_dim: size of an optional context vector, fed to the first layer.
        activation: a name from ``numpyro_flows.nn.ACTIVATIONS`` or a callable.
        residual: residual connections between hidden layers of equal width.

    The last layer starts at zero so that a fresh bijection built on it is the identity.
    """

    in_dim: int
    hidden_dims: tuple[int, ...]
    out_dim: int
    context_dim: int = 0
    activation: str | Callable = "elu"
    residual: bool = False

    def __post_init__(self):
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        get_activation(self.activation)

    def init(self, rng_key, dtype=None) -> dict:
        """Returns the parameter pytree (a dict of arrays)."""
        dims = (self.in_dim, *self.hidden_dims)
        shapes = list(zip(dims[:-1], dims[1:]))
        if self.context_dim:
            first = self.hidden_dims[0] if self.hidden_dims else self.out_dim
            shapes.insert(0, (self.context_dim, first))
        layers = dense_stack_init(rng_key, [*shapes, (dims[-1], self.out_dim)], dtype=dtype)
        params = {}
        if self.context_dim:
            context = layers.pop(0)["w"]
            params["context"] = context if self.hidden_dims else jnp.zeros_like(context)
        params["hidden"], params["out"] = layers[:-1], layers[-1]
        return params

    def apply(self, params: dict, x, context=None):
        """Evaluates the network on ``(..., in_dim)``, returns ``(..., out_dim)``."""
        params = cast_like(params, x)
        act = get_activation(self.activation)
        h = x
        for i, layer in enumerate(params["hidden"]):
            pre = h @ layer["w"] + layer["b"]
            if i == 0 and self.context_dim:
                pre = pre + as_context(context, x, self.context_dim) @ params["context"]
            new = act(pre)
            h = h + new if self.residual and new.shape == h.shape and i > 0 else new
        out = h @ params["out"]["w"] + params["out"]["b"]
        if self.context_dim and not self.hidden_dims:
            out = out + as_context(context, x, self.context_dim) @ params["context"]
        return out
