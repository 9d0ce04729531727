"""scikit-learn's bundled 8×8 digits as a small image density benchmark.

The protocol of ``/work/shared/anchors/images-digits.md``, shared by the PyTorch
(``benchmarks.images_torch``) and JAX sides so that both see the same split, the same test
noise and the same bits/dim formula: pixel levels k in 0..16, dequantized to
x = (k + u) / 17 with u ~ U(0, 1), bits/dim reported on the 17-level scale. numpy and
scikit-learn only.
"""

from __future__ import annotations

import math

import numpy as np

NUM_LEVELS = 17
NUM_TRAIN = 1500
NUM_DIMS = 64
TEST_NOISE_SEED = 1


def load_digits_split() -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(train, test)``: int64 levels 0..16, shapes (1500, 8, 8, 1), (297, 8, 8, 1).

    Images are shuffled with ``numpy.random.RandomState(0).permutation``; the first 1500
    are the training set, the remaining 297 the test set. Channel-last layout.
    """
    from sklearn.datasets import load_digits

    images = load_digits().images  # (1797, 8, 8), float64 holding integers 0..16
    levels = np.rint(images).astype(np.int64)[..., None]
    levels = levels[np.random.RandomState(0).permutation(len(levels))]
    return levels[:NUM_TRAIN], levels[NUM_TRAIN:]


def test_noise(test: np.ndarray, num_draws: int = 8, seed: int = TEST_NOISE_SEED) -> np.ndarray:
    """Fixed dequantization noise ``(num_draws, *test.shape)``, uniform on [0, 1), float64.

    Every model's test NLL is averaged over these same draws.
    """
    return np.random.default_rng(seed).random((num_draws, *test.shape))


def dequantize(levels: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """x = (k + u) / 17: levels plus uniform noise, in [0, 1] units."""
    return (levels + noise) / NUM_LEVELS


def bits_per_dim(nll_x, num_dims: int = NUM_DIMS, num_levels: int = NUM_LEVELS):
    """Bits per dimension on the discrete scale from the continuous NLL in [0, 1] units.

    bits/dim = NLL_x / (D ln 2) + log2(num_levels), where NLL_x = -log p(x) is the density
    of x = (k + u) / num_levels on [0, 1]^D (nats, per image) and D = ``num_dims``. The
    log2(num_levels) term converts the density on [0, 1] to one on [0, num_levels]. A
    uniform distribution over the 17 levels scores log2(17) = 4.087.
    """
    bpd = np.asarray(nll_x, dtype=np.float64) / (num_dims * math.log(2)) + math.log2(num_levels)
    return float(bpd) if bpd.ndim == 0 else bpd
