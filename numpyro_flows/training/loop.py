"""The fitting loop: :func:`fit` and what it returns, :class:`FitResult`.

:func:`fit` is the loop a user wants on top of
:func:`~numpyro_flows.training.maximum_likelihood`: a validation split, shuffled
minibatches (each epoch one compiled ``lax.scan``), early stopping on the validation loss
(returning the best params), ActNorm data-dependent initialisation, BatchNorm running
statistics, a progress bar and a guard against non-finite losses. Diagnostics come back
in a :class:`FitResult`; nothing is hidden in state.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from functools import cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

from numpyro_flows._compile import package_jit
from numpyro_flows.density import params_dtype
from numpyro_flows.flows import Flow
from numpyro_flows.training._tree import tree_where
from numpyro_flows.training.data import check_context, check_training_data, train_val_split
from numpyro_flows.training.objective import maximum_likelihood


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the params with the lowest validation loss (the last finite ones without a
            validation set): of the params' moving average, unless ``fit(ema_decay=None)``.
        state: the BatchNorm running statistics that go with ``params`` (or ``None``); pass
            both to :class:`~numpyro_flows.density.FlowDistribution`.
        train_losses: ``(num_epochs_run,)`` mean training loss of each epoch.
        val_losses: ``(num_epochs_run,)`` validation loss after each epoch (empty without a
            validation set).
        best_epoch: index of the epoch whose params are returned (-1 when no epoch ran).
        num_steps: optimiser steps applied.
        stop_reason: ``"completed"``, ``"early_stopping"`` or ``"non_finite"``.
        dequantizer_params: the trained parameters of a
            :class:`~numpyro_flows.images.VariationalDequantization` (``None`` otherwise).
        epoch_seconds: ``(num_epochs_run,)`` wall time of each epoch, validation included
            (the first one compiles, unless an earlier call with the same flow, optimizer
            and batch layout did).
    """

    params: Any
    state: Any
    train_losses: np.ndarray
    val_losses: np.ndarray
    best_epoch: int
    num_steps: int
    stop_reason: str
    dequantizer_params: Any = None
    epoch_seconds: np.ndarray | None = None

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


@cache
def default_optimizer() -> optax.GradientTransformation:
    """Adam (1e-3) after clipping the gradient's global norm at 5.

    Affine flows fitted to data now and then produce a gradient a hundred times the
    typical size; unclipped, one such step inflates Adam's moment estimates and stalls
    the fit. One object per process, so that compiled epochs are reused (the optimizer is
    part of the compiled function's cache key).
    """
    return optax.chain(optax.clip_by_global_norm(5.0), optax.adam(1e-3))


def is_affine_in_one_dimension(flow: Flow) -> bool:
    """Whether ``flow`` on 1-D events without a context is just an affine map.

    An autoregressive or coupling layer's first (only) coordinate sees no other input, so
    with an affine transformer its shift and scale are constants: a 1-D MAF, RealNVP or Glow
    is ``x = a z + b`` and fits a Gaussian, however deep. Each layer answers for itself
    (:meth:`~numpyro_flows.layers.Layer.is_affine_in_one_dimension`).
    """
    return flow.layer.is_affine_in_one_dimension()


