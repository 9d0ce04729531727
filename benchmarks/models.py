"""Benchmark models: Neal's funnel (10-D), a 2-D dual moon, eight schools (centred), a
logistic regression with 25 features, a centred hierarchical regression with 60
groups, and two multimodal targets (a ring of eight Gaussians, a two-Gaussian mixture in
20-D). Data are generated with fixed seeds.

The models themselves are :mod:`numpyro_flows.examples` at its defaults; this module
names them for the benchmarks (``MODELS``) and keeps the names it has always exported
(the ``import X as X`` lines re-export them).
"""

from __future__ import annotations

import numpy as np

from numpyro_flows.examples import GAUSSIAN_MIXTURE_DIM as GAUSSIAN_MIXTURE_DIM
from numpyro_flows.examples import HIERARCHICAL as HIERARCHICAL
from numpyro_flows.examples import LOGISTIC as LOGISTIC
from numpyro_flows.examples import (
    SCHOOLS_SIGMA,
    SCHOOLS_Y,
    dual_moon,
    dual_moon_log_normaliser,
    eight_schools_centered,
    funnel,
    hierarchical_centered,
    logistic_regression,
    ring_of_gaussians,
)
from numpyro_flows.examples import dual_moon_log_density as dual_moon_log_density
from numpyro_flows.examples import gaussian_mixture as gaussian_mixture20
from numpyro_flows.examples import gaussian_mixture_log_density as gaussian_mixture_log_density
from numpyro_flows.examples import hierarchical_data as hierarchical_data
from numpyro_flows.examples import logistic_data as logistic_data
from numpyro_flows.examples import ring_of_gaussians_log_density as ring_of_gaussians_log_density

SCHOOLS = {"y": SCHOOLS_Y, "sigma": SCHOOLS_SIGMA}


def ring_mode_fractions(z, num_modes: int = 8) -> np.ndarray:
    """Share of draws ``(S, 2)`` nearest to each mode of :func:`ring_of_gaussians`."""
    angle = np.arctan2(np.asarray(z)[:, 1], np.asarray(z)[:, 0])
    nearest = np.round(angle / (2 * np.pi / num_modes)).astype(int) % num_modes
    return np.bincount(nearest, minlength=num_modes) / len(nearest)


# name -> (model, log normaliser if known: -ELBO - log Z = KL)
MODELS = {
    "funnel10": (funnel, 0.0),
    "dual_moon": (dual_moon, None),  # filled lazily: quadrature
    "eight_schools_centered": (eight_schools_centered, None),
    "logistic25": (logistic_regression, None),
    "hierarchical60": (hierarchical_centered, None),
    "ring8": (ring_of_gaussians, 0.0),
    "gaussian_mixture20": (gaussian_mixture20, 0.0),
}


def log_normaliser(name: str) -> float | None:
    """The log normalising constant of ``MODELS[name]`` where it is known (else ``None``)."""
    if name == "dual_moon":
        return dual_moon_log_normaliser()
    return MODELS[name][1]
