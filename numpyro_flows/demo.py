"""``numpyro-flows demo``: a flow guide, NeuTra-NUTS and plain NUTS on a built-in model.

The models are :func:`numpyro_flows.examples.funnel` (10-D) and
:func:`numpyro_flows.examples.eight_schools_centered`.

Fits a flow guide with :func:`numpyro_flows.fit_guide` at its defaults (with a progress
bar), runs plain NUTS and NeuTra-NUTS (:func:`numpyro_flows.neutra_nuts` at its defaults),
prints a side-by-side table (min bulk ESS per gradient, divergences, k-hat, wall time)
and a run report (the guide's k-hat verdict; divergences, r-hat and bulk/tail ESS of both
samplers, each flagged when bad), and writes InferenceData NetCDF files, a PNG of the
funnel's neck (or of eight schools' ``tau``-``theta`` funnel) for the three posteriors and
``summary.json``. Earlier outputs in the folder are replaced only with ``--force``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from numpyro_flows._io import write_atomically
from numpyro_flows.examples import SCHOOLS_SIGMA as SCHOOLS_SIGMA
from numpyro_flows.examples import SCHOOLS_Y as SCHOOLS_Y
from numpyro_flows.examples import eight_schools_centered as eight_schools
from numpyro_flows.examples import funnel
from numpyro_flows.reports import RunReportWarning

# What the demo writes into its --out folder.
OUTPUTS = ("neutra.nc", "nuts.nc", "guide.nc", "neck.png", "summary.json")

# model (from numpyro_flows.examples, under the demo's names), neck variables (x axis,
# y axis) for the plot
MODELS = {
    "funnel": (funnel, ("v", "x[0]")),
    "eight_schools": (eight_schools, ("log tau", "theta[0]")),
}


def _neck(samples: dict, model_name: str):
    if model_name == "funnel":
        return np.ravel(samples["v"]), np.ravel(np.asarray(samples["x"])[..., 0])
    return np.ravel(np.log(samples["tau"])), np.ravel(np.asarray(samples["theta"])[..., 0])


def _plot(path: Path, model_name: str, panels: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = MODELS[model_name][1]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), sharex=True, sharey=True)
    for ax, (title, samples) in zip(axes, panels.items()):
        xs, ys = _neck(samples, model_name)
        ax.scatter(xs, ys, s=3, alpha=0.4)
        ax.set_title(title)
        ax.set_xlabel(labels[0])
    axes[0].set_ylabel(labels[1])
    fig.suptitle(f"{model_name}: the neck of the funnel")
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def main(args) -> int:
    from numpyro.infer import MCMC, NUTS

    from numpyro_flows.arviz import to_inference_data
    from numpyro_flows.cli import UserError
    from numpyro_flows.guide_fit import fit_guide
    from numpyro_flows.neutra import neutra_nuts, nuts_sample_stats
    from numpyro_flows.reports import mcmc_report

    max_steps, warmup, draws, chains = (600, 200, 200, 2) if args.fast else (30_000, 1000, 1000, 4)
    # The same chains for plain NUTS and NeuTra-NUTS.
    sampler = {
        "num_warmup": warmup,
        "num_samples": draws,
        "num_chains": chains,
        "chain_method": "sequential",
    }
    model, _ = MODELS[args.model]
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; the demo writes into a folder")
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not getattr(args, "force", False):
        raise UserError(
            f"{str(out)!r} already holds demo outputs ({', '.join(existing)}); pass --force to "
            "replace them, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    rows = {}

    print(f"[1/3] fitting a flow guide to {args.model} (fit_guide at its defaults)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunReportWarning)  # the verdict is in the report
        fit = fit_guide(jax.random.key(args.seed), model, max_steps=max_steps)
    guide, params, psis, svi_seconds = fit.guide, fit.params, fit.psis, fit.seconds
    guide_draws = guide.sample_posterior(
        jax.random.key(args.seed + 2), params, sample_shape=(chains * draws,)
    )
    guide_verdict = psis.verdict
    rows["flow guide (SVI)"] = {
        "min_ess": psis.ess,
        "ess_per_gradient": None,
        "divergences": None,
        "khat": psis.khat,
        "khat_verdict": guide_verdict,
        "seconds": svi_seconds,
    }

    print(f"[2/3] plain NUTS ({chains} chains x {warmup}+{draws})")
    mcmc = MCMC(NUTS(model), **sampler, progress_bar=True)
    t0 = time.perf_counter()
    mcmc.run(jax.random.key(args.seed + 3), extra_fields=("diverging", "num_steps"))
    nuts_seconds = time.perf_counter() - t0
    nuts_samples = mcmc.get_samples(group_by_chain=True)
    nuts_stats = nuts_sample_stats(mcmc)
    nuts_report = mcmc_report(nuts_samples, nuts_stats)
    ess = nuts_report.min_ess_bulk
    rows["NUTS"] = {
        "min_ess": ess,
        "ess_per_gradient": ess / nuts_stats["num_steps"].sum(),
        "divergences": int(nuts_stats["diverging"].sum()),
        "khat": None,
        "problems": nuts_report.problems(),
        "seconds": nuts_seconds,
    }

    print(f"[3/3] NeuTra-NUTS ({chains} chains x {warmup}+{draws})")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunReportWarning)  # printed in the run report below
        result = neutra_nuts(
            jax.random.key(args.seed + 4),
            guide,
            params,
            **sampler,
            khat_samples=0,
        )
    neutra_seconds = time.perf_counter() - t0
    neutra_report = mcmc_report(result.samples, result.sample_stats)
    ess = neutra_report.min_ess_bulk
    rows["NeuTra-NUTS"] = {
        "min_ess": ess,
        "ess_per_gradient": ess / result.sample_stats["num_steps"].sum(),
        "divergences": int(result.sample_stats["diverging"].sum()),
        "khat": psis.khat,
        "problems": neutra_report.problems(),
        "seconds": neutra_seconds,
    }

    print_table(args.model, rows)
    print_report(guide_verdict, psis.khat, {"NUTS": nuts_report, "NeuTra-NUTS": neutra_report})
    from numpyro_flows._arviz_import import import_arviz

    az = import_arviz()
    outputs = {
        "neutra.nc": to_inference_data(result),
        "nuts.nc": az.from_numpyro(mcmc),
        "guide.nc": to_inference_data(
            guide, params, rng_key=jax.random.key(args.seed + 5), num_samples=chains * draws
        ),
    }
    for name, idata in outputs.items():
        write_atomically(out / name, lambda tmp, idata=idata: idata.to_netcdf(tmp))
    _plot(
        out / "neck.png",
        args.model,
        {"plain NUTS": nuts_samples, "NeuTra-NUTS": result.samples, "flow guide": guide_draws},
    )
    write_atomically(
        out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1))
    )
    print(f"wrote {', '.join(str(out / n) for n in OUTPUTS)}")
    return 0


def print_report(guide_verdict: str, khat: float, reports: dict) -> None:
    """The run report: the guide's k-hat verdict and each sampler's diagnostics."""
    print("run report:")
    print(f"  flow guide k-hat: {khat:.2f} ({guide_verdict})")
    for name, report in reports.items():
        for line in str(report).splitlines():
            print(f"  {name} {line}")
    print()


def _cell(value, fmt):
    width = int("".join(c for c in fmt.split(".")[0] if c.isdigit()) or 0)
    return "-".rjust(width) if value is None else format(value, fmt)


def print_table(model_name: str, rows: dict) -> None:
    header = (
        f"{'method':18s} {'min ESS':>8s} {'ESS/grad':>9s} {'divergent':>9s} {'k-hat':>6s} "
        f"{'time (s)':>8s}"
    )
    print(f"\n{model_name}\n{header}\n{'-' * len(header)}")
    for name, r in rows.items():
        print(
            f"{name:18s} {_cell(r['min_ess'], '8.0f')} {_cell(r['ess_per_gradient'], '9.4f')} "
            f"{_cell(r['divergences'], '9d')} {_cell(r['khat'], '6.2f')} {r['seconds']:8.1f}"
        )
    print("(flow guide row: ESS is the PSIS importance-sampling ESS of 2000 guide draws)\n")
