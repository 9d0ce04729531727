"""Elementwise composition of transformers, e.g. a spline followed by an affine map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numpyro_flows.bijections.transformer import Transformer


@dataclass(frozen=True)
class ComposedTransformer(Transformer):
    """Applies ``parts`` in order to each dimension; raw parameters are concatenated.

    ``ComposedTransformer((RationalQuadraticSpline(), Affine()))`` is ``y = a * s(x) + b``:
    the spline shapes the distribution, the affine part scales and shifts it, which a
    spline with identity tails cannot do on its own (e.g. the scale of a funnel's neck).
    """

    parts: tuple

    def __post_init__(self):
        object.__setattr__(self, "parts", tuple(self.parts))

    @property
    def num_params(self) -> int:
        """The parts' raw parameters, concatenated."""
        return sum(part.num_params for part in self.parts)

    def _split(self, params):
        bounds = np.cumsum([0] + [part.num_params for part in self.parts])
        return [params[..., lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]

    def forward_and_log_det(self, x, params):
        total = 0.0
        for part, p in zip(self.parts, self._split(params)):
            x, log_det = part.forward_and_log_det(x, p)
            total = total + log_det
        return x, total

    def inverse_and_log_det(self, y, params):
        total = 0.0
        for part, p in reversed(list(zip(self.parts, self._split(params)))):
            y, log_det = part.inverse_and_log_det(y, p)
            total = total + log_det
        return y, total
