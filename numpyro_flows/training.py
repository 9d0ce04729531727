"""Maximum-likelihood fitting of flows to data.

Two levels, in the style of optax and BlackJAX:

* :func:`maximum_likelihood` returns pure ``init``/``step``/``loss`` functions over an
  explicit :class:`TrainState`; ``step`` is jittable and runs under :func:`jax.lax.scan`::

      trainer = maximum_likelihood(flow, optax.adam(1e-3))
      train_state = trainer.init(flow.init(key, dim))
      train_state, infos = jax.lax.scan(trainer.step, train_state, batches)  # (S, B, D)

* :func:`fit` is the loop a user wants: a validation split, shuffled minibatches, early
  stopping on the validation loss (returning the best params), ActNorm data-dependent
  initialisation, BatchNorm running statistics, a progress bar and a guard against
  non-finite losses. Diagnostics come back in a :class:`FitResult`; nothing is hidden in
  state.

The loss is the mean negative log-likelihood per example, in nats (Papamakarios et al.
2021, *Normalizing Flows for Probabilistic Modeling and Inference*, section 2.3.1,
https://arxiv.org/abs/1912.02762).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

from numpyro_flows.bijections import Affine
from numpyro_flows.density import check_data, params_dtype, standard_normal
from numpyro_flows.flows import Flow
from numpyro_flows.layers import (
    ActNormLayer,
    AutoregressiveLayer,
    BatchNormLayer,
    CouplingLayer,
    ElementwiseLayer,
    Layer,
    LULinearLayer,
)


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
        step: ``step(train_state, data, context=None) -> (TrainState, StepInfo)``, with
            ``data`` a ``(B, D)`` batch and ``context`` its ``(B, C)`` contexts.
        loss: ``loss(params, flow_state, data, context=None) -> scalar``, the mean negative
            log-likelihood in evaluation mode (BatchNorm uses its running statistics).
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
) -> jax.Array:
    """Mean ``-log p(data | context)`` over the rows of ``data`` (one inverse pass).

    Args:
        flow: the architecture.
        params: its parameters.
        data: ``(N, D)``.
        context: ``(N, C)`` (or ``(C,)``, shared) for a conditional flow.
        flow_state: BatchNorm running statistics.
        training: BatchNorm layers normalise with the statistics of ``data``.
        base_dist: base distribution; default ``Normal(0, I)``.
    """
    transform = flow.transform(params, context, state=flow_state, training=training)
    if base_dist is None:
        base_dist = standard_normal(data.shape[-1], jnp.result_type(data))
    z, log_det = transform.inverse_and_log_det(data)
    return -jnp.mean(base_dist.log_prob(z) + log_det)


def _tree_where(condition, new, old):
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def maximum_likelihood(
    flow: Flow,
    optimizer: optax.GradientTransformation,
    *,
    base_dist: dist.Distribution | None = None,
    momentum: float = 0.1,
) -> MaximumLikelihood:
    """Pure ``init``/``step``/``loss`` functions for fitting ``flow`` to data by maximum
    likelihood with an optax ``optimizer``.

    ``step`` evaluates the loss in training mode (BatchNorm layers use batch statistics, as
    in Dinh et al. 2017, https://arxiv.org/abs/1605.08803, section 3.7), applies the
    optimiser's update, then moves the running statistics towards the batch's with
    ``flow.update_state(..., momentum)``. A step whose loss, gradient or new params are not
    finite is rejected (the state comes back unchanged, ``info.finite`` is ``False``), so a
    ``lax.scan`` of steps never carries NaN params.

    Args:
        flow: the architecture.
        optimizer: any optax gradient transformation.
        base_dist: base distribution; default ``Normal(0, I)``.
        momentum: BatchNorm running-statistics momentum.

    Returns:
        A :class:`MaximumLikelihood` of pure functions.
    """

    def init(params, flow_state=None) -> TrainState:
        return TrainState(params, optimizer.init(params), flow_state, jnp.zeros((), jnp.int32))

    def loss(params, flow_state, data, context=None):
        return negative_log_likelihood(
            flow, params, data, context, flow_state=flow_state, base_dist=base_dist
        )

    def step(train_state: TrainState, data, context=None):
        params, opt_state, flow_state, count = train_state

        def training_loss(p):
            return negative_log_likelihood(
                flow, p, data, context, flow_state=flow_state, training=True, base_dist=base_dist
            )

        value, grads = jax.value_and_grad(training_loss)(params)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        new_flow_state = flow.update_state(params, flow_state, data, context, momentum)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(value) & jnp.isfinite(grad_norm) & _all_finite(new_params)
        new = TrainState(new_params, new_opt_state, new_flow_state, count + 1)
        return _tree_where(finite, new, train_state), StepInfo(value, grad_norm, finite)

    return MaximumLikelihood(init, step, loss)


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the params with the lowest validation loss (the last finite ones without a
            validation set).
        state: the BatchNorm running statistics that go with ``params`` (or ``None``); pass
            both to :class:`~numpyro_flows.density.FlowDistribution`.
        train_losses: ``(num_epochs_run,)`` mean training loss of each epoch.
        val_losses: ``(num_epochs_run,)`` validation loss after each epoch (empty without a
            validation set).
        best_epoch: index of the epoch whose params are returned (-1 when no epoch ran).
        num_steps: optimiser steps applied.
        stop_reason: ``"completed"``, ``"early_stopping"`` or ``"non_finite"``.
    """

    params: Any
    state: Any
    train_losses: np.ndarray
    val_losses: np.ndarray
    best_epoch: int
    num_steps: int
    stop_reason: str

    def __repr__(self) -> str:
        leaves = jax.tree.leaves(self.params)
        size = sum(int(np.size(leaf)) for leaf in leaves)
        losses = ""
        if len(self.train_losses):
            losses = f", last train loss={self.train_losses[-1]:.4g}"
        if len(self.val_losses):
            losses += f", best val loss={np.nanmin(self.val_losses):.4g}"
        return (
            f"FitResult(stop_reason={self.stop_reason!r}, epochs={len(self.train_losses)}, "
            f"best_epoch={self.best_epoch}, num_steps={self.num_steps}{losses}, "
            f"params={len(leaves)} arrays ({size} values), "
            f"state={'None' if self.state is None else 'BatchNorm statistics'})"
        )

    __str__ = __repr__


@functools.cache
def default_optimizer() -> optax.GradientTransformation:
    """Adam (1e-3) after clipping the gradient's global norm at 5.

    Affine flows fitted to data now and then produce a gradient a hundred times the
    typical size; unclipped, one such step inflates Adam's moment estimates and stalls
    the fit. One object per process, so that compiled epochs are reused (the optimizer is
    part of the compiled function's cache key).
    """
    return optax.chain(optax.clip_by_global_norm(5.0), optax.adam(1e-3))


@partial(jax.jit, static_argnames=("flow", "optimizer", "num_batches", "batch_size"))
def _run_epoch(
    flow,
    optimizer,
    train_state,
    rng_key,
    data,
    context,
    val,
    base_dist,
    momentum,
    *,
    num_batches,
    batch_size,
):
    """One pass over shuffled minibatches, then the validation loss (``None`` without a
    validation set ``val = (data, context)``). Stops applying updates at the first
    non-finite step, so the returned state holds the last finite params."""
    trainer = maximum_likelihood(flow, optimizer, base_dist=base_dist, momentum=momentum)
    order = jax.random.permutation(rng_key, data.shape[0])[: num_batches * batch_size]
    batches = (
        data[order].reshape(num_batches, batch_size, -1),
        None if context is None else context[order].reshape(num_batches, batch_size, -1),
    )

    def body(carry, batch):
        train_state, ok = carry
        new, info = trainer.step(train_state, *batch)
        ok = ok & info.finite
        # info.finite: whether this step was applied (none is after the first failure).
        return (_tree_where(ok, new, train_state), ok), info._replace(finite=ok)

    (train_state, _), infos = jax.lax.scan(body, (train_state, jnp.array(True)), batches)
    val_loss = (
        None if val is None else trainer.loss(train_state.params, train_state.flow_state, *val)
    )
    return train_state, infos, val_loss


@partial(jax.jit, static_argnames=("flow",))
def _data_init(flow, params, flow_state, data, context):
    params = flow.data_init(params, data, context, flow_state)
    # BatchNorm running statistics start at the statistics of the data reaching them.
    flow_state = flow.update_state(params, flow_state, data, context, momentum=1.0)
    return params, flow_state


def sublayers(layer: Layer) -> Iterator[Layer]:
    """Every layer spec inside ``layer`` (itself included), depth first."""
    yield layer
    for field in dataclasses.fields(layer) if dataclasses.is_dataclass(layer) else ():
        value = getattr(layer, field.name)
        for child in value if isinstance(value, tuple) else (value,):
            if isinstance(child, Layer):
                yield from sublayers(child)


_AFFINE_LAYERS = (ActNormLayer, BatchNormLayer, LULinearLayer)
_TRANSFORMER_LAYERS = (AutoregressiveLayer, CouplingLayer, ElementwiseLayer)


def is_affine_in_one_dimension(flow: Flow) -> bool:
    """Whether ``flow`` on 1-D events without a context is just an affine map.

    An autoregressive or coupling layer's first (only) coordinate sees no other input, so
    with an affine transformer its shift and scale are constants: a 1-D MAF, RealNVP or Glow
    is ``x = a z + b`` and fits a Gaussian, however deep.
    """

    def is_leaf(layer):
        return not any(isinstance(c, Layer) for c in list(sublayers(layer))[1:])

    def is_affine(layer):
        if isinstance(layer, _AFFINE_LAYERS):
            return True
        if isinstance(layer, _TRANSFORMER_LAYERS):
            return isinstance(layer.transformer, Affine)
        return False  # planar, radial, user layers: assume non-linear

    return all(is_affine(layer) for layer in sublayers(flow.layer) if is_leaf(layer))


def _split(rng_key, data, context, val_fraction):
    n = data.shape[0]
    num_val = int(round(n * val_fraction))
    if num_val == 0:
        return (data, context), None
    if num_val >= n:
        raise ValueError(
            f"val_fraction={val_fraction} leaves no training data out of {n} rows; use a "
            "smaller val_fraction or pass val_data."
        )
    order = np.asarray(jax.random.permutation(rng_key, n))
    val, train = order[:num_val], order[num_val:]

    def take(a, idx):
        return None if a is None else a[idx]

    return (data[train], take(context, train)), (data[val], take(context, val))


def _check_context(context, num_rows: int, name: str):
    if context is None:
        return None
    context = jnp.asarray(context)
    if context.ndim == 1:
        raise ValueError(
            f"{name} must have shape (num_samples, context_dim), one row per data row; got "
            f"shape {context.shape} (for a scalar context use {name}[:, None])."
        )
    if context.ndim != 2 or context.shape[0] != num_rows:
        raise ValueError(
            f"{name} must have shape (num_samples, context_dim) with num_samples = "
            f"{num_rows}, one row per data row; got shape {context.shape}."
        )
    return check_data(context, context.shape[-1], name)


def fit(
    rng_key,
    flow: Flow,
    data,
    *,
    context=None,
    params=None,
    state=None,
    optimizer: optax.GradientTransformation | None = None,
    num_epochs: int = 100,
    num_steps: int | None = None,
    batch_size: int = 256,
    val_fraction: float = 0.1,
    val_data=None,
    val_context=None,
    patience: int | None = 10,
    data_init: bool | None = None,
    base_dist: dist.Distribution | None = None,
    momentum: float = 0.1,
    progress_bar: bool = True,
) -> FitResult:
    """Fits ``flow`` to the rows of ``data`` (or ``p(data | context)``) by maximum likelihood.

    Each epoch shuffles the training rows and takes ``N_train // batch_size`` steps of
    ``optimizer`` (the whole epoch is one compiled ``lax.scan``; compiled epochs are reused
    across calls with an equal flow, optimizer object and batch layout), then computes the
    validation loss. Training stops after ``patience`` epochs without a new best validation
    loss, and the best params are returned.

    * **ActNorm** (Glow, Kingma and Dhariwal 2018, https://arxiv.org/abs/1807.03039):
      before training, layers are initialised from the first training batch with
      ``flow.data_init`` (``data_init=None`` does so when fresh params are created and the
      flow has ActNorm or BatchNorm layers).
    * **BatchNorm**: training mode (batch statistics) inside the loss, running statistics
      updated after each step, evaluation mode for the validation loss; they come back as
      ``result.state``, not in ``result.params``.
    * **Non-finite losses**: the first step with a non-finite loss, gradient or update
      stops training with a ``RuntimeWarning``; the returned params are the best finite
      ones seen (by validation loss, else the last finite ones).

    Args:
        rng_key: a JAX PRNG key (initialisation, validation split, shuffling).
        flow: the architecture, e.g. ``numpyro_flows.flows.maf()``.
        data: ``(N, D)`` training rows (NumPy or JAX); for 1-D data use ``data[:, None]``.
        context: ``(N, C)`` contexts, one per row, to fit ``p(x | c)`` (the params are
            made with ``context_dim=C``).
        params: initial params (default: ``flow.init``).
        state: initial BatchNorm statistics (default: ``flow.init_state``).
        optimizer: any optax transformation; default ``optax.adam(1e-3)``.
        num_epochs: maximum number of epochs.
        num_steps: maximum number of optimiser steps instead (rounded up to whole epochs).
        batch_size: rows per step (capped at the number of training rows).
        val_fraction: fraction of ``data`` held out for validation (ignored when
            ``val_data`` is given; ``0`` disables validation and early stopping).
        val_data: explicit ``(M, D)`` validation rows (and ``val_context``).
        val_context: ``(M, C)`` contexts of ``val_data``.
        patience: epochs without improvement before stopping (``None``: never stop early).
        data_init: run ``flow.data_init`` on the first batch (``None``: see above).
        base_dist: base distribution; default ``Normal(0, I)``.
        momentum: BatchNorm running-statistics momentum.
        progress_bar: show a tqdm bar (as NumPyro's ``svi.run``).

    Returns:
        A :class:`FitResult` with the best params, their BatchNorm state and loss histories.

    Example::

        flow = numpyro_flows.flows.neural_spline()
        result = fit(jax.random.key(0), flow, data, optimizer=optax.adam(3e-3))
        flow_dist = FlowDistribution(flow, result.params, state=result.state)
    """
    if not isinstance(flow, Flow):
        raise TypeError(
            f"flow must be a numpyro_flows Flow (e.g. numpyro_flows.flows.maf()), got "
            f"{type(flow).__name__}."
        )
    for name, value, low in (("num_epochs", num_epochs, 0), ("batch_size", batch_size, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    data = jnp.asarray(data)
    if not jnp.issubdtype(data.dtype, jnp.floating):
        data = data.astype(jnp.zeros(()).dtype)
    if data.ndim != 2:
        check_data(data, data.shape[-1] if data.ndim else 1, "data", batch=True)
    dim = data.shape[1]
    data = check_data(data, dim, "data", batch=True)
    if data.shape[0] == 0:
        raise ValueError(
            f"data has no rows (shape {tuple(data.shape)}): fit needs an (N, D) array with "
            "N >= 1 rows to learn from. Check how the data were loaded or filtered."
        )
    context = _check_context(context, data.shape[0], "context")
    optimizer = default_optimizer() if optimizer is None else optimizer

    init_key, split_key, batch_key, epoch_key = jax.random.split(rng_key, 4)
    if val_data is not None:
        val = (check_data(val_data, dim, "val_data", batch=True).astype(data.dtype), None)
        val = (val[0], _check_context(val_context, val[0].shape[0], "val_context"))
        if (val[1] is None) != (context is None):
            raise ValueError("Pass val_context exactly when context is given.")
        train = (data, context)
    else:
        train, val = _split(split_key, data, context, val_fraction)

    if context is None and dim == 1 and is_affine_in_one_dimension(flow):
        warnings.warn(
            f"{flow.name} on 1-D data without a context is an affine map of its base: the "
            "fit will be a Gaussian. Use numpyro_flows.flows.neural_spline() (or planar / "
            "radial) for 1-D densities.",
            UserWarning,
            stacklevel=2,
        )

    fresh = params is None
    if fresh:
        context_dim = 0 if context is None else context.shape[-1]
        params = flow.init(init_key, dim, context_dim, data.dtype)
    elif flow.event_size(params) != dim:
        raise ValueError(
            f"params are for events of size {flow.event_size(params)} but data has {dim} columns."
        )
    if state is None:
        state = flow.init_state(dim, params_dtype(params))
    num_train = train[0].shape[0]
    batch_size = min(int(batch_size), num_train)
    num_batches = num_train // batch_size
    if num_steps is not None:
        num_epochs = math.ceil(num_steps / num_batches)
    if data_init is None:
        data_init = fresh and any(
            isinstance(layer, (ActNormLayer, BatchNormLayer)) for layer in sublayers(flow.layer)
        )
    if data_init:
        order = np.asarray(jax.random.permutation(batch_key, num_train))
        first = order[:batch_size]
        params, state = _data_init(
            flow, params, state, train[0][first], None if train[1] is None else train[1][first]
        )

    train_state = maximum_likelihood(flow, optimizer).init(params, state)
    best = (params, state)
    best_loss, best_epoch, stop_reason = np.inf, -1, "completed"
    train_losses, val_losses = [], []
    from tqdm.auto import trange

    with trange(num_epochs, disable=not progress_bar, desc=f"fit {flow.name}") as bar:
        for epoch in bar:
            train_state, infos, val_loss = _run_epoch(
                flow,
                optimizer,
                train_state,
                jax.random.fold_in(epoch_key, epoch),
                *train,
                val,
                base_dist,
                momentum,
                num_batches=num_batches,
                batch_size=batch_size,
            )
            finite = np.asarray(infos.finite)
            losses = np.asarray(infos.loss)
            ok = bool(finite.all())
            train_losses.append(float(np.mean(losses[finite])) if finite.any() else np.nan)
            if val is not None:
                val_loss = float(val_loss)
                val_losses.append(val_loss)
                if val_loss < best_loss:
                    best_loss, best_epoch = val_loss, epoch
                    best = (train_state.params, train_state.flow_state)
                message = f"train {train_losses[-1]:.4f}, val {val_loss:.4f} (best {best_loss:.4f})"
            else:
                best, best_epoch = (train_state.params, train_state.flow_state), epoch
                message = f"train {train_losses[-1]:.4f}"
            bar.set_postfix_str(message, refresh=False)
            if not ok:
                stop_reason = "non_finite"
                bad_step = int(train_state.step) + 1
                warnings.warn(
                    f"Non-finite loss or gradient at step {bad_step} (epoch {epoch}): training "
                    f"stopped and the last finite params were kept (best epoch {best_epoch}). "
                    "Try a smaller learning rate, gradient clipping (optax.chain("
                    "optax.clip_by_global_norm(1.0), optax.adam(...))) or standardised data.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            if patience is not None and val is not None and epoch - best_epoch >= patience:
                stop_reason = "early_stopping"
                break
    if best_epoch < 0:  # no epoch finished with a finite validation loss
        best = (train_state.params, train_state.flow_state)
    return FitResult(
        params=best[0],
        state=best[1],
        train_losses=np.asarray(train_losses),
        val_losses=np.asarray(val_losses),
        best_epoch=best_epoch,
        num_steps=int(train_state.step),
        stop_reason=stop_reason,
    )


__all__ = [
    "FitResult",
    "MaximumLikelihood",
    "StepInfo",
    "TrainState",
    "default_optimizer",
    "fit",
    "is_affine_in_one_dimension",
    "maximum_likelihood",
    "negative_log_likelihood",
    "sublayers",
]
