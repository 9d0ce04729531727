"""Elementwise transformers: the maths a structure (autoregressive, coupling) applies.

A transformer is a frozen (hashable) dataclass with ``num_params`` raw parameters per
dimension and two methods on arrays ``x``/``y`` of shape ``(..., D)`` with raw parameters
``params`` of shape ``(..., D, num_params)``:

* ``forward_and_log_det(x, params) -> (y, log dy/dx)``, the log-det elementwise ``(..., D)``;
* ``inverse_and_log_det(y, params) -> (x, log dx/dy)``.

All-zero raw parameters are the identity, so a conditioner whose last layer starts at
zero gives an identity bijection.
"""

from __future__ import annotations

import jax.numpy as jnp


def bounded_log_scale(raw, bound: float):
    """Smoothly bounds a log-scale to ``(-bound, bound)``: ``bound * tanh(raw / bound)``.

    Identity near zero (slope 1 at 0), no hard clamp that kills gradients, and no
    unbounded ``exp`` that can blow up through a deep stack.
    """
    return bound * jnp.tanh(raw / bound)


def inverse_bounded_log_scale(log_scale, bound: float):
    """Raw value giving ``log_scale`` (clipped just inside the bound)."""
    limit = bound * (1 - 1e-6)
    return bound * jnp.arctanh(jnp.clip(log_scale, -limit, limit) / bound)
