"""Masked autoregressive structure: a transformer whose parameters come from a MADE.

``y_i = tau(x_i; theta_i(x_{<i}, context))``. The forward pass (base -> target) is one
parallel network call: the sampling direction of an IAF guide (Kingma et al. 2016,
https://arxiv.org/abs/1606.04934). The inverse is sequential, ``D`` network calls. The MAF
orientation (Papamakarios et al. 2017, https://arxiv.org/abs/1705.07057), parallel in the
density direction, is ``Invert(MaskedAutoregressive(...))``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from numpyro_flows.bijections.base import Bijection, conditioner_input
from numpyro_flows.nn import MADE


class MaskedAutoregressive(Bijection):
    """Autoregressive bijection: ``transformer`` with parameters from ``made``.

    Args:
        transformer: an elementwise transformer (``Affine``, ``RationalQuadraticSpline``).
        made: the MADE config; ``made.num_params`` must equal ``transformer.num_params``.
        params: the MADE's parameters.
        context: optional context ``(..., C)`` when ``made.context_dim > 0``.
        rng_key: a PRNG key for the MADE's dropout (training); ``None``: the full network.
            The key is a leaf: one key is one fixed dropout mask, so the map stays a
            bijection (the sequential inverse sees the same units dropped).
    """

    children = ("params", "context", "rng_key")
    static = ("transformer", "made")
    rng_key = None  # bijections pickled before dropout existed have no key: no dropout

    def __init__(self, transformer, made: MADE, params, context=None, rng_key=None):
        if made.num_params != transformer.num_params:
            raise ValueError(
                f"MADE outputs {made.num_params} parameters per dimension but the "
                f"transformer needs {transformer.num_params}."
            )
        self.transformer = transformer
        self.made = made
        self.params = params
        self.context = context
        self.rng_key = rng_key

    def _theta(self, x):
        return self.made.apply(self.params, conditioner_input(x), self.context, self.rng_key)

    def forward_and_log_det(self, x):
        y, log_det = self.transformer.forward_and_log_det(x, self._theta(x))
        return y, log_det.sum(-1)

    def inverse_and_log_det(self, y):
        # After step i the first i+1 coordinates are exact, so D-1 steps fix all inputs
        # of the last conditioner call, which gives the exact x and its log-det.
        theta = jax.eval_shape(self._theta, y)
        x = jnp.zeros(theta.shape[:-1], jnp.result_type(y))

        def step(_, x):
            return self.transformer.inverse_and_log_det(y, self._theta(x))[0]

        x = jax.lax.fori_loop(0, y.shape[-1] - 1, step, x)
        x, log_det = self.transformer.inverse_and_log_det(y, self._theta(x))
        return x, log_det.sum(-1)
