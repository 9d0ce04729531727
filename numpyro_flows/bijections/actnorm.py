"""ActNorm: a per-dimension affine layer initialised from data.

Kingma and Dhariwal (2018), *Glow: Generative Flow with Invertible 1x1 Convolutions*,
https://arxiv.org/abs/1807.03039, section 3.1.
"""

from __future__ import annotations

import jax.numpy as jnp

from numpyro_flows.bijections.base import Bijection
from numpyro_flows.bijections.transformer import bounded_log_scale, inverse_bounded_log_scale

# Data-initialised scales may be far from 1, so the bound is wider than for network outputs.
LOG_SCALE_BOUND = 15.0


class ActNorm(Bijection):
    """``y = x * exp(s) + loc`` with ``s = bounded_log_scale(raw_log_scale)``.

    In the density direction (``y`` is data) the layer normalises; :meth:`data_init` sets
    ``loc`` and ``s`` so that data arriving at the output side leaves with zero mean and
    unit variance per dimension. A constant column keeps scale 1 (no division by zero).
    """

    children = ("loc", "raw_log_scale")

    def __init__(self, loc, raw_log_scale):
        self.loc, self.raw_log_scale = loc, raw_log_scale

    def _params(self, dtype):
        loc = jnp.asarray(self.loc, dtype)
        return loc, bounded_log_scale(jnp.asarray(self.raw_log_scale, dtype), LOG_SCALE_BOUND)

    def forward_and_log_det(self, x):
        loc, log_scale = self._params(x.dtype)
        y = x * jnp.exp(log_scale) + loc
        return y, jnp.broadcast_to(log_scale.sum(-1), y.shape[:-1])

    def inverse_and_log_det(self, y):
        loc, log_scale = self._params(y.dtype)
        x = (y - loc) * jnp.exp(-log_scale)
        return x, jnp.broadcast_to(-log_scale.sum(-1), x.shape[:-1])

    @staticmethod
    def init_params_from_data(y):
        """Parameters ``{"loc", "raw_log_scale"}`` that normalise the rows of ``y``."""
        y = jnp.reshape(y, (-1, y.shape[-1]))
        mean = jnp.mean(y, 0)
        std = jnp.std(y, 0)
        # A constant (or near-constant) column keeps unit scale instead of dividing by 0.
        ok = std > 1e-6 * jnp.maximum(1.0, jnp.abs(mean))
        log_scale = jnp.where(ok, jnp.log(jnp.where(ok, std, 1.0)), 0.0)
        return {"loc": mean, "raw_log_scale": inverse_bounded_log_scale(log_scale, LOG_SCALE_BOUND)}
