"""A transformer with free (unconditioned) parameters, one set per dimension; and the
elementwise ``tanh`` that NumPyro's transforms lack."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import ParameterFreeTransform

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
