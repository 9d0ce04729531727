"""Density estimation: held-out log-likelihood and fit time, numpyro_flows vs FlowJAX.

Two comparisons, on five data sets:

* **matched**: the same architecture size (layers, hidden width, one hidden layer, spline
  bins, ReLU) and the same training protocol (Adam, batch size, epochs, 10% validation
  split, early stopping with the best params returned) for ``numpyro_flows.training.fit``
  and FlowJAX's ``flowjax.train.fit_to_data``;
* **defaults**: each library as a user meets it: ``fit(key, flow, data)`` with ``maf()``,
  ``realnvp(invert=True)`` and ``neural_spline(coupling=True, invert=True)`` against
  ``fit_to_data(key, flow, data)`` with FlowJAX's ``masked_autoregressive_flow``,
  ``coupling_flow`` and ``coupling_flow`` with a rational-quadratic spline (8 knots,
  interval 4, as in FlowJAX's documentation: the spline has no default).

FlowJAX is a benchmark-only dependency (``benchmarks/requirements.txt``); without it its
columns read "not installed".

Run::

    python -m benchmarks.density            # full: 24 seeds matched, 6 at the defaults
    python -m benchmarks.density --quick    # 1 seed, up to 30 epochs, smaller data

Writes ``benchmarks/results/density.json`` and ``benchmarks/results/density.md``.

Times are wall-clock seconds on a shared, noisy machine: medians over seeds of warm fits
(compiled code reused), with a first one-epoch fit of each flow (compile time plus one
epoch) reported separately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import RESULTS, write_json
from numpyro_flows import flows
from numpyro_flows.density import FlowDistribution
from numpyro_flows.training import fit

try:  # a benchmark-only dependency
    import flowjax
    from flowjax.bijections import RationalQuadraticSpline as FlowjaxSpline
    from flowjax.distributions import Normal as FlowjaxNormal
    from flowjax.flows import coupling_flow, masked_autoregressive_flow
    from flowjax.train import fit_to_data
except ImportError:  # pragma: no cover - depends on the environment
    flowjax = None


# ---------------------------------------------------------------------- data
def two_moons(num: int, rng) -> np.ndarray:
    """Two interleaved half circles (noise 0.1), standardised; ``(num, 2)``."""
    t = rng.uniform(0.0, np.pi, num)
    upper = rng.random(num) < 0.5
    x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    points = np.stack([x, y], 1) + 0.1 * rng.standard_normal((num, 2))
    return ((points - [0.5, 0.25]) / [0.87, 0.5]).astype(np.float32)


def mixture_1d(num: int, rng) -> np.ndarray:
    """``0.5 N(-2, 0.5^2) + 0.5 N(2, 0.5^2)``; ``(num, 1)``."""
    centres = np.where(rng.random(num) < 0.5, -2.0, 2.0)
    return (centres + 0.5 * rng.standard_normal(num))[:, None].astype(np.float32)


def banana_8d(num: int, rng) -> np.ndarray:
    """A chain of bananas: ``x_1 = z_1``, ``x_i = z_i + 0.7 (z_{i-1}^2 - 1)``, ``z ~ N(0, I)``,
    scaled to unit variance; ``(num, 8)``."""
    z = rng.standard_normal((num, 8))
    x = z.copy()
    x[:, 1:] += 0.7 * (z[:, :-1] ** 2 - 1.0)
    return (x / x.std(0)).astype(np.float32)


def pinwheel(num: int, rng) -> np.ndarray:
    """Five curved arms (radial sd 0.3, tangential sd 0.1, rate 0.25), standardised;
    ``(num, 2)``."""
    arms = 5
    angles = np.linspace(0, 2 * np.pi, arms, endpoint=False)
    features = rng.standard_normal((num, 2)) * [0.3, 0.1] + [1.0, 0.0]
    angle = angles[rng.integers(0, arms, num)] + 0.25 * np.exp(features[:, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    points = np.stack(
        [cos * features[:, 0] - sin * features[:, 1], sin * features[:, 0] + cos * features[:, 1]],
        1,
    )
    return (points / points.std(0)).astype(np.float32)


def checkerboard(num: int, rng) -> np.ndarray:
    """Uniform on the dark squares of a 4 x 4 board, standardised; ``(num, 2)``: a density
    with flat tops and sharp edges."""
    x1 = rng.uniform(-2, 2, num)
    x2 = rng.uniform(0, 1, num) - 2.0 * rng.integers(0, 2, num) + np.floor(x1) % 2
    points = np.stack([x1, x2], 1)
    return (points / points.std(0)).astype(np.float32)


DATASETS = {
    "two_moons": two_moons,
    "mixture_1d": mixture_1d,
    "banana_8d": banana_8d,
    "pinwheel": pinwheel,
    "checkerboard": checkerboard,
}


def gaussian_log_likelihood(train, test) -> float:
    """Held-out mean log-likelihood of the full-covariance Gaussian MLE."""
    mean = train.mean(0)
    cov = np.atleast_2d(np.cov(train.T, bias=True))
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, (test - mean).T)
    dim = train.shape[1]
    return float(
        np.mean(-0.5 * (white**2).sum(0))
        - np.log(np.diag(chol)).sum()
        - 0.5 * dim * np.log(2 * np.pi)
    )


# ---------------------------------------------------------------------- the two libraries
# Architecture shared by both sides: layers, hidden width (one hidden layer), spline bins,
# and FlowJAX's default ReLU conditioners (ours default to ELU; ReLU keeps the comparison
# about the libraries, not the activation).
LAYERS, WIDTH, BINS, BOUND, ACTIVATION = 5, 64, 8, 5.0, "relu"


def ours(name: str, defaults: bool = False):
    """The numpyro_flows flow for a benchmark row (at its defaults for data, or matched)."""
    if defaults:
        return {
            "maf": flows.maf,
            "realnvp": lambda: flows.realnvp(invert=True),
            "neural_spline": lambda: flows.neural_spline(coupling=True, invert=True),
            "glow": flows.glow,
        }[name]()
    size = {"hidden_dims": (WIDTH,), "nonlinearity": ACTIVATION}
    return {
        "maf": lambda: flows.maf(LAYERS, **size),
        "realnvp": lambda: flows.realnvp(LAYERS, invert=True, **size),
        "neural_spline": lambda: flows.neural_spline(
            LAYERS, num_bins=BINS, bound=BOUND, coupling=True, affine=False, invert=True, **size
        ),
        "glow": lambda: flows.glow(LAYERS, **size),
    }[name]()


def theirs(name: str, key, dim: int, defaults: bool = False):
    """The FlowJAX counterpart (``None`` where FlowJAX has none: Glow)."""
    base = FlowjaxNormal(jnp.zeros(dim))
    size = {} if defaults else {"flow_layers": LAYERS, "nn_width": WIDTH, "nn_depth": 1}
    if name == "maf":
        return masked_autoregressive_flow(key, base_dist=base, **size)
    if name == "realnvp":
        return coupling_flow(key, base_dist=base, **size)
    if name == "neural_spline":
        spline = (
            FlowjaxSpline(knots=8, interval=4)
            if defaults
            # FlowJAX's knots are the inner knots: BINS - 1 of them make BINS bins.
            else FlowjaxSpline(knots=BINS - 1, interval=BOUND)
        )
        return coupling_flow(key, base_dist=base, transformer=spline, **size)
    return None


FLOW_NAMES = ("maf", "realnvp", "neural_spline", "glow")


# A protocol's settings under each library's argument names.
OUR_NAMES = {
    "optimizer": "optimizer",
    "epochs": "num_epochs",
    "batch_size": "batch_size",
    "patience": "patience",
    "val_fraction": "val_fraction",
}
FLOWJAX_NAMES = {
    "optimizer": "optimizer",
    "epochs": "max_epochs",
    "batch_size": "batch_size",
    "patience": "max_patience",
    "val_fraction": "val_prop",
}


def fit_settings(protocol, names) -> dict:
    """Keyword arguments of one library's fit: the whole matched protocol, or at the
    defaults nothing (``epochs`` alone, when given, shortens the compiling first fit)."""
    if protocol["defaults"]:
        return {names["epochs"]: protocol["epochs"]} if "epochs" in protocol else {}
    return {names[key]: protocol[key] for key in names}


def fit_ours(name, train, test, seed, protocol):
    """``protocol["defaults"]``: the flow and ``fit`` at their defaults (``epochs`` only
    shortens the compiling first fit)."""
    flow = ours(name, protocol["defaults"])
    settings = fit_settings(protocol, OUR_NAMES)
    if not protocol["defaults"]:
        settings["ema_decay"] = None  # FlowJAX returns its iterates: so do we, matched
    t0 = time.perf_counter()
    result = fit(jax.random.key(seed), flow, train, progress_bar=False, **settings)
    jax.block_until_ready(result.params)
    seconds = time.perf_counter() - t0
    log_prob = jax.jit(lambda d, x: d.log_prob(x))
    held_out = float(jnp.mean(log_prob(FlowDistribution(flow, result.params), test)))
    return {"log_lik": held_out, "seconds": seconds, "epochs": len(result.train_losses)}


def fit_theirs(name, train, test, seed, protocol):
    key, fit_key = jax.random.split(jax.random.key(seed))
    model = theirs(name, key, train.shape[1], protocol["defaults"])
    if model is None:
        return None
    settings = fit_settings(protocol, FLOWJAX_NAMES)
    t0 = time.perf_counter()
    model, losses = fit_to_data(fit_key, model, jnp.asarray(train), show_progress=False, **settings)
    jax.block_until_ready(jax.tree.leaves(model))
    seconds = time.perf_counter() - t0
    held_out = float(jnp.mean(jax.jit(lambda x: model.log_prob(x))(jnp.asarray(test))))
    return {"log_lik": held_out, "seconds": seconds, "epochs": len(losses["train"])}


# ---------------------------------------------------------------------- the run
def run_library(fitter, name, train, test, seeds, protocol):
    """A one-epoch fit (compiles), then one warm fit per seed; medians over the warm fits."""
    first = fitter(name, train, test, seeds[0], {**protocol, "epochs": 1})
    if first is None:
        return None
    warm = [fitter(name, train, test, seed, protocol) for seed in seeds]
    return {
        "log_lik": statistics.median(r["log_lik"] for r in warm),
        "log_lik_runs": [r["log_lik"] for r in warm],
        "seconds": statistics.median(r["seconds"] for r in warm),
        "seconds_per_epoch": statistics.median(r["seconds"] / r["epochs"] for r in warm),
        "epochs": statistics.median(r["epochs"] for r in warm),
        "first_fit_seconds": first["seconds"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 30 epochs, less data")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--flows", nargs="*", default=list(FLOW_NAMES))
    parser.add_argument("--sections", nargs="*", default=["matched", "defaults"])
    parser.add_argument(
        "--seeds", type=int, default=6, help="seeds 0..N-1 at the defaults (not with --quick)"
    )
    parser.add_argument(
        "--matched-seeds", type=int, default=24, help="seeds 0..N-1 matched (not with --quick)"
    )
    parser.add_argument("--rows-out", help=argparse.SUPPRESS)  # a worker's rows, as JSON
    args = parser.parse_args(argv)

    num_train, num_test = (2000, 2000) if args.quick else (3000, 3000)
    # Over seeds the held-out log-likelihood of one row spreads by 0.02-0.13 nats, so a
    # median of three is no finer than the 0.02 nats the matched comparison allows. The
    # checkerboard's affine coupling read -0.023 on seeds 0-5 (and on 0-11) and -0.005 on
    # 0-23 (standard error of the difference 0.008): the matched section takes 24 seeds.
    seeds = {
        "matched": [0] if args.quick else list(range(args.matched_seeds)),
        "defaults": [0] if args.quick else list(range(args.seeds)),
    }
    protocol = {
        "learning_rate": 1e-3,
        "optimizer": optax.adam(1e-3),  # one object: compiled steps are reused
        "epochs": 30 if args.quick else 100,
        "patience": 10,
        "batch_size": 128,
        "val_fraction": 0.1,
    }
    protocols = {"matched": {**protocol, "defaults": False}, "defaults": {"defaults": True}}
    if args.quick:
        protocols["defaults"]["epochs"] = protocol["epochs"]
    rows = []
    if args.rows_out is None and len(args.datasets) > 1:
        # One process per data set: every fit compiles anew (FlowJAX's above all), and one
        # process for the whole run ran out of memory maps for the compiled code.
        rows = _rows_in_workers(argv if argv is not None else sys.argv[1:], args.datasets)
        args.datasets = []
    for data_name in args.datasets:
        rng = np.random.default_rng(0)
        train, test = DATASETS[data_name](num_train, rng), DATASETS[data_name](num_test, rng)
        gaussian = gaussian_log_likelihood(train, test)
        for section in args.sections:
            for name in args.flows:
                row = {
                    "section": section,
                    "dataset": data_name,
                    "flow": name,
                    "gaussian_log_lik": gaussian,
                }
                settings = protocols[section]
                row["ours"] = run_library(fit_ours, name, train, test, seeds[section], settings)
                row["flowjax"] = (
                    "not installed"
                    if flowjax is None
                    else run_library(fit_theirs, name, train, test, seeds[section], settings)
                )
                rows.append(row)
                print(section, format_row(row), flush=True)

    if args.rows_out is not None:
        Path(args.rows_out).write_text(json.dumps(rows, default=float))
        return
    settings = {
        "quick": args.quick,
        "num_train": num_train,
        "num_test": num_test,
        "seeds": seeds["defaults"],
        "matched_seeds": seeds["matched"],
        "layers": LAYERS,
        "hidden_width": WIDTH,
        "spline_bins": BINS,
        "activation": ACTIVATION,
        **{k: v for k, v in protocol.items() if k != "optimizer"},
        "flowjax": getattr(flowjax, "__version__", None) if flowjax else "not installed",
    }
    path = write_json("density", {"settings": settings, "rows": rows})
    markdown = to_markdown(rows, settings)
    (RESULTS / "density.md").write_text(markdown)
    print(markdown)
    print(f"wrote {path} and {Path(RESULTS / 'density.md')}")


def _rows_in_workers(argv, datasets) -> list:
    """The rows of each data set, each measured in a process of its own."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for data_name in datasets:
            out = Path(folder) / f"{data_name}.json"
            command = [sys.executable, "-m", "benchmarks.density", *_without_datasets(argv)]
            command += ["--datasets", data_name, "--rows-out", str(out)]
            subprocess.run(command, check=True)
            rows += json.loads(out.read_text())
    return rows


