"""Discrete image data for flows: uniform and variational dequantization, bits per dimension.

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

Variational dequantization (Flow++, section 3.1) draws ``u`` from a learned ``q(u | k)``
instead, and the bound becomes ``E_q[log p(x) - log q(u | k)] - D log K``, tighter when
``q`` puts its mass where the flow's density of the cell is high;
:class:`VariationalDequantization` is such a ``q``, trained jointly by
:func:`~numpyro_flows.training.fit`. The bits/dim formula is the same, with
``-E_q[log p(x) - log q(u | k)]`` in place of ``-E_u[log p(x)]``.

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

from numpyro_flows.bijections import Affine
from numpyro_flows.bijections.image import ConvCoupling
from numpyro_flows.bijections.transformer import bounded_log_scale
from numpyro_flows.nn.conv import ConvResNet


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


@dataclass(frozen=True)
class VariationalDequantization:
    """A learned dequantization noise ``q(u | k)`` on ``(0, 1)^D``, given the levels ``k``.

    ``u = sigmoid(g(e; k))`` with ``e ~ Normal(0, I)`` of the image's shape and ``g`` a
    conditional flow: ``num_steps`` affine checkerboard couplings (alternating parity)
    whose convolutional conditioners see the scaled levels, then a per-pixel affine map
    set by another network of the levels (Ho et al. 2019, *Flow++*,
    https://arxiv.org/abs/1902.00275, section 3.1, with affine instead of logistic-mixture
    couplings). Every conditioner's last layer starts at zero, so a fresh ``q`` is the
    logit-normal ``u = sigmoid(e)``. Has parameters: :func:`~numpyro_flows.training.fit`
    trains them with the flow's and returns them as ``FitResult.dequantizer_params``.

    Args:
        num_levels: ``K``.
        hidden_channels: width of the conditioners.
        num_steps: coupling layers.
    """

    num_levels: int
    hidden_channels: int = 32
    num_steps: int = 2

    def __post_init__(self):
        UniformDequantization(self.num_levels)  # the same check of num_levels
        if int(self.num_steps) != self.num_steps or self.num_steps < 0:
            raise ValueError(f"num_steps must be an integer >= 0, got {self.num_steps!r}.")

    check = UniformDequantization.check

    def _networks(self, channels: int):
        coupling = ConvResNet(2 * channels, self.hidden_channels, 2 * channels, 1)
        return coupling, ConvResNet(channels, self.hidden_channels, 2 * channels, 1)

    def init(self, rng_key, event_shape, dtype=None) -> dict:
        """Fresh parameters for images of shape ``event_shape`` ``(H, W, C)``."""
        coupling, last = self._networks(int(event_shape[-1]))
        keys = jax.random.split(rng_key, self.num_steps + 1)
        return {
            "couplings": [coupling.init(k, dtype) for k in keys[:-1]],
            "last": last.init(keys[-1], dtype),
        }

    def __call__(self, rng_key, levels, params):
        """``(x, log_q)``: ``x = (levels + u) / K`` with ``u ~ q(u | levels)``, and
        ``log q(u | levels)`` per image (a density of ``u`` on ``(0, 1)^D``)."""
        levels = jnp.asarray(levels)
        e = jax.random.normal(rng_key, levels.shape, levels.dtype)
        u, log_q = self.noise(e, levels, params)
        return (levels + u) / self.num_levels, log_q

    def noise(self, e, levels, params):
        """``(u, log q(u | levels))`` for the Gaussian draw ``e`` (the map ``e -> u``)."""
        context = (levels + 0.5) / self.num_levels - 0.5
        coupling, last = self._networks(levels.shape[-1])
        log_q = jnp.sum(jax.scipy.stats.norm.logpdf(e), (-3, -2, -1))
        v = e
        for i, p in enumerate(params["couplings"]):
            layer = ConvCoupling(Affine(), coupling, p, "checkerboard", i % 2, context)
            v, log_det = layer.forward_and_log_det(v)
            log_q = log_q - log_det
        out = last.apply(params["last"], context)
        shift, raw = out[..., 0::2], out[..., 1::2]
        log_scale = bounded_log_scale(raw, (-5.0, 3.0))
        v = v * jnp.exp(log_scale) + shift
        # u = sigmoid(v): log du/dv = log sigmoid(v) + log sigmoid(-v).
        log_q = log_q - jnp.sum(log_scale - jax.nn.softplus(-v) - jax.nn.softplus(v), (-3, -2, -1))
        return jax.nn.sigmoid(v), log_q


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


__all__ = ["UniformDequantization", "VariationalDequantization", "bits_per_dim"]
