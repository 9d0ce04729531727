"""Coupling structure: half of the vector conditions a transformer on the other half.

Dinh, Sohl-Dickstein and Bengio (2017), *Density estimation using Real NVP*,
https://arxiv.org/abs/1605.08803. Both directions are one network call.
"""

from __future__ import annotations

import jax.numpy as jnp

from numpyro_flows.bijections.base import Bijection, conditioner_input
from numpyro_flows.nn import MLP


class Coupling(Bijection):
    """``y[:d] = x[:d]``, ``y[d:] = tau(x[d:]; theta(x[:d], context))``.

    Args:
        transformer: an elementwise transformer.
        conditioner: an :class:`~numpyro_flows.nn.MLP` with ``in_dim = d`` and
            ``out_dim = (D - d) * transformer.num_params``.
        params: the conditioner's parameters.
        context: optional context ``(..., C)``.

    Alternate which half is transformed with :class:`~numpyro_flows.bijections.Permuted`.
    """

    children = ("params", "context")
    static = ("transformer", "conditioner")

    def __init__(self, transformer, conditioner: MLP, params, context=None):
        if conditioner.out_dim % transformer.num_params:
            raise ValueError("conditioner.out_dim must be a multiple of transformer.num_params.")
        self.transformer = transformer
        self.conditioner = conditioner
        self.params = params
        self.context = context

    def _split(self, v):
        d = self.conditioner.in_dim
        return v[..., :d], v[..., d:]

    def _theta(self, fixed):
        out = self.conditioner.apply(self.params, conditioner_input(fixed), self.context)
        # Explicit sizes, not -1: an empty batch (0, D) has no elements to infer -1 from.
        num_params = self.transformer.num_params
        return out.reshape(out.shape[:-1] + (out.shape[-1] // num_params, num_params))

    def _apply(self, v, inverse: bool):
        fixed, moving = self._split(v)
        theta = self._theta(fixed)
        method = (
            self.transformer.inverse_and_log_det
            if inverse
            else self.transformer.forward_and_log_det
        )
        moved, log_det = method(moving, theta)
        fixed = jnp.broadcast_to(fixed, moved.shape[:-1] + fixed.shape[-1:])
        return jnp.concatenate([fixed, moved], axis=-1), log_det.sum(-1)

    def forward_and_log_det(self, x):
        return self._apply(x, inverse=False)

    def inverse_and_log_det(self, y):
        return self._apply(y, inverse=True)
