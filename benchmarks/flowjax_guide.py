"""FlowJAX flows as NumPyro guides, for the benchmarks only (FlowJAX is not a dependency of
numpyro_flows; install it with ``pip install -r benchmarks/requirements.txt``).

``AutoFlowJax(model, make_flow)`` is an ``AutoContinuous`` whose posterior is a FlowJAX
``Transformed`` distribution with a standard normal base; its trainable arrays are one
NumPyro param (a pytree), the rest is static. Flows are built in the sampling-fast
orientation (``invert=False``), as a guide needs.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpyro
import numpyro.distributions as dist
from flowjax.bijections import RationalQuadraticSpline
from flowjax.distributions import Normal
from flowjax.flows import coupling_flow, masked_autoregressive_flow
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform
from numpyro.infer.autoguide import AutoContinuous


class _FlowJaxDistribution(dist.Distribution):
    support = constraints.real_vector

    def __init__(self, flow):
        self.flow = flow
        super().__init__(batch_shape=(), event_shape=flow.shape)

    def sample_with_intermediates(self, key, sample_shape=()):
        x, log_q = self.flow.sample_and_log_prob(key, sample_shape)
        return x, [log_q]

    def sample(self, key, sample_shape=()):
        return self.flow.sample(key, sample_shape)

    def log_prob(self, value, intermediates=None):
        if intermediates:
            return intermediates[0]
        return self.flow.log_prob(value)


class _FlowJaxTransform(Transform):
    """The flow's bijection (base -> target) as a NumPyro transform (no inverse needed)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, bijection):
        self.bijection = bijection

    def _forward(self, x):
        fn = self.bijection.transform_and_log_det
        for _ in range(x.ndim - 1):
            fn = jax.vmap(fn)
        return fn(x)

    def __call__(self, x):
        return self._forward(x)[0]

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return self._forward(x)[1]

    def tree_flatten(self):
        return (self.bijection,), (("bijection",), {})


class AutoFlowJax(AutoContinuous):
    """A FlowJAX flow as a NumPyro guide: ``make_flow(key, dim) -> Transformed``."""

    def __init__(self, model, make_flow, *, prefix="auto", **kwargs):
        self._make_flow = make_flow
        self._static = None
        super().__init__(model, prefix=prefix, **kwargs)

    def _split(self):
        if self._static is None:
            flow = self._make_flow(jr.key(0), self.latent_dim)
            self._init_params, self._static = eqx.partition(flow, eqx.is_inexact_array)
        return self._init_params, self._static

    def _flow(self):
        init, static = self._split()
        params = numpyro.param(f"{self.prefix}_flowjax", init)
        return eqx.combine(params, static)

    def _get_posterior(self):
        return _FlowJaxDistribution(self._flow())

    def get_base_dist(self):
        return dist.Normal(jnp.zeros(self.latent_dim), 1.0).to_event(1)

    def get_transform(self, params):
        flow = numpyro.handlers.substitute(self._flow, params)()
        import paramax

        return _FlowJaxTransform(paramax.unwrap(flow).bijection)


def _maf(key, dim, transformer=None):
    return masked_autoregressive_flow(
        key,
        base_dist=Normal(jnp.zeros(dim)),
        transformer=transformer,
        invert=False,
        flow_layers=3,
        nn_width=max(2 * dim, 16),
    )


def _coupling(key, dim, transformer=None):
    return coupling_flow(
        key,
        base_dist=Normal(jnp.zeros(dim)),
        transformer=transformer,
        invert=False,
        flow_layers=4,
        nn_width=max(2 * dim, 16),
    )


FLOWJAX = {
    "flowjax.MAF(affine)": lambda m, **kw: AutoFlowJax(m, _maf, **kw),
    "flowjax.MAF(spline)": lambda m, **kw: AutoFlowJax(
        m, lambda k, d: _maf(k, d, RationalQuadraticSpline(knots=8, interval=5)), **kw
    ),
    "flowjax.coupling(spline)": lambda m, **kw: AutoFlowJax(
        m, lambda k, d: _coupling(k, d, RationalQuadraticSpline(knots=8, interval=5)), **kw
    ),
}
