"""The ``numpyro-flows`` command line: ``demo`` and ``fit``.

    numpyro-flows demo [--model funnel|eight_schools] [--out DIR] [--fast] [--force]
    numpyro-flows fit path/to/model.py:model --data data.json --out posterior.nc \
        [--guide default|spline|spline-coupling|iaf|realnvp] [--neutra] [--strict] [--force]

``fit`` trains with :func:`numpyro_flows.fit_guide` (its defaults unless overridden) and,
with ``--neutra``, runs :func:`numpyro_flows.neutra_nuts` at its defaults.

Every run ends with a run report: the guide's PSIS k-hat with its verdict and, with
``--neutra``, divergences, the largest r-hat and the smallest bulk and tail ESS, each
flagged when bad.

Exit codes: 0 done; 2 bad input (a missing file, no such function, data that do not
match the model's arguments or hold NaN / inf / overflowing values, a discrete latent, an
existing ``--out`` without ``--force``, ...), reported in one line; 3 the run finished and
its output was written, but the run report flags problems and ``--strict`` was given;
130 interrupted (Ctrl-C). Outputs are written to a temporary file and renamed, so an
existing file is never half-overwritten, and they get the permissions the umask gives a
new file.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import sys
import warnings
from pathlib import Path

from numpyro_flows._io import write_atomically

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_BAD_REPORT = 3
EXIT_INTERRUPTED = 130

# --guide names: (class in numpyro_flows, its arguments); "default" is fit_guide's choice.
GUIDES = {
    "default": (None, {}),
    "spline": ("AutoNeuralSpline", {}),
    "spline-coupling": ("AutoNeuralSpline", {"coupling": True}),
    "iaf": ("AutoIAF", {}),
    "realnvp": ("AutoRealNVP", {}),
}


class UserError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""


# ---------------------------------------------------------------------- shared helpers
def guide_factory(name: str, warm_start: str | None = None):
    """The ``guide`` argument of :func:`numpyro_flows.fit_guide` for a ``--guide`` name:
    ``None`` (its default guide) or a factory taking the model."""
    import numpyro_flows

    class_name, kwargs = GUIDES[name]
    if class_name is None:
        return None
    if warm_start is not None:
        kwargs = {**kwargs, "warm_start": warm_start}
    guide_class = getattr(numpyro_flows, class_name)
    return lambda model: guide_class(model, **kwargs)


def fit_model(model, data: dict, args):
    """``fit_guide`` with the command line's choices; model errors become one line."""
    import jax

    from numpyro_flows.guide_fit import fit_guide

    try:
        return fit_guide(
            jax.random.key(args.seed),
            model,
            guide=guide_factory(args.guide, args.warm_start),
            # NeuTra needs one flow; otherwise the default guide may be a mixture of
            # flows where the posterior has several modes.
            modes=not args.neutra,
            num_steps=args.steps,
            num_particles=args.particles,
            learning_rate=args.lr,
            max_steps=args.max_steps,
            khat_samples=0,  # the run report measures it
            progress_bar=not args.quiet,
            **data,
        )
    except KeyboardInterrupt:
        raise
    except Exception as error:  # the model with these data: report it in one line
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"cannot fit this model: {type(error).__name__}: {message} (--debug shows where)"
        ) from None


