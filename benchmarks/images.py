"""Image flows on scikit-learn's digits: numpyro_flows against normflows (PyTorch).

The protocol of ``benchmarks.digits`` (1500 training and 297 test images of 8 x 8 pixels
with 17 levels, uniform dequantization, logit preprocessing with alpha = 0.05, test
bits/dim over 8 fixed noise draws): both libraries train the same architectures for the
same epochs, batch size 128, Adam 1e-3, one CPU thread each, interleaved in one run:

* multiscale Glow: 2 levels, 4 steps per level, 64 hidden channels, channel masks;
* multiscale RealNVP: the same, ActNorm after each coupling, channel masks (the paper's
  after a squeeze; numpyro_flows' default) and checkerboard masks, with the fixed half
  packed to half the width as normflows does it (``mask="packed_checkerboard"``: half the
  conditioner's work); numpyro_flows' full-resolution checkerboard (the paper's masked
  convolutions, ``mask="checkerboard"``) is reported beside them (``realnvp_fullres``);
* MAF on the 64 flattened pixels: 5 layers with 128 hidden units (normflows: with an LU
  permutation between layers; numpyro_flows: reversal);
* a full-covariance Gaussian in logit space (numpyro_flows only; an LU-linear flow);
* the Glow with variational dequantization (numpyro_flows only, ``glow_vdeq``): test
  bits/dim are then the variational bound, over 8 draws of ``q`` per image.

numpyro_flows trains with :func:`numpyro_flows.training.fit` as a user would
(``dequantize=UniformDequantization(17)``, no validation split): one run of 10 epochs for
the epoch-10 figure and one of all epochs (the same seed: its first 10 epochs are those
of the first run); time per epoch is the median of the second, warm run's epochs
(``FitResult.epoch_seconds``: compiled code reused, the per-epoch host work included), as
normflows' is the median of its training epochs. Both take 12 steps per epoch (normflows'
last batch holds the 1500 % 128 remaining images, ``fit`` fills it up to 128 from the
start of the epoch's shuffle); the time per step is reported too.

    python -m benchmarks.images                  # 2 seeds, 30 epochs
    python -m benchmarks.images --quick          # 1 seed, 10 epochs

Writes ``benchmarks/results/images.json``; ``python -m benchmarks --report-only`` puts it
into ``RESULTS.md``. normflows, torch and scikit-learn are benchmark-only dependencies
(``benchmarks/requirements.txt``); without normflows its rows read "not installed".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _ours(model: str):
    from numpyro_flows import flows
    from numpyro_flows.bijections import LogitPreprocess
    from numpyro_flows.layers import LULinearLayer, Sequential

    logit = LogitPreprocess(0.05)
    if model == "glow":
        return flows.multiscale_glow(2, 4, 64)
    if model == "realnvp":
        return flows.multiscale_realnvp(2, 4, 64, mask="packed_checkerboard")
    if model == "realnvp_fullres":
        return flows.multiscale_realnvp(2, 4, 64, mask="checkerboard")
    if model == "realnvp_channel":
        return flows.multiscale_realnvp(2, 4, 64, mask="channel")
    if model == "maf":
        # Reversal between layers, as measured (maf's default, "auto", is random orders
        # for D > 2).
        maf = flows.maf(5, (128, 128), nonlinearity="elu", permutation="reverse").layer
        return flows.Flow(Sequential((maf, logit)), "maf_logit")
    if model == "gaussian":
        return flows.Flow(Sequential((LULinearLayer(), logit)), "gaussian_logit")
    raise ValueError(model)


def run_ours(model: str, seed: int, epochs: int, eval_epoch: int) -> dict:
    """Trains one numpyro_flows model with ``fit``; returns its figures."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from benchmarks import digits
    from numpyro_flows.density import FlowDistribution
    from numpyro_flows.images import UniformDequantization, VariationalDequantization
    from numpyro_flows.training import fit

    train, test = digits.load_digits_split()
    if model in ("maf", "gaussian"):
        train, test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    noise = digits.test_noise(test)
    variational = model.endswith("_vdeq")
    flow = _ours(model.removesuffix("_vdeq"))
    optimizer = optax.adam(1e-3)
    dequantize = (
        VariationalDequantization(digits.NUM_LEVELS)
        if variational
        else UniformDequantization(digits.NUM_LEVELS)
    )

    def run(num_epochs):
        start = time.perf_counter()
        result = fit(
            jax.random.key(seed),
            flow,
            train,
            optimizer=optimizer,
            num_epochs=num_epochs,
            batch_size=128,
            val_fraction=0.0,
            ema_decay=None,  # normflows returns its iterates: so do we
            dequantize=dequantize,
            progress_bar=False,
        )
        return result, time.perf_counter() - start

    log_prob = jax.jit(lambda params, x: FlowDistribution(flow, params).log_prob(x))

    @jax.jit
    def bound(params, q_params, key, levels):
        x, log_q = dequantize(key, levels, q_params)
        return FlowDistribution(flow, params).log_prob(x) - log_q

    def test_bpd(result):
        if variational:  # the variational bound, over 8 draws of q per image
            levels = jnp.asarray(test, jnp.float32)
            keys = jax.random.split(jax.random.key(1), len(noise))
            draws = [bound(result.params, result.dequantizer_params, k, levels) for k in keys]
        else:
            draws = [
                log_prob(result.params, jnp.asarray(digits.dequantize(test, u), jnp.float32))
                for u in noise
            ]
        return float(digits.bits_per_dim(-np.mean([np.mean(d) for d in draws])))

    first, first_seconds = run(eval_epoch)  # compiles
    full, seconds = run(epochs)
    params = full.params
    samples = FlowDistribution(flow, params).sample(jax.random.key(seed + 100), (64,))
    steps = full.num_steps / epochs
    return {
        "library": "numpyro_flows",
        "model": model,
        "seed": seed,
        "num_params": int(sum(np.size(a) for a in jax.tree.leaves(params))),
        "epochs": epochs,
        "test_bpd": {str(eval_epoch): test_bpd(first), str(epochs): test_bpd(full)},
        "train_bpd_last": float(digits.bits_per_dim(full.train_losses[-1])),
        # The median epoch, as normflows' (fit's own per-epoch wall times).
        "time_per_epoch_s": float(np.median(full.epoch_seconds)),
        "time_per_step_s": float(np.median(full.epoch_seconds)) / steps,
        "wall_per_epoch_s": seconds / epochs,
        "steps_per_epoch": steps,
        "first_run_s": first_seconds,
        "nan_samples": int((~np.isfinite(np.asarray(samples).reshape(64, -1))).any(1).sum()),
    }