def fit(
    rng_key,
    flow: Flow,
    data,
    *,
    context=None,
    params=None,
    state=None,
    optimizer: optax.GradientTransformation | None = None,
    num_epochs: int = 200,
    num_steps: int | None = None,
    batch_size: int = 128,
    val_fraction: float = 0.1,
    val_data=None,
    val_context=None,
    patience: int | None = 20,
    ema_decay: float | None = 0.98,
    data_init: bool | None = None,
    base_dist: dist.Distribution | None = None,
    momentum: float | None = None,
    dequantize: Callable | None = None,
    progress_bar: bool = True,
) -> FitResult:
    """Fits ``flow`` to the rows of ``data`` (or ``p(data | context)``) by maximum likelihood.

    Each epoch shuffles the training rows and takes ``ceil(N_train / batch_size)`` steps of
    ``optimizer``, so that every row trains in every epoch; the last batch is filled up
    with rows from the start of the epoch's shuffle, so all batches have one size (the
    whole epoch is one compiled ``lax.scan``; compiled epochs are reused across calls with
    an equal flow, optimizer object and batch layout). Then it computes the validation
    loss. Training stops after ``patience`` epochs in which neither the validation loss
    nor its mean over the last 10 epochs reached a new minimum, and the params with the
    lowest validation loss are returned. The mean keeps a chance low of a noisy validation
    loss from stopping a fit that is still improving.

    The defaults (batch 128, patience 20, at most 200 epochs, Adam 1e-3 with clipping;
    the parameter averaging below was measured after them) come from a study on four 2-D
    and 8-D data sets (those of ``benchmarks/density.py``): batches of 128 instead of 256
    (twice the steps per epoch) gave affine flows 0.01-0.11 nats more held-out
    log-likelihood on every set, and a patience of 20 instead of 10 up to 0.15 more where
    training was still improving (a validation loss on a few hundred rows is noisy, and a
    short patience stops at a chance dip); elsewhere it was noise.

    * **ActNorm** (Glow, Kingma and Dhariwal 2018, https://arxiv.org/abs/1807.03039):
      before training, layers are initialised from the first training batch with
      ``flow.data_init`` (``data_init=None`` does so when fresh params are created and the
      flow has ActNorm or BatchNorm layers); BatchNorm running statistics start at the
      statistics of that batch.
    * **BatchNorm**: training mode (batch statistics) inside the loss, running statistics
      updated after each step, evaluation mode for the validation loss; they come back as
      ``result.state``, not in ``result.params``.
    * **Dropout** (``flows.maf(dropout=...)``): every training step drops units with a
      fresh key (so ``train_losses`` are those of the thinned networks); the validation
      loss and the returned params' later use are evaluated with the full network.
    * **Parameter averaging** (Polyak and Juditsky 1992; the code of Flow++, Ho et al.
      2019, https://arxiv.org/abs/1902.00275, trains with one, decay 0.999): the
      optimiser moves the iterates, and after every step
      ``average += (1 - ema_decay) * (iterate - average)``.
      The validation loss, early stopping and the returned params use the average, which
      smooths away the step-to-step noise of Adam. At the default 0.98 it spans the last
      ~50 steps. Measured at ``fit``'s other defaults on the data of
      ``benchmarks/density.py`` (medians of 6 seeds, held-out log-likelihood, iterates ->
      average): MAF -9.713 -> -9.696 and RealNVP -9.671 -> -9.644 on the 8-D bananas,
      -2.085 -> -2.059 and -2.139 -> -2.115 on the checkerboard, -1.905 -> -1.878 and
      -1.892 -> -1.872 on two moons, and a 1-D affine fit -2.1487 -> -2.1478 (the
      Gaussian's maximum likelihood: -2.148); 0.995 was within 0.003 of 0.98, 0.9 behind
      it. A multiscale Glow on the digits after 30 epochs: 2.200 -> 2.174 bits/dim (two
      seeds). Fits run more epochs (the average improves for longer); an epoch took
      0.93-1.04x as long (one process, alternating, MAF, RealNVP, spline and Glow).
    * **Non-finite losses**: the first step with a non-finite loss, gradient or update
      stops training with a ``RuntimeWarning``; the returned params are the best finite
      ones seen (by validation loss, else the last finite ones).

    Args:
        rng_key: a JAX PRNG key (initialisation, validation split, shuffling, dropout).
        flow: the architecture, e.g. ``numpyro_flows.flows.maf()``.
        data: ``(N, D)`` training rows (NumPy or JAX); for 1-D data use ``data[:, None]``.
            An image flow (:func:`~numpyro_flows.flows.multiscale_glow`) takes images
            ``(N, H, W, C)``.
        context: ``(N, C)`` contexts, one per row, to fit ``p(x | c)`` (the params are
            made with ``context_dim=C``).
        params: initial params (default: ``flow.init``).
        state: initial BatchNorm statistics (default: ``flow.init_state``).
        optimizer: any optax transformation; default :func:`default_optimizer`.
        num_epochs: maximum number of epochs.
        num_steps: maximum number of optimiser steps instead (rounded up to whole epochs).
        batch_size: rows per step (capped at the number of training rows).
        val_fraction: fraction of ``data`` held out for validation (ignored when
            ``val_data`` is given; ``0`` disables validation and early stopping).
        val_data: explicit ``(M, D)`` validation rows (and ``val_context``).
        val_context: ``(M, C)`` contexts of ``val_data``.
        patience: epochs without improvement (of the validation loss or its 10-epoch
            mean) before stopping (``None``: never stop early).
        ema_decay: the params that are validated and returned are an exponential moving
            average of the iterates, updated after every step with this decay (Polyak
            averaging; ``None``: the iterates themselves). See below.
        data_init: run ``flow.data_init`` on the first batch (``None``: see above).
        base_dist: base distribution; default ``Normal(0, I)``.
        momentum: BatchNorm running-statistics momentum, overriding the layers' own
            (``None``: each :class:`~numpyro_flows.layers.BatchNormLayer`'s
            ``momentum``, 0.1 by default).
        dequantize: for discrete data, e.g.
            :class:`~numpyro_flows.images.UniformDequantization`: ``data`` hold integer
            levels, and every training batch is dequantized with fresh noise
            (``dequantize(rng_key, batch)``); the validation set once, with fixed noise.
            Losses are then nats per example of the dequantized data
            (:func:`~numpyro_flows.images.bits_per_dim` converts them). A
            :class:`~numpyro_flows.images.VariationalDequantization` is trained with the
            flow (losses are then its variational bound) and comes back as
            ``result.dequantizer_params``.
        progress_bar: show a tqdm bar (as NumPyro's ``svi.run``).

    Returns:
        A :class:`FitResult` with the best params, their BatchNorm state and loss histories.

    Example::

        flow = numpyro_flows.flows.neural_spline(coupling=True, invert=True)
        result = fit(jax.random.key(0), flow, data)
        flow_dist = FlowDistribution(flow, result.params, state=result.state)
    """
    _check_settings(flow, num_epochs, batch_size, val_fraction, ema_decay)
    data = check_training_data(data, flow.layer.event_ndim)
    dim = data.shape[1] if data.ndim == 2 else tuple(data.shape[1:])
    context = check_context(context, data.shape[0])
    if dequantize is not None and hasattr(dequantize, "check"):
        dequantize.check(data, "data")
        if val_data is not None:
            dequantize.check(val_data, "val_data")
    optimizer = default_optimizer() if optimizer is None else optimizer

    init_key, split_key, batch_key, epoch_key = jax.random.split(rng_key, 4)
    noise_key = jax.random.fold_in(split_key, 1)
    train, val = train_val_split(
        split_key,
        data,
        context,
        val_fraction=val_fraction,
        val_data=val_data,
        val_context=val_context,
    )
    if context is None and dim == 1 and is_affine_in_one_dimension(flow):
        warnings.warn(
            f"{flow.name} on 1-D data without a context is an affine map of its base: the "
            "fit will be a Gaussian. Use numpyro_flows.flows.neural_spline() (or planar / "
            "radial) for 1-D densities.",
            UserWarning,
            stacklevel=2,
        )

    variational = _is_variational(dequantize)
    if dequantize is not None and val is not None and not variational:
        val = (dequantize(noise_key, val[0]), val[1])
    fresh = params is None
    params, state = _initial_params(init_key, flow, params, state, dim, context, data.dtype)
    num_train = train[0].shape[0]
    batch_size, num_batches, num_epochs = _batch_layout(
        num_train, batch_size, num_epochs, num_steps
    )
    if data_init is None:
        data_init = fresh and flow.layer.is_data_dependent()
    if variational:
        if data.ndim != 4:
            raise ValueError(
                "VariationalDequantization is for images (N, H, W, C) (its networks are "
                "convolutions); use UniformDequantization for vectors."
            )
        dequantizer_params = dequantize.init(noise_key, dim, params_dtype(params))
    if data_init:
        first = np.asarray(jax.random.permutation(batch_key, num_train))[:batch_size]
        first_batch = tuple(None if a is None else a[first] for a in train)
        if variational:
            x = dequantize(noise_key, first_batch[0], dequantizer_params)[0]
            first_batch = (x, first_batch[1])
        elif dequantize is not None:
            first_batch = (dequantize(noise_key, first_batch[0]), first_batch[1])
        params, state = _data_init(flow, params, state, *first_batch)
    if variational:
        # The dequantizer's params train with the flow's; fit returns them apart.
        params = {"flow": params, "dequantizer": dequantizer_params}

    flow = flow.with_batch_norm_momentum(momentum)

    def run_epoch(carry, epoch):
        train_state, average, infos, val_loss = _epoch_runner(flow.layer.event_ndim == 1)(
            flow,
            optimizer,
            *carry,
            jax.random.fold_in(epoch_key, epoch),
            *train,
            val,
            base_dist,
            num_batches=num_batches,
            batch_size=batch_size,
            dequantize=dequantize,
            ema_decay=ema_decay,
        )
        return (train_state, average), infos, val_loss

    train_state = maximum_likelihood(flow, optimizer).init(params, state)
    # The running average starts at the initial (data-initialised) params.
    carry = (train_state, None if ema_decay is None else params)
    history = _History(has_val=val is not None)
    result = _train(run_epoch, carry, history, num_epochs, patience, flow.name, progress_bar)
    if variational:
        result = result._replace(
            params=result.params["flow"], dequantizer_params=result.params["dequantizer"]
        )
    return result


