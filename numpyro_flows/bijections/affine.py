"""Affine transformer ``y = x * exp(s) + t`` with a smoothly bounded log-scale ``s``.

The transformer of IAF (Kingma et al. 2016, https://arxiv.org/abs/1606.04934), MAF
(Papamakarios et al. 2017, https://arxiv.org/abs/1705.07057) and RealNVP (Dinh et al.
2017, https://arxiv.org/abs/1605.08803).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from numpyro_flows.bijections.transformer import Transformer, bounded_log_scale


@dataclass(frozen=True)
class Affine(Transformer):
    """Elementwise affine map; raw parameters ``(shift, raw_log_scale)`` per dimension.

    Args:
        log_scale_bound: the log-scale lies in ``(low, high)`` (a pair, or ``b`` for
            ``(-b, b)``; see :func:`~numpyro_flows.bijections.transformer.bounded_log_scale`).
            The default ``(-5, 3)`` is the range NumPyro's IAF clips to: a layer may shrink
            a lot but expand at most 20-fold, so that a stack cannot blow samples up to
            overflow (e.g. through the ``exp`` of a positive site) early in training.
    """

    log_scale_bound: float | tuple[float, float] = (-5.0, 3.0)
    num_params: int = 2

    def _shift_and_log_scale(self, params):
        return params[..., 0], bounded_log_scale(params[..., 1], self.log_scale_bound)

    def forward_and_log_det(self, x, params):
        shift, log_scale = self._shift_and_log_scale(params)
        y = x * jnp.exp(log_scale) + shift
        return y, jnp.broadcast_to(log_scale, y.shape)

    def inverse_and_log_det(self, y, params):
        shift, log_scale = self._shift_and_log_scale(params)
        x = (y - shift) * jnp.exp(-log_scale)
        return x, jnp.broadcast_to(-log_scale, x.shape)
