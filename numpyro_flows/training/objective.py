"""The pure maximum-likelihood objective: ``init``/``step``/``loss`` over a ``TrainState``.

In the style of optax and BlackJAX, :func:`maximum_likelihood` returns pure functions
over an explicit :class:`TrainState`; ``step`` is jittable and runs under
:func:`jax.lax.scan`::

    trainer = maximum_likelihood(flow, optax.adam(1e-3))
    train_state = trainer.init(flow.init(key, dim))
    train_state, infos = jax.lax.scan(trainer.step, train_state, batches)  # (S, B, D)

The loss is the mean negative log-likelihood per example, in nats (Papamakarios et al.
2021, *Normalizing Flows for Probabilistic Modeling and Inference*, section 2.3.1,
https://arxiv.org/abs/1912.02762).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax

from numpyro_flows.density import standard_normal
from numpyro_flows.flows import Flow
from numpyro_flows.training._tree import all_finite, tree_where


class TrainState(NamedTuple):
    """What the next training step needs.

    Attributes:
        params: the flow's trainable parameters.
        opt_state: the optimiser's state.
        flow_state: BatchNorm running statistics (``None`` for flows without BatchNorm);
            updated from each batch, never by the optimiser.
        step: number of updates applied (rejected non-finite steps do not count).
    """

    params: Any
    opt_state: Any
    flow_state: Any
    step: jax.Array


class StepInfo(NamedTuple):
    """Diagnostics of one step.

    Attributes:
        loss: mean negative log-likelihood of the batch (training mode), before the update.
        grad_norm: global norm of the gradient.
        finite: whether the loss, gradient and updated params were all finite; if not, the
            step was rejected and the returned state equals the input state.
    """

    loss: jax.Array
    grad_norm: jax.Array
    finite: jax.Array


class MaximumLikelihood(NamedTuple):
    """Pure functions for maximum-likelihood training (see :func:`maximum_likelihood`).

    Attributes:
        init: ``init(params, flow_state=None) -> TrainState``.
        step: ``step(train_state, data, context=None, key=None) -> (TrainState, StepInfo)``,
            with ``data`` a ``(B, D)`` batch, ``context`` its ``(B, C)`` contexts and
            ``key`` a PRNG key for the step's randomness (dropout, dequantization noise);
            without a key, layers with dropout use the full network.
        loss: ``loss(params, flow_state, data, context=None) -> scalar``, the mean negative
            log-likelihood in evaluation mode (BatchNorm uses its running statistics,
            dropout is off).
    """

    init: Callable
    step: Callable
    loss: Callable


def negative_log_likelihood(
    flow: Flow,
    params,
    data,
    context=None,
    *,
    flow_state=None,
    training: bool = False,
    base_dist: dist.Distribution | None = None,
    rng_key=None,
) -> jax.Array:
    """Mean ``-log p(data | context)`` over the rows of ``data`` (one inverse pass).

    Args:
        flow: the architecture.
        params: its parameters.
        data: ``(N, D)``.
        context: ``(N, C)`` (or ``(C,)``, shared) for a conditional flow.
        flow_state: BatchNorm running statistics.
        training: BatchNorm layers normalise with the statistics of ``data``; with an
            ``rng_key``, layers with dropout drop units.
        base_dist: base distribution; default ``Normal(0, I)``.
        rng_key: the dropout key in training mode (see :meth:`Flow.transform`).
    """
    log_p = _log_likelihood(flow, params, data, context, flow_state, training, base_dist, rng_key)
    return -jnp.mean(log_p)


def _log_likelihood(flow, params, data, context, flow_state, training, base_dist, rng_key=None):
    """``log p(data | context)`` per row (one inverse pass)."""
    transform = flow.transform(
        params, context, state=flow_state, training=training, rng_key=rng_key
    )
    if base_dist is None:
        base_dist = standard_normal(_event_shape(flow, params, data), jnp.result_type(data))
    z, log_det = transform.inverse_and_log_det(data)
    return base_dist.log_prob(z) + log_det


def _event_shape(flow, params, data):
    """The flow's event shape, or the data's last axis for a layer that does not know it."""
    try:
        shape = flow.event_shape(params)
    except NotImplementedError:
        shape = None
    return (data.shape[-1],) if shape is None else tuple(shape)


def maximum_likelihood(
    flow: Flow,
    optimizer: optax.GradientTransformation,
    *,
    base_dist: dist.Distribution | None = None,
    momentum: float | None = None,
    dequantizer=None,
) -> MaximumLikelihood:
    """Pure ``init``/``step``/``loss`` functions for fitting ``flow`` to data by maximum
    likelihood with an optax ``optimizer``.

    ``step`` evaluates the loss in training mode (BatchNorm layers use batch statistics, as
    in Dinh et al. 2017, https://arxiv.org/abs/1605.08803, section 3.7; layers with dropout
    drop units with a key derived from the step's ``key``), applies the
    optimiser's update, then moves the running statistics towards the batch's with
    ``flow.update_state``. A step whose loss, gradient or new params are not finite is
    rejected (the state comes back unchanged, ``info.finite`` is ``False``), so a
    ``lax.scan`` of steps never carries NaN params.

    Args:
        flow: the architecture.
        optimizer: any optax gradient transformation.
        base_dist: base distribution; default ``Normal(0, I)``.
        momentum: BatchNorm running-statistics momentum, overriding the layers' own
            (``None``: each :class:`~numpyro_flows.layers.BatchNormLayer`'s
            ``momentum``, 0.1 by default).
        dequantizer: a :class:`~numpyro_flows.images.VariationalDequantization`: then
            ``params`` is ``{"flow": ..., "dequantizer": ...}``, ``data`` holds integer
            levels, ``step`` and ``loss`` take a PRNG ``key`` (the dequantization noise),
            and the loss is the variational bound ``-E_q[log p(x) - log q(u | k)]``.

    Returns:
        A :class:`MaximumLikelihood` of pure functions.
    """
    flow = flow.with_batch_norm_momentum(momentum)

    def init(params, flow_state=None) -> TrainState:
        return TrainState(params, optimizer.init(params), flow_state, jnp.zeros((), jnp.int32))

    def objective(params, flow_state, data, context, key, training):
        """The loss, and the data the flow saw (dequantized when there is a dequantizer)."""
        # Dropout only in training: its key is folded from the step's key, which the
        # dequantizer keeps using as it is (its noise does not change with dropout).
        dropout_key = jax.random.fold_in(key, 1) if training and key is not None else None
        likelihood = functools.partial(
            _log_likelihood,
            flow,
            context=context,
            flow_state=flow_state,
            training=training,
            base_dist=base_dist,
            rng_key=dropout_key,
        )
        if dequantizer is None:
            return -jnp.mean(likelihood(params, data)), data
        x, log_q = dequantizer(key, data, params["dequantizer"])
        return -jnp.mean(likelihood(params["flow"], x) - log_q), x

    def loss(params, flow_state, data, context=None, key=None):
        return objective(params, flow_state, data, context, key, False)[0]

    def step(train_state: TrainState, data, context=None, key=None):
        params, opt_state, flow_state, count = train_state

        def training_loss(p):
            return objective(p, flow_state, data, context, key, True)

        (value, x), grads = jax.value_and_grad(training_loss, has_aux=True)(params)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        flow_params = params if dequantizer is None else params["flow"]
        new_flow_state = flow.update_state(flow_params, flow_state, x, context)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(value) & jnp.isfinite(grad_norm) & all_finite(new_params)
        new = TrainState(new_params, new_opt_state, new_flow_state, count + 1)
        return tree_where(finite, new, train_state), StepInfo(value, grad_norm, finite)

    return MaximumLikelihood(init, step, loss)


__all__ = [
    "MaximumLikelihood",
    "StepInfo",
    "TrainState",
    "maximum_likelihood",
    "negative_log_likelihood",
]