# ---------------------------------------------------------------------- fit
def load_model(spec: str):
    """``path/to/file.py:function`` -> the function."""
    path_text, _, name = spec.rpartition(":")
    if not path_text or not name:
        raise UserError(f"model must be given as path/to/file.py:function, got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"model file {str(path)!r} not found")
    module_name = f"_numpyro_flows_user_{abs(hash(str(path.resolve())))}"
    sys.path.insert(0, str(path.resolve().parent))
    try:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except Exception as error:  # the user's file failed to import
        raise UserError(
            f"could not import {str(path)!r}: {type(error).__name__}: {error}"
        ) from None
    finally:
        sys.path.pop(0)
    function = getattr(module, name, None)
    if not callable(function):
        available = sorted(
            n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
        )
        listed = ", ".join(available) or "none"
        raise UserError(f"{str(path)!r} has no function {name!r} (functions there: {listed})")
    return function


def load_data(path: str | None, model) -> dict:
    """Reads a JSON object of model arguments, checks it against the signature and checks
    the values (:func:`numpyro_flows.checks.check_model_data`)."""
    from numpyro_flows.checks import check_model_data

    data = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"data file {path!r} not found")
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise UserError(f"data file {path!r} is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise UserError(f"data file {path!r} must hold a JSON object of model arguments")
    signature = inspect.signature(model)
    try:
        signature.bind(**data)
    except TypeError as error:
        names = ", ".join(signature.parameters)
        raise UserError(
            f"data do not match the model's arguments ({names}): {error}; data keys: "
            f"{', '.join(data) or 'none'}"
        ) from None
    try:
        _, data = check_model_data((), data)
    except ValueError as error:
        raise UserError(f"data file {path!r}: {error}") from None
    return data


def check_output_path(out: Path, force: bool) -> None:
    """Refuses an existing ``out`` unless ``force``; the folder must exist."""
    if not out.parent.exists():
        raise UserError(f"output folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a folder; give a file name such as posterior.nc")
    if out.exists() and not force:
        raise UserError(
            f"--out {str(out)!r} already exists; pass --force to replace it, or choose another file"
        )


def guide_report(rng_key, guide, params, data) -> tuple[str, str]:
    """The guide's k-hat line of the run report, and the verdict in it."""
    from numpyro_flows.diagnostics import psis_diagnostic

    try:
        psis = psis_diagnostic(rng_key, guide, params, **data)
    except ValueError as error:  # e.g. no guide draw has a finite model density
        verdict = f"failed: {error}"
        return f"guide k-hat: not available ({verdict})", verdict
    return f"guide k-hat: {psis.khat:.2f} ({psis.verdict})", psis.verdict


def run_fit(args) -> int:
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from numpyro_flows.arviz import to_inference_data
    from numpyro_flows.neutra import neutra_nuts
    from numpyro_flows.reports import RunReportWarning, mcmc_report, verdict_is_bad

    out = Path(args.out)
    model = load_model(args.model)
    data = load_data(args.data, model)
    check_output_path(out, args.force)
    fit = fit_model(model, data, args)
    guide, params = fit.guide, fit.params
    khat_line, verdict = guide_report(jax.random.key(args.seed + 1), guide, params, data)
    report = [khat_line]
    if args.neutra:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunReportWarning)  # printed in the run report
            result = neutra_nuts(
                jax.random.key(args.seed + 2),
                guide,
                params,
                num_warmup=args.num_warmup,
                num_samples=args.num_samples,
                num_chains=args.num_chains,
                progress_bar=not args.quiet,
                khat_samples=0,
                **data,
            )
        idata = to_inference_data(result)
        mcmc = mcmc_report(result.samples, result.sample_stats)
        report += [f"NeuTra-NUTS {line}" for line in str(mcmc).splitlines()]
        # NUTS targets the exact posterior whatever the guide: a k-hat above 0.7 only
        # slows it down. Its own diagnostics decide (and degenerate weights).
        bad = bool(mcmc.problems()) or verdict.startswith("failed")
    else:
        idata = to_inference_data(
            guide,
            params,
            rng_key=jax.random.key(args.seed + 3),
            num_samples=args.num_samples,
            **data,
        )
        bad = verdict_is_bad(verdict)
    print("run report:")
    for line in report:
        print(f"  {line}")
    write_atomically(out, lambda tmp: idata.to_netcdf(tmp))
    print(f"wrote {out}")
    if bad and args.strict:
        print(
            f"numpyro-flows: the run report flags problems (--strict): exit code {EXIT_BAD_REPORT}",
            file=sys.stderr,
        )
        return EXIT_BAD_REPORT
    return EXIT_OK


