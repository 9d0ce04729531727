"""Fixed permutations of the event axis (volume preserving)."""

from __future__ import annotations

import jax.numpy as jnp

from numpyro_flows.bijections.base import Bijection


class Permute(Bijection):
    """``y = x[..., permutation]``; the log-det is zero."""

    children = ("permutation", "inverse_permutation")

    def __init__(self, permutation):
        self.permutation = jnp.asarray(permutation)
        self.inverse_permutation = jnp.argsort(self.permutation)

    def _zeros(self, v):
        return jnp.zeros(v.shape[:-1], v.dtype)

    def forward_and_log_det(self, x):
        return jnp.take(x, self.permutation, -1), self._zeros(x)

    def inverse_and_log_det(self, y):
        return jnp.take(y, self.inverse_permutation, -1), self._zeros(y)


class Reverse(Bijection):
    """Reverses the event axis; the log-det is zero."""

    def forward_and_log_det(self, x):
        return jnp.flip(x, -1), jnp.zeros(x.shape[:-1], x.dtype)

    inverse_and_log_det = forward_and_log_det