def _check_settings(flow, num_epochs, batch_size, val_fraction, ema_decay) -> None:
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
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(
            f"ema_decay must be in [0, 1) (e.g. 0.98), or None to return the iterates "
            f"themselves; got {ema_decay!r}."
        )


def _is_variational(dequantize) -> bool:
    """Whether ``dequantize`` has params of its own (a variational dequantizer)."""
    return dequantize is not None and hasattr(dequantize, "init")


def _initial_params(rng_key, flow, params, state, dim, context, dtype):
    """Fresh params (or checks the given ones against the data's event, ``dim``: ``D`` or
    ``(H, W, C)``) and the BatchNorm state."""
    if params is None:
        context_dim = 0 if context is None else context.shape[-1]
        params = flow.init(rng_key, dim, context_dim, dtype)
    elif isinstance(dim, tuple) and tuple(flow.event_shape(params)) != dim:
        raise ValueError(
            f"params are for images of shape {tuple(flow.event_shape(params))} but data has "
            f"images of shape {dim}."
        )
    elif not isinstance(dim, tuple) and flow.event_size(params) != dim:
        raise ValueError(
            f"params are for events of size {flow.event_size(params)} but data has {dim} columns."
        )
    if state is None:
        state = flow.init_state(dim, params_dtype(params))
    return params, state


