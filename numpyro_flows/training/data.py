"""Checks of the data given to :func:`~numpyro_flows.training.fit`, and the validation split.

The event-axis and finiteness check itself is
:func:`numpyro_flows.density.check_data`, the one that
:class:`~numpyro_flows.density.FlowDistribution` runs on the values it scores; the
functions here add what fitting needs on top: float rows, at least one of them, one
context row per data row, and a held-out validation set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_flows.density import check_data

Pair = tuple[jax.Array, jax.Array | None]


def check_training_data(data, event_ndim: int = 1) -> jax.Array:
    """``data`` as an ``(N, D)`` float array with ``N >= 1`` finite rows (``(N, H, W, C)``
    images for ``event_ndim=3``).

    Integer data are cast to JAX's default float.

    Raises:
        ValueError: for another shape, no rows, or a row with NaN or inf values.
    """
    data = jnp.asarray(data)
    if not jnp.issubdtype(data.dtype, jnp.floating):
        data = data.astype(jnp.zeros(()).dtype)
    if event_ndim > 1:
        if data.ndim != event_ndim + 1:
            fix = " (add the channel axis: data[..., None])" if data.ndim == event_ndim else ""
            raise ValueError(
                f"An image flow fits images of shape (num_samples, height, width, channels); "
                f"got data of shape {data.shape}{fix}."
            )
        data = check_data(data, tuple(data.shape[1:]), "data", batch=True)
    else:
        if data.ndim != 2:
            check_data(data, data.shape[-1] if data.ndim else 1, "data", batch=True)
        data = check_data(data, data.shape[1], "data", batch=True)
    if data.shape[0] == 0:
        raise ValueError(
            f"data has no rows (shape {tuple(data.shape)}): fit needs an (N, D) array with "
            "N >= 1 rows to learn from. Check how the data were loaded or filtered."
        )
    return data


def check_context(context, num_rows: int, name: str = "context") -> jax.Array | None:
    """``context`` as a finite ``(num_rows, C)`` array, one row per data row (or ``None``).

    Raises:
        ValueError: naming ``name``, for another shape or non-finite values.
    """
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


def train_val_split(
    rng_key,
    data: jax.Array,
    context: jax.Array | None = None,
    *,
    val_fraction: float = 0.1,
    val_data=None,
    val_context=None,
) -> tuple[Pair, Pair | None]:
    """Training and validation ``(data, context)`` pairs.

    With ``val_data`` (checked, and cast to ``data``'s dtype) all of ``data`` trains;
    otherwise ``round(N * val_fraction)`` random rows are held out (none: no validation
    set, ``None``).

    Args:
        rng_key: a JAX PRNG key for the random split.
        data: ``(N, D)`` rows, from :func:`check_training_data`.
        context: their ``(N, C)`` contexts, from :func:`check_context`.
        val_fraction: fraction of rows held out when ``val_data`` is not given.
        val_data: explicit ``(M, D)`` validation rows.
        val_context: their ``(M, C)`` contexts, exactly when ``context`` is given.

    Returns:
        ``(train, val)``, each a ``(data, context)`` pair; ``val`` is ``None`` when no row
        is held out.
    """
    if val_data is None:
        return _random_split(rng_key, data, context, val_fraction)
    event = data.shape[1] if data.ndim == 2 else tuple(data.shape[1:])
    val_data = check_data(val_data, event, "val_data", batch=True).astype(data.dtype)
    val_context = check_context(val_context, val_data.shape[0], "val_context")
    if (val_context is None) != (context is None):
        raise ValueError("Pass val_context exactly when context is given.")
    return (data, context), (val_data, val_context)


def _random_split(rng_key, data, context, val_fraction):
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


__all__ = ["check_context", "check_training_data", "train_val_split"]
