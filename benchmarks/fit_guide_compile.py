"""What ``fit_guide`` compiles besides its training loop, before and after a change, in
one run.

Each case is a second ``fit_guide`` call in a process that has made one already (the
notebook situation: the same kind of model met again), with one training step, so that
what is timed is the set-up: the mode search, the Laplace start, the compiled training
chunk and the PSIS draws. XLA compilations are counted from JAX's compile log. "Before"
is the package at a git ref (a temporary worktree), "after" the working tree; worker
processes alternate between the two, two repeats (seeds 0 and 1), medians.

    python -m benchmarks.fit_guide_compile [--before-ref REF] [--repeats 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import time
from pathlib import Path

MODELS = ("eight_schools_centered", "logistic_regression", "dual_moon")
COMPILE_LOG = re.compile(r"Finished XLA compilation of (.*) in ([0-9.]+) sec")


class _CompileLog(logging.Handler):
    """Collects ``(function, seconds)`` of each XLA compilation JAX logs."""

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        match = COMPILE_LOG.search(record.getMessage())
        if match:
            self.records.append((match.group(1), float(match.group(2))))


def worker(seed: int) -> dict:
    """In this process: per model, one warm-up ``fit_guide`` and one measured."""
    import jax

    import numpyro_flows
    from numpyro_flows import examples, fit_guide

    log = _CompileLog()
    logging.getLogger("jax").addHandler(log)
    logging.getLogger("jax").setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    out = {"package": str(Path(numpyro_flows.__file__).parent)}
    for name in MODELS:
        model = getattr(examples, name)
        for repeat in range(2):
            log.records.clear()
            t0 = time.perf_counter()
            fit = fit_guide(jax.random.key(seed + repeat), model, num_steps=1, progress_bar=False)
            jax.block_until_ready(fit.params)
            seconds = time.perf_counter() - t0
        # Eager single operations compile in a few ms each and are cached after the first
        # call; the count is of the compiled functions that matter.
        big = [(fn, s) for fn, s in log.records if s > 0.05]
        out[name] = {
            "seconds": seconds,
            "compiles": len(big),
            "compile_seconds": sum(s for _, s in big),
            "functions": [fn for fn, _ in big],
        }
    return out


def run(before_ref: str | None, repeats: int) -> dict:
    # Imported here: a worker runs as a script, with only the package under test on its path.
    from benchmarks.compile_time import alternating_versions, run_in_worker

    samples: dict[str, dict[str, list[dict]]] = {}
    for seed, version, path in alternating_versions(before_ref, repeats):
        result = run_in_worker(__file__, path, ["--worker", "--seed", str(seed)])
        for model, row in result.items():
            samples.setdefault(version, {}).setdefault(model, []).append(row)
        print(f"seed {seed} {version}: {result}", flush=True)
    medians = {
        version: {
            model: {
                "seconds": statistics.median(r["seconds"] for r in rows),
                "compile_seconds": statistics.median(r["compile_seconds"] for r in rows),
                "compiles": statistics.median(r["compiles"] for r in rows),
                "functions": rows[0]["functions"],
            }
            for model, rows in by_model.items()
        }
        for version, by_model in samples.items()
    }
    return {"before_ref": before_ref, "repeats": repeats, "medians": medians, "samples": samples}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before-ref", default=None, help="git ref of the 'before' code")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.seed)))
        return
    from benchmarks.common import write_json

    write_json("fit_guide_compile", run(args.before_ref, 1 if args.quick else args.repeats))


if __name__ == "__main__":
    main()
