"""Batch normalisation as a bijection, for density estimation.

Dinh et al. (2017), *Real NVP*, https://arxiv.org/abs/1605.08803, section 3.7;
Papamakarios et al. (2017), *MAF*, https://arxiv.org/abs/1705.07057, appendix B.
"""

from __future__ import annotations

import jax.numpy as jnp

from numpyro_flows.bijections.base import Bijection


class BatchNorm(Bijection):
    """Normalises in the density direction: ``x = (y - m) / sqrt(v + eps) * exp(g) + b``.

    ``mean``/``var`` are *state* (running statistics, moved by ``Flow.update_state`` with
    the ``momentum`` of the :class:`~numpyro_flows.layers.BatchNormLayer`, never by the
    optimiser); ``log_gamma``/``beta`` are trainable. With ``training=True`` the
    density direction uses the statistics of the batch it is given, as in the papers; the
    sampling direction always uses the running statistics.

    Args:
        mean, var: ``(D,)`` running statistics.
        log_gamma, beta: ``(D,)`` trainable scale and shift.
        training: static flag, batch statistics in the density direction.
        eps: added to the variance.
    """

    children = ("mean", "var", "log_gamma", "beta")
    static = ("training", "eps")

    def __init__(self, mean, var, log_gamma, beta, training: bool = False, eps: float = 1e-5):
        self.mean, self.var, self.log_gamma, self.beta = mean, var, log_gamma, beta
        self.training, self.eps = training, eps

    def _params(self, dtype):
        return tuple(
            jnp.asarray(p, dtype) for p in (self.mean, self.var, self.log_gamma, self.beta)
        )

    def forward_and_log_det(self, x):
        mean, var, log_gamma, beta = self._params(x.dtype)
        log_std = 0.5 * jnp.log(var + self.eps)
        y = (x - beta) * jnp.exp(log_std - log_gamma) + mean
        return y, jnp.broadcast_to((log_std - log_gamma).sum(-1), y.shape[:-1])

    def inverse_and_log_det(self, y):
        mean, var, log_gamma, beta = self._params(y.dtype)
        if self.training:
            mean, var = batch_statistics(y)
        log_std = 0.5 * jnp.log(var + self.eps)
        x = (y - mean) * jnp.exp(log_gamma - log_std) + beta
        return x, jnp.broadcast_to((log_gamma - log_std).sum(-1), x.shape[:-1])


def batch_statistics(y):
    """Per-dimension mean and variance over all batch axes of ``y``."""
    flat = y.reshape(-1, y.shape[-1])
    return jnp.mean(flat, 0), jnp.var(flat, 0)
