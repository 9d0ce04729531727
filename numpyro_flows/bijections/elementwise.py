"""A transformer with free (unconditioned) parameters, one set per dimension; the
elementwise ``tanh`` that NumPyro's transforms lack; and the logit preprocessing of
image flows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import ParameterFreeTransform, Transform

from numpyro_flows.bijections.base import Bijection


class Elementwise(Bijection):
    """``y_i = tau(x_i; params_i)`` with ``params`` of shape ``(D, transformer.num_params)``."""

    children = ("params",)
    static = ("transformer",)

    def __init__(self, transformer, params):
        self.transformer = transformer
        self.params = params

    def forward_and_log_det(self, x):
        y, log_det = self.transformer.forward_and_log_det(x, self.params.astype(x.dtype))
        return y, log_det.sum(-1)

    def inverse_and_log_det(self, y):
        x, log_det = self.transformer.inverse_and_log_det(y, self.params.astype(y.dtype))
        return x, log_det.sum(-1)


class TanhTransform(ParameterFreeTransform):
    """``y = tanh(x)`` on each coordinate, from the reals onto ``(-1, 1)``.

    A NumPyro transform (``event_dim == 0``), so a flow lifts it like NumPyro's own
    ``SigmoidTransform`` or ``SoftplusTransform``. The log-det is
    ``log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2 x))``, finite at any ``x``; the inverse
    clips ``y`` one ulp inside ``(-1, 1)``, where float precision runs out.
    """

    domain = constraints.real
    codomain = constraints.open_interval(-1.0, 1.0)
    sign = 1

    def __call__(self, x):
        return jnp.tanh(x)

    def _inverse(self, y):
        edge = 1.0 - jnp.finfo(jnp.result_type(y)).epsneg
        return jnp.arctanh(jnp.clip(y, -edge, edge))

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return 2.0 * (jnp.log(2.0) - x - jax.nn.softplus(-2.0 * x))


class LogitPreprocess(Transform):
    """``x = (sigmoid(y) - alpha) / (1 - 2 alpha)``: from logit space onto the data range.

    The last layer (target side) of an image flow whose data lie in ``[0, 1]``: in the
    density direction it maps ``x`` to ``y = logit(alpha + (1 - 2 alpha) x)`` (Dinh et al.
    2017, https://arxiv.org/abs/1605.08803, section 4.1, with ``1 - 2 alpha`` so that
    ``[0, 1]`` maps to the symmetric ``[logit(alpha), logit(1 - alpha)]``), and its log-det
    ``log(1 - 2 alpha) - log p - log(1 - p)``, ``p = alpha + (1 - 2 alpha) x``, counts in
    ``log p(x)``: the density stays one of ``x``, so bits/dim are the standard measure.
    A NumPyro transform with ``event_dim == 0``.

    Args:
        alpha: keeps ``p`` inside ``[alpha, 1 - alpha]``, away from the logit's poles
            (0.05 as in RealNVP and the PyTorch ``normflows`` library).
    """

    domain = constraints.real

    def __init__(self, alpha: float = 0.05):
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha}.")
        self.alpha = float(alpha)

    @property
    def codomain(self):
        margin = self.alpha / (1 - 2 * self.alpha)
        return constraints.open_interval(-margin, 1 + margin)

    def __call__(self, y):
        return (jax.nn.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)

    def _inverse(self, x):
        p = self.alpha + (1 - 2 * self.alpha) * x
        return jnp.log(p) - jnp.log1p(-p)

    def log_abs_det_jacobian(self, y, x, intermediates=None):
        # log sigmoid(y) + log sigmoid(-y) - log(1 - 2 alpha), finite at any y.
        return -jax.nn.softplus(-y) - jax.nn.softplus(y) - jnp.log1p(-2 * self.alpha)

    def tree_flatten(self):
        return (), ((), {"alpha": self.alpha})

    def __eq__(self, other):
        return isinstance(other, LogitPreprocess) and other.alpha == self.alpha

    def __hash__(self):
        return hash((LogitPreprocess, self.alpha))
