"""Radial flow ``y = x + beta h(alpha, r) (x - x0)``, ``h = 1 / (alpha + r)``.

Rezende and Mohamed (2015), *Variational Inference with Normalizing Flows*,
https://arxiv.org/abs/1505.05770, eq. 14 and appendix A.2.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.nn import softplus

from numpyro_flows.bijections.base import Bijection


class Radial(Bijection):
    """Radial bijection around ``x0`` with ``alpha > 0`` and ``beta >= -alpha``.

    ``alpha = softplus(raw_alpha)`` and ``beta = softplus(raw_beta + softplus^{-1}(alpha))
    - alpha``, so ``raw_beta = 0`` is the identity.

    The inverse is a 1-D root in the radius: with ``r = |x - x0|`` and ``s = |y - x0|``,
    ``s = r (1 + beta / (alpha + r))``, i.e. ``r^2 + (alpha + beta - s) r - s alpha = 0``,
    whose positive root we take in closed form (the cancellation-free variant of the
    quadratic formula); then ``x - x0 = (y - x0) / (1 + beta / (alpha + r))``.

    Args:
        x0: ``(D,)`` centre.
        raw_alpha: scalar.
        raw_beta: scalar.
    """

    children = ("x0", "raw_alpha", "raw_beta")

    def __init__(self, x0, raw_alpha, raw_beta):
        self.x0, self.raw_alpha, self.raw_beta = x0, raw_alpha, raw_beta

    def _params(self, dtype):
        x0, raw_alpha, raw_beta = (
            jnp.asarray(p, dtype) for p in (self.x0, self.raw_alpha, self.raw_beta)
        )
        alpha = softplus(raw_alpha)
        # softplus^{-1}(alpha) = raw_alpha; written out so the identity is exact.
        beta = softplus(raw_beta + raw_alpha) - alpha
        return x0, alpha[..., None], beta[..., None]

    @staticmethod
    def _radius(d):
        # Safe norm: a zero vector gets a zero gradient instead of NaN.
        sq = jnp.sum(d * d, -1, keepdims=True)
        tiny = jnp.finfo(d.dtype).tiny
        return jnp.where(sq > tiny, jnp.sqrt(jnp.where(sq > tiny, sq, 1.0)), 0.0)

    def _log_det(self, r, alpha, beta, dim):
        gain = 1 + beta / (alpha + r)
        # 1 + beta h + beta h' r = 1 + beta alpha / (alpha + r)^2 >= 0 since beta >= -alpha.
        return ((dim - 1) * jnp.log(gain) + jnp.log1p(beta * alpha / (alpha + r) ** 2))[..., 0]

    def forward_and_log_det(self, x):
        x0, alpha, beta = self._params(x.dtype)
        d = x - x0
        r = self._radius(d)
        y = x + beta / (alpha + r) * d
        return y, self._log_det(r, alpha, beta, x.shape[-1])

    def inverse_and_log_det(self, y):
        x0, alpha, beta = self._params(y.dtype)
        d = y - x0
        s = self._radius(d)
        p = alpha + beta - s
        root = jnp.sqrt(p**2 + 4 * s * alpha)
        positive = p > 0
        # r = (-p + root) / 2, written as 2 s alpha / (p + root) when p > 0.
        r = jnp.where(positive, 2 * s * alpha / jnp.where(positive, p + root, 1.0), (root - p) / 2)
        x = x0 + d / (1 + beta / (alpha + r))
        return x, -self._log_det(r, alpha, beta, y.shape[-1])
