"""Bijections: NumPyro transforms whose parameters are pytree leaves.

The contract every bijection keeps is written once, in :mod:`numpyro_flows.bijections.base`.
A bijection is a *transformer* (:class:`Affine`, :class:`RationalQuadraticSpline`) placed
in a *structure* (:class:`MaskedAutoregressive`, :class:`Coupling`, :class:`Elementwise`)
with a *conditioner* from :mod:`numpyro_flows.nn`; the remaining families (planar,
radial, ActNorm, LU linear, permutations, batch norm) stand on their own.
"""

from numpyro_flows.bijections.actnorm import ActNorm
from numpyro_flows.bijections.additive import Additive
from numpyro_flows.bijections.affine import Affine
from numpyro_flows.bijections.autoregressive import MaskedAutoregressive
from numpyro_flows.bijections.base import (
    Bijection,
    Chain,
    ElementwiseTransform,
    Invert,
    Permuted,
    Reversed,
    Scan,
    lift_elementwise,
)
from numpyro_flows.bijections.batchnorm import BatchNorm
from numpyro_flows.bijections.bnaf import BlockNeuralAutoregressive
from numpyro_flows.bijections.composed import ComposedTransformer
from numpyro_flows.bijections.coupling import Coupling
from numpyro_flows.bijections.elementwise import Elementwise, LogitPreprocess, TanhTransform
from numpyro_flows.bijections.lu import LULinear
from numpyro_flows.bijections.permute import Permute, Reverse
from numpyro_flows.bijections.planar import Planar
from numpyro_flows.bijections.radial import Radial
from numpyro_flows.bijections.spline import RationalQuadraticSpline
from numpyro_flows.bijections.transformer import Transformer, bounded_log_scale

__all__ = [
    "ActNorm",
    "Additive",
    "Affine",
    "BatchNorm",
    "Bijection",
    "BlockNeuralAutoregressive",
    "Chain",
    "ComposedTransformer",
    "Coupling",
    "Elementwise",
    "ElementwiseTransform",
    "Invert",
    "LULinear",
    "LogitPreprocess",
    "MaskedAutoregressive",
    "Permute",
    "Permuted",
    "Reversed",
    "Planar",
    "Radial",
    "RationalQuadraticSpline",
    "Reverse",
    "Scan",
    "TanhTransform",
    "Transformer",
    "bounded_log_scale",
    "lift_elementwise",
]
