"""A guide's network parameters stored as one flat vector at their param site.

A flow's parameters are a pytree (a dozen arrays for a small IAF). Stored leaf by leaf,
each becomes an array of the SVI state three times over (the value and Adam's two moments),
and an SVI step called from Python (as ``svi.run`` does with its progress bar) spends most
of its time creating those output arrays: 27 state arrays for ``AutoIAF`` against 12 when
the flow is one vector (``benchmarks/step_breakdown.py``). Packing changes what the param
site holds, not the flow: the guide splits the vector into the flow's pytree on each call.
Flows with more than ``PACK_MAX_VALUES`` values keep their pytree at the site.

A site that holds a pytree instead (substituted by a user, or a guide saved before the
parameters were packed) is used as it is.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

from numpyro_flows.bijections.base import _is_concrete

# Larger flows keep their leaves: dispatch is then a small part of a step, and XLA's CPU
# concatenation of the gradient (the transpose of the split) slows the step instead, by
# 12-23% at 0.1-0.2 million values and 8x for AutoBNAF's 0.33 million at 60 latents.
PACK_MAX_VALUES = 2**15


def packed_param(name: str, init_fn, layouts: dict):
    """The pytree ``init_fn(rng_key)`` gives, kept at param site ``name`` as one vector
    (as it is where it has more than ``PACK_MAX_VALUES`` values).

    Args:
        name: the param site.
        init_fn: ``rng_key -> pytree`` of floating arrays, the initial value.
        layouts: the guide's cache of ``{name: layout}``, filled on first use (from the
            initial value, or from ``jax.eval_shape`` of ``init_fn`` where the site's value
            is given and the initial value is never built).

    Returns:
        The pytree the site's vector holds.
    """

    def init(rng_key):
        tree = init_fn(rng_key)
        layout = _layout(tree)
        if _size(layout) > PACK_MAX_VALUES:
            return tree
        layouts[name] = layout
        return _ravel(tree)

    value = numpyro.param(name, init)
    if not _is_packed(value):
        return value
    if name not in layouts:
        layouts[name] = _layout(jax.eval_shape(init_fn, jax.random.key(0)))
    return unpack(layouts[name], value, name)


def param_layouts(guide) -> dict:
    """The guide's cache of packed layouts (a guide pickled before packing has none)."""
    return guide.__dict__.setdefault("_packed_layouts", {})


def unpack(layout, vector, name: str = "packed"):
    """The pytree of ``layout`` (from :func:`packed_param`) that ``vector`` holds."""
    treedef, leaves = layout
    sizes = [math.prod(shape) for shape, _ in leaves]
    size = sum(sizes)
    if jnp.shape(vector) != (size,):
        raise ValueError(
            f"The param site '{name}' holds {jnp.shape(vector)[0]} values where this guide's "
            f"flow has {size}: these params were made for another guide (another flow, "
            "architecture or latent size). Pass the params this guide was trained with "
            "(svi.get_params(state), or load_guide's)."
        )
    offsets = np.cumsum(sizes)[:-1]
    if not _is_concrete(vector):
        # One split, whose gradient is one concatenation (a slice per leaf pads each
        # leaf's gradient to the whole vector).
        parts = jnp.split(vector, offsets)
        out = [p.reshape(shape).astype(dtype) for p, (shape, dtype) in zip(parts, leaves)]
    else:  # on the host: eager splits and reshapes compile a kernel per new shape
        parts = np.split(np.asarray(vector), offsets)
        out = [
            jnp.asarray(p.reshape(shape).astype(dtype)) for p, (shape, dtype) in zip(parts, leaves)
        ]
    return jax.tree_util.tree_unflatten(treedef, out)


def _size(layout) -> int:
    return sum(math.prod(shape) for shape, _ in layout[1])


def _layout(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(leaf.shape), jnp.dtype(leaf.dtype)) for leaf in leaves)


def _ravel(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    dtype = jnp.result_type(*leaves)
    if not _is_concrete(leaves):
        return jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in leaves])
    # On the host: no kernel to compile for each new set of shapes.
    return jnp.asarray(np.concatenate([np.ravel(leaf).astype(dtype) for leaf in leaves]))


def _is_packed(value) -> bool:
    """One vector (not a pytree of the flow's arrays)."""
    return jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(value)) and (
        jnp.ndim(value) == 1
    )
