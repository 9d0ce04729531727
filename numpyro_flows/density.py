"""Flows as distributions: :class:`FlowDistribution` and the model helper :func:`flow_module`.

A :class:`~numpyro_flows.flows.Flow` with its params is a density on ``R^D``: push a base
``Normal(0, I)`` through the flow's bijection (base -> target). ``log_prob`` takes the
inverse in one call (``inverse_and_log_det``), so for a MAF (Papamakarios et al. 2017,
https://arxiv.org/abs/1705.07057) it is a single parallel pass, and for coupling flows
(RealNVP, Glow, spline couplings) both directions are.

Fit one to data with :func:`numpyro_flows.training.fit`, or inside a NumPyro model::

    def model(data):
        flow_dist = flow_module("density", flows.maf(), dim=2)
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("x", flow_dist, obs=data)

    svi = SVI(model, lambda data: None, optax.adam(1e-3), Trace_ELBO())   # MLE
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.util import validate_sample

from numpyro_flows.flows import Flow


def standard_normal(dim, dtype=None) -> dist.Distribution:
    """The default base distribution: ``Normal(0, I)`` on ``R^dim`` (event shape ``(dim,)``),
    or on images when ``dim`` is an event shape ``(H, W, C)``."""
    shape = tuple(dim) if isinstance(dim, tuple | list) else (dim,)
    return dist.Normal(jnp.zeros(shape, dtype), 1.0).to_event(len(shape))


def params_dtype(params) -> np.dtype:
    """The floating dtype of a params pytree (JAX's default float if it has no float leaf)."""
    leaves = [
        a for a in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(a), jnp.floating)
    ]
    return jnp.result_type(*leaves) if leaves else jnp.zeros(()).dtype


class FlowDistribution(dist.TransformedDistribution):
    """A normalizing flow as a NumPyro distribution: ``x = T(z)``, ``z ~ base``.

    ``log p(x) = log base(T^{-1}(x; c)) + log|det dT^{-1}/dx|`` (Rezende and Mohamed 2015,
    https://arxiv.org/abs/1505.05770; Papamakarios et al. 2021,
    https://arxiv.org/abs/1912.02762), computed with one ``inverse_and_log_det`` call.

    Shapes: ``event_shape == (D,)`` with ``D`` the size the params were made for;
    ``batch_shape`` is the context's batch shape ``context.shape[:-1]`` (``()`` for an
    unconditional flow or a single context vector). ``sample(key, sample_shape)`` has shape
    ``sample_shape + batch_shape + (D,)``; ``log_prob(x)`` takes ``x`` of shape
    ``(..., D)`` broadcasting against ``batch_shape`` and returns its batch shape.

    Args:
        flow: the architecture, e.g. ``numpyro_flows.flows.maf()``.
        params: its parameters, from ``flow.init(rng_key, D, context_dim)`` or from fitting.
        context: ``(..., C)`` for a conditional flow (``flow.init(..., context_dim=C)``):
            the density is ``p(x | context)``; leading axes become batch axes.
        state: running statistics for flows with BatchNorm layers (from
            :func:`~numpyro_flows.training.fit`); the flow runs in evaluation mode.
        base_dist: base distribution with event shape ``(D,)``; default ``Normal(0, I)``.
        validate_args: NumPyro's argument validation.

    Example::

        result = fit(jax.random.key(0), flow, data)
        flow_dist = FlowDistribution(flow, result.params, state=result.state)
        flow_dist.log_prob(data)                          # (N,)
        flow_dist.sample(jax.random.key(1), (1000,))      # (1000, D)
    """

    pytree_data_fields = ("params", "context", "state")
    pytree_aux_fields = ("flow",)

    def __init__(
        self,
        flow: Flow,
        params: Any,
        *,
        context: Any = None,
        state: Any = None,
        base_dist: dist.Distribution | None = None,
        validate_args: bool | None = None,
    ):
        if not isinstance(flow, Flow):
            raise TypeError(
                f"flow must be a numpyro_flows Flow (e.g. numpyro_flows.flows.maf()), got "
                f"{type(flow).__name__}."
            )
        shape = tuple(flow.event_shape(params))
        dtype = params_dtype(params)
        if base_dist is None:
            base_dist = standard_normal(shape, dtype)
        if tuple(base_dist.event_shape) != shape:
            raise ValueError(
                f"base_dist has event shape {tuple(base_dist.event_shape)} but the flow's "
                f"params are for events of shape {shape}; use a base with event shape "
                f"{shape}, e.g. numpyro.distributions.Normal(jnp.zeros({shape}), "
                f"1.0).to_event({len(shape)})."
            )
        if context is not None and len(shape) > 1:
            raise ValueError("Image flows take no context.")
        if context is not None:
            context = jnp.asarray(context, dtype)
            if context.ndim == 0:
                raise ValueError(
                    "context must have shape (..., context_dim); for a scalar context use "
                    "context[..., None]."
                )
        self.flow, self.params, self.context, self.state = flow, params, context, state
        transform = flow.transform(params, context, state=state)
        batch_shape = jnp.broadcast_shapes(
            tuple(base_dist.batch_shape), () if context is None else context.shape[:-1]
        )
        if batch_shape != tuple(base_dist.batch_shape):
            base_dist = base_dist.expand(batch_shape)
        super().__init__(base_dist, transform, validate_args=validate_args)

    @property
    def transform(self):
        """The flow's bijection (base -> target), a NumPyro ``Transform``."""
        return self.transforms[0]

    @validate_sample
    def log_prob(self, value, intermediates=None):
        """``log p(value)`` (``log p(value | context)``), one ``inverse_and_log_det`` call.

        Args:
            value: ``(..., D)``.
            intermediates: from :meth:`sample_with_intermediates` (as NumPyro passes them
                for a latent site): the base draw and the forward log-det, so no inverse
                pass is needed.
        """
        if intermediates is not None:
            ((z, forward_log_det),) = intermediates
            return self.base_dist.log_prob(z) - forward_log_det
        value = check_data(value, self.event_shape, "value")
        z, log_det = self.transform.inverse_and_log_det(value)
        return self.base_dist.log_prob(z) + log_det


