"""Pytree helpers shared by the objective and the loop (internal)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def tree_where(condition, new, old):
    """``new`` where ``condition`` holds, else ``old``, leaf by leaf."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


def all_finite(tree) -> jax.Array:
    """Whether every leaf of ``tree`` is finite (``True`` for an empty tree)."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


__all__ = ["all_finite", "tree_where"]
