"""Planar flow ``y = x + u_hat * tanh(w . x + b)``.

Rezende and Mohamed (2015), *Variational Inference with Normalizing Flows*,
https://arxiv.org/abs/1505.05770, eq. 10 and appendix A.1 (the invertibility constraint).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_flows.bijections.base import Bijection

# softplus(_SHIFT) = 1, so m(0) = 0 and u = 0 is the identity.
_SHIFT = float(np.log(np.expm1(1.0)))
ROOT_ITERATIONS = 60


class Planar(Bijection):
    """Planar bijection with ``w . u_hat > -1`` (invertible by construction).

    ``u_hat = u + (m(w . u) - w . u) w / |w|^2`` with ``m(a) = softplus(a + s) - 1``, where
    ``s = log(e - 1)`` makes ``m(0) = 0``, so ``u = 0`` is the identity.

    The inverse needs one scalar root: with ``alpha = w . x`` the map gives
    ``w . y = alpha + c tanh(alpha + b)``, ``c = w . u_hat > -1``, which is strictly
    increasing in ``alpha``, and the root lies in ``[w . y - |c|, w . y + |c|]``. We solve it
    with Newton steps safeguarded by bisection on that bracket (``ROOT_ITERATIONS`` fixed
    iterations, so it jits); then ``x = y - u_hat tanh(alpha + b)``.

    Args:
        w: ``(D,)``.
        u: ``(D,)`` unconstrained.
        b: scalar.
    """

    children = ("w", "u", "b")

    def __init__(self, w, u, b):
        self.w, self.u, self.b = w, u, b

    def _params(self, dtype):
        w, u, b = (jnp.asarray(p, dtype) for p in (self.w, self.u, self.b))
        wu = jnp.sum(w * u, -1, keepdims=True)
        norm2 = jnp.maximum(jnp.sum(w * w, -1, keepdims=True), jnp.finfo(dtype).tiny)
        m = jax.nn.softplus(wu + _SHIFT) - 1.0
        u_hat = u + (m - wu) * w / norm2
        return w, u_hat, b

    def forward_and_log_det(self, x):
        w, u_hat, b = self._params(x.dtype)
        a = jnp.sum(w * x, -1, keepdims=True) + b[..., None]
        h = jnp.tanh(a)
        y = x + u_hat * h
        # 1 + (1 - h^2) w.u_hat >= 1 - (1 - h^2) > 0 since w.u_hat > -1.
        log_det = jnp.log1p((1 - h**2) * jnp.sum(w * u_hat, -1, keepdims=True))[..., 0]
        return y, log_det

    def inverse_and_log_det(self, y):
        w, u_hat, b = self._params(y.dtype)
        c = jnp.sum(w * u_hat, -1)
        target = jnp.sum(w * y, -1)
        b = jnp.broadcast_to(b, target.shape)

        def residual(alpha):
            return alpha + c * jnp.tanh(alpha + b) - target

        def step(_, state):
            alpha, lo, hi = state
            r = residual(alpha)
            lo = jnp.where(r < 0, alpha, lo)
            hi = jnp.where(r > 0, alpha, hi)
            slope = 1 + c * (1 - jnp.tanh(alpha + b) ** 2)
            newton = alpha - r / slope
            bad = ~((newton > lo) & (newton < hi))
            return jnp.where(bad, (lo + hi) / 2, newton), lo, hi

        spread = jnp.abs(c)
        lo, hi = target - spread, target + spread
        alpha, _, _ = jax.lax.fori_loop(0, ROOT_ITERATIONS, step, (target, lo, hi))
        h = jnp.tanh(alpha + b)[..., None]
        x = y - u_hat * h
        log_det = -jnp.log1p((1 - h**2) * c[..., None])[..., 0]
        return x, log_det
