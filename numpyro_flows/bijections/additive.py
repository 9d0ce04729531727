"""Additive transformer ``y = x + t``: the volume-preserving coupling of NICE.

Dinh, Krueger and Bengio (2015), *NICE: Non-linear Independent Components Estimation*,
https://arxiv.org/abs/1410.8516. A stack of additive couplings has log-det 0; NICE ends it
with a diagonal scaling layer, which carries all of the volume change.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from numpyro_flows.bijections.transformer import Transformer


@dataclass(frozen=True)
class Additive(Transformer):
    """Elementwise shift ``y = x + t``; one raw parameter ``t`` per dimension, log-det 0."""

    num_params: int = 1

    def forward_and_log_det(self, x, params):
        y = x + params[..., 0]
        return y, jnp.zeros_like(y)

    def inverse_and_log_det(self, y, params):
        x = y - params[..., 0]
        return x, jnp.zeros_like(x)
