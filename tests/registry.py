"""One registry of flows and bijections, run through the same contract checks.

Adding a bijection to the library means adding one entry here.
"""

from functools import partial

from numpyro.distributions.transforms import AffineTransform

from numpyro_flows import flows
from numpyro_flows.bijections import Affine, RationalQuadraticSpline
from numpyro_flows.layers import (
    ActNormLayer,
    AutoregressiveLayer,
    BatchNormLayer,
    BNAFLayer,
    CouplingLayer,
    ElementwiseLayer,
    InvertLayer,
    LULinearLayer,
    PlanarLayer,
    RadialLayer,
    Repeat,
    Sequential,
)

# Every public factory, with its defaults.
FACTORIES = {
    "iaf": flows.iaf,
    "maf": flows.maf,
    "realnvp": flows.realnvp,
    "nice": flows.nice,
    "neural_spline": flows.neural_spline,
    "neural_spline_coupling": partial(flows.neural_spline, coupling=True),
    "planar": flows.planar,
    "radial": flows.radial,
    "glow": flows.glow,
    "bnaf": flows.bnaf,
}

# Image flows (events (H, W, C)), small enough to check on 4 x 4 images.
IMAGE_SHAPE = (4, 4, 2)
IMAGE_FACTORIES = {
    "multiscale_glow": partial(flows.multiscale_glow, 2, 2, 8),
    "multiscale_realnvp": partial(flows.multiscale_realnvp, 2, 2, 8),
    "multiscale_realnvp_checkerboard": partial(
        flows.multiscale_realnvp, 2, 2, 8, mask="checkerboard", logit_alpha=None
    ),
    "multiscale_realnvp_packed_checkerboard": partial(
        flows.multiscale_realnvp, 1, 2, 8, mask="packed_checkerboard"
    ),
}

# Options of the factories that change the structure, checked at one size.
VARIANTS = {
    "neural_spline_maf": partial(flows.neural_spline, invert=True),
    "maf_batch_norm": partial(flows.maf, batch_norm=True),
    # Evaluation mode: the full network (train mode is checked in test_dropout.py).
    "maf_dropout": partial(flows.maf, dropout=0.2),
    "bnaf_deep": partial(flows.bnaf, num_flows=3, hidden_factors=(4,)),
    "realnvp_batch_norm": partial(flows.realnvp, batch_norm=True),
    "neural_spline_no_affine": partial(flows.neural_spline, affine=False),
    # The density orientation (the map acts data to base; wider ReLU conditioners).
    "realnvp_density": partial(flows.realnvp, invert=True),
    "neural_spline_coupling_density": partial(flows.neural_spline, coupling=True, invert=True),
}

# Every bijection family as a single layer: name -> (layer, supports a context).
SPLINE = RationalQuadraticSpline(num_bins=6, bound=4.0)
LAYERS = {
    "affine_autoregressive": (AutoregressiveLayer(Affine()), True),
    "affine_autoregressive_skip": (
        AutoregressiveLayer(Affine(), skip_connections=True, residual=True),
        True,
    ),
    "spline_autoregressive": (AutoregressiveLayer(SPLINE), True),
    "affine_masked_autoregressive_inverse": (InvertLayer(AutoregressiveLayer(Affine())), True),
    "affine_coupling": (CouplingLayer(Affine()), True),
    "spline_coupling": (CouplingLayer(SPLINE), True),
    "elementwise_affine": (ElementwiseLayer(Affine()), False),
    "elementwise_spline": (ElementwiseLayer(SPLINE), False),
    "planar": (PlanarLayer(), False),
    "radial": (RadialLayer(), False),
    "actnorm": (ActNormLayer(), False),
    "lu_linear": (LULinearLayer(), False),
    "batchnorm": (BatchNormLayer(), False),
    "bnaf_gated": (BNAFLayer((4,), residual="gated"), True),
    "chain": (Sequential((ActNormLayer(), LULinearLayer())), False),
    # A NumPyro elementwise transform among the layers, lifted to the vector event (the
    # bounded ones, sigmoid, tanh, softplus, are checked on their domains in
    # test_elementwise.py: no float inverse exists at |x| = 1e4).
    "chain_numpyro_elementwise": (Sequential((ActNormLayer(), AffineTransform(0.5, 2.0))), False),
    "scan_random_permutation": (
        Repeat(AutoregressiveLayer(Affine()), 3, permutation="random"),
        True,
    ),
}
