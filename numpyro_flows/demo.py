"""``numpyro-flows demo``: a flow guide, NeuTra-NUTS and plain NUTS on a built-in model.

Trains a neural-spline guide (with a progress bar), runs plain NUTS and NeuTra-NUTS,
prints a side-by-side table (min bulk ESS per gradient, divergences, k-hat, wall time),
and writes InferenceData NetCDF files and a PNG of the funnel's neck (or of eight
schools' ``tau``-``theta`` funnel) for the three posteriors.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def funnel(dim: int = 10):
    """Neal's funnel: ``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, e^v)``, ``i < dim``."""
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)).expand([dim - 1]).to_event(1))


def eight_schools(y=SCHOOLS_Y, sigma=SCHOOLS_SIGMA):
    """Eight schools, centred: the classic funnel between ``tau`` and ``theta``."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(y)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


# model, neck variables (x axis, y axis) for the plot
MODELS = {
    "funnel": (funnel, ("v", "x[0]")),
    "eight_schools": (eight_schools, ("log tau", "theta[0]")),
}


def _neck(samples: dict, model_name: str):
    if model_name == "funnel":
        return np.ravel(samples["v"]), np.ravel(np.asarray(samples["x"])[..., 0])
    return np.ravel(np.log(samples["tau"])), np.ravel(np.asarray(samples["theta"])[..., 0])


def _min_ess(samples: dict) -> float:
    from numpyro_flows._arviz_import import import_arviz

    az = import_arviz()
    ess = az.ess(az.from_dict(posterior={k: np.asarray(v) for k, v in samples.items()}))
    return float(min(np.min(ess[v].values) for v in ess.data_vars))


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
    from numpyro_flows.cli import write_atomically

    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def main(args) -> int:
    from numpyro.infer import MCMC, NUTS

    from numpyro_flows.arviz import to_inference_data
    from numpyro_flows.cli import make_guide, train, write_atomically
    from numpyro_flows.diagnostics import psis_diagnostic
    from numpyro_flows.neutra import neutra_nuts, nuts_sample_stats

    steps, warmup, draws, chains = (800, 200, 200, 2) if args.fast else (6000, 500, 500, 4)
    model, _ = MODELS[args.model]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}

    print(f"[1/3] training a neural-spline guide on {args.model} ({steps} SVI steps)")
    guide = make_guide("spline", model)
    t0 = time.perf_counter()
    params, _ = train(model, guide, steps=steps, lr=5e-3, particles=8, seed=args.seed)
    svi_seconds = time.perf_counter() - t0
    psis = psis_diagnostic(jax.random.key(args.seed + 1), guide, params, num_samples=2000)
    guide_draws = guide.sample_posterior(
        jax.random.key(args.seed + 2), params, sample_shape=(chains * draws,)
    )
    rows["flow guide (SVI)"] = {
        "min_ess": psis.ess,
        "ess_per_gradient": None,
        "divergences": None,
        "khat": psis.khat,
        "seconds": svi_seconds,
    }

    print(f"[2/3] plain NUTS ({chains} chains x {warmup}+{draws})")
    mcmc = MCMC(
        NUTS(model),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="sequential",
        progress_bar=True,
    )
    t0 = time.perf_counter()
    mcmc.run(jax.random.key(args.seed + 3), extra_fields=("diverging", "num_steps"))
    nuts_seconds = time.perf_counter() - t0
    nuts_samples = mcmc.get_samples(group_by_chain=True)
    nuts_stats = nuts_sample_stats(mcmc)
    ess = _min_ess(nuts_samples)
    rows["NUTS"] = {
        "min_ess": ess,
        "ess_per_gradient": ess / nuts_stats["num_steps"].sum(),
        "divergences": int(nuts_stats["diverging"].sum()),
        "khat": None,
        "seconds": nuts_seconds,
    }

    print(f"[3/3] NeuTra-NUTS ({chains} chains x {warmup}+{draws})")
    t0 = time.perf_counter()
    result = neutra_nuts(
        jax.random.key(args.seed + 4),
        guide,
        params,
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="sequential",
        khat_samples=0,
    )
    neutra_seconds = time.perf_counter() - t0
    ess = _min_ess(result.samples)
    rows["NeuTra-NUTS"] = {
        "min_ess": ess,
        "ess_per_gradient": ess / result.sample_stats["num_steps"].sum(),
        "divergences": int(result.sample_stats["diverging"].sum()),
        "khat": psis.khat,
        "seconds": neutra_seconds,
    }

    print_table(args.model, rows)
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
    print(f"wrote {', '.join(str(out / n) for n in [*outputs, 'neck.png', 'summary.json'])}")
    return 0


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
