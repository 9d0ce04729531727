"""Builds ``benchmarks/RESULTS.md`` from the JSON files in ``benchmarks/results/``."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
OURS = ("AutoIAF", "AutoRealNVP", "AutoNeuralSpline", "AutoNeuralSpline(coupling)")


def _load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(x, digits=3):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return f"{x:.{digits}f}"


def _machine(payload):
    m = payload["machine"]
    return (
        f"*Measured {m['date']} on {m['device']} ({m['cores']} cores, {m['cpu']}), "
        f"jax {m['jax']}, numpyro {m['numpyro']}.*\n"
    )


def _note(p) -> list[str]:
    return [f"*Note: {p['note']}*\n"] if p.get("note") else []


def speed_section(p) -> str:
    lines = ["## SVI speed\n", _machine(p)]
    lines.append(
        f"Median step time after compile ({p['particles']} ELBO particles; rounds "
        "interleaved across guides in one process) and first-step time (set-up + compile). "
        "Ratio: per-round step time over NumPyro's `AutoIAFNormal`, median over rounds.\n"
    )
    lines.extend(_note(p))
    for model, rows in p["step_time"].items():
        lines.append(
            f"\n**{model}**\n\n| guide | step (µs) | ratio to AutoIAFNormal | first step (s) |"
        )
        lines.append("|---|---:|---:|---:|")
        for name, r in rows.items():
            lines.append(
                f"| {name} | {r['step_us']:.0f} | {_fmt(r['ratio_to_numpyro_iaf'], 2)} | "
                f"{r['compile_s']:.2f} |"
            )
    depth = p["compile_vs_depth"]
    names = list(depth)
    depths = list(depth[names[0]])
    lines.append("\n**Compile time against depth** (first SVI step, funnel 10-D, seconds)\n")
    lines.append("| layers | " + " | ".join(names) + " | AutoIAF / AutoIAFNormal |")
    lines.append("|---:|" + "---:|" * (len(names) + 1))
    for d in depths:
        ratio = depth["AutoIAF"][d] / depth["numpyro.AutoIAFNormal"][d]
        lines.append(
            f"| {d} | " + " | ".join(f"{depth[n][d]:.2f}" for n in names) + f" | {ratio:.2f} |"
        )
    grad = p.get("flow_grad_compile")
    if grad:
        first, last = min(grad, key=int), max(grad, key=int)
        growth = grad[last] / grad[first] - 1
        lines.append(
            "\n**`jax.jit(jax.grad(loss))` through a `neural_spline` flow** (compile seconds; "
            f"growth from {first} to {last} layers: {100 * growth:+.0f}%)\n"
        )
        lines.append("| layers | " + " | ".join(str(d) for d in grad) + " |")
        lines.append("|---|" + "---:|" * len(grad))
        lines.append("| seconds | " + " | ".join(f"{v:.2f}" for v in grad.values()) + " |")
    return "\n".join(lines) + "\n"


def step_breakdown_section(p) -> str:
    lines = ["## Where the step time goes: dispatch and compute\n", _machine(p)]
    lines.append(
        f"{p['particles']} ELBO particles, seeds {', '.join(map(str, p['seeds']))}, rounds "
        "interleaved across guides in one process, medians. *Per call*: `jax.jit(svi.update)` "
        "called from Python once per step (the SVI speed table's figure; `svi.run` with its "
        "progress bar). *Dispatch*: a jitted identity on the same SVI state, the cost of a "
        "call before any work; it grows with the number of arrays in the state. *In scan*: "
        "steps inside one compiled `lax.scan` (`svi.run(progress_bar=False)`), the compiled "
        "step alone. Ratios are to NumPyro's `AutoIAFNormal`, per round.\n"
    )
    lines.extend(_note(p))
    for model, rows in p["models"].items():
        lines.append(
            f"\n**{model}**\n\n| guide | state arrays | per call (µs) | ratio | dispatch (µs) "
            "| in scan (µs) | ratio |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in rows.items():
            lines.append(
                f"| {name} | {r['state_arrays']} | {r['per_call_us']:.0f} | "
                f"{r['per_call_ratio']:.2f} | {r['dispatch_us']:.0f} | {r['in_scan_us']:.0f} | "
                f"{r['in_scan_ratio']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def compile_anatomy_section(p) -> str:
    lines = ["## Where set-up + compile goes, and XLA's optimisation level\n", _machine(p)]
    lines.append(
        f"funnel-10, {p['particles']} ELBO particles, a second `svi.run(key, 1)` with a new "
        "guide (the set-up + compile of the section above), split with JAX's duration events: "
        "*XLA backend* (XLA's compilation: HLO passes, fusion emitters, LLVM), *lowering* (the "
        "traced program to the module XLA takes), *Python* (the rest: the guide's set-up, "
        "tracing, one step). *Step*: the compiled step inside one `lax.scan` of 200 steps. "
        "Worker processes alternate between XLA's default level and "
        "`XLA_FLAGS=--xla_backend_optimization_level=1`, medians of "
        f"{p['repeats']} (seeds 0 and 1). `fit_guide`'s own compiled functions (the mode "
        "search, the training chunk, the PSIS draws) and `fit`'s epoch for vector flows use "
        "level 1 on the CPU (`numpyro_flows._compile`); `svi.run` compiles with the process's "
        "setting.\n"
    )
    lines.extend(_note(p))
    lines.append(
        "| guide | set-up + compile (s) | XLA backend (s) | share | lowering (s) | Python (s) "
        "| step (µs) | level 1: set-up + compile (s) | level 1: step (µs) |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    default, o1 = p["medians"]["default"], p["medians"]["O1"]
    for name, r in default.items():
        q = o1[name]
        lines.append(
            f"| {name} | {r['wall_s']:.2f} | {r['backend_s']:.2f} | "
            f"{r['backend_s'] / r['wall_s']:.0%} | {r['lowering_s']:.2f} | {r['python_s']:.2f} | "
            f"{r['step_us']:.0f} | {q['wall_s']:.2f} | {q['step_us']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def compile_time_section(p) -> str:
    lines = ["## Set-up + compile time, before and after\n", _machine(p)]
    lines.append(
        f"funnel-10, {p['particles']} ELBO particles: wall time of a second `svi.run(key, 1)` "
        "with a new guide of a kind already used in the process (set-up, tracing, XLA "
        "compilation and one step: what a change of model or data costs in a notebook). "
        f"Before: the package at `{p['before_ref']}`; after: this version; worker processes "
        f"alternate between the two, medians of {p['repeats']} (seeds 0 and 1).\n"
    )
    lines.extend(_note(p))
    after, before = p["seconds"]["after"], p["seconds"].get("before", {})
    lines.append(
        "| guide | layers | before (s) | after (s) | after / NumPyro `AutoMultivariateNormal` |"
    )
    lines.append("|---|---:|---:|---:|---:|")
    floor = after.get("numpyro.AutoMultivariateNormal|None")
    for key, value in after.items():
        name, depth = key.split("|")
        ratio = value / floor if floor else None
        lines.append(
            f"| {name} | {'default' if depth == 'None' else depth} | {_fmt(before.get(key), 2)} | "
            f"{value:.2f} | {_fmt(ratio, 2)} |"
        )
    return "\n".join(lines) + "\n"


def fit_guide_compile_section(p) -> str:
    lines = ["## What `fit_guide` compiles, before and after\n", _machine(p)]
    lines.append(
        "A second `fit_guide(key, model, num_steps=1)` in a process that has made one "
        "already (the same kind of model met again in a notebook): wall time, and the XLA "
        "compilations of over 50 ms it makes (eager single operations are cached after the "
        f"first call). Before: the package at `{p['before_ref']}`; after: this version; "
        f"worker processes alternate between the two, medians of {p['repeats']}. The "
        "functions: `run`, the mode search (`find_modes`); `minimise` and `potential`, the "
        "Laplace start's own L-BFGS search and Hessian; `log_ratios` or "
        "`_laplace_log_ratios`, the Laplace start's own PSIS check (in the "
        "current version `fit_guide` checks a start from the mode search with its `draw` "
        "instead); `<lambda>`, the "
        "barrier test between two candidate modes; `scan`, the mixture guide's first draw "
        "at set-up; `run_chunk`, the training loop; `draw`, the PSIS draws.\n"
    )
    lines.extend(_note(p))
    after, before = p["medians"]["after"], p["medians"].get("before", {})
    lines.append(
        "| model | before (s) | after (s) | compilations before | after | "
        "compile seconds before | after | compiled functions after |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for model, row in after.items():
        old = before.get(model, {})
        functions = ", ".join(f"`{f}`" for f in row["functions"])
        lines.append(
            f"| {model} | {_fmt(old.get('seconds'), 2)} | {row['seconds']:.2f} | "
            f"{_fmt(old.get('compiles'), 0)} | {row['compiles']:.0f} | "
            f"{_fmt(old.get('compile_seconds'), 2)} | {row['compile_seconds']:.2f} | "
            f"{functions} |"
        )
    return "\n".join(lines) + "\n"


def time_to_quality_section(p) -> str:
    lines = ["## Time to quality (compile included) and long runs\n", _machine(p)]
    lines.append(
        f"{p['model']}, {p['particles']} particles: each guide trains as many steps as fit in "
        "the wall budget after its own set-up + compile; KL(q‖p) from 10 000 draws (exact: "
        "the funnel is normalised); medians of two seeds. Both schedules for every guide.\n"
    )
    lines.extend(_note(p))
    for budget, rows in p["budgets"].items():
        schedules = [k for k in next(iter(rows.values())) if k != "steps"]
        lines.append(f"\n**wall budget {float(budget):.0f} s**\n")
        lines.append(
            "| guide | set-up + compile (s) | step (µs) | steps | "
            + " | ".join(f"KL, {s}" for s in schedules)
            + " |"
        )
        lines.append("|---|---:|---:|---:|" + "---:|" * len(schedules))
        for name, row in rows.items():
            cost = p["costs"][name]
            lines.append(
                f"| {name} | {cost['setup_compile_s']:.2f} | {cost['step_us']:.0f} | "
                f"{row['steps']} | " + " | ".join(_fmt(row[s]["kl"]) for s in schedules) + " |"
            )
    lines.append("\n**Long runs** (seed 0; KL at the end, or the first non-finite step)\n")
    lines.append("| guide | schedule | steps | KL | first non-finite loss |")
    lines.append("|---|---|---:|---:|---:|")
    for name, runs in p["long_runs"].items():
        for schedule, r in runs.items():
            bad = r["first_non_finite_step"]
            lines.append(
                f"| {name} | {schedule} | {r['steps']} | {_fmt(r['kl'])} | "
                f"{'–' if bad is None else f'step {bad}'} |"
            )
    return "\n".join(lines) + "\n"


def quality_section(p) -> str:
    lines = ["## Quality at an equal wall-clock budget\n", _machine(p)]
    lines.extend(_note(p))
    lines.append(
        f"Budget: the time of {p['budget']}. Each guide trains as many steps as fit in it; "
        "medians over seeds. KL = −ELBO − log Z where the normaliser is known.\n"
    )
    for model, block in p["models"].items():
        lines.append(f"\n**{model}** (budget {block['budget_seconds']:.2f} s)\n")
        lines.append(
            "| guide | steps | ELBO (Adam 3e-3) | KL | k-hat | ELBO (cosine) | KL | k-hat |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, row in block["guides"].items():
            a, c = row["recipes"]["adam3e-3"], row["recipes"]["cosine3e-3"]
            lines.append(
                f"| {name} | {row['steps']} | {_fmt(a['elbo'])} | {_fmt(a['kl'])} | "
                f"{_fmt(a['khat'], 2)} | {_fmt(c['elbo'])} | {_fmt(c['kl'])} | "
                f"{_fmt(c['khat'], 2)} |"
            )
    return "\n".join(lines) + "\n"


def modes_section(p) -> str:
    lines = ["## Posteriors with several modes\n", _machine(p)]
    lines.extend(_note(p))
    lines.append(
        "KL(q‖p) = −ELBO − log Z (exact normalisers, 10 000 draws), the share of draws in "
        "the emptiest and the fullest mode (worst over seeds), PSIS k-hat of 2 000 draws, "
        "wall time with set-up and compilation; medians over two seeds. `fit_guide` rows "
        "at its defaults (K = mixture components); the plain SVI rows share one schedule: "
        f"{p['svi_schedule']}.\n"
    )
    for model, rows in p["models"].items():
        lines.append(f"\n**{model}**\n")
        lines.append("| guide | K | KL | min share | max share | k-hat | seconds |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in rows.items():
            lines.append(
                f"| {name} | {_fmt(r['components'], 0)} | {_fmt(r['kl'])} | "
                f"{_fmt(r['min_share'], 2)} | {_fmt(r['max_share'], 2)} | "
                f"{_fmt(r['khat'], 2)} | {_fmt(r['seconds'], 1)} |"
            )
    if p.get("bnaf_step_time"):
        lines.append(
            "\n**AutoBNAF step time** (µs per SVI step, 8 particles, same architecture as "
            "NumPyro's `AutoBNAFNormal`, interleaved, medians)\n"
        )
        lines.append("| model, layers | AutoBNAF | numpyro.AutoBNAFNormal | ratio |")
        lines.append("|---|---:|---:|---:|")
        for name, r in p["bnaf_step_time"].items():
            lines.append(
                f"| {name} | {r['AutoBNAF']:.0f} | {r['numpyro.AutoBNAFNormal']:.0f} | "
                f"{r['ratio']:.2f}× |"
            )
    return "\n".join(lines) + "\n"


def neutra_section(p) -> str:
    lines = ["## NeuTra-NUTS at the defaults vs NUTS\n", _machine(p)]
    lines.extend(_note(p))
    lines.append(
        f"{p['chains']} chains × ({p['warmup']} warmup + {p['draws']} draws) on both sides, "
        f"seeds {p['seeds']}. NeuTra rows: `fit = fit_guide(key, model, **setup)` then "
        "`neutra_nuts(key, fit.guide, fit.params, num_chains=4)`, all else at the defaults; "
        "NUTS at NumPyro's defaults. ESS: ArviZ bulk ESS, minimum over parameters; the ratio "
        "is min-ESS per gradient over plain NUTS's in the same seed.\n"
    )
    for model, seeds in p["results"].items():
        lines.append(f"\n**{model}**\n")
        lines.append(
            "| sampler | seed | min bulk ESS | ratio to NUTS | divergences | max r-hat | "
            "guide k-hat | fit_guide s (steps) |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        names = list(next(iter(seeds.values())))
        for name in names:
            for seed, rows in seeds.items():
                r = rows[name]
                fit = f"{r['fit_seconds']:.1f} ({r['fit_steps']})" if "fit_seconds" in r else ""
                lines.append(
                    f"| {name} | {seed.split()[-1]} | {r['min_bulk_ess']:.0f} | "
                    f"{_fmt(r.get('ess_per_gradient_ratio'), 1)} | {r['divergences']} | "
                    f"{r['max_rhat']:.3f} | {_fmt(r.get('khat'), 2)} | {fit} |"
                )
    return "\n".join(lines) + "\n"


def posteriordb_section(p) -> str:
    lines = ["## Accuracy against posteriordb reference posteriors\n", _machine(p)]
    lines.extend(_note(p))
    lines.append(
        f"{p['steps']} SVI steps, 4 particles, Adam with cosine decay 5e-3 → 5e-5, seeds "
        f"{p['seeds']}; 10 000 draws. Worst over parameters of |mean − ref mean| / ref sd "
        "and |log(sd / ref sd)|, the worse of the seeds; pass at 0.1 / 0.1. NeuTra: NUTS "
        "(4 chains × 1000 after 1000 warmup) in the space of that guide's fit.\n"
    )
    verdicts = []
    for posterior, rows in p["results"].items():
        lines.append(f"\n**{posterior}**\n")
        lines.append(
            "| guide | worst mean error | worst log sd ratio | pass | NeuTra mean err | "
            "NeuTra log sd | NeuTra divergences |"
        )
        lines.append("|---|---:|---:|:---:|---:|---:|---:|")
        for name, r in rows.items():
            s = r["summary"]
            neutra = [run.get("neutra") for run in r["runs"] if run.get("neutra")]
            nm = max((n["mean_error"] for n in neutra), default=None)
            ns = max((n["log_sd_ratio"] for n in neutra), default=None)
            nd = sum(n["divergences"] for n in neutra) if neutra else None
            lines.append(
                f"| {name} | {_fmt(s['mean_error'])} | {_fmt(s['log_sd_ratio'])} | "
                f"{'✓' if s['passes'] else '✗'} | {_fmt(nm)} | {_fmt(ns)} | "
                f"{'' if nd is None else nd} |"
            )
        verdicts.append(_posteriordb_verdict(posterior, rows))
    lines.append(
        "\n**Target** (the best of our guides passes where NumPyro's `AutoIAFNormal` does not):\n"
    )
    lines.extend(f"- {v}" for v in verdicts)
    return "\n".join(lines) + "\n"


def _posteriordb_verdict(posterior, rows) -> str:
    def badness(r):
        s = r["summary"]
        return max(s["mean_error"], s["log_sd_ratio"])

    ours = {n: r for n, r in rows.items() if not n.startswith("numpyro.")}
    if not ours:
        return f"{posterior}: no guide of ours was run."
    best = min(ours, key=lambda n: badness(ours[n]))
    s = ours[best]["summary"]
    numpyro_iaf = rows.get("numpyro.AutoIAFNormal")
    theirs = (
        "not run"
        if numpyro_iaf is None
        else ("passes" if numpyro_iaf["summary"]["passes"] else "fails")
    )
    status = "met" if s["passes"] else "**missed**"
    return (
        f"{posterior}: {status}; best of ours {best} ({s['mean_error']:.3f} / "
        f"{s['log_sd_ratio']:.3f}); NumPyro AutoIAFNormal {theirs}."
    )


def posteriordb_defaults_section(p) -> str:
    lines = ["## posteriordb at the defaults of `fit_guide`\n", _machine(p)]
    lines.extend(_note(p))
    lines.append(
        f"`fit_guide(key, model, **data)` at its defaults, seeds {p['seeds']}, 10 000 guide "
        "draws; NumPyro's `AutoIAFNormal` through the same call (`guide=AutoIAFNormal`) for a "
        "like-for-like reference. NeuTra: `neutra_nuts` at its defaults, 4 chains × (1000 "
        "warmup + 1000 draws). Worst over parameters and seeds of |mean − ref mean| / ref sd "
        "and |log(sd / ref sd)|; pass at 0.1 / 0.1.\n"
    )
    lines.append(
        "| posterior | guide | worst mean error | worst log sd ratio | pass | fit_guide s "
        "(steps) | NeuTra mean err | NeuTra log sd | NeuTra divergences | NeuTra max r-hat |"
    )
    lines.append("|---|---|---:|---:|:---:|---:|---:|---:|---:|---:|")
    passes, neutra_matches, total = {}, 0, 0
    for posterior, rows in p["results"].items():
        total += 1
        for name, r in rows.items():
            s = r["summary"]
            passes[name] = passes.get(name, 0) + bool(s["passes"])
            runs = r["runs"]
            seconds = max((run["fit_seconds"] for run in runs), default=float("nan"))
            steps = "/".join(str(run.get("fit_steps", "")) for run in runs)
            neutra = [run["neutra"] for run in runs if run.get("neutra")]
            nm = max((n["mean_error"] for n in neutra), default=None)
            ns = max((n["log_sd_ratio"] for n in neutra), default=None)
            nd = sum(n["divergences"] for n in neutra) if neutra else None
            nr = max((n.get("max_rhat", float("nan")) for n in neutra), default=None)
            if neutra and nm <= 0.1 and ns <= 0.1:
                neutra_matches += 1
            lines.append(
                f"| {posterior} | {name} | {_fmt(s['mean_error'])} | {_fmt(s['log_sd_ratio'])} | "
                f"{'✓' if s['passes'] else '✗'} | {seconds:.1f} ({steps}) | {_fmt(nm)} | "
                f"{_fmt(ns)} | {'' if nd is None else nd} | {_fmt(nr)} |"
            )
    lines.append("")
    for name, count in passes.items():
        lines.append(f"- {name}: the guide alone passes {count} of {total}.")
    lines.append(f"- NeuTra at the defaults matches the reference on {neutra_matches} of {total}.")
    return "\n".join(lines) + "\n"


def images_section(p) -> str:
    import statistics

    proto = p["protocol"]
    lines = ["## Image flows on the digits: numpyro_flows vs normflows (PyTorch)\n", _machine(p)]
    lines.append(
        f"scikit-learn's 8 x 8 digits, 1500 training / 297 test images, 17 levels, uniform "
        f"dequantization, logit preprocessing (alpha 0.05) counted in the density; "
        f"{proto['epochs']} epochs, batch {proto['batch_size']}, {proto['optimizer']}, both "
        f"libraries on {proto['threads']}; seeds {proto['seeds']}, interleaved in one run. "
        "Test bits/dim over 8 fixed noise draws per image (lower is better; a uniform "
        "distribution over the 17 levels scores 4.087). Mean over seeds; time per epoch "
        "median over seeds. `python -m benchmarks.images`.\n"
    )
    runs = [r for r in p["runs"] if "error" not in r]
    ev, last = str(proto["eval_epoch"]), str(proto["epochs"])
    lines.append(
        f"| model | library | parameters | test bits/dim, epoch {ev} | epoch {last} | "
        "s / epoch | s / step | ours / theirs, s per epoch | NaN samples of 64 |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    models = list(dict.fromkeys(r["model"] for r in runs))
    for model in models:
        per_lib = {}
        for library in ("numpyro_flows", "normflows"):
            rs = [r for r in runs if r["model"] == model and r["library"] == library]
            if rs:
                per_lib[library] = rs
        theirs = per_lib.get("normflows")
        for library, rs in per_lib.items():
            epoch_time = statistics.median(r["time_per_epoch_s"] for r in rs)
            ratio = ""
            if library == "numpyro_flows" and theirs:
                ratio = _fmt(
                    epoch_time / statistics.median(r["time_per_epoch_s"] for r in theirs), 2
                )
            lines.append(
                f"| {model} | {library} | {rs[0]['num_params']:,} | "
                f"{statistics.mean(r['test_bpd'][ev] for r in rs):.3f} | "
                f"{statistics.mean(r['test_bpd'][last] for r in rs):.3f} | {epoch_time:.3f} | "
                f"{statistics.median(r['time_per_step_s'] for r in rs) * 1e3:.1f} ms | {ratio} | "
                f"{sum(r['nan_samples'] for r in rs)} |"
            )
    if p.get("compile_by_steps"):
        cells = ", ".join(f"{k} steps {v:.2f} s" for k, v in p["compile_by_steps"].items())
        lines.append(
            f"\nSet-up + compile of a training step of `multiscale_glow(2, K, 64)` (init, "
            f"then the jitted loss and gradient on 128 images): {cells}.\n"
        )
    lines.extend(_note(p))
    return "\n".join(lines) + "\n"


def hybrid_section(p) -> str:
    lines = ["## AutoHybridFlow: local latents in subsampled plates\n", _machine(p)]
    lines.extend(_note(p))
    lines.append(
        f"`python -m benchmarks.hybrid`. One schedule for every fit: {p['schedule']}. "
        "NumPyro's `AutoNormal` is the reference guide (one loc and scale per latent "
        "value). Medians over the seeds.\n"
    )
    for part, render in (
        ("small", _hybrid_small),
        ("large", _hybrid_large),
        ("data_parallel", _hybrid_data_parallel),
    ):
        if part in p:
            run = p[part]
            quick = " (--quick)" if run.get("quick") else ""
            lines.append(render(run))
            lines.append(
                f"*Seeds {run.get('seeds')}{quick}; `numpyro_flows/hybrid.py` sha256 "
                f"{run.get('hybrid_py_sha256')}; {run['part_seconds']:.0f} s.*\n"
            )
    return "\n".join(lines) + "\n"


def _hybrid_small(run) -> str:
    s = run["setting"]
    tol = run["tolerance"]
    lines = [
        f"### Small models against NUTS ({s['groups']} groups, {s['obs']} observations "
        f"each, {s['batch']} groups per step)\n",
        f"{s['steps']} steps, {s['particles']} particles; {s['draws']} guide draws. Largest "
        "|mean − NUTS mean| / NUTS sd (*mean*) and |sd / NUTS sd − 1| (*sd*), over the "
        f"globals (mu, tau) and over every group's theta (locals); target ≤ {tol}. NUTS "
        "split-half: chains 1–2 against 3–4, the Monte Carlo noise of such a maximum (with "
        "half the draws on each side, so larger than in the guides' rows).\n",
    ]
    for model, block in run["models"].items():
        n = block["nuts"]
        lines.append(
            f"\n**{model}** — NUTS {n['chains']} chains × ({n['warmup']} warmup + "
            f"{n['samples']}): max r-hat {n['max_rhat']:.4f}, min bulk ESS "
            f"{n['min_bulk_ess']:.0f}, {n['divergences']} divergences\n"
        )
        lines.append(
            "| guide | globals mean | globals sd | locals mean | locals sd | within "
            f"{tol} (seeds) | fit, set-up included (s) |"
        )
        lines.append("|---|---:|---:|---:|---:|:---:|---:|")
        keys = ("globals_mean", "globals_sd", "locals_mean", "locals_sd")
        for name, r in block["guides"].items():
            passed = sum(all(seed[k] <= tol for k in keys) for seed in r["per_seed"])
            lines.append(
                f"| {name} | "
                + " | ".join(_fmt(r[k]) for k in keys)
                + f" | {passed}/{len(r['per_seed'])} | {_fmt(r['seconds'], 1)} |"
            )
        half = block["split_half_nuts"]
        lines.append("| NUTS split-half | " + " | ".join(_fmt(half[k]) for k in keys) + " | | |")
    return "\n".join(lines) + "\n"


def _hybrid_large(run) -> str:
    s = run["setting"]
    groups = f"{s['groups']:,}"
    lines = [
        f"### {groups} groups, {s['batch']} per step (normal-normal, {s['obs']} "
        "observations per group)\n",
        "**Parameters of the guide** (set up on data with that many groups)\n",
        "| groups | AutoHybridFlow | numpyro.AutoNormal |",
        "|---:|---:|---:|",
    ]
    for size, row in run["param_counts"].items():
        lines.append(
            f"| {int(size):,} | {row['AutoHybridFlow']:,} | {row['numpyro.AutoNormal']:,} |"
        )
    lines.append(
        f"\n**Step time** of `jax.jit(svi.update)` at {groups} groups ({s['rounds']} "
        f"interleaved rounds of {s['steps_per_round']} steps, medians; ratio: per round, "
        "then the median; set-up + compile: a new guide to the end of its first step)\n"
    )
    lines.append(
        "| particles | ours ms/step | AutoNormal ms/step | ours µs/row | AutoNormal µs/row "
        "| ours / AutoNormal | ours set-up + compile (s) | AutoNormal set-up + compile (s) |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for particles, c in run["step_costs"].items():
        ours, theirs = c["AutoHybridFlow"], c["numpyro.AutoNormal"]
        lines.append(
            f"| {particles} | {ours['step_ms']:.2f} | {theirs['step_ms']:.2f} | "
            f"{ours['per_row_us']:.2f} | {theirs['per_row_us']:.2f} | {c['ratio']:.2f}× | "
            f"{ours['setup_compile_s']:.1f} | {theirs['setup_compile_s']:.1f} |"
        )
    lines.append(_hybrid_elbo_table(run))
    return "\n".join(lines) + "\n"


def _hybrid_elbo_table(run) -> str:
    s = run["setting"]
    bound = run["log_likelihood_bound"]
    lines = [
        f"\n**ELBO per group at an equal wall budget of {run['budget_s']:.0f} s per fit** "
        f"(set-up and compilation included; {s['particles']} particle(s) per step; each fit "
        "plans (budget − set-up) / step steps from the costs above and stops early if the "
        f"budget runs out). Estimate: −`Trace_ELBO({s['eval_particles']})` loss averaged "
        f"over minibatches of {s['batch']} that partition a random permutation of the "
        "groups, the same for every guide, divided by the number of groups (± the "
        "between-minibatch standard error). Held out: new groups from the same process; "
        "ours is the trained guide called on the held-out data (its plates follow the "
        "data), with no training there; `AutoNormal` has no parameters for new "
        "groups and gets a fresh fit of the same budget on them.\n",
        "| guide | steps (planned) | fit (s) | train ELBO / group | held-out ELBO / group |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in run["summary"].items():
        seeds = [row[name] for row in run["per_seed"]]
        se_train = max(x["train"]["se"] for x in seeds)
        se_held = max(x["heldout"]["se"] for x in seeds)
        lines.append(
            f"| {name} | {r['steps']:.0f} ({run['planned_steps'][name]}) | "
            f"{r['seconds']:.1f} | {r['train_elbo']:.4f} ± {se_train:.4f} | "
            f"{r['heldout_elbo']:.4f} ± {se_held:.4f} |"
        )
    lines.append(
        f"| upper bound: log-likelihood / group at the ML globals | | | {bound['train']:.4f} "
        f"| {bound['heldout']:.4f} |"
    )
    checks = [row["AutoHybridFlow"]["transfer_check"] for row in run["per_seed"]]
    same = all(c["same_names_and_shapes"] for c in checks)
    lines.append(
        "\nThe trained parameters and those of a guide set up on the held-out data have "
        f"{'the same' if same else '**different**'} names and shapes.\n"
    )
    return "\n".join(lines)


def _hybrid_data_parallel(run) -> str:
    s = run["setting"]
    lines = [
        "### Data-parallel SVI\n",
        f"`data_parallel_svi` on {s['devices']} simulated CPU devices against "
        f"`jax.jit(svi.update)` on one: {s['steps']} steps of `AutoHybridFlow` "
        f"({s['particles']} particles), minibatches of {s['batch']} rows of {s['groups']} "
        "fed to the model as arrays. Target: equal to 1e-5 (parameters absolute; losses, "
        "about 10^4 in float32, relative).\n",
    ]
    if "error" in run:
        lines.append(f"**Failed:**\n\n```\n{run['error']}\n```")
        return "\n".join(lines) + "\n"
    lines.append("| variant | max \\|Δθ\\| | max \\|Δloss\\| | max \\|Δloss\\| / \\|loss\\| |")
    lines.append("|---|---:|---:|---:|")
    for name, r in run["results"].items():
        lines.append(
            f"| {name} | {r['max_abs_param_diff']:.1e} | {r['max_abs_loss_diff']:.1e} | "
            f"{r['max_rel_loss_diff']:.1e} |"
        )
    lines.append(f"\nWithin 1e-5: {'yes' if run['passes_1e-5'] else '**no**'}.\n")
    return "\n".join(lines)


SECTIONS = {
    "compile_time": compile_time_section,
    "compile_anatomy": compile_anatomy_section,
    "fit_guide_compile": fit_guide_compile_section,
    "time_to_quality": time_to_quality_section,
    "speed": speed_section,
    "step_breakdown": step_breakdown_section,
    "quality": quality_section,
    "modes": modes_section,
    "neutra": neutra_section,
    "posteriordb_defaults": posteriordb_defaults_section,
    "posteriordb": posteriordb_section,
    "images": images_section,
    "hybrid": hybrid_section,
}


def write_report() -> Path:
    parts = [
        "# Benchmark results\n",
        "Regenerate with `python -m benchmarks` (full) or `python -m benchmarks --quick`; "
        "this file is rebuilt from `benchmarks/results/*.json`. The machine is shared and "
        "noisy: timings are medians, comparisons are ratios measured in one process.\n",
    ]
    for name, render in SECTIONS.items():
        payload = _load(name)
        if payload:
            parts.append(render(payload))
    for extra in ("density", "scaling"):
        md = RESULTS / f"{extra}.md"
        if md.exists():
            parts.append(md.read_text())
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(parts))
    return out
