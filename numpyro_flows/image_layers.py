"""Layer specs of image flows: events ``(H, W, C)``, as :mod:`numpyro_flows.layers` for vectors.

Inside a multiscale flow a layer's ``init`` takes the shape ``(H, W, C)`` of the images
reaching it where a vector layer takes ``D``, and its ``event_size`` is the channel count
``C`` (the axis that :class:`~numpyro_flows.layers.Repeat` permutes). The root,
:class:`MultiscaleLayer`, takes the event shape of the whole image and keeps it in its
params (an empty array of shape ``(H, W, C, 0)``), so the params say which images they
were made for, as a vector flow's params say ``D``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from numpyro_flows.bijections import ActNorm, Chain, Invert, LogitPreprocess, lift_elementwise
from numpyro_flows.bijections.image import (
    ChannelSplit,
    ConvCoupling,
    PerPixel,
    Squeeze,
    check_packable,
)
from numpyro_flows.layers import Layer, Repeat, _no_context, _split_key, build_layer
from numpyro_flows.nn.conv import ConvResNet


def _channels(shape) -> int:
    return int(shape[-1])


@dataclass(frozen=True)
class PerPixelLayer(Layer):
    """A vector layer (:class:`~numpyro_flows.layers.ActNormLayer`,
    :class:`~numpyro_flows.layers.LULinearLayer`, ...) on the channel vector of every
    pixel: Glow's ActNorm per channel and invertible 1x1 convolution
    (:class:`~numpyro_flows.bijections.image.PerPixel`). ActNorm's data initialisation
    takes its statistics over the pixels and the images."""

    layer: Layer

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        return self.layer.init(rng_key, _channels(dim), context_dim, dtype)

    def event_size(self, params):
        return self.layer.event_size(params)

    def build(self, params, context=None, state=None, training=False, rng_key=None):
        return PerPixel(build_layer(self.layer, params, context, state, training, rng_key))

    def propagate(self, params, state, y, context=None, op="data_init"):
        return self.layer.propagate(params, state, y, context, op)


@dataclass(frozen=True)
class ConvCouplingLayer(Layer):
    """:class:`~numpyro_flows.bijections.image.ConvCoupling` with a
    :class:`~numpyro_flows.nn.conv.ConvResNet` conditioner (identity at init).

    Args:
        transformer: the elementwise transformer (affine for RealNVP and Glow).
        hidden_channels: width of the conditioner's hidden convolutions.
        num_blocks: its residual blocks.
        mask: ``"channel"`` (half of the channels condition the other half),
            ``"checkerboard"`` or ``"packed_checkerboard"`` (see
            :class:`~numpyro_flows.bijections.image.ConvCoupling`).
        parity: which checkerboard squares are fixed.
        activation: the conditioner's activation.
    """

    transformer: Any
    hidden_channels: int = 64
    num_blocks: int = 1
    mask: str = "channel"
    parity: int = 0
    activation: str | Callable = "relu"

    def _network(self, channels: int, hidden_channels: int, num_blocks: int):
        num_params = self.transformer.num_params
        if self.mask == "channel":
            if channels < 2:
                raise ValueError(
                    "A channel-mask coupling needs at least 2 channels; squeeze the image "
                    "first or use mask='checkerboard'."
                )
            fixed = channels // 2
            out = (channels - fixed) * num_params
        else:
            fixed, out = channels, channels * num_params
        return ConvResNet(fixed, hidden_channels, out, num_blocks, self.activation)

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        if context_dim:
            raise ValueError("Image coupling layers take no context.")
        if self.mask == "packed_checkerboard":
            check_packable(dim)
        network = self._network(_channels(dim), self.hidden_channels, self.num_blocks)
        return network.init(rng_key, dtype)

    def event_size(self, params):
        fixed, out = params["in"]["w"].shape[-2], params["out"]["b"].shape[-1]
        if self.mask == "channel":
            return fixed + out // self.transformer.num_params
        return fixed

    def build(self, params, context=None, state=None, training=False):
        _no_context(self, context)
        hidden = params["in"]["b"].shape[-1]
        network = self._network(self.event_size(params), hidden, len(params["blocks"]))
        return ConvCoupling(self.transformer, network, params, self.mask, self.parity)


@dataclass(frozen=True)
class MultiscaleLayer(Layer):
    """The multiscale architecture of RealNVP and Glow, the root layer of an image flow.

    In the density direction, at each of ``num_levels`` levels: squeeze (``(h, w, c)`` to
    ``(h/2, w/2, 4c)``), ``num_steps`` steps, then factor out half of the channels, which
    go to the base distribution through a learned per-element affine map (a learned
    diagonal Gaussian base per level); the other half goes on to the next level. The last
    level keeps all of its channels. Optionally :class:`~numpyro_flows.bijections.LogitPreprocess`
    comes first (data in ``[0, 1]``). The latent has the image's shape (the factored-out
    parts are put back where the squeezes took them from), so the base is ``Normal(0, I)``
    on ``(H, W, C)``.

    The steps of a level are one :class:`~numpyro_flows.layers.Repeat` (a
    ``lax.scan``): compile time does not grow with ``num_steps``.

    Args:
        step: one step (base -> target order), e.g. coupling, 1x1 convolution, ActNorm.
        num_levels: levels (``H`` and ``W`` must be divisible by ``2 ** num_levels``).
        num_steps: steps per level.
        permutation: channel order across the steps of a level (``"reverse"`` or ``None``).
        logit_alpha: the ``alpha`` of the logit preprocessing; ``None``: none.
    """

    step: Layer
    num_levels: int = 2
    num_steps: int = 4
    permutation: str | None = None
    logit_alpha: float | None = None

    event_ndim = 3

    def __post_init__(self):
        for name in ("num_levels", "num_steps"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")

    def _steps(self) -> Repeat:
        return Repeat(self.step, self.num_steps, self.permutation)

    def _level_shapes(self, shape):
        """The squeezed shape ``(h/2, w/2, 4c)`` at each level."""
        h, w, c = shape
        shapes = []
        for _ in range(self.num_levels):
            h, w, c = h // 2, w // 2, 4 * c
            shapes.append((h, w, c))
            c //= 2
        return shapes

    def check_shape(self, shape) -> tuple[int, int, int]:
        """``shape`` as ``(H, W, C)``, or a ``ValueError`` naming what does not fit."""
        shape = tuple(shape) if isinstance(shape, tuple | list) else (shape,)
        if len(shape) != 3 or any(int(n) != n or n < 1 for n in shape):
            raise ValueError(
                f"An image flow takes the event shape (height, width, channels), got {shape!r}; "
                "for a grayscale image add a channel axis, e.g. (8, 8, 1)."
            )
        h, w, c = (int(n) for n in shape)
        factor = 2**self.num_levels
        if h % factor or w % factor:
            raise ValueError(
                f"With {self.num_levels} levels the height and width must be divisible by "
                f"{factor}, got {h} x {w}; pad the images or use fewer levels."
            )
        return h, w, c

    def init(self, rng_key, dim, context_dim=0, dtype=None):
        if context_dim:
            raise ValueError("Multiscale image flows take no context.")
        shape = self.check_shape(dim)
        keys = jax.random.split(rng_key, self.num_levels)
        shapes = self._level_shapes(shape)
        levels = []
        for i, (key, level_shape) in enumerate(zip(keys, shapes)):
            h, w, c = level_shape
            prior_shape = (h, w, c if i == self.num_levels - 1 else c // 2)
            levels.append(
                {
                    "steps": self._steps().init(key, level_shape, 0, dtype),
                    "prior": {
                        "loc": jnp.zeros(prior_shape, dtype),
                        "raw_log_scale": jnp.zeros(prior_shape, dtype),
                    },
                }
            )
        return {"shape": jnp.zeros(shape + (0,), dtype), "levels": levels}

    def event_shape(self, params):
        return tuple(params["shape"].shape[:-1])

    def event_size(self, params):
        return math.prod(self.event_shape(params))

    def _logit(self):
        return PerPixel(lift_elementwise(LogitPreprocess(self.logit_alpha)))

    def _prior(self, level):
        return PerPixel(ActNorm(level["prior"]["loc"], level["prior"]["raw_log_scale"]))

    def build(self, params, context=None, state=None, training=False, rng_key=None):
        _no_context(self, context)
        inner = None
        keys = _split_key(rng_key, len(params["levels"]))
        for level, key in reversed(list(zip(params["levels"], keys))):
            prior = self._prior(level)
            middle = prior if inner is None else ChannelSplit(inner, prior, _split(level))
            steps = build_layer(self._steps(), level["steps"], None, None, training, key)
            inner = Chain([Squeeze(), middle, steps, Invert(Squeeze())])
        return inner if self.logit_alpha is None else Chain([inner, self._logit()])

    def propagate(self, params, state, y, context=None, op="data_init"):
        if self.logit_alpha is not None:
            y = self._logit().inverse_and_log_det(y)[0]
        levels = list(params["levels"])

        def down(i, y):  # the density direction through level i and below
            s = Squeeze().forward_and_log_det(y)[0]
            steps, _, s = self._steps().propagate(levels[i]["steps"], None, s, None, op)
            levels[i] = {**levels[i], "steps": steps}
            prior = self._prior(levels[i])
            if i + 1 < len(levels):
                split = _split(levels[i])
                out = prior.inverse_and_log_det(s[..., split:])[0]
                s = jnp.concatenate([down(i + 1, s[..., :split]), out], -1)
            else:
                s = prior.inverse_and_log_det(s)[0]
            return Squeeze().inverse_and_log_det(s)[0]

        x = down(0, y)
        return {**params, "levels": levels}, state, x


def _split(level) -> int:
    """Channels kept for the next level: as many as are factored out (2c each of 4c)."""
    return level["prior"]["loc"].shape[-1]


__all__ = ["ConvCouplingLayer", "MultiscaleLayer", "PerPixelLayer"]
