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


class Transformer:
    """Base class of elementwise transformers (see the module docstring for the protocol).

    Subclasses are frozen dataclasses (hashable: they are static pytree data of the
    bijections that use them).
    """

    num_params: int
    """Raw parameters per dimension."""

    def forward_and_log_det(self, x, params):
        """``(y, log dy/dx)`` for ``x`` ``(..., D)`` and raw ``params`` ``(..., D, P)``;
        the log-det is elementwise, ``(..., D)``."""
        raise NotImplementedError

    def inverse_and_log_det(self, y, params):
        """``(x, log dx/dy)``, the inverse of :meth:`forward_and_log_det`."""
        raise NotImplementedError


def bounded_log_scale(raw, bound: float | tuple[float, float]):
    """Smoothly bounds a log-scale to ``(low, high)``; ``bound`` is ``high = -low`` or a pair.

    ``high * tanh(raw / high)`` for ``raw >= 0`` and ``-low * tanh(raw / -low)`` below: the
    identity near zero (slope 1 and curvature 0 at 0 on both sides), no hard clamp that
    kills gradients, and no unbounded ``exp`` that can blow up through a deep stack.
    """
    low, high = _bounds(bound)
    side = jnp.where(raw >= 0, high, -low)  # one tanh, not one per side: less to compile
    return side * jnp.tanh(raw / side)


def inverse_bounded_log_scale(log_scale, bound: float | tuple[float, float]):
    """Raw value giving ``log_scale`` (clipped just inside the bounds)."""
    low, high = _bounds(bound)
    shrink = 1 - 1e-6
    log_scale = jnp.clip(log_scale, low * shrink, high * shrink)
    return jnp.where(
        log_scale >= 0, high * jnp.arctanh(log_scale / high), -low * jnp.arctanh(log_scale / -low)
    )


def _bounds(bound):
    low, high = bound if isinstance(bound, tuple | list) else (-bound, bound)
    if not low < 0 < high:
        raise ValueError(f"log-scale bounds must satisfy low < 0 < high, got {bound}.")
    return float(low), float(high)
