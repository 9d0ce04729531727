"""Block neural autoregressive flow (BNAF): one monotone network as the whole bijection.

De Cao, Titov and Aziz (2019), https://arxiv.org/abs/1904.04676. The map ``y = f(x)`` is a
feed-forward network whose weight matrices are block lower-triangular: block ``(d, e)``
connects the units of input dimension ``e`` to those of dimension ``d`` and is zero for
``e > d`` (so ``y_d`` depends on ``x_{<=d}`` only), and the diagonal blocks are positive
(``exp`` of free weights), so with a strictly increasing activation ``dy_d/dx_d > 0``. The
Jacobian is triangular; its diagonal is computed exactly from the diagonal blocks alone, by
the paper's log-sum-exp recursion through the layers, never from the full matrices.

Differences from the paper (and NumPyro's ``block_neural_arn``), each for a reason:

* The activation is a leaky ``tanh``, ``s(h) = (1 - b) h + b tanh(h)`` with a learnable
  ``b in (-1, 1)`` per unit (:func:`leaky_tanh`), not ``tanh``: with ``tanh`` the map is
  bounded (its range is a box, so it is not a bijection onto ``R^D``); ``s`` is a
  bijection of ``R`` with a strictly positive slope bounded below (which also brackets
  the inverse), and its log-slope is formed in log space, finite for any ``|h|``.
* It starts at ``b = 0`` with zero off-diagonal blocks, where the network is linear and
  per-dimension; the output layer's scale and bias are then set so that a fresh layer is
  exactly the identity (the contract: a guide's first step is sane). ``b`` and the
  off-diagonal blocks receive gradients from the first step on, and ``b = tanh(raw)``
  nears ``tanh``'s shape within a few hundred Adam steps.
* The inverse (the paper has none) is numerical: see
  :meth:`BlockNeuralAutoregressive.inverse_and_log_det`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_flows.bijections.base import Bijection

RESIDUALS = (None, "gated")


def leaky_tanh(h, raw):
    """``(s(h), log s'(h))`` for ``s(h) = (1 - b) h + b tanh(h)`` with ``b = tanh(raw)``.

    Elementwise; ``raw`` broadcasts against ``h``. ``b`` runs from -1 to 1: ``b = 0``
    (``raw = 0``) is the identity, ``b -> 1`` approaches ``tanh`` with a leaky slope
    ``1 - b`` in the tails. ``s' = (1 - b) + b sech^2(h)`` lies between ``min(1, 1 - b)``
    and ``max(1, 1 - b)``, so ``s`` is a bijection of the real line. The slope is a sum
    without cancellation (both terms are positive for ``b > 0``, and it is ``>= 1`` for
    ``b <= 0``), with ``1 - b = 2 sigmoid(-2 raw)`` and ``sech^2(h) = 4 e / (1 + e)^2``,
    ``e = exp(-2|h|)``, both exact (no ``1 - tanh^2`` cancellation), so ``log s'`` is
    exact and finite for any ``|h|`` (1e4 included) while ``1 - b`` is a normal float
    (``raw`` below about 40 in float32).
    """
    raw = jnp.asarray(raw, jnp.result_type(h))
    one_minus_b = 2.0 * jax.nn.sigmoid(-2.0 * raw)
    b = 1.0 - one_minus_b
    e = jnp.exp(-2.0 * jnp.abs(h))
    sech2 = 4.0 * e / (1.0 + e) ** 2
    return one_minus_b * h + b * jnp.tanh(h), jnp.log(one_minus_b + b * sech2)


def leaky_tanh_log_slope_min(raw):
    """``log min_h s'(h)`` of :func:`leaky_tanh`: ``min(0, log(1 - b))``."""
    return jnp.minimum(0.0, math.log(2.0) - jax.nn.softplus(2.0 * raw))


def _log_sum_exp_product(log_jac, log_diag):
    """``log sum_k exp(log_jac[..., d, k] + log_diag[d, k, j])``: the paper's recursion for
    the log of the diagonal Jacobian blocks through one layer (shift by the max, which
    is a constant for the gradient)."""
    terms = log_jac[..., :, :, None] + log_diag
    shift = jax.lax.stop_gradient(jnp.max(terms, axis=-2))
    return jnp.log(jnp.sum(jnp.exp(terms - shift[..., None, :]), axis=-2)) + shift


def _compiled(method):
    """``method(self, x)`` under ``jax.jit``: an eager call (a guide's set-up, sampling
    outside SVI) compiles once instead of dispatching dozens of small ops one by one;
    under an outer ``jit``/``grad``/``vmap`` it is inlined."""
    compiled = jax.jit(method)

    @functools.wraps(method)
    def wrapper(self, x):
        return compiled(self, x)

    return wrapper


def _factors(hidden_factors) -> tuple[int, ...]:
    return (1, *hidden_factors, 1)


def _block_masks(dim: int, fin: int, fout: int) -> tuple[np.ndarray, np.ndarray]:
    """``(D fin, D fout)`` masks: the diagonal blocks (input and output unit of the same
    dimension) and the strictly lower blocks (input dimension < output dimension)."""
    block_in = (np.arange(dim * fin) // fin)[:, None]
    block_out = (np.arange(dim * fout) // fout)[None, :]
    return block_in == block_out, block_in < block_out


def _vector_layout(dim: int, hidden_factors, gated: bool) -> tuple[tuple[str, int, int], ...]:
    """``(name, layer, size)`` of each piece of the flat ``"vector"`` parameter, in order."""
    factors = _factors(hidden_factors)
    hidden = len(factors) - 2
    pieces = []
    for l, fout in enumerate(factors[1:]):
        pieces += [("log_scale", l, dim * fout), ("bias", l, dim * fout)]
        if l < hidden:
            pieces.append(("activation", l, dim * fout))
    if gated:
        pieces.append(("gate", 0, 1))
    return tuple(pieces)


def _unpack_vector(vector, dim: int, hidden_factors, gated: bool) -> dict:
    """``{(name, layer): array}`` of the flat ``"vector"`` parameter (static slices)."""
    out, start = {}, 0
    for name, l, size in _vector_layout(dim, hidden_factors, gated):
        out[name, l] = vector[..., start : start + size]
        start += size
    return out


def _pack_vector(pieces: dict, dim: int, hidden_factors, gated: bool):
    layout = _vector_layout(dim, hidden_factors, gated)
    return jnp.concatenate([jnp.reshape(pieces[name, l], (size,)) for name, l, size in layout])


class BlockNeuralAutoregressive(Bijection):
    """A block neural autoregressive bijection (base -> target is the network).

    Layer ``l`` maps ``D f_{l-1}`` units to ``D f_l`` units (``f_0 = f_L = 1``, the hidden
    factors in between). Its weight is ``W = w diag(exp(log_scale) / ||w||)`` (weight
    normalisation of each output unit's column, as in the paper), where ``w`` is one dense
    matrix of free weights under a static block mask (as NumPyro's ``block_neural_arn``):
    ``exp`` of the free weights in the diagonal blocks, the free weights themselves in the
    strictly lower blocks, zero above. Hidden layers are followed by :func:`leaky_tanh`.
    With ``residual="gated"`` the output is ``g f(x) + (1 - g) x`` with
    ``g = sigmoid(gate)`` (NumPyro's ``residual="gated"``).

    The small per-unit vectors of all layers (``log_scale``, ``bias``, the activation's
    ``raw`` and the gate) are one flat parameter: few leaves keep the optimiser's update
    of a guide cheap.

    Args:
        params: ``{"weights": ((D f_0, D f_1), ..., (D f_{L-1}, D f_L)), "vector": (V,)}``,
            ``vector`` holding per layer ``log_scale`` and ``bias`` ``(D f_l,)``, the
            hidden layers' activation ``raw`` ``(D f_l,)``, and the gate last when gated
            (see ``_vector_layout``); ``"context": (C, D f_1)`` for a conditional layer,
            added to the first layer's pre-activations. Made by :func:`init_params`.
        hidden_factors: hidden units per dimension of each hidden layer.
        residual: ``None`` or ``"gated"``.
        context: ``(..., C)`` when the params have a ``"context"`` entry.
        num_iterations: safeguarded Newton iterations per dimension of the inverse (at
            most; it stops when converged); ``None`` picks 30 in float32 and 60 in float64.
    """

    children = ("params", "context")
    static = ("hidden_factors", "residual", "num_iterations")

    def __init__(
        self,
        params,
        hidden_factors: tuple[int, ...] = (8, 8),
        residual: str | None = None,
        context=None,
        num_iterations: int | None = None,
    ):
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be None or 'gated', got {residual!r}.")
        if "context" in params and context is None:
            raise ValueError(
                "This BlockNeuralAutoregressive layer was initialised with context_dim > 0: "
                "pass its context (flow.transform(params, context))."
            )
        self.params = params
        self.hidden_factors = tuple(int(f) for f in hidden_factors)
        self.residual = residual
        self.context = context
        self.num_iterations = num_iterations

    @property
    def dim(self) -> int:
        """The event size ``D``."""
        return self.params["weights"][-1].shape[-1]

    # ------------------------------------------------------------------ the network
    def _weights(self, dtype):
        """``(layers, gate)``: per layer ``(W, log_diag, bias, raw)``, the masked,
        normalised weight ``(D f_in, D f_out)``, the log of its diagonal blocks
        ``(D, f_in, f_out)``, the bias and the activation's ``raw`` (``None`` for the
        output layer); ``gate`` is ``None`` without a residual."""
        dim, factors = self.dim, _factors(self.hidden_factors)
        gated = self.residual == "gated"
        vector = _unpack_vector(
            self.params["vector"].astype(dtype), dim, self.hidden_factors, gated
        )
        layers = []
        for l, (free, fin, fout) in enumerate(
            zip(self.params["weights"], factors[:-1], factors[1:])
        ):
            free = free.astype(dtype)
            diagonal, lower = _block_masks(dim, fin, fout)
            # exp only of the diagonal blocks: a large masked-out entry must not overflow
            # (inf * 0 in the gradient).
            w = jnp.where(diagonal, jnp.exp(jnp.where(diagonal, free, 0.0)), 0.0)
            w = w + jnp.where(lower, free, 0.0)
            log_col = vector["log_scale", l] - 0.5 * jnp.log(jnp.sum(w * w, axis=0))
            # The diagonal blocks (D, f_in, f_out) by a masked sum over the block-column
            # axis (dense and fused, unlike a gather).
            blocks = free.reshape(dim, fin, dim, fout)
            eye = np.eye(dim, dtype=bool)[:, None, :, None]
            log_diag = jnp.sum(jnp.where(eye, blocks, 0.0), axis=2) + log_col.reshape(dim, 1, fout)
            raw = vector.get(("activation", l))
            layers.append((w * jnp.exp(log_col), log_diag, vector["bias", l], raw))
        gate = vector["gate", 0][..., 0] if gated else None
        return layers, gate

    def _network(self, layers, x):
        """``(y, log dy_d/dx_d)`` of the network (before the residual), both ``(..., D)``."""
        dtype = jnp.result_type(x)
        h, log_jac = x, None
        for l, (w, log_diag, bias, raw) in enumerate(layers):
            pre = h @ w + bias
            if l == 0 and "context" in self.params:
                pre = pre + self.context.astype(dtype) @ self.params["context"].astype(dtype)
            # log of the diagonal blocks of d(units)/dx: (..., D, f_out).
            if log_jac is None:
                log_jac = log_diag[:, 0, :]
            else:
                log_jac = _log_sum_exp_product(log_jac, log_diag)
            if raw is None:
                h = pre
            else:
                h, log_act = leaky_tanh(pre, raw)
                log_jac = log_jac + log_act.reshape(pre.shape[:-1] + (self.dim, -1))
        return h, log_jac[..., 0]

    @staticmethod
    def _residual(gate, x, fx, log_jac):
        if gate is None:
            return fx, log_jac
        g = jax.nn.sigmoid(gate)
        # log(g e^l + 1 - g) = softplus(l + gate) - softplus(gate).
        return g * fx + (1 - g) * x, jax.nn.softplus(log_jac + gate) - jax.nn.softplus(gate)

    def _forward_with(self, weights, x):
        layers, gate = weights
        fx, log_jac = self._network(layers, x)
        return self._residual(gate, x, fx, log_jac)

    @_compiled
    def forward_and_log_det(self, x):
        y, log_jac = self._forward_with(self._weights(jnp.result_type(x)), x)
        return y, log_jac.sum(-1)

    # ------------------------------------------------------------------ the inverse
    def _log_slope_lower_bound(self, weights):
        """``(D,)``: a lower bound of ``log dy_d/dx_d`` over all inputs (parameters only)."""
        layers, gate = weights
        log_jac = None
        for _, log_diag, _, raw in layers:
            if log_jac is None:
                log_jac = log_diag[:, 0, :]
            else:
                log_jac = _log_sum_exp_product(log_jac, log_diag)
            if raw is not None:
                log_jac = log_jac + leaky_tanh_log_slope_min(raw).reshape(self.dim, -1)
        return self._residual(gate, 0.0, 0.0, log_jac[:, 0])[1]

    @_compiled
    def inverse_and_log_det(self, y):
        """Numerical inverse, dimension by dimension in autoregressive order.

        ``y_d`` is strictly increasing in ``x_d`` given ``x_{<d}``, with slope at least
        ``m_d`` (:meth:`_log_slope_lower_bound`, from the parameters). Sweep ``k`` brackets
        every coordinate's root from the residual at its current value
        (``|x_d - t| <= |f_d(t) - y_d| / m_d``) and runs safeguarded Newton steps (Newton
        inside the bracket, bisection otherwise; Numerical Recipes' ``rtsafe``) on all
        coordinates at once, each network call giving all the values and diagonal slopes.
        Coordinate ``k``'s prefix is exact from the start of sweep ``k``, so after ``D``
        sweeps every coordinate is solved to the dtype's precision (the others get warm
        starts). A sweep ends once its coordinates ``<= k`` have converged (Newton steps
        below ``eps^(3/4)`` relative), and the solve ends once all have (skipped
        iterations cost a ``lax.cond``): usually a few sweeps of a few steps. At most
        ``D * num_iterations`` network calls, in one ``lax.fori_loop`` with a single
        network call in its body, so it compiles once, jits, vmaps, differentiates and
        does not unroll.
        """
        dtype = jnp.result_type(y)
        weights = self._weights(dtype)
        dim = self.dim
        iterations = self.num_iterations or (60 if jnp.finfo(dtype).bits > 32 else 30)
        inverse_slope = jnp.exp(-self._log_slope_lower_bound(weights))
        big = jnp.asarray(np.sqrt(np.finfo(dtype).max), dtype)
        tol = float(np.finfo(dtype).eps) ** 0.75
        out = jax.eval_shape(self._forward_with, weights, y)
        y = jnp.broadcast_to(y, out[0].shape)
        index = np.arange(dim)

        def step(state):
            t, lo, hi, dx_old, dx, sweep, count, _ = state
            f, log_slope = self._forward_with(weights, t)
            r = f - y
            # A new sweep: the prefix has moved, bracket every root afresh from the residual.
            fresh = count == 0
            width = jnp.minimum(jnp.abs(r) * inverse_slope, big)
            lo = jnp.where(fresh, jnp.where(r > 0, t - width, t), lo)
            hi = jnp.where(fresh, jnp.where(r > 0, t, t + width), hi)
            dx_old = jnp.where(fresh, width, dx_old)
            dx = jnp.where(fresh, width, dx)
            lo = jnp.where(r < 0, t, lo)
            hi = jnp.where(r > 0, t, hi)
            slope = jnp.exp(log_slope)
            positive = slope > 0
            newton_step = jnp.where(positive, r / jnp.where(positive, slope, 1.0), jnp.inf)
            newton = t - newton_step
            use_newton = (
                (newton > lo) & (newton < hi) & (2 * jnp.abs(newton_step) <= jnp.abs(dx_old))
            )
            new = jnp.where(use_newton, newton, 0.5 * (lo + hi))
            converged = (r == 0) | (jnp.abs(newton_step) <= tol * jnp.maximum(1.0, jnp.abs(t)))
            solved = jnp.all(converged)
            # All residuals at precision: a last plain Newton step (tiny) and stop.
            new = jnp.where(r == 0, t, jnp.where(solved, newton, new))
            sweep_done = jnp.all(converged | (index > sweep))
            count = jnp.where(sweep_done | (count + 1 >= iterations), 0, count + 1)
            sweep = jnp.where(count == 0, sweep + 1, sweep)
            done = solved | (sweep >= dim)
            return new, lo, hi, dx, new - t, sweep, count, done

        def body(_, state):
            return jax.lax.cond(state[-1], lambda s: s, step, state)

        zero = jnp.zeros((), jnp.int32)
        state = (y, y, y, y, y, zero, zero, jnp.zeros((), bool))
        x = jax.lax.fori_loop(0, dim * iterations, body, state)[0]
        _, log_jac = self._forward_with(weights, x)
        return x, -log_jac.sum(-1)

    def __repr__(self):
        return (
            f"BlockNeuralAutoregressive(dim={self.dim}, hidden_factors={self.hidden_factors}, "
            f"residual={self.residual!r})"
        )


def init_params(
    rng_key,
    dim: int,
    hidden_factors: tuple[int, ...] = (8, 8),
    context_dim: int = 0,
    residual: str | None = None,
    dtype=None,
):
    """Fresh :class:`BlockNeuralAutoregressive` parameters: exactly the identity map.

    Diagonal blocks are random (Glorot-uniform before the ``exp``, as NumPyro), hidden
    biases uniform in ``(-1, 1)`` (spreading the units' ``tanh`` parts over the bulk of a
    standardised input), off-diagonal blocks, context weights and activation shapes (``b``) zero.
    The network is then linear and per-dimension, ``f(x) = c x + e``, and the output
    layer's scale and bias are set to ``-log c`` and ``-e / c``: the identity.
    """
    if residual not in RESIDUALS:
        raise ValueError(f"residual must be None or 'gated', got {residual!r}.")
    dtype = jnp.dtype(jnp.zeros(()).dtype if dtype is None else dtype)
    # Compiled as one piece (not op by op): a guide's set-up runs this eagerly.
    return _init_params(rng_key, int(dim), tuple(hidden_factors), int(context_dim), residual, dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _init_params(rng_key, dim, hidden_factors, context_dim, residual, dtype):
    factors = _factors(hidden_factors)
    gated = residual == "gated"
    keys = jax.random.split(rng_key, 2 * len(factors))
    weights, pieces = [], {}
    last = len(factors) - 2
    for l, (fin, fout) in enumerate(zip(factors[:-1], factors[1:])):
        limit = np.sqrt(6.0 / (fin + fout))
        diag = jax.random.uniform(keys[2 * l], (dim, fin, fout), dtype, -limit, limit)
        # Dense layout: block (d, d) holds diag[d]; everything else starts at zero.
        dense = jnp.einsum("dio,de->dieo", diag, jnp.eye(dim, dtype=dtype))
        weights.append(dense.reshape(dim * fin, dim * fout))
        pieces["log_scale", l] = jnp.zeros(dim * fout, dtype)
        pieces["bias", l] = (
            jnp.zeros(dim * fout, dtype)
            if l == last
            else jax.random.uniform(keys[2 * l + 1], (dim * fout,), dtype, -1.0, 1.0)
        )
        if l < last:
            pieces["activation", l] = jnp.zeros(dim * fout, dtype)
    if gated:
        pieces["gate", 0] = jnp.zeros(1, dtype)
    params = {
        "weights": tuple(weights),
        "vector": _pack_vector(pieces, dim, hidden_factors, gated),
    }
    if context_dim:
        params["context"] = jnp.zeros((context_dim, dim * factors[1]), dtype)
    # Make the (now affine, per-dimension) network the identity.
    context = jnp.zeros(context_dim, dtype) if context_dim else None
    bijection = BlockNeuralAutoregressive(params, hidden_factors, residual, context)
    layers, _ = bijection._weights(dtype)
    offset, log_slope = bijection._network(layers, jnp.zeros(dim, dtype))
    pieces["log_scale", last] = pieces["log_scale", last] - log_slope
    pieces["bias", last] = -offset * jnp.exp(-log_slope)
    params["vector"] = _pack_vector(pieces, dim, hidden_factors, gated)
    return params


__all__ = [
    "BlockNeuralAutoregressive",
    "init_params",
    "leaky_tanh",
    "leaky_tanh_log_slope_min",
]
