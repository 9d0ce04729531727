"""Contract checks for any NumPyro ``Transform`` on vectors.

The test suite runs every bijection and every flow through :func:`check_transform`; users
can run their own layers through it too::

    from numpyro_flows.testing import check_transform

    report = check_transform(my_transform, x)   # raises AssertionError on a failure
    print(report)

The checks are the contract written in :mod:`numpyro_flows.bijections.base`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions.transforms import Transform

from numpyro_flows._random import numpy_generator
from numpyro_flows.bijections.base import (
    _is_concrete,
    forward_and_log_det,
    inverse_and_log_det,
    lift_elementwise,
)
from numpyro_flows.bijections.image import Flattened


class TransformReport(NamedTuple):
    """What :func:`check_transform` measured (largest errors over the batch)."""

    round_trip_error: float
    inverse_log_det_error: float
    log_det_error: float
    intermediates_error: float
    jit_error: float
    vmap_error: float
    checked: tuple[str, ...]


def _fail(message: str):
    raise AssertionError(message)


def _max(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.max(a)) if a.size else 0.0


def randomize_params(params, rng_key, scale: float = 0.1):
    """Adds noise of the size of a fresh init to every floating leaf of ``params``.

    Vectors and scalars get ``scale * N(0, 1)``; weight matrices (2 or more axes) get
    ``scale * N(0, 1) / sqrt(fan_in)`` with ``fan_in = shape[-2]``, the scale at which a
    network is initialised, so the result is a generic, non-identity point of the
    parameter space at any width. Used to test flows away from their identity init.

    The noise is drawn with NumPy from a generator seeded by ``rng_key``'s data (the same
    key gives the same params): outside ``jit`` a ``jax.random`` draw compiles a kernel for
    every new leaf shape, which took most of a contract check's time. Under a JAX
    transformation (traced leaves or key) the noise comes from ``jax.random``.
    """
    leaves, rebuild = float_leaves(params)
    if not _is_concrete((leaves, rng_key)):
        return rebuild(_traced_noise(leaves, rng_key, scale))
    rng = numpy_generator(rng_key)
    noisy = []
    for a in leaves:
        a = np.asarray(a)
        noise = rng.standard_normal(a.shape) * _noise_size(a, scale)
        noisy.append(jnp.asarray((a + noise).astype(a.dtype)))
    return rebuild(noisy)


def _noise_size(a, scale: float) -> float:
    return scale / np.sqrt(max(a.shape[-2], 1)) if a.ndim >= 2 else scale


def _traced_noise(leaves, rng_key, scale: float) -> list:
    keys = jax.random.split(rng_key, max(len(leaves), 1))
    return [
        a + _noise_size(a, scale) * jax.random.normal(key, jnp.shape(a), jnp.result_type(a))
        for a, key in zip(leaves, keys)
    ]


def float_leaves(tree):
    """``(leaves, rebuild)``: the floating-point leaves of a pytree and a function that
    puts new values for them back (other leaves, e.g. integer permutations, are kept)."""
    leaves, treedef = jax.tree.flatten(tree)
    idx = [i for i, a in enumerate(leaves) if jnp.issubdtype(jnp.result_type(a), jnp.floating)]

    def rebuild(new):
        out = list(leaves)
        for i, a in zip(idx, new):
            out[i] = a
        return jax.tree.unflatten(treedef, out)

    return [leaves[i] for i in idx], rebuild


def check_transform(
    transform: Transform,
    x,
    *,
    inverse: bool = True,
    rtol: float = 1e-4,
    log_det_atol: float = 1e-4,
    log_det_rtol: float = 1e-6,
    gradients: bool = True,
    gradient_reaches_every_leaf: bool = False,
    jit: bool = True,
    vmap: bool = True,
) -> TransformReport:
    """Checks a vector transform against the bijection contract.

    Args:
        transform: any NumPyro ``Transform`` with ``event_dim == 1`` (our bijections, or
            a layer of your own), or an elementwise one (``event_dim == 0``), checked as
            the vector bijection it is in a flow
            (:class:`~numpyro_flows.bijections.ElementwiseTransform`), or an image
            bijection (``event_dim == 3``), checked on the flattened image
            (:class:`~numpyro_flows.bijections.image.Flattened`).
        x: inputs ``(..., D)`` (``(..., H, W, C)`` for an image bijection); every leading
            index is one test point.
        inverse: check the inverse round trip ``|T^{-1}(T(x)) - x| <= (rtol + eps *
            cond(J)) * max(1, |x|)`` (sup norm per point; ``eps * cond(J)``, the dtype's
            rounding error times the condition number of the Jacobian at ``x``, is the most
            accuracy any floating-point inverse can promise there) and that the inverse
            log-det is minus the forward one (up to the log-det tolerance plus what the
            round-trip error itself accounts for).
        rtol: tolerance of the round trip, relative to ``max(1, |x|)``.
        log_det_atol, log_det_rtol: tolerance of the log-det against
            ``slogdet(jacfwd(T))`` (the determinant taken in float64 from the autodiff
            Jacobian; the tolerance also allows the reference's own error, ``eps`` of the
            dtype times the Jacobian's condition number), and of
            ``log_abs_det_jacobian`` without intermediates.
        gradients: gradients w.r.t. ``x`` and every floating parameter leaf are finite.
        gradient_reaches_every_leaf: every floating leaf gets some non-zero gradient.
        jit: the transform passed through ``jax.jit`` as an argument equals the eager one.
        vmap: ``vmap`` over single points equals the batched call. Turn it off for a
            transform whose leaves carry the batch (a conditional flow built with one
            context per point).

    The Jacobian is taken over the whole batch, so the check also asserts that points of
    a batch do not interact (off-diagonal blocks are zero).

    Returns:
        A :class:`TransformReport` with the measured errors.

    Raises:
        AssertionError: naming the first property that fails and by how much.
    """
    x = jnp.asarray(x)
    if x.ndim < 1:
        _fail("x must have an event axis: shape (..., D).")
    # An elementwise NumPyro transform is checked as the vector bijection a flow uses.
    transform = lift_elementwise(transform)
    event_dim = transform.domain.event_dim
    if event_dim > 1:
        # An image bijection: checked as the vector bijection on the flattened event (the
        # Jacobian is then a plain matrix per point).
        if x.ndim < event_dim:
            _fail(f"x must have {event_dim} event axes for this transform, got shape {x.shape}.")
        transform = Flattened(transform, x.shape[x.ndim - event_dim :])
        x = x.reshape(x.shape[: x.ndim - event_dim] + (-1,))
    name = type(transform).__name__
    leaves, rebuild = float_leaves(transform)
    flat = x.reshape(-1, x.shape[-1])
    n, dim = flat.shape

    def compute(leaves, flat):
        t = rebuild(leaves)
        y, log_det = forward_and_log_det(t, flat)
        out = {"y": y, "log_det": log_det, "no_inter": t.log_abs_det_jacobian(flat, y)}
        jac = jax.jacfwd(lambda v: forward_and_log_det(t, v)[0])(flat)
        out["jac"] = jac  # (n, D, n, D)
        if inverse:
            out["x_back"], out["inv_log_det"] = inverse_and_log_det(t, y)
            # How fast the log-det moves with x: the inverse log-det can be no closer to
            # minus the forward one than this times the round-trip error.
            out["log_det_slope"] = jax.grad(lambda v: jnp.sum(forward_and_log_det(t, v)[1]))(flat)
        if vmap:
            out["y_v"], out["ld_v"] = jax.vmap(lambda v: forward_and_log_det(t, v))(flat)
        if gradients:

            def loss(leaves, v):
                y, log_det = forward_and_log_det(rebuild(leaves), v)
                return jnp.sum(y) + jnp.sum(log_det)

            out["g_leaves"], out["g_x"] = jax.grad(loss, argnums=(0, 1))(leaves, flat)
        return out

    out = jax.jit(compute)(leaves, flat)
    y, log_det = out["y"], out["log_det"]
    checked = []

    if y.dtype != x.dtype or jnp.result_type(log_det) != x.dtype:
        _fail(
            f"{name}: dtype not preserved: x is {x.dtype}, y is {y.dtype}, "
            f"log-det is {jnp.result_type(log_det)}."
        )
    if y.shape != flat.shape or jnp.shape(log_det) != (n,):
        _fail(
            f"{name}: shapes changed: x {flat.shape} gave y {y.shape} and log-det "
            f"{jnp.shape(log_det)} (expected {(n,)})."
        )
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(log_det))):
        _fail(f"{name}: non-finite forward values for inputs up to |x| = {_max(jnp.abs(x)):.3g}.")
    checked.append("dtype/shape/finite")

    ld_tol = log_det_atol + log_det_rtol * _max(jnp.abs(log_det))
    intermediates_error = _max(jnp.abs(out["no_inter"] - log_det))
    if not intermediates_error <= ld_tol:
        _fail(
            f"{name}: log_abs_det_jacobian without intermediates differs from the "
            f"forward log-det by {intermediates_error:.3g}."
        )

    scale = np.maximum(1.0, np.max(np.abs(np.asarray(flat, np.float64)), axis=-1))
    jac = np.asarray(out["jac"], np.float64)
    idx = np.arange(n)
    blocks = jac[idx, :, idx, :]  # (n, D, D)
    # No floating-point computation is more accurate than the rounding error of its
    # inputs (eps of the dtype) times the Jacobian's condition number: that bounds both the
    # log-det reference taken from the Jacobian and the round trip, whose forward output
    # carries that rounding error into the inverse. Far from the identity (|x| = 1e4
    # through a deep affine stack) the condition number can reach 1e5-1e8 in float32.
    conditioning = np.finfo(np.dtype(x.dtype)).eps * np.linalg.cond(blocks)
    round_trip_error = inverse_log_det_error = 0.0
    if inverse:
        x_back, inv_log_det = out["x_back"], out["inv_log_det"]
        if x_back.dtype != x.dtype:
            _fail(f"{name}: inverse returned {x_back.dtype} for {x.dtype} input.")
        if not (np.all(np.isfinite(x_back)) and np.all(np.isfinite(inv_log_det))):
            _fail(f"{name}: non-finite inverse values.")
        err = np.max(np.abs(np.asarray(x_back, np.float64) - np.asarray(flat, np.float64)), -1)
        round_trip_error = _max(err / scale)
        if not np.all(err / scale <= rtol + conditioning):
            _fail(
                f"{name}: inverse round trip error {round_trip_error:.3g} (relative to "
                f"max(1, |x|)) exceeds {rtol:g} (plus eps times the Jacobian's condition "
                "number)."
            )
        mismatch = np.abs(np.asarray(inv_log_det, np.float64) + np.asarray(log_det, np.float64))
        inverse_log_det_error = _max(mismatch)
        propagated = np.sum(
            np.abs(np.asarray(out["log_det_slope"], np.float64))
            * np.abs(np.asarray(x_back, np.float64) - np.asarray(flat, np.float64)),
            -1,
        )
        if not np.all(mismatch <= ld_tol + 2 * propagated):
            _fail(
                f"{name}: inverse log-det differs from minus the forward log-det by "
                f"{inverse_log_det_error:.3g}."
            )
        checked.append("round trip")

    cross = jac.copy()
    cross[idx, :, idx, :] = 0.0
    if np.any(cross != 0):
        _fail(f"{name}: points of a batch interact (off-diagonal Jacobian blocks are non-zero).")
    sign, reference = np.linalg.slogdet(blocks)
    if np.any(sign == 0):
        _fail(f"{name}: the autodiff Jacobian is singular at some input.")
    errors = np.abs(np.asarray(log_det, np.float64) - reference)
    log_det_error = _max(errors)
    allowed = log_det_atol + log_det_rtol * np.abs(reference) + conditioning
    if not np.all(errors <= allowed):
        _fail(
            f"{name}: log-det differs from slogdet(jacfwd) by {log_det_error:.3g} "
            f"(tolerance {log_det_atol:g})."
        )
    checked.append("log-det vs autodiff")

    if gradients:
        if not np.all(np.isfinite(out["g_x"])):
            _fail(f"{name}: non-finite gradient with respect to the input.")
        for i, g in enumerate(out["g_leaves"]):
            if not np.all(np.isfinite(g)):
                _fail(f"{name}: non-finite gradient with respect to parameter leaf {i}.")
            if gradient_reaches_every_leaf and g.size and not np.any(g != 0):
                _fail(f"{name}: parameter leaf {i} (shape {g.shape}) gets no gradient.")
        checked.append("gradients")

    jit_error = vmap_error = 0.0
    if jit:
        # `out` came from a jitted call with the transform's leaves as arguments; compare
        # it with a plain eager call.
        y_eager, ld_eager = forward_and_log_det(transform, flat)
        jit_y_error = _max(np.abs(np.asarray(y) - np.asarray(y_eager)) / scale[:, None])
        jit_ld_error = _max(np.abs(np.asarray(log_det) - np.asarray(ld_eager)))
        jit_error = max(jit_y_error, jit_ld_error)
        # The outputs at rtol; the log-det (a sum over many values for an image) at rtol or
        # the log-det tolerance, whichever is larger.
        if not (jit_y_error <= rtol and jit_ld_error <= max(rtol, ld_tol)):
            _fail(f"{name}: jitted forward differs from eager by {jit_error:.3g}.")
        checked.append("jit")
    if vmap:
        vmap_error = max(
            _max(np.abs(np.asarray(out["y_v"]) - np.asarray(y)) / scale[:, None]),
            _max(np.abs(np.asarray(out["ld_v"]) - np.asarray(log_det))),
        )
        if not vmap_error <= rtol:
            _fail(f"{name}: vmap over points differs from the batched call by {vmap_error:.3g}.")
        checked.append("vmap")

    return TransformReport(
        round_trip_error,
        inverse_log_det_error,
        log_det_error,
        intermediates_error,
        jit_error,
        vmap_error,
        tuple(checked),
    )


__all__ = ["TransformReport", "check_transform", "float_leaves", "randomize_params"]
