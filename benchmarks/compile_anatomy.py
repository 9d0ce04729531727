"""Where a guide's set-up + compile goes, and what XLA's optimisation level trades.

The protocol of issue 17 (funnel-10, 8 ELBO particles, a second ``svi.run(key, 1)`` with a
new guide of a kind already used in the process), split with JAX's own duration events
(``jax.monitoring``):

- *XLA backend*: XLA's compilation of the step's program (HLO passes, the fusion
  emitters, LLVM's optimisation and machine code);
- *MLIR lowering*: the traced program turned into the module XLA takes;
- *Python*: the rest: the guide's set-up (tracing the model, initial values), tracing the
  step, and the one step itself.

Each guide also runs ``benchmarks.step_breakdown``'s 200 steps inside one compiled
``lax.scan`` (the compiled step alone, median of 5 calls). Worker processes run at XLA's
default optimisation level and with ``XLA_FLAGS=--xla_backend_optimization_level=1``
(fewer LLVM optimisations), alternating, two repeats (seeds 0 and 1), medians. The flag
is a process-wide setting a user may choose for ``svi.run``; the package uses level 1
only for the functions it compiles itself (``numpyro_flows._compile``).

    python -m benchmarks.compile_anatomy [--repeats 2]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTICLES = 8
LEVELS = {"default": "", "O1": "--xla_backend_optimization_level=1"}
BACKEND = "/jax/core/compile/backend_compile_duration"
LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"


def _measure(name: str, seed: int, events: dict) -> dict:
    import jax
    import optax
    from numpyro.infer import SVI, Trace_ELBO

    from benchmarks.compile_time import _make
    from benchmarks.step_breakdown import in_scan_us, scanned_steps
    from numpyro_flows.examples import funnel as model

    def new_svi():
        return SVI(model, _make(name, None)(model), optax.adam(1e-3), Trace_ELBO(PARTICLES))

    jax.block_until_ready(new_svi().run(jax.random.key(seed), 1, progress_bar=False).losses)
    events.clear()
    t0 = time.perf_counter()
    svi = new_svi()
    result = svi.run(jax.random.key(seed), 1, progress_bar=False)
    jax.block_until_ready(result.losses)
    wall = time.perf_counter() - t0
    backend, lowering = sum(events[BACKEND]), sum(events[LOWERING])

    scanned, state = scanned_steps(svi), result.state
    jax.block_until_ready(scanned(state))
    steps = [in_scan_us(scanned, state) for _ in range(5)]
    return {
        "wall_s": wall,
        "backend_s": backend,
        "lowering_s": lowering,
        "python_s": wall - backend - lowering,
        "step_us": statistics.median(steps),
    }


def worker(seed: int) -> dict:
    import jax.monitoring

    import numpyro_flows
    from benchmarks.compile_time import GUIDES

    events = collections.defaultdict(list)
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **kw: events[event].append(seconds)
    )
    out = {"package": str(Path(numpyro_flows.__file__).parent)}
    for name in GUIDES:
        out[name] = _measure(name, seed, events)
    return out


def run(repeats: int) -> dict:
    from benchmarks.compile_time import run_in_worker

    samples: dict[str, dict[str, list[dict]]] = {}
    for seed in range(repeats):
        for level, flags in LEVELS.items():
            env = {"XLA_FLAGS": flags} if flags else {}
            result = run_in_worker(__file__, ROOT, ["--worker", "--seed", str(seed)], env)
            for name, row in result.items():
                samples.setdefault(level, {}).setdefault(name, []).append(row)
            print(f"seed {seed} {level} done", flush=True)
    medians = {
        level: {
            name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            for name, rows in by_guide.items()
        }
        for level, by_guide in samples.items()
    }
    for name, row in medians["default"].items():
        o1 = medians["O1"][name]
        print(
            f"{name:28s} wall {row['wall_s']:.2f} s = backend {row['backend_s']:.2f} + lowering "
            f"{row['lowering_s']:.2f} + python {row['python_s']:.2f}; step {row['step_us']:.0f} us"
            f" | O1: wall {o1['wall_s']:.2f} s, step {o1['step_us']:.0f} us"
        )
    return {
        "particles": PARTICLES,
        "repeats": repeats,
        "levels": LEVELS,
        "medians": medians,
        "samples": samples,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.seed)))
        return
    from benchmarks.common import write_json

    write_json("compile_anatomy", run(1 if args.quick else args.repeats))


if __name__ == "__main__":
    main()
