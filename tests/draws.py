"""Random test inputs drawn with NumPy.

Outside ``jit`` every new shape of a ``jax.random`` draw compiles its own random-number
kernel (0.2-0.7 s each on a 2-core CPU; 173 of them took 130 s of the default test run).
Test inputs need no such kernel: these are NumPy draws handed to JAX as arrays.
"""

import jax.numpy as jnp
import numpy as np


def normal(seed: int, shape, scale=1.0, dtype=None):
    """``scale * N(0, 1)`` draws of ``shape``, a JAX array of the default float dtype
    unless ``dtype`` is given (the same seed, the same draws)."""
    draws = np.random.default_rng(seed).standard_normal(shape) * np.asarray(scale)
    return jnp.asarray(draws, dtype or jnp.result_type(float))


def uniform(seed: int, shape, low=0.0, high=1.0, dtype=None):
    """Uniform draws on ``(low, high)`` of ``shape``."""
    draws = np.random.default_rng(seed).uniform(low, high, shape)
    return jnp.asarray(draws, dtype or jnp.result_type(float))
