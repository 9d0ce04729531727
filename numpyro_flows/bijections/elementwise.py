"""A transformer with free (unconditioned) parameters, one set per dimension."""

from __future__ import annotations

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
