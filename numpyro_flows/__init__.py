"""Normalizing flows for NumPyro: bijections, flow guides, NeuTra, diagnostics."""

from numpyro_flows import bijections, flows, nn
from numpyro_flows.flows import Flow

__version__ = "0.1.0"

__all__ = ["Flow", "bijections", "flows", "nn"]
