"""Runs the benchmark suite and writes ``benchmarks/RESULTS.md`` and ``results/*.json``.

    python -m benchmarks            # the full suite (about an hour on 2 CPU cores)
    python -m benchmarks --quick    # a few minutes: smaller budgets, one seed
    python -m benchmarks --only speed quality

Sections: ``compile_time`` (set-up + compile of each guide, before and after a change:
``python -m benchmarks.compile_time --before-ref REF``), ``compile_anatomy`` (set-up +
compile split into XLA's backend, lowering and Python; XLA's optimisation level 1 beside
the default), ``fit_guide_compile`` (what
``fit_guide`` compiles besides its training loop, before and after a change),
``time_to_quality`` (KL at equal
wall budgets with compile included, and long runs), ``speed`` (SVI step and compile time,
compile time against depth), ``step_breakdown`` (a step's dispatch against its compiled
compute), ``quality``
(equal wall-clock budget: ELBO, KL, k-hat), ``modes`` (multimodal targets: KL, share of
draws per mode), ``neutra`` (NeuTra-NUTS vs NUTS),
``posteriordb`` (accuracy against reference posteriors), ``images`` (image flows on the
digits against normflows), ``hybrid`` (``AutoHybridFlow`` on subsampled hierarchical
models: against NUTS, at 10^5 groups, data-parallel) and, from their own modules,
``density`` and ``scaling`` when present. The report is rebuilt from every JSON file in
``results/``, so sections can be re-run one at a time.
"""

from __future__ import annotations

import argparse
import importlib

from benchmarks.report import write_report

SECTIONS = {
    "compile_time": "benchmarks.compile_time",
    "compile_anatomy": "benchmarks.compile_anatomy",
    "fit_guide_compile": "benchmarks.fit_guide_compile",
    "time_to_quality": "benchmarks.time_to_quality",
    "speed": "benchmarks.speed",
    "step_breakdown": "benchmarks.step_breakdown",
    "quality": "benchmarks.quality",
    "modes": "benchmarks.modes",
    "neutra": "benchmarks.neutra_bench",
    "posteriordb": "benchmarks.posteriordb.run",
    "density": "benchmarks.density",
    "images": "benchmarks.images",
    "scaling": "benchmarks.scaling",
    "hybrid": "benchmarks.hybrid",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small budgets, one seed")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--report-only", action="store_true", help="rebuild RESULTS.md only")
    args = parser.parse_args(argv)
    if not args.report_only:
        for name in args.only:
            module = importlib.import_module(SECTIONS[name])
            print(f"== {name}", flush=True)
            module.main(["--quick"] if args.quick else [])
    print(f"wrote {write_report()}")


if __name__ == "__main__":
    main()