def _batch_layout(num_train, batch_size, num_epochs, num_steps):
    """``(batch_size, num_batches, num_epochs)``: the batch size capped at ``num_train``,
    steps per epoch, and the epochs that ``num_steps`` (if given) needs."""
    batch_size = min(int(batch_size), num_train)
    num_batches = -(-num_train // batch_size)
    if num_steps is not None:
        num_epochs = math.ceil(num_steps / num_batches)
    return batch_size, num_batches, num_epochs


@partial(jax.jit, static_argnames=("flow",))
def _data_init(flow, params, state, data, context):
    return flow.data_init(params, data, context, state)


@cache
def _epoch_runner(vector_flow: bool):
    """``_run_epoch`` compiled once per flow, optimiser and batch shape in a process. For
    vector flows at the package's CPU options (XLA level 1: the first fit of a MAF, RealNVP
    or spline on 8-D data compiled 0.7-1.4 s sooner, at the same time per epoch). Image
    flows keep XLA's default level: on the digits at level 1 their first fit compiled
    0.3-0.6 s sooner but each epoch ran 4-9% slower (Glow and RealNVP, in one process,
    on one thread and on XLA's default threads, 2026-12-02). Created on first use, not at
    import, where asking for JAX's backend would initialise it."""
    static = ("flow", "optimizer", "num_batches", "batch_size", "dequantize", "ema_decay")
    if vector_flow:
        return package_jit(_run_epoch, static_argnames=static)
    return jax.jit(_run_epoch, static_argnames=static)


def _run_epoch(
    flow,
    optimizer,
    train_state,
    average,
    rng_key,
    data,
    context,
    val,
    base_dist,
    *,
    num_batches,
    batch_size,
    dequantize=None,
    ema_decay=None,
):
    """One pass over shuffled minibatches, then the validation loss (``None`` without a
    validation set ``val = (data, context)``) of the params' running ``average`` (of the
    params themselves when ``ema_decay`` is ``None``, ``average`` then ``None``). Stops
    applying updates at the first non-finite step, so the returned state holds the last
    finite params."""
    variational = _is_variational(dequantize)
    trainer = maximum_likelihood(
        flow, optimizer, base_dist=base_dist, dequantizer=dequantize if variational else None
    )
    order_key, noise_key = jax.random.split(rng_key)
    order = jax.random.permutation(order_key, data.shape[0])
    # A partial last batch is completed from the start of the shuffle: every row trains
    # in every epoch, and every step has one batch shape.
    order = jnp.concatenate([order, order[: num_batches * batch_size - data.shape[0]]])
    batches = (
        data[order].reshape((num_batches, batch_size) + data.shape[1:]),
        None if context is None else context[order].reshape(num_batches, batch_size, -1),
        jax.random.split(noise_key, num_batches),
    )

    def body(carry, batch):
        train_state, average, ok = carry
        data, context, key = batch
        if dequantize is not None and not variational:
            data = dequantize(key, data)  # a variational dequantizer is part of the loss
        # The key also drives dropout and the variational dequantizer's noise in the step.
        new, info = trainer.step(train_state, data, context, key)
        ok = ok & info.finite
        # info.finite: whether this step was applied (none is after the first failure).
        new = tree_where(ok, new, train_state)
        if ema_decay is not None:  # a rejected step leaves the params, and so the average
            average = jax.tree.map(
                lambda a, p: a + (1.0 - ema_decay) * (p - a), average, new.params
            )
        return (new, average, ok), info._replace(finite=ok)

    (train_state, average, _), infos = jax.lax.scan(
        body, (train_state, average, jnp.array(True)), batches
    )
    evaluated = _evaluated((train_state, average))[0]
    # With a variational dequantizer the validation levels get the same noise every epoch.
    val_key = (jax.random.key(0),) if variational else ()
    val_loss = (
        None if val is None else trainer.loss(evaluated, train_state.flow_state, *val, *val_key)
    )
    return train_state, average, infos, val_loss


# Early stopping also watches the mean validation loss of the last VAL_WINDOW epochs. On the
# raw loss of a few hundred validation rows, 10 epochs without a new minimum came by chance
# while training still improved (at patience 10, FlowJAX's protocol in
# benchmarks/density.py: stops after 40-55 of 100 epochs, 0.03-0.06 nats lost). A new
# minimum of the mean means, near its minimum, a loss below that of VAL_WINDOW epochs
# before; on a plateau the mean stops improving within VAL_WINDOW epochs.
VAL_WINDOW = 10


@dataclasses.dataclass
class _History:
    """Loss histories and the best params so far (by validation loss, else the last)."""

    has_val: bool
    best: tuple | None = None
    best_loss: float = np.inf
    best_epoch: int = -1
    # Early stopping also watches the VAL_WINDOW-epoch mean of the validation loss.
    smoothed_best: float = np.inf
    smoothed_best_epoch: int = -1
    train_losses: list = dataclasses.field(default_factory=list)
    val_losses: list = dataclasses.field(default_factory=list)
    epoch_seconds: list = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def record(self, epoch: int, carry, infos, val_loss) -> str:
        """Adds an epoch (``carry``: the train state and the params' running average, or
        ``None``); returns the progress bar's message."""
        finite, losses = np.asarray(infos.finite), np.asarray(infos.loss)  # waits for it
        now = time.perf_counter()
        self.epoch_seconds.append(now - self.started)
        self.started = now
        self.train_losses.append(float(np.mean(losses[finite])) if finite.any() else np.nan)
        current = _evaluated(carry)
        if not self.has_val:
            self.best, self.best_epoch = current, epoch
            return f"train {self.train_losses[-1]:.4f}"
        val_loss = float(val_loss)
        self.val_losses.append(val_loss)
        if val_loss < self.best_loss:
            self.best, self.best_loss, self.best_epoch = current, val_loss, epoch
        smoothed = np.mean(self.val_losses[-VAL_WINDOW:])
        if smoothed < self.smoothed_best:  # False for NaN
            self.smoothed_best, self.smoothed_best_epoch = smoothed, epoch
        return f"train {self.train_losses[-1]:.4f}, val {val_loss:.4f} (best {self.best_loss:.4f})"

    def result(self, carry, stop_reason: str) -> FitResult:
        """The :class:`FitResult` of a run that ended at ``carry``."""
        train_state = carry[0]
        if self.best_epoch < 0:  # no epoch ran, or none gave a finite validation loss
            params, state = _evaluated(carry)
        else:
            params, state = self.best
        return FitResult(
            params=params,
            state=state,
            train_losses=np.asarray(self.train_losses),
            val_losses=np.asarray(self.val_losses),
            best_epoch=self.best_epoch,
            num_steps=int(train_state.step),
            stop_reason=stop_reason,
            epoch_seconds=np.asarray(self.epoch_seconds),
        )


def _evaluated(carry) -> tuple:
    """``(params, flow_state)`` that a run at ``carry`` validates and returns: the params'
    running average where there is one."""
    train_state, average = carry
    params = train_state.params if average is None else average
    return params, train_state.flow_state


def _train(run_epoch, carry, history, num_epochs, patience, name, progress_bar):
    """Runs epochs until done, early stopping or the first non-finite step."""
    from tqdm.auto import trange

    stop_reason = "completed"
    history.started = time.perf_counter()
    with trange(num_epochs, disable=not progress_bar, desc=f"fit {name}") as bar:
        for epoch in bar:
            carry, infos, val_loss = run_epoch(carry, epoch)
            bar.set_postfix_str(history.record(epoch, carry, infos, val_loss), refresh=False)
            if not np.asarray(infos.finite).all():
                stop_reason = "non_finite"
                warnings.warn(
                    f"Non-finite loss or gradient at step {int(carry[0].step) + 1} (epoch "
                    f"{epoch}): training stopped and the last finite params were kept (best "
                    f"epoch {history.best_epoch}). Try a smaller learning rate, gradient "
                    "clipping (optax.chain(optax.clip_by_global_norm(1.0), optax.adam(...))) "
                    "or standardised data.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                break
            stalled = epoch - max(history.best_epoch, history.smoothed_best_epoch)
            if patience is not None and history.has_val and stalled >= patience:
                stop_reason = "early_stopping"
                break
    return history.result(carry, stop_reason)


__all__ = ["FitResult", "default_optimizer", "fit", "is_affine_in_one_dimension"]
