"""Bijections on images: events of shape ``(H, W, C)`` (channels last), batches in front.

The pieces of RealNVP's and Glow's multiscale flows (Dinh et al. 2017,
https://arxiv.org/abs/1605.08803, section 3; Kingma and Dhariwal 2018,
https://arxiv.org/abs/1807.03039, section 3): the squeeze (space to depth), per-pixel
maps of the channel vector (ActNorm per channel, the invertible 1x1 convolution, any
elementwise transform), affine coupling with a convolutional conditioner and a channel or
checkerboard mask, and the channel split that factors out half of the channels.

Log-dets have the batch shape ``x.shape[:-3]``. :class:`Flattened` views an image
bijection as a vector bijection on ``H * W * C`` values, which is how
:func:`numpyro_flows.testing.check_transform` takes the autodiff Jacobian.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform

from numpyro_flows.bijections.base import (
    Bijection,
    conditioner_input,
    forward_and_log_det,
    inverse_and_log_det,
)

IMAGE = constraints.independent(constraints.real, 3)


class ImageBijection(Bijection):
    """Base class of bijections on ``(..., H, W, C)``: the event is the last three axes."""

    domain = IMAGE
    codomain = IMAGE


def _sum_pixels(log_det, shape):
    """A per-pixel log-det ``(..., H, W)`` summed to the batch shape ``shape[:-3]``."""
    return jnp.sum(jnp.broadcast_to(log_det, shape[:-1]), (-2, -1))


class PerPixel(ImageBijection):
    """A vector bijection applied to the channel vector of every pixel.

    ``PerPixel(ActNorm(...))`` is Glow's ActNorm (one scale and shift per channel),
    ``PerPixel(LULinear(...))`` its invertible 1x1 convolution, and
    ``PerPixel(lift_elementwise(SigmoidTransform()))`` an elementwise map of the image;
    the log-det is summed over the pixels.
    """

    children = ("bijection",)

    def __init__(self, bijection: Transform):
        self.bijection = bijection

    def forward_and_log_det(self, x):
        y, log_det = forward_and_log_det(self.bijection, x)
        return y, _sum_pixels(log_det, y.shape)

    def inverse_and_log_det(self, y):
        x, log_det = inverse_and_log_det(self.bijection, y)
        return x, _sum_pixels(log_det, x.shape)

    def __repr__(self):
        return f"PerPixel({self.bijection!r})"


class Squeeze(ImageBijection):
    """Space to depth: ``(..., H, W, C)`` to ``(..., H/2, W/2, 4C)`` (log-det 0).

    Each 2x2 patch of pixels becomes one pixel with four times the channels (RealNVP,
    section 3.6), so the next convolutions see a larger neighbourhood. The new channels
    are ordered channel-major, ``(c, dh, dw)``: the first half of them holds the first
    half of the old channels at all four positions, so a channel-mask coupling after a
    squeeze conditions whole channels on others (as the reference implementations do;
    ordered position-major it conditions one row of each patch on the other, which fit
    the digits 0.011 bits/dim worse). ``H`` and ``W`` must be even.
    """

    def forward_and_log_det(self, x):
        *batch, h, w, c = x.shape
        if h % 2 or w % 2:
            raise ValueError(
                f"Squeeze needs an even height and width, got an image of {h} x {w}; pad the "
                "images or use fewer levels."
            )
        n = len(batch)
        y = x.reshape(*batch, h // 2, 2, w // 2, 2, c)
        # (..., h/2, dh, w/2, dw, c) -> (..., h/2, w/2, c, dh, dw)
        y = jnp.transpose(y, (*range(n), n, n + 2, n + 4, n + 1, n + 3))
        return y.reshape(*batch, h // 2, w // 2, 4 * c), jnp.zeros(tuple(batch), x.dtype)

    def inverse_and_log_det(self, y):
        *batch, h, w, c4 = y.shape
        n = len(batch)
        x = y.reshape(*batch, h, w, c4 // 4, 2, 2)
        x = jnp.transpose(x, (*range(n), n, n + 3, n + 1, n + 4, n + 2))
        return x.reshape(*batch, 2 * h, 2 * w, c4 // 4), jnp.zeros(tuple(batch), y.dtype)

    def forward_shape(self, shape):
        *batch, h, w, c = shape
        return (*batch, h // 2, w // 2, 4 * c)

    def inverse_shape(self, shape):
        *batch, h, w, c = shape
        return (*batch, 2 * h, 2 * w, c // 4)


class ChannelSplit(ImageBijection):
    """Two bijections side by side: ``first`` on channels ``[:split]``, ``second`` on the
    rest; the log-dets add.

    The factor-out of a multiscale flow: the kept half goes on to the next level
    (``first``), the factored-out half to its base distribution (``second``).
    """

    children = ("first", "second")
    static = ("split",)

    def __init__(self, first: Transform, second: Transform, split: int):
        self.first, self.second, self.split = first, second, int(split)

    def _apply(self, v, method):
        a, log_det_a = method(self.first, v[..., : self.split])
        b, log_det_b = method(self.second, v[..., self.split :])
        return jnp.concatenate([a, b], -1), log_det_a + log_det_b

    def forward_and_log_det(self, x):
        return self._apply(x, forward_and_log_det)

    def inverse_and_log_det(self, y):
        return self._apply(y, inverse_and_log_det)


def checkerboard(height: int, width: int, parity: int) -> np.ndarray:
    """``(H, W, 1)`` booleans: ``True`` where ``(i + j + parity)`` is even (the fixed
    pixels of a checkerboard coupling)."""
    i, j = np.indices((height, width))
    return ((i + j + parity) % 2 == 0)[..., None]


MASKS = ("channel", "checkerboard", "packed_checkerboard")


def _fixed_slot_first(height: int, parity: int) -> np.ndarray:
    """``(H, 1, 1)``: whether row ``i``'s fixed pixels are its even columns."""
    return ((np.arange(height) + parity) % 2 == 0)[:, None, None]


