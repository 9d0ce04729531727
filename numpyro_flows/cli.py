"""The ``numpyro-flows`` command line: ``demo`` and ``fit``.

    numpyro-flows demo [--model funnel|eight_schools] [--out DIR] [--fast]
    numpyro-flows fit path/to/model.py:model --data data.json --out posterior.nc \
        [--guide spline|spline-coupling|iaf|realnvp] [--neutra]

Bad input (a missing file, no such function, data that does not match the model's
arguments, a discrete latent, ...) gets a one-line error and exit code 2; outputs are
written to a temporary file and renamed, so an existing file is never half-overwritten.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import sys
import tempfile
from pathlib import Path

EXIT_BAD_INPUT = 2

GUIDES = {
    "spline": ("AutoNeuralSpline", {}),
    "spline-coupling": ("AutoNeuralSpline", {"coupling": True}),
    "iaf": ("AutoIAF", {}),
    "realnvp": ("AutoRealNVP", {}),
}


class UserError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""


# ---------------------------------------------------------------------- shared helpers
def make_guide(name: str, model, warm_start: str | None = None):
    import numpyro_flows

    class_name, kwargs = GUIDES[name]
    return getattr(numpyro_flows, class_name)(model, warm_start=warm_start, **kwargs)


def train(
    model,
    guide,
    *,
    steps: int,
    lr: float,
    particles: int,
    seed: int,
    progress_bar=True,
    **model_kwargs,
):
    """SVI with Adam and cosine decay (lr -> lr / 100); returns ``(params, losses)``."""
    import jax
    import optax
    from numpyro.infer import SVI, Trace_ELBO

    optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.01))
    svi = SVI(model, guide, optimizer, Trace_ELBO(num_particles=particles))
    result = svi.run(jax.random.key(seed), steps, progress_bar=progress_bar, **model_kwargs)
    return result.params, result.losses


def write_atomically(path: Path, write) -> None:
    """``write(tmp_path)`` then rename onto ``path`` (same folder, so the rename is atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    """Reads a JSON object of model arguments and checks it against the signature."""
    import jax.numpy as jnp

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
    return {k: (jnp.asarray(v) if isinstance(v, list) else v) for k, v in data.items()}


def run_fit(args) -> int:
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from numpyro_flows.arviz import to_inference_data
    from numpyro_flows.diagnostics import psis_diagnostic
    from numpyro_flows.neutra import neutra_nuts

    out = Path(args.out)
    if not out.parent.exists():
        raise UserError(f"output folder {str(out.parent)!r} does not exist")
    model = load_model(args.model)
    data = load_data(args.data, model)
    guide = make_guide(args.guide, model, args.warm_start)
    try:
        params, _ = train(
            model,
            guide,
            steps=args.steps,
            lr=args.lr,
            particles=args.particles,
            seed=args.seed,
            progress_bar=not args.quiet,
            **data,
        )
    except Exception as error:  # the model with these data: report it in one line
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"cannot fit this model: {type(error).__name__}: {message} (--debug shows where)"
        ) from None
    khat = psis_diagnostic(jax.random.key(args.seed + 1), guide, params, **data).khat
    print(f"guide k-hat: {khat:.2f} ({'ok' if khat < 0.7 else 'the guide misses posterior mass'})")
    if args.neutra:
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
    else:
        idata = to_inference_data(
            guide,
            params,
            rng_key=jax.random.key(args.seed + 3),
            num_samples=args.num_samples,
            **data,
        )
    write_atomically(out, lambda tmp: idata.to_netcdf(tmp))
    print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------- demo
def run_demo(args) -> int:
    from numpyro_flows import demo

    return demo.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="numpyro-flows", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="flow guide + NeuTra-NUTS vs NUTS on a built-in model")
    d.add_argument("--model", choices=("funnel", "eight_schools"), default="funnel")
    d.add_argument("--out", default="demo-output", help="output folder (created)")
    d.add_argument("--fast", action="store_true", help="small step counts (a smoke test)")
    d.add_argument("--seed", type=int, default=0)

    f = sub.add_parser("fit", help="fit a flow guide to your model, write InferenceData")
    f.add_argument("model", help="path/to/file.py:function")
    f.add_argument("--data", help="JSON object of the model's keyword arguments")
    f.add_argument("--out", required=True, help="NetCDF file to write (InferenceData)")
    f.add_argument("--guide", choices=list(GUIDES), default="spline")
    f.add_argument("--warm-start", choices=("laplace",), default=None)
    f.add_argument("--neutra", action="store_true", help="then run NeuTra-NUTS")
    f.add_argument("--steps", type=int, default=10_000)
    f.add_argument("--lr", type=float, default=5e-3)
    f.add_argument("--particles", type=int, default=4)
    f.add_argument("--num-samples", type=int, default=1000)
    f.add_argument("--num-warmup", type=int, default=1000)
    f.add_argument("--num-chains", type=int, default=4)
    f.add_argument("--seed", type=int, default=0)
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
        return 130


if __name__ == "__main__":
    sys.exit(main())
