"""SVI speed: median step time after compile, first-step compile time, and compile time
against depth. Guides are measured interleaved in one process (round-robin, medians),
since the machine is shared and noisy.

    python -m benchmarks.speed [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoIAFNormal

from benchmarks.common import write_json
from benchmarks.guides import all_guides
from benchmarks.models import MODELS
from numpyro_flows import AutoIAF, AutoNeuralSpline

PARTICLES = 8


def _svi(model, guide):
    return SVI(model, guide, optax.adam(1e-3), Trace_ELBO(num_particles=PARTICLES))


def first_step_seconds(model, make_guide) -> tuple[float, object, object]:
    """Wall time from a fresh guide to the end of the first jitted SVI step."""
    guide = make_guide(model)
    svi = _svi(model, guide)
    t0 = time.perf_counter()
    state = svi.init(jax.random.key(0))
    update = jax.jit(svi.update)
    state, loss = update(state)
    jax.block_until_ready(loss)
    return time.perf_counter() - t0, update, state


def step_microseconds(update, state, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        state, loss = update(state)
    jax.block_until_ready(loss)
    return (time.perf_counter() - t0) / steps * 1e6


def step_times(model_names, guide_names, rounds: int, steps: int) -> dict:
    guides = all_guides()
    out = {}
    for model_name in model_names:
        model = MODELS[model_name][0]
        compiled, compile_s = {}, {}
        for name in guide_names:
            seconds, update, state = first_step_seconds(model, guides[name])
            compiled[name] = (update, state)
            compile_s[name] = seconds
        times = {name: [] for name in guide_names}
        for _ in range(rounds):  # interleaved rounds
            for name in guide_names:
                update, state = compiled[name]
                times[name].append(step_microseconds(update, state, steps))
        base = times.get("numpyro.AutoIAFNormal")
        out[model_name] = {
            name: {
                "step_us": statistics.median(times[name]),
                "compile_s": compile_s[name],
                "ratio_to_numpyro_iaf": (
                    statistics.median(np.asarray(times[name]) / np.asarray(base)) if base else None
                ),
            }
            for name in guide_names
        }
        for name in guide_names:
            r = out[model_name][name]
            print(
                f"{model_name:24s} {name:32s} step {r['step_us']:8.0f} us  "
                f"compile {r['compile_s']:5.2f} s  "
                f"ratio {r['ratio_to_numpyro_iaf'] or float('nan'):.2f}",
                flush=True,
            )
    return out


def compile_vs_depth(depths, repeats: int) -> dict:
    """First-step compile time of a deep IAF: ours (scan over layers) vs NumPyro's."""
    model = MODELS["funnel10"][0]
    makers = {
        "AutoIAF": lambda n: lambda m: AutoIAF(m, num_flows=n),
        "AutoNeuralSpline": lambda n: lambda m: AutoNeuralSpline(m, num_flows=n),
        "numpyro.AutoIAFNormal": lambda n: lambda m: AutoIAFNormal(m, num_flows=n),
    }
    out = {name: {} for name in makers}
    for depth in depths:
        samples = {name: [] for name in makers}
        for _ in range(repeats):
            for name, make in makers.items():
                samples[name].append(first_step_seconds(model, make(depth))[0])
        for name in makers:
            out[name][depth] = statistics.median(samples[name])
        print(
            f"depth {depth:3d}: " + "  ".join(f"{name} {out[name][depth]:.2f}s" for name in makers),
            flush=True,
        )
    return out


def flow_grad_compile(depths, repeats: int, dim: int = 5) -> dict:
    """Compile time of ``jax.jit(jax.grad(loss))`` through a ``neural_spline`` flow alone."""
    from numpyro_flows import flows

    out = {}
    x = jax.random.normal(jax.random.key(1), (16, dim))
    for depth in depths:
        times = []
        for _ in range(repeats):
            flow = flows.neural_spline(num_flows=depth)
            params = flow.init(jax.random.key(0), dim)

            def loss(p, flow=flow):
                y, log_det = flow.transform(p).forward_and_log_det(x)
                return (y**2).mean() - log_det.mean()

            t0 = time.perf_counter()
            jax.jit(jax.grad(loss)).lower(params).compile()
            times.append(time.perf_counter() - t0)
        out[depth] = statistics.median(times)
        print(f"neural_spline jit(grad) depth {depth:3d}: {out[depth]:.2f}s", flush=True)
    return out


def run(quick: bool = False) -> dict:
    guides = all_guides()
    names = list(guides)
    models = ["funnel10", "dual_moon", "eight_schools_centered", "logistic25", "hierarchical60"]
    rounds, steps = (3, 200) if quick else (7, 1000)
    depths = (2, 8, 32) if quick else (2, 4, 8, 16, 32)
    result = {
        "particles": PARTICLES,
        "step_time": step_times(models, names, rounds, steps),
        "compile_vs_depth": compile_vs_depth(depths, 1 if quick else 3),
        "flow_grad_compile": flow_grad_compile(depths, 1 if quick else 3),
    }
    write_json("speed", result)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
