"""Conditioner networks: ``init(rng_key) -> params`` and ``apply(params, x, context)``."""

from numpyro_flows.nn.common import ACTIVATIONS, get_activation
from numpyro_flows.nn.made import MADE, default_hidden_dims, made_degrees, made_masks
from numpyro_flows.nn.mlp import MLP

__all__ = [
    "ACTIVATIONS",
    "MADE",
    "MLP",
    "default_hidden_dims",
    "get_activation",
    "made_degrees",
    "made_masks",
]