def _without_datasets(argv) -> list:
    """``argv`` less its ``--datasets`` option and values."""
    kept, skipping = [], False
    for arg in argv:
        if arg.startswith("--"):
            skipping = arg == "--datasets"
        if not skipping:
            kept.append(arg)
    return kept


def format_row(row) -> str:
    def side(result):
        if not isinstance(result, dict):
            return str(result or "n/a")
        return f"{result['log_lik']:.3f} nats, {result['seconds']:.1f}s"

    return (
        f"{row['dataset']:>10} {row['flow']:>13}: gaussian {row['gaussian_log_lik']:.3f}, "
        f"ours {side(row['ours'])}, flowjax {side(row['flowjax'])}"
    )


SECTION_TITLES = {
    "matched": "Matched architecture and training protocol",
    "defaults": "Each library at its defaults",
}
TABLE_HEADER = [
    "| data | flow | Gaussian | ours log-lik | FlowJAX log-lik | difference | of means ± se "
    "| ours s (compile) | FlowJAX s (compile) | fit-time ratio | ours ms/epoch "
    "| FlowJAX ms/epoch | per-epoch ratio | ours epochs | FlowJAX epochs |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def to_markdown(rows, settings) -> str:
    lines = [
        "# Density estimation: numpyro_flows vs FlowJAX",
        "",
        "Held-out mean log-likelihood (nats, higher is better; median over seeds "
        f"0-{settings.get('matched_seeds', settings['seeds'])[-1]} matched and "
        f"0-{settings['seeds'][-1]} at the defaults; difference = ours - FlowJAX of the "
        "medians, beside it the difference of the means with its standard error, "
        "sqrt(var_ours / n + var_FlowJAX / n) over seeds) and warm fit time (median "
        "seconds, compile excluded; in brackets a first one-epoch fit: compile time plus "
        f"one epoch; 0.0 where an earlier data set of the same shape compiled the same epoch). "
        f"{settings['num_train']} training rows (10% of them for validation), "
        f"{settings['num_test']} held out. FlowJAX has no Glow. FlowJAX {settings['flowjax']}. "
        "Ratios are ours / FlowJAX (below 1: ours faster). Fit times include early stopping, "
        "so the per-epoch ratio is the like-for-like speed comparison. "
        "`python -m benchmarks.density`.",
        "",
        f"**{SECTION_TITLES['matched']}**: Adam({settings['learning_rate']}), "
        f"batch {settings['batch_size']}, at most {settings['epochs']} epochs, patience "
        f"{settings['patience']}; {settings['layers']} layers of width "
        f"{settings['hidden_width']} (one hidden layer, ReLU), {settings['spline_bins']} spline "
        f"bins (FlowJAX's `knots={settings['spline_bins'] - 1}`: it counts the inner knots); "
        "our coupling flows with `invert=True`; neural_spline is the coupling form without "
        "the extra affine on both sides; ours without its parameter averaging "
        "(`ema_decay=None`): both libraries return the iterates.",
        "",
        f"**{SECTION_TITLES['defaults']}**: `fit(key, flow, data)` (Adam 1e-3 with clipping, "
        "batch 128, patience 20, at most 200 epochs, validating and returning the params' "
        "moving average, `ema_decay=0.98`) with `maf()`, `realnvp(invert=True)`, "
        "`neural_spline(coupling=True, invert=True)` and `glow()`, against FlowJAX's "
        "`fit_to_data(key, flow, data)` (Adam 5e-4, batch 100, patience 5, at most 100 "
        "epochs) with `masked_autoregressive_flow`, `coupling_flow` and `coupling_flow` with "
        "`RationalQuadraticSpline(knots=8, interval=4)` (8 layers of width 50).",
    ]
    for section, title in SECTION_TITLES.items():
        chosen = [row for row in rows if row.get("section", "matched") == section]
        if chosen:
            lines += ["", f"### {title}", "", *TABLE_HEADER, *map(_markdown_row, chosen)]
    lines.append("")
    return "\n".join(lines)


def _markdown_row(row) -> str:
    a, b = row["ours"], row["flowjax"]
    have_b = isinstance(b, dict)
    missing = b if isinstance(b, str) else "n/a"
    cells = [
        row["dataset"],
        row["flow"],
        f"{row['gaussian_log_lik']:.3f}",
        f"{a['log_lik']:.3f}",
        f"{b['log_lik']:.3f}" if have_b else missing,
        f"{a['log_lik'] - b['log_lik']:+.3f}" if have_b else "n/a",
        _difference_of_means(a["log_lik_runs"], b["log_lik_runs"]) if have_b else "n/a",
        f"{a['seconds']:.1f} ({a['first_fit_seconds']:.1f})",
        f"{b['seconds']:.1f} ({b['first_fit_seconds']:.1f})" if have_b else missing,
        f"{a['seconds'] / b['seconds']:.2f}" if have_b else "n/a",
        f"{1e3 * a['seconds_per_epoch']:.1f}",
        f"{1e3 * b['seconds_per_epoch']:.1f}" if have_b else missing,
        f"{a['seconds_per_epoch'] / b['seconds_per_epoch']:.2f}" if have_b else "n/a",
        f"{a['epochs']:g}",
        f"{b['epochs']:g}" if have_b else "n/a",
    ]
    return "| " + " | ".join(cells) + " |"


def _difference_of_means(ours, theirs) -> str:
    """``mean(ours) - mean(theirs) ± its standard error`` over seeds (unpaired: one seed
    means nothing shared between the libraries)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if min(len(ours), len(theirs)) < 2:
        return f"{ours.mean() - theirs.mean():+.3f}"
    se = np.sqrt(ours.var(ddof=1) / len(ours) + theirs.var(ddof=1) / len(theirs))
    return f"{ours.mean() - theirs.mean():+.3f} ± {se:.3f}"


if __name__ == "__main__":
    main()