def check_packable(shape) -> None:
    """Raises unless images of shape ``(..., H, W, C)`` can take a packed checkerboard
    (``W`` even)."""
    if int(shape[-2]) % 2:
        raise ValueError(
            f"A packed checkerboard coupling needs an even image width, got images of "
            f"shape {tuple(shape)}; use mask='checkerboard'."
        )


def _pack_checkerboard(v, parity: int):
    """``(..., H, W, C)`` to its fixed and moving checkerboard squares, each packed row by
    row to ``(..., H, W / 2, C)`` (row ``i`` keeps its columns of parity ``i + parity``)."""
    check_packable(v.shape)
    height, width = v.shape[-3:-1]
    pairs = v.reshape(v.shape[:-2] + (width // 2, 2, v.shape[-1]))
    first = jnp.asarray(_fixed_slot_first(height, parity))
    even, odd = pairs[..., 0, :], pairs[..., 1, :]
    return jnp.where(first, even, odd), jnp.where(first, odd, even)


def _unpack_checkerboard(fixed, moving, parity: int):
    """The inverse of :func:`_pack_checkerboard`."""
    first = jnp.asarray(_fixed_slot_first(fixed.shape[-3], parity))
    pairs = jnp.stack([jnp.where(first, fixed, moving), jnp.where(first, moving, fixed)], -2)
    return pairs.reshape(pairs.shape[:-3] + (2 * fixed.shape[-2], fixed.shape[-1]))


class ConvCoupling(ImageBijection):
    """Coupling on images: a convolutional network of the fixed part sets a transformer
    (affine by default) on the rest.

    Args:
        transformer: an elementwise transformer (:class:`~numpyro_flows.bijections.Affine`).
        conditioner: a :class:`~numpyro_flows.nn.conv.ConvResNet`.
        params: its parameters.
        mask: ``"channel"``: the first ``conditioner.in_channels`` channels are fixed and
            transform the others; ``"checkerboard"``: the pixels where
            :func:`checkerboard` (with ``parity``) is true are fixed, in all channels, and
            the network sees the image with the others set to zero;
            ``"packed_checkerboard"``: the same squares, but the network sees only the
            fixed pixels, packed row by row to an image ``(H, W / 2, C)``, and gives the
            parameters of the other pixels packed the same way (half the network's work;
            ``W`` must be even). The network has the same shape under both checkerboards.
        parity: which squares of the checkerboard are fixed (0 or 1).
        context: an image ``(..., H, W, C_context)`` the network also sees (stacked onto
            the fixed part's channels; ``conditioner.in_channels`` counts both), e.g. the
            pixel levels in a variational dequantizer. Not with ``"packed_checkerboard"``.
    """

    children = ("params", "context")
    static = ("transformer", "conditioner", "mask", "parity")

    def __init__(
        self,
        transformer,
        conditioner,
        params,
        mask: str = "channel",
        parity: int = 0,
        context=None,
    ):
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}.")
        if mask == "packed_checkerboard" and context is not None:
            raise ValueError(
                "A packed checkerboard coupling takes no context image; use "
                "mask='checkerboard' for a conditional coupling."
            )
        self.transformer, self.conditioner, self.params = transformer, conditioner, params
        self.mask, self.parity, self.context = mask, int(parity), context

    def _fixed_channels(self):
        context = 0 if self.context is None else self.context.shape[-1]
        return self.conditioner.in_channels - context

    def _theta(self, fixed):
        inputs = conditioner_input(fixed)
        if self.context is not None:
            context = jnp.broadcast_to(
                jnp.asarray(self.context, fixed.dtype),
                fixed.shape[:-1] + self.context.shape[-1:],
            )
            inputs = jnp.concatenate([inputs, context], -1)
        out = self.conditioner.apply(self.params, inputs)
        num_params = self.transformer.num_params
        return out.reshape(out.shape[:-1] + (out.shape[-1] // num_params, num_params))

    def _apply(self, v, inverse: bool):
        method = (
            self.transformer.inverse_and_log_det
            if inverse
            else self.transformer.forward_and_log_det
        )
        if self.mask == "channel":
            d = self._fixed_channels()
            fixed, moving = v[..., :d], v[..., d:]
            moved, log_det = method(moving, self._theta(fixed))
            return jnp.concatenate([fixed, moved], -1), jnp.sum(log_det, (-3, -2, -1))
        if self.mask == "packed_checkerboard":
            fixed, moving = _pack_checkerboard(v, self.parity)
            moved, log_det = method(moving, self._theta(fixed))
            return _unpack_checkerboard(fixed, moved, self.parity), jnp.sum(log_det, (-3, -2, -1))
        keep = jnp.asarray(checkerboard(*v.shape[-3:-1], self.parity))
        moved, log_det = method(v, self._theta(jnp.where(keep, v, 0)))
        out = jnp.where(keep, v, moved)
        return out, jnp.sum(jnp.where(keep, 0, log_det), (-3, -2, -1))

    def forward_and_log_det(self, x):
        return self._apply(x, inverse=False)

    def inverse_and_log_det(self, y):
        return self._apply(y, inverse=True)


class Flattened(Bijection):
    """An image bijection seen as a vector bijection on ``(..., H * W * C)``.

    Args:
        bijection: a bijection on events of shape ``event_shape``.
        event_shape: its event shape, e.g. ``(H, W, C)``.
    """

    children = ("bijection",)
    static = ("event_shape",)

    def __init__(self, bijection: Transform, event_shape):
        self.bijection, self.event_shape = bijection, tuple(int(n) for n in event_shape)

    def _call(self, v, method, shape):
        batch = v.shape[:-1]
        out, log_det = method(self.bijection, v.reshape(batch + tuple(shape)))
        return out.reshape(batch + (math.prod(self.event_shape),)), log_det

    def forward_and_log_det(self, x):
        return self._call(x, forward_and_log_det, self.event_shape)

    def inverse_and_log_det(self, y):
        # The output side's shape (a squeeze changes it).
        shape = self.bijection.forward_shape(self.event_shape)
        return self._call(y, inverse_and_log_det, shape)

    def __repr__(self):
        return f"Flattened({self.bijection!r}, {self.event_shape})"


__all__ = [
    "ChannelSplit",
    "ConvCoupling",
    "Flattened",
    "ImageBijection",
    "PerPixel",
    "Squeeze",
    "checkerboard",
]
