"""Checks on a model's data before fitting: one place, used by the command line and
:func:`numpyro_flows.fit_guide`.

:func:`check_model_data` turns lists of numbers (at any depth, inside dicts too, as JSON
gives them) into arrays, and stops with a ``ValueError`` that names the argument, the key
and the index of the first value a fit cannot use:

* **NaN** (a missing value): NumPyro has no notion of missing data, and a NaN observation
  makes every log density NaN ("Cannot find valid initial parameters").
* **inf**.
* **A magnitude whose square overflows** the float type the model will run in (float32,
  or float64 when ``jax_enable_x64`` is on): ``|x| > sqrt(finfo.max)``, about ``1.8e19``
  in float32 and ``1.3e154`` in float64. A Gaussian log density squares
  ``(x - loc) / scale``; beyond that bound it is ``inf`` (or all precision is lost) for
  any plausible ``loc`` and ``scale``, so the fit silently means nothing. Large but
  valid data (populations of ``1e9``, money amounts of ``1e12``) are far below it. Data
  that are truly this large need rescaling (divide by a typical magnitude, or take logs)
  or float64.
* An integer beyond the int32 range when x64 is off (it would wrap around).

Everything else passes through unchanged: strings, ``None``, booleans, callables, Python
ints and floats used as sizes or settings, NumPy and JAX arrays (checked, not copied).
Tuples stay tuples (a tuple is how Python spells a shape, e.g. ``expand((3, 4))``; JSON
never makes one), with their elements checked and converted.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def float_dtype() -> np.dtype:
    """The float type JAX computes in now: float64 with ``jax_enable_x64``, else float32."""
    return np.dtype(np.float64 if jax.config.read("jax_enable_x64") else np.float32)


def overflow_bound() -> float:
    """The largest magnitude :func:`check_model_data` accepts: ``sqrt(finfo.max)`` of
    :func:`float_dtype` (its square is still finite)."""
    return float(np.sqrt(np.finfo(float_dtype()).max))


def check_model_data(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Checks a model's arguments before fitting and turns lists of numbers into arrays.

    Args:
        args: the model's positional arguments (named ``args[0]``, ... in errors).
        kwargs: the model's keyword arguments (named by their keys in errors).

    Returns:
        ``(args, kwargs)`` with every (nested) list of numbers replaced by a JAX array of
        JAX's default dtype (float32, or float64 with x64; ints stay integers, booleans
        stay booleans); ragged lists become lists of arrays; dicts and tuples keep their
        type with their values converted. Other values come back unchanged.

    Raises:
        ValueError: for NaN, inf, a magnitude above :func:`overflow_bound` (its square
            overflows the float type), an integer out of int32 range without x64, or a
            ``None`` inside a list of numbers (a missing value). The message names the
            argument, key and index, and the fix.

    Example::

        args, kwargs = check_model_data((), {"data": {"y": [1.0, 2.5], "n": 2}})
        kwargs["data"]["y"]  # Array([1. , 2.5], dtype=float32)
    """
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple of positional arguments, got {type(args).__name__}.")
    if not isinstance(kwargs, dict):
        raise TypeError(f"kwargs must be a dict of keyword arguments, got {type(kwargs).__name__}.")
    checked_args = tuple(_check(value, f"args[{i}]") for i, value in enumerate(args))
    checked_kwargs = {key: _check(value, str(key)) for key, value in kwargs.items()}
    return checked_args, checked_kwargs


def _is_number(value) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _numeric_leaves(value) -> bool:
    """Whether ``value`` is a (nested) list of numbers or booleans only."""
    if isinstance(value, list):
        return all(_numeric_leaves(v) for v in value)
    return isinstance(value, numbers.Number)


def _check(value, where: str):
    if isinstance(value, dict):
        return {key: _check(v, f"{where}[{key!r}]") for key, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_check(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return _check_list(value, where)
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, np.generic):
        # A Python int is often a size or a setting: only floats are checked.
        if isinstance(value, float | complex):
            _check_values(np.asarray(value), where)
        return value
    if isinstance(value, np.ndarray | np.generic):
        _check_values(np.asarray(value), where)
        return value
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
        _check_values(np.asarray(value), where)
    return value


def _check_list(value: list, where: str):
    if _numeric_leaves(value):  # an empty list too: an empty float array
        try:
            array = np.asarray(value)
        except ValueError:  # ragged: a list of arrays of different lengths
            array = None
        if array is not None and array.dtype != object:
            _check_values(array, where)
            return jnp.asarray(array)
    if any(v is None for v in value) and any(_is_number(v) for v in value):
        index = next(i for i, v in enumerate(value) if v is None)
        raise ValueError(
            f"model data {where}[{index}] is null (None) inside a list of numbers: a missing "
            "value. NumPyro cannot fit missing data; drop the entry, or model it as a latent "
            "site (imputation)."
        )
    return [_check(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _refuse_any(where: str, array: np.ndarray, mask: np.ndarray, message) -> None:
    """Raises ``ValueError(message(name, index, more))`` if ``mask`` has a hit: ``name`` is
    ``where[index]`` of the first, ``more`` is ``" (and N more)"`` or ``""``."""
    if not mask.any():
        return
    index = tuple(int(i) for i in np.argwhere(mask)[0]) if array.ndim else ()
    name = where + (f"[{', '.join(map(str, index))}]" if index else "")
    count = int(np.sum(mask))
    raise ValueError(message(name, index, f" (and {count - 1} more)" if count > 1 else ""))


def _check_values(array: np.ndarray, where: str) -> None:
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        values = np.asarray(array, np.complex128 if np.iscomplexobj(array) else np.float64)
        _refuse_any(
            where,
            array,
            np.isnan(values),
            lambda name, _, more: (
                f"model data {name} is NaN{more}, a missing value: "
                "NumPyro cannot fit missing data (every log density becomes NaN). Drop those "
                "entries, or model them as latent sites (imputation)."
            ),
        )
        _refuse_any(
            where,
            array,
            np.isinf(values),
            lambda name, _, more: (
                f"model data {name} is infinite{more}: no density is "
                "finite there. Replace or drop those entries."
            ),
        )
        bound = overflow_bound()
        dtype = float_dtype().name
        fix = "" if dtype == "float64" else " or run in float64 (--x64, or jax_enable_x64)"
        _refuse_any(
            where,
            array,
            np.abs(values) > bound,
            lambda name, index, more: (
                f"model data {name} = {values[index]:.3g}{more} is beyond "
                f"{bound:.2g}, the square root of the largest {dtype}: a Gaussian log density "
                f"squares it and overflows to inf, so the fit would mean nothing. Rescale the "
                f"data (divide by a typical magnitude, or take logs){fix}."
            ),
        )
    elif np.issubdtype(array.dtype, np.integer) and float_dtype() == np.float32:
        info = np.iinfo(np.int32)
        _refuse_any(
            where,
            array,
            (array < info.min) | (array > info.max),
            lambda name, _, more: (
                f"model data {name}{more} is an integer beyond the int32 "
                "range that JAX uses without x64: it would wrap around. Store it as a float, "
                "rescale it, or run in float64 (--x64, or jax_enable_x64)."
            ),
        )


__all__ = ["check_model_data", "float_dtype", "overflow_bound"]
