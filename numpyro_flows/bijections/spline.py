"""Monotone rational-quadratic spline transformer with identity tails.

Durkan, Bekasov, Murray and Papamakarios (2019), *Neural Spline Flows*,
https://arxiv.org/abs/1906.04032 (knots, derivatives and the stable inverse, eqs. 4-8);
Gregory and Delbourgo (1982) for the rational-quadratic interpolant.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_flows.bijections.transformer import Transformer


@dataclass(frozen=True)
class RationalQuadraticSpline(Transformer):
    """A monotone spline on ``[-bound, bound]``, the identity outside.

    Raw parameters per dimension: ``num_bins`` widths, ``num_bins`` heights and
    ``num_bins - 1`` interior knot derivatives (``3 * num_bins - 1`` in all). The two
    boundary derivatives are fixed to 1, so the spline joins its identity tails with
    slope 1 and the density is continuous at the bound. All-zero raw parameters give
    equal bins and unit derivatives: the identity.

    Args:
        num_bins: number of bins ``K``.
        bound: half-width ``B`` of the interval the spline acts on.
        min_bin_width: smallest bin width, as a fraction of the interval.
        min_bin_height: smallest bin height, as a fraction of the interval.
        min_derivative: smallest knot derivative.
    """

    num_bins: int = 8
    bound: float = 5.0
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3

    def __post_init__(self):
        if self.num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {self.num_bins}.")
        if self.min_bin_width * self.num_bins >= 1 or self.min_bin_height * self.num_bins >= 1:
            raise ValueError("min_bin_width/min_bin_height times num_bins must be < 1.")
        if not 0 < self.min_derivative < 1:
            raise ValueError("min_derivative must lie in (0, 1).")

    @property
    def num_params(self) -> int:
        """``3 * num_bins - 1`` raw parameters per dimension."""
        return 3 * self.num_bins - 1

    def knots(self, params):
        """Knot positions ``(..., K+1)`` in x and y, and derivatives ``(..., K+1)``."""
        table = self._table(params)
        return table[..., 0, :], table[..., 1, :], table[..., 2, :]

    def _table(self, params):
        """x positions, y positions and derivatives of the knots, stacked: ``(..., 3, K+1)``.

        Written with few array operations (one softmax for widths and heights, their
        cumulative sums as one product with a triangular matrix, one table): a guide's
        compile time grows with the operations in its gradient, not with their size.
        """
        k = self.num_bins
        dtype = params.dtype
        raw = params[..., : 2 * k].reshape(params.shape[:-1] + (2, k))
        minimum = np.array([[self.min_bin_width], [self.min_bin_height]])
        sizes = (minimum + (1 - minimum * k) * jax.nn.softmax(raw, axis=-1)).astype(dtype)
        # Interior edges: the sums of the first 1..K-1 sizes.
        edges = 2 * self.bound * (sizes @ np.triu(np.ones((k, k - 1), dtype))) - self.bound
        # The outer edges are exactly -bound and bound (no cumsum rounding).
        low = jnp.full(edges.shape[:-1] + (1,), -self.bound, dtype)
        positions = jnp.concatenate([low, edges, -low], axis=-1)
        # softplus(shift) = 1 - min_derivative, so raw 0 gives derivative 1.
        shift = float(np.log(np.expm1(1.0 - self.min_derivative)))
        inner = self.min_derivative + jax.nn.softplus(params[..., None, 2 * k :] + shift)
        ones = jnp.ones(inner.shape[:-1] + (1,), dtype)
        derivatives = jnp.concatenate([ones, inner, ones], axis=-1)
        return jnp.concatenate([positions, derivatives], axis=-2)

    def _bin(self, v, axis: int, table):
        """Left and right knots ``(x, y, d)`` of the bin that ``v`` falls in, where bins
        are delimited along row ``axis`` of the knot table (0: x, 1: y).

        A one-hot selection rather than a gather: for a handful of bins it is faster on
        CPU, and its gradient is a dense product instead of a scatter.
        """
        k = self.num_bins
        idx = jnp.sum(v[..., None] >= table[..., axis, 1:-1], axis=-1)
        onehot = (idx[..., None] == jnp.arange(k)).astype(v.dtype)[..., None, :]
        left = jnp.sum(onehot * table[..., :-1], -1)
        right = jnp.sum(onehot * table[..., 1:], -1)
        return left[..., 0], right[..., 0], left[..., 1], right[..., 1], left[..., 2], right[..., 2]

    def _broadcast(self, v, params):
        shape = jnp.broadcast_shapes(v.shape, params.shape[:-1])
        return jnp.broadcast_to(v, shape), jnp.broadcast_to(params, shape + params.shape[-1:])

    def _inside(self, v):
        return (v > -self.bound) & (v < self.bound)

    def forward_and_log_det(self, x, params):
        x, params = self._broadcast(x, params)
        table = self._table(params)
        inside = self._inside(x)
        # Double where: evaluate the spline at a safe point outside, so that neither the
        # value nor its gradient can be NaN in the branch that is thrown away.
        x_in = jnp.where(inside, x, 0.0)
        x0, x1, y0, y1, d0, d1 = self._bin(x_in, 0, table)
        width, height = x1 - x0, y1 - y0
        slope = height / width
        xi = jnp.clip((x_in - x0) / width, 0.0, 1.0)
        xi1 = xi * (1 - xi)
        denom = slope + (d1 + d0 - 2 * slope) * xi1
        y = y0 + height * (slope * xi**2 + d0 * xi1) / denom
        log_det = (
            2 * jnp.log(slope)
            + jnp.log(d1 * xi**2 + 2 * slope * xi1 + d0 * (1 - xi) ** 2)
            - 2 * jnp.log(denom)
        )
        return jnp.where(inside, y, x), jnp.where(inside, log_det, 0.0)

    def inverse_and_log_det(self, y, params):
        y, params = self._broadcast(y, params)
        table = self._table(params)
        inside = self._inside(y)
        y_in = jnp.where(inside, y, 0.0)
        x0, x1, y0, y1, d0, d1 = self._bin(y_in, 1, table)
        width, height = x1 - x0, y1 - y0
        slope = height / width
        dy = y_in - y0
        curvature = d1 + d0 - 2 * slope
        a = height * (slope - d0) + dy * curvature
        b = height * d0 - dy * curvature
        c = -slope * dy
        root = jnp.sqrt(jnp.maximum(b**2 - 4 * a * c, 0.0))
        # The root in [0, 1] is 2c / (-b - root) = (-b + root) / (2a); take the form without
        # cancellation for the sign of b (both denominators are guarded: double where).
        pos = b >= 0
        denom_pos = jnp.where(pos, -b - root, -1.0)
        denom_neg = jnp.where(pos, 1.0, 2 * a)
        xi = jnp.where(
            pos,
            2 * c / jnp.where(denom_pos == 0, -1.0, denom_pos),
            (-b + root) / jnp.where(denom_neg == 0, 1.0, denom_neg),
        )
        xi = jnp.clip(xi, 0.0, 1.0)
        x = x0 + xi * width
        xi1 = xi * (1 - xi)
        denom = slope + curvature * xi1
        log_det = -(
            2 * jnp.log(slope)
            + jnp.log(d1 * xi**2 + 2 * slope * xi1 + d0 * (1 - xi) ** 2)
            - 2 * jnp.log(denom)
        )
        return jnp.where(inside, x, y), jnp.where(inside, log_det, 0.0)
