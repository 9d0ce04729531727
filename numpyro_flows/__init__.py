"""Normalizing flows for NumPyro: flow bijections, flow autoguides for SVI, NeuTra HMC,
PSIS diagnostics and ArviZ export."""

from numpyro_flows import (
    bijections,
    checks,
    density,
    diagnostics,
    distributed,
    examples,
    flows,
    modes,
    monitoring,
    nn,
    reparam,
    reports,
    training,
)
from numpyro_flows.arviz import to_inference_data
from numpyro_flows.autoguides import (
    AutoBNAF,
    AutoFlow,
    AutoIAF,
    AutoNeuralSpline,
    AutoRealNVP,
)
from numpyro_flows.density import FlowDistribution, flow_module
from numpyro_flows.diagnostics import psis_diagnostic, psis_resample
from numpyro_flows.flows import Flow
from numpyro_flows.guide_fit import GuideFit, fit_guide
from numpyro_flows.hybrid import AutoHybridFlow
from numpyro_flows.mixture import AutoFlowMixture
from numpyro_flows.modes import Modes, find_modes
from numpyro_flows.monitoring import run_svi_with_khat
from numpyro_flows.neutra import neutra_nuts, neutra_reparam
from numpyro_flows.objectives import StratifiedELBO
from numpyro_flows.serialization import load_guide, save_guide
from numpyro_flows.training import FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "AutoBNAF",
    "AutoFlow",
    "AutoFlowMixture",
    "AutoHybridFlow",
    "AutoIAF",
    "AutoNeuralSpline",
    "AutoRealNVP",
    "FitResult",
    "Flow",
    "FlowDistribution",
    "GuideFit",
    "Modes",
    "StratifiedELBO",
    "bijections",
    "checks",
    "density",
    "diagnostics",
    "distributed",
    "examples",
    "fit",
    "find_modes",
    "fit_guide",
    "flow_module",
    "flows",
    "load_guide",
    "modes",
    "monitoring",
    "neutra_nuts",
    "neutra_reparam",
    "nn",
    "psis_diagnostic",
    "psis_resample",
    "reparam",
    "reports",
    "run_svi_with_khat",
    "save_guide",
    "to_inference_data",
    "training",
]