def check_data(data, dim, name: str = "data", *, batch: bool = False) -> jax.Array:
    """Checks the event axes (and, outside ``jit``, finiteness) of ``data``; returns an array.

    Args:
        data: ``(..., dim)`` (``(N, dim)`` when ``batch``), or ``(..., H, W, C)``.
        dim: the flow's event size, or its event shape (a tuple).
        name: how to call the argument in error messages.
        batch: require exactly one axis of rows in front of the event.
    """
    data = jnp.asarray(data)
    shape = tuple(dim) if isinstance(dim, tuple | list) else (dim,)
    if len(shape) == 1:
        dim = shape[0]
        if batch and data.ndim != 2:
            fix = f" (for one-dimensional data use {name}[:, None])" if data.ndim == 1 else ""
            raise ValueError(
                f"{name} must have shape (num_samples, dim); got shape {data.shape}{fix}."
            )
        if data.ndim == 0 or data.shape[-1] != dim:
            fix = f" (for one-dimensional data use {name}[..., None])" if dim == 1 else ""
            raise ValueError(
                f"{name} has shape {data.shape} but the flow's events have size {dim}: the "
                f"last axis must be {dim}{fix}."
            )
    elif data.shape[data.ndim - len(shape) :] != shape or data.ndim < len(shape) + batch:
        rows = "num_samples, " if batch else "..., "
        fix = (
            f" (add the channel axis: {name}[..., None])"
            if data.shape[data.ndim - len(shape) + 1 :] == shape[:-1] and shape[-1] == 1
            else ""
        )
        raise ValueError(
            f"{name} has shape {data.shape} but the flow's events are images of shape {shape}: "
            f"pass ({rows}{', '.join(map(str, shape))}), channels last{fix}."
        )
    if batch and data.ndim != len(shape) + 1:
        raise ValueError(
            f"{name} must have shape (num_samples, {', '.join(map(str, shape))}); got shape "
            f"{data.shape}."
        )
    if not isinstance(data, jax.core.Tracer):
        size = int(np.prod(shape))
        finite = np.isfinite(np.asarray(data)).reshape(-1, size).all(-1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            axes = tuple(range(-len(shape), 0))
            raise ValueError(
                f"{name} has {bad.size} row(s) with NaN or inf values (first at row "
                f"{bad[0]}); drop or impute them first, e.g. "
                f"{name} = {name}[np.isfinite({name}).all(axis={axes if len(axes) > 1 else -1})]."
            )
    return data


def flow_module(
    name: str,
    flow: Flow,
    dim: int,
    *,
    context: Any = None,
    context_dim: int | None = None,
    state: Any = None,
    base_dist: dist.Distribution | None = None,
    dtype=None,
) -> FlowDistribution:
    """A :class:`FlowDistribution` whose params are the NumPyro param site ``name``.

    Use it in a model for maximum-likelihood (or MAP) fitting with SVI and an empty guide,
    like ``numpyro.contrib.module.flax_module`` for networks. The params are initialised
    with ``flow.init`` from the seed of the param site. For ActNorm data initialisation,
    pass ``init_params={name: flow.data_init(params, data)[0]}`` to ``svi.init``/``svi.run``.

    Args:
        name: param site name.
        flow: the architecture.
        dim: event size ``D``.
        context: ``(..., C)`` for a conditional density ``p(x | context)``.
        context_dim: ``C`` (default: ``context.shape[-1]``, or 0 without a context).
        state: running statistics, for flows with BatchNorm layers. SVI cannot update
            them: fit such flows with :func:`~numpyro_flows.training.fit`.
        base_dist: base distribution with event shape ``(D,)``; default ``Normal(0, I)``.
        dtype: params dtype (default: the context's float dtype, else JAX's default).

    Example::

        def model(x, c):
            flow_dist = flow_module("p_x_given_c", flows.maf(), dim=1, context=c)
            with numpyro.plate("data", x.shape[0]):
                numpyro.sample("x", flow_dist, obs=x)

        svi = SVI(model, lambda x, c: None, optax.adam(3e-3), Trace_ELBO())
        params = svi.run(jax.random.key(0), 2000, x, c).params["p_x_given_c"]
    """
    if context is not None:
        context = jnp.asarray(context)
        if context_dim is None:
            context_dim = context.shape[-1] if context.ndim else 0
        if dtype is None and jnp.issubdtype(context.dtype, jnp.floating):
            dtype = context.dtype
    context_dim = context_dim or 0
    if state is None and flow.init_state(dim) is not None:
        raise ValueError(
            f"{flow.name} has BatchNorm layers, whose running statistics SVI cannot update: "
            "fit it with numpyro_flows.training.fit(...), or pass state=... (evaluation mode)."
        )
    params = numpyro.param(name, lambda key: flow.init(key, dim, context_dim, dtype))
    return FlowDistribution(flow, params, context=context, state=state, base_dist=base_dist)


__all__ = ["FlowDistribution", "check_data", "flow_module", "params_dtype", "standard_normal"]