def compile_by_steps(steps=(2, 4, 8, 16)) -> dict:
    """Set-up + compile of one training step (init, then the jitted loss and gradient on a
    batch of 128 images) of ``multiscale_glow(2, K, 64)``: flat in ``K`` when the steps of
    a level run under one ``lax.scan``."""
    import jax

    from numpyro_flows import flows
    from numpyro_flows.training import negative_log_likelihood

    x = jax.random.uniform(jax.random.key(0), (128, 8, 8, 1), minval=0.01, maxval=0.99)
    seconds = {}
    for k in steps:
        flow = flows.multiscale_glow(2, k, 64)
        start = time.perf_counter()
        params = flow.init(jax.random.key(0), (8, 8, 1))
        step = jax.jit(jax.value_and_grad(lambda p, f=flow: negative_log_likelihood(f, p, x)))
        jax.block_until_ready(step(params))
        seconds[str(k)] = time.perf_counter() - start
    return seconds


def run_theirs(model: str, seed: int, epochs: int, eval_epoch: int) -> dict:
    from benchmarks import digits

    try:
        from benchmarks.images_torch import run_normflows
    except ImportError:
        return {"library": "normflows", "model": model, "seed": seed, "error": "not installed"}
    out = run_normflows(model, seed, epochs, (eval_epoch, epochs))
    steps = -(-digits.NUM_TRAIN // 128)
    out.update(
        library="normflows",
        test_bpd={str(k): v for k, v in out["test_bpd"].items()},
        time_per_step_s=out["time_per_epoch_s"] / steps,
        steps_per_epoch=steps,
    )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--models",
        nargs="+",
        default=[
            "glow",
            "realnvp",
            "realnvp_channel",
            "realnvp_fullres",
            "maf",
            "gaussian",
            "glow_vdeq",
        ],
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    if ONE_THREAD not in os.environ.get("XLA_FLAGS", ""):
        # XLA reads its flags when JAX starts: run again in a process that pins it to one
        # thread, as torch is.
        env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD}")
        command = [sys.executable, "-m", "benchmarks.images", *(argv or sys.argv[1:])]
        subprocess.run(command, env=env, check=True)
        return

    from benchmarks.common import write_json

    seeds = args.seeds or ([0] if args.quick else [0, 1])
    epochs = args.epochs or (10 if args.quick else 30)
    eval_epoch = min(10, epochs)
    runs = []
    for seed in seeds:
        for model in args.models:
            ours_only = model in ("gaussian", "realnvp_fullres") or model.endswith("_vdeq")
            runners = [run_ours] if ours_only else [run_ours, run_theirs]
            for runner in runners:
                out = runner(model, seed, epochs, eval_epoch)
                runs.append(out)
                print(
                    f"{out['library']:>14} {model:8} seed {seed}: "
                    + (
                        out["error"]
                        if "error" in out
                        else f"test bits/dim {out['test_bpd']}, "
                        f"{out['time_per_epoch_s']:.3f} s/epoch"
                    ),
                    flush=True,
                )
    compile_seconds = compile_by_steps()
    print(f"set-up + compile of a training step by steps per level: {compile_seconds}")
    path = write_json(
        "images",
        {
            "compile_by_steps": compile_seconds,
            "protocol": {
                "epochs": epochs,
                "eval_epoch": eval_epoch,
                "seeds": seeds,
                "batch_size": 128,
                "optimizer": "Adam 1e-3",
                "threads": "one thread (torch.set_num_threads(1); XLA " + ONE_THREAD + ")",
            },
            "runs": runs,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
