"""LU-parameterised invertible linear map (Glow's invertible 1x1 convolution).

Kingma and Dhariwal (2018), *Glow*, https://arxiv.org/abs/1807.03039, section 3.2.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from numpyro_flows.bijections.base import Bijection
from numpyro_flows.bijections.transformer import bounded_log_scale

LOG_DIAG_BOUND = 5.0


class LULinear(Bijection):
    """``y = L U x + bias`` with unit lower-triangular ``L`` and upper-triangular ``U``.

    ``U``'s diagonal is ``exp(bounded_log_scale(raw_log_diag))``, so the log-det is the sum
    of the log-diagonal: never a determinant. All-zero parameters are the identity. The
    inverse is two triangular solves.

    Args:
        lower: ``(D, D)``, only the strictly lower triangle is used.
        upper: ``(D, D)``, only the strictly upper triangle is used.
        raw_log_diag: ``(D,)``.
        bias: ``(D,)``.
    """

    children = ("lower", "upper", "raw_log_diag", "bias")

    def __init__(self, lower, upper, raw_log_diag, bias):
        self.lower, self.upper, self.raw_log_diag, self.bias = lower, upper, raw_log_diag, bias

    def factors(self, dtype=None):
        """``(L, U, log_diag, bias)`` as arrays of ``dtype``."""
        dtype = dtype or jnp.result_type(self.lower)
        lower, upper, raw, bias = (
            jnp.asarray(p, dtype) for p in (self.lower, self.upper, self.raw_log_diag, self.bias)
        )
        log_diag = bounded_log_scale(raw, LOG_DIAG_BOUND)
        eye = jnp.eye(lower.shape[-1], dtype=dtype)
        L = jnp.tril(lower, -1) + eye
        U = jnp.triu(upper, 1) + eye * jnp.exp(log_diag)
        return L, U, log_diag, bias

    def weight(self, dtype=None):
        """The matrix ``W = L U``."""
        L, U, _, _ = self.factors(dtype)
        return L @ U

    def forward_and_log_det(self, x):
        L, U, log_diag, bias = self.factors(x.dtype)
        y = x @ (L @ U).T + bias
        return y, jnp.broadcast_to(log_diag.sum(-1), y.shape[:-1])

    def inverse_and_log_det(self, y):
        L, U, log_diag, bias = self.factors(y.dtype)
        flat = (y - bias).reshape(-1, y.shape[-1]).T
        z = solve_triangular(L, flat, lower=True, unit_diagonal=True)
        x = solve_triangular(U, z, lower=False).T.reshape(y.shape)
        return x, jnp.broadcast_to(-log_diag.sum(-1), x.shape[:-1])
