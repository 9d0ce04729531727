"""A small convolutional ResNet: the conditioner of image coupling layers."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from numpyro_flows.nn.common import cast_like, get_activation


def conv2d(x, w, b):
    """``SAME``-padded stride-1 convolution of ``(..., H, W, C_in)`` with ``w``
    ``(k, k, C_in, C_out)``; any number of leading batch axes (or none).

    Written as one matrix product of ``w`` with the image's ``k x k`` patches (a 1x1
    convolution is a plain product): XLA on CPU computes the weight gradient of a native
    convolution inside ``lax.scan`` (how a flow runs its steps) about ten times slower
    than outside it, and the product's gradient is another product.
    """
    k = w.shape[0]
    if k == 1:
        return x @ w[0, 0] + b
    h, width = x.shape[-3:-1]
    pad = [(0, 0)] * (x.ndim - 3) + [(k // 2, k // 2), (k // 2, k // 2), (0, 0)]
    c_in, c_out = w.shape[-2:]
    if c_in <= c_out:
        # The k*k shifted copies of the (narrow) input side, then one product.
        padded = jnp.pad(x, pad)
        patches = jnp.concatenate(
            [padded[..., i : i + h, j : j + width, :] for i in range(k) for j in range(k)], -1
        )
        return patches @ w.reshape(-1, c_out) + b
    # A narrow output side: one product to all k*k taps, then each tap shifted into
    # place and summed (out[y, x] = sum_ij tap_ij[y + i - k//2, x + j - k//2]); shifting
    # the taps one by one keeps every pad and slice (and their gradients) small.
    taps = x @ jnp.moveaxis(w, 2, 0).reshape(c_in, -1)
    taps = taps.reshape(taps.shape[:-1] + (k * k, c_out))
    out = 0.0
    for i in range(k):
        for j in range(k):
            padded = jnp.pad(taps[..., i * k + j, :], pad)
            out = out + padded[..., i : i + h, j : j + width, :]
    return out + b


@dataclass(frozen=True)
class ConvResNet:
    """``(..., H, W, in_channels)`` to ``(..., H, W, out_channels)``, same resolution.

    A 3x3 convolution to ``hidden_channels``, ``num_blocks`` residual blocks
    ``h + act(conv1x1(act(h)))``, and a 3x3 output convolution that starts at zero, so a
    fresh coupling layer built on it is the identity (Kingma and Dhariwal 2018, *Glow*,
    https://arxiv.org/abs/1807.03039, section 3.3: with one block, Glow's three-layer
    network plus a skip connection).

    Args:
        in_channels: input channels (the conditioning half, plus the context's channels).
        hidden_channels: width of the hidden convolutions.
        out_channels: output channels.
        num_blocks: residual blocks between the input and output convolutions.
        activation: a name from ``numpyro_flows.nn.ACTIVATIONS`` or a callable.
    """

    in_channels: int
    hidden_channels: int
    out_channels: int
    num_blocks: int = 1
    activation: str | Callable = "relu"

    def __post_init__(self):
        for name in ("in_channels", "hidden_channels", "out_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if int(self.num_blocks) < 0:
            raise ValueError(f"num_blocks must be >= 0, got {self.num_blocks}.")
        get_activation(self.activation)

    def init(self, rng_key, dtype=None) -> dict:
        """Returns the parameter pytree (a dict of arrays)."""
        dtype = dtype or jnp.zeros(()).dtype
        h = self.hidden_channels
        shapes = [(3, 3, self.in_channels, h)] + [(1, 1, h, h)] * self.num_blocks
        # One random draw split into the kernels: one random-number kernel to compile.
        sizes = [math.prod(shape) for shape in shapes]
        draw = jax.random.normal(rng_key, (sum(sizes),), dtype)
        kernels, offset = [], 0
        for shape, size in zip(shapes, sizes):
            fan_in = math.prod(shape[:-1])
            # PyTorch's default scale (uniform with variance 1 / (3 fan_in)): with the
            # residual sums, larger weights made early training slower.
            w = draw[offset : offset + size].reshape(shape) / math.sqrt(3 * fan_in)
            kernels.append({"w": w, "b": jnp.zeros(shape[-1], dtype)})
            offset += size
        return {
            "in": kernels[0],
            "blocks": kernels[1:],
            "out": {
                "w": jnp.zeros((3, 3, h, self.out_channels), dtype),
                "b": jnp.zeros(self.out_channels, dtype),
            },
        }

    def apply(self, params: dict, x):
        """Evaluates the network on ``(..., H, W, in_channels)``."""
        params = cast_like(params, x)
        act = get_activation(self.activation)
        h = act(conv2d(x, params["in"]["w"], params["in"]["b"]))
        for block in params["blocks"]:
            h = h + act(conv2d(act(h), block["w"], block["b"]))
        return conv2d(h, params["out"]["w"], params["out"]["b"])


__all__ = ["ConvResNet", "conv2d"]
