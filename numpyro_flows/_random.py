"""NumPy random draws seeded by a JAX key, for draws made outside ``jit``.

Outside ``jit`` every new shape of a ``jax.random`` draw compiles its own random-number
kernel (0.2-0.5 s on a 2-core CPU), paid again whenever a model's size changes. Small
host-side draws (starting points, test noise) come from a NumPy generator seeded by the
key's data instead: the same key still gives the same draws.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def numpy_generator(rng_key) -> np.random.Generator:
    """A NumPy generator seeded by a concrete JAX key (typed, or a raw ``uint32`` key)."""
    if jnp.issubdtype(jnp.result_type(rng_key), jax.dtypes.prng_key):
        rng_key = jax.random.key_data(rng_key)
    return np.random.default_rng(np.asarray(rng_key, np.uint32).ravel())