# ---------------------------------------------------------------------- demo
def run_demo(args) -> int:
    from numpyro_flows import demo

    return demo.main(args)


class HelpWithDefaults(argparse.HelpFormatter):
    """Adds ``(default: ...)`` to every option that has a default value (not to flags,
    which are off unless given, nor to options without a default)."""

    def _get_help_string(self, action):
        text = action.help or ""
        no_default = any(action.default is v for v in (None, False, argparse.SUPPRESS))
        if not no_default and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    formatter = HelpWithDefaults
    parser = argparse.ArgumentParser(
        prog="numpyro-flows",
        description=__doc__.split("\n")[0],
        epilog=(
            f"exit codes: {EXIT_OK} done, {EXIT_BAD_INPUT} bad input, {EXIT_BAD_REPORT} bad "
            f"run report with --strict, {EXIT_INTERRUPTED} interrupted"
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo",
        help="flow guide + NeuTra-NUTS vs NUTS on a built-in model",
        formatter_class=formatter,
    )
    d.add_argument("--model", choices=("funnel", "eight_schools"), default="funnel", help="model")
    d.add_argument("--out", default="demo-output", help="output folder (created)")
    d.add_argument("--fast", action="store_true", help="small step counts (a smoke test)")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--force", action="store_true", help="replace earlier outputs in --out")

    f = sub.add_parser(
        "fit",
        help="fit a flow guide to your model, write InferenceData",
        formatter_class=formatter,
        epilog=(
            f"exit codes: {EXIT_OK} done, {EXIT_BAD_INPUT} bad input, {EXIT_BAD_REPORT} "
            f"output written but the run report flags problems and --strict was given, "
            f"{EXIT_INTERRUPTED} interrupted"
        ),
    )
    f.add_argument("model", help="path/to/file.py:function")
    f.add_argument(
        "--data",
        help="JSON object of the model's keyword arguments (lists become arrays, at any depth)",
    )
    f.add_argument("--out", required=True, help="NetCDF file to write (InferenceData)")
    f.add_argument("--force", action="store_true", help="replace --out if it exists")
    f.add_argument(
        "--guide",
        choices=list(GUIDES),
        default="default",
        # No "--" in this text: the help test reads each option's help up to the next "--".
        help="flow guide: fit_guide's default (an IAF with a full affine layer, or, without "
        "NeuTra, one flow per mode where the posterior has several) or a preset",
    )
    f.add_argument(
        "--warm-start",
        choices=("laplace", "auto"),
        default=None,
        help="start a preset at the Laplace approximation (the default guide uses 'auto')",
    )
    f.add_argument("--neutra", action="store_true", help="then run NeuTra-NUTS")
    f.add_argument(
        "--strict",
        action="store_true",
        help=f"exit with code {EXIT_BAD_REPORT} when the run report flags problems",
    )
    f.add_argument(
        "--steps",
        type=int,
        default=None,
        help="SVI steps with a cosine-decayed learning rate (default: until the loss stops "
        "improving, within the step cap below; see numpyro_flows.fit_guide)",
    )
    f.add_argument(
        "--max-steps",
        type=int,
        default=30_000,
        help="the most SVI steps when no step count is given",
    )
    f.add_argument("--lr", type=float, default=3e-3, help="Adam's initial learning rate")
    f.add_argument("--particles", type=int, default=16, help="ELBO particles per step")
    f.add_argument(
        "--num-samples", type=int, default=1000, help="posterior draws (per chain with NeuTra)"
    )
    f.add_argument("--num-warmup", type=int, default=1000, help="NUTS warmup steps per chain")
    f.add_argument("--num-chains", type=int, default=4, help="NeuTra-NUTS chains")
    f.add_argument("--seed", type=int, default=0, help="random seed")
    f.add_argument("--x64", action="store_true", help="float64 (jax_enable_x64)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.add_argument("--debug", action="store_true", help="show tracebacks of model errors")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_fit(args) if args.command == "fit" else run_demo(args)
    except UserError as error:
        print(f"numpyro-flows: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("numpyro-flows: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
