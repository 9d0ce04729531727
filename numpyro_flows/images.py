"""Discrete image data for flows: uniform dequantization and bits per dimension.

Pixels take ``K`` levels ``k in {0, ..., K - 1}``; a flow has a density. Uniform
dequantization (Theis et al. 2016, https://arxiv.org/abs/1511.01844; Ho et al. 2019,
*Flow++*, https://arxiv.org/abs/1902.00275, section 3.1) trains the flow on
``x = (k + u) / K`` with fresh ``u ~ U(0, 1)^D`` at every step; then, with ``D`` values
per image,

    log P(k) >= E_u[log p(x)] - D log K,

and the standard figure of merit is the bits per dimension of that bound,

    bits/dim = (-E_u[log p(x)] / D) / ln 2 + log2 K,

with ``log p(x)`` the flow's density of ``x`` in ``[0, 1]`` units (the logit
preprocessing's log-det included, see :class:`~numpyro_flows.bijections.LogitPreprocess`).
A flow that puts uniform mass on the ``K`` levels scores ``log2 K``.

Use with :func:`numpyro_flows.training.fit`::

    flow = flows.multiscale_glow()
    result = fit(key, flow, levels, dequantize=UniformDequantization(17))   # (N, H, W, C)
    bits_per_dim(result.val_losses, levels.shape[1:], 17)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class UniformDequantization:
    """``x = (k + u) / num_levels``, ``u ~ U(0, 1)`` per value: integer levels to ``[0, 1]``.

    Args:
        num_levels: ``K``, the number of levels (256 for 8-bit images, 17 for
            scikit-learn's digits).
    """

    num_levels: int

    def __post_init__(self):
        if int(self.num_levels) != self.num_levels or self.num_levels < 2:
            raise ValueError(f"num_levels must be an integer >= 2, got {self.num_levels!r}.")

    def __call__(self, rng_key, levels):
        """Dequantized ``levels`` (any shape, any float dtype), fresh noise from ``rng_key``."""
        levels = jnp.asarray(levels)
        noise = jax.random.uniform(rng_key, levels.shape, levels.dtype)
        return (levels + noise) / self.num_levels

    def check(self, levels, name: str = "data") -> None:
        """Raises a ``ValueError`` unless ``levels`` are integers in ``[0, num_levels)``
        (outside ``jit``; data already scaled to ``[0, 1]`` are the usual mistake)."""
        values = np.asarray(levels)
        bad = (values != np.round(values)) | (values < 0) | (values >= self.num_levels)
        if bad.any():
            first = values.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
            raise ValueError(
                f"{name} must hold integer levels 0..{self.num_levels - 1} for "
                f"UniformDequantization({self.num_levels}), but has {int(bad.sum())} other "
                f"value(s) (e.g. {first!r}). Pass the raw pixel levels (not scaled to [0, 1]), "
                "or the right num_levels."
            )


def bits_per_dim(nll, event_shape, num_levels: int):
    """Bits per dimension from the negative log-likelihood ``nll = -log p(x)`` in nats per
    image (``x`` dequantized to ``[0, 1]``): ``nll / (D ln 2) + log2 K``.

    Args:
        nll: a number or array (e.g. ``FitResult.val_losses``).
        event_shape: the image shape ``(H, W, C)`` (or ``D``).
        num_levels: ``K``.
    """
    size = math.prod(event_shape) if isinstance(event_shape, tuple | list) else int(event_shape)
    return np.asarray(nll) / (size * math.log(2)) + math.log2(num_levels)


__all__ = ["UniformDequantization", "bits_per_dim"]
