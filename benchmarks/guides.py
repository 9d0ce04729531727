"""The guides the benchmarks compare: ours, NumPyro's, and FlowJAX flows wrapped as
NumPyro guides (only when FlowJAX is installed: it is a benchmark-only dependency)."""

from __future__ import annotations

from numpyro.infer import autoguide

from numpyro_flows import AutoBNAF, AutoIAF, AutoNeuralSpline, AutoRealNVP

OURS = {
    "AutoIAF": lambda m, **kw: AutoIAF(m, **kw),
    "AutoRealNVP": lambda m, **kw: AutoRealNVP(m, **kw),
    "AutoNeuralSpline": lambda m, **kw: AutoNeuralSpline(m, **kw),
    "AutoNeuralSpline(coupling)": lambda m, **kw: AutoNeuralSpline(m, coupling=True, **kw),
    "AutoBNAF": lambda m, **kw: AutoBNAF(m, **kw),
}

NUMPYRO = {
    "numpyro.AutoDiagonalNormal": lambda m, **kw: autoguide.AutoDiagonalNormal(m, **kw),
    "numpyro.AutoMultivariateNormal": lambda m, **kw: autoguide.AutoMultivariateNormal(m, **kw),
    "numpyro.AutoIAFNormal": lambda m, **kw: autoguide.AutoIAFNormal(m, **kw),
    "numpyro.AutoBNAFNormal": lambda m, **kw: autoguide.AutoBNAFNormal(m, **kw),
}


def flowjax_guides() -> dict:
    """FlowJAX guides if FlowJAX is importable, else an empty dict."""
    try:
        from benchmarks.flowjax_guide import FLOWJAX
    except ImportError:
        return {}
    return FLOWJAX


def all_guides() -> dict:
    return {**OURS, **NUMPYRO, **flowjax_guides()}
