"""Where an SVI step's time goes: dispatch against compute, for our guides and NumPyro's.

The speed section times ``jax.jit(svi.update)`` called once per step from Python, as
``svi.run`` does with its progress bar. That time is the compiled step plus the dispatch of
the call, which grows with the number of arrays in the SVI state (each parameter, and
Adam's two moments of each). This section measures, in one process with rounds
interleaved across guides, for two seeds:

- per call: ``jax.jit(svi.update)`` from Python (the speed section's figure);
- dispatch: a jitted identity on the same state (what the call costs before any work);
- in scan: 200 steps inside one compiled ``lax.scan`` (``svi.run(progress_bar=False)``
  runs its steps so), per step: the compiled step alone.

Our guides keep each flow's parameters as one vector at their param site
(:mod:`numpyro_flows._param_packing`); ``AutoIAF (flow leaf by leaf)`` is the same guide
with the flow's pytree stored leaf by leaf, as before, for the before/after in one run.

    python -m benchmarks.step_breakdown [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.infer import SVI, Trace_ELBO

from benchmarks.common import write_json
from benchmarks.guides import NUMPYRO, OURS
from benchmarks.models import MODELS
from numpyro_flows import AutoIAF

PARTICLES = 8
SCAN_STEPS = 200
LEAF_BY_LEAF = "AutoIAF (flow leaf by leaf)"
GUIDES = ("AutoIAF", LEAF_BY_LEAF, "AutoRealNVP", "AutoNeuralSpline", "numpyro.AutoIAFNormal")
BASELINE = "numpyro.AutoIAFNormal"
# Small models, where dispatch dominates a call, and the two largest of the speed section,
# where the compiled work does (hierarchical60's flow, over PACK_MAX_VALUES, keeps its
# leaves: its two AutoIAF rows are the same guide).
MODEL_NAMES = ("funnel10", "dual_moon", "logistic25", "hierarchical60")


class _LeafByLeafIAF(AutoIAF):
    """``AutoIAF`` with its flow's parameters stored leaf by leaf at the param site, as
    before they were packed into one vector: the before of the packing, in the same run."""

    def _flow_params(self):
        dim, dtype = self.latent_dim, jnp.result_type(self._init_latent)
        return numpyro.param(
            f"{self.prefix}_flow", lambda key: self.flow.init(key, dim, dtype=dtype)
        )


def _compiled(model, make_guide, seed: int) -> dict:
    svi = SVI(model, make_guide(model), optax.adam(1e-3), Trace_ELBO(num_particles=PARTICLES))
    state = svi.init(jax.random.key(seed))
    update = jax.jit(svi.update)
    identity = jax.jit(lambda s: s)
    scanned = scanned_steps(svi)
    jax.block_until_ready((update(state), identity(state), scanned(state)))
    return {"update": update, "identity": identity, "scanned": scanned, "state": state}


def scanned_steps(svi):
    """``SCAN_STEPS`` steps of ``svi`` inside one compiled ``lax.scan`` (the compiled step
    alone, as ``svi.run(progress_bar=False)`` runs its steps)."""

    @jax.jit
    def scanned(s):
        return jax.lax.scan(lambda s, _: (svi.update(s)[0], None), s, None, length=SCAN_STEPS)[0]

    return scanned


def _per_call_us(fn, state, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        out = fn(state)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / calls * 1e6


def in_scan_us(scanned, state) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(scanned(state))
    return (time.perf_counter() - t0) / SCAN_STEPS * 1e6


def breakdown(model_name: str, seeds, rounds: int, calls: int) -> dict:
    guides = {**OURS, **NUMPYRO, LEAF_BY_LEAF: _LeafByLeafIAF}
    model = MODELS[model_name][0]
    times = {name: {"per_call": [], "dispatch": [], "in_scan": []} for name in GUIDES}
    leaves = {}
    for seed in seeds:
        compiled = {name: _compiled(model, guides[name], seed) for name in GUIDES}
        for _ in range(rounds):  # interleaved rounds
            for name, c in compiled.items():
                t = times[name]
                t["per_call"].append(
                    _per_call_us(lambda s, c=c: c["update"](s)[1], c["state"], calls)
                )
                t["dispatch"].append(_per_call_us(c["identity"], c["state"], calls))
                t["in_scan"].append(in_scan_us(c["scanned"], c["state"]))
        leaves.update({name: len(jax.tree.leaves(c["state"])) for name, c in compiled.items()})
    out = {}
    for name in GUIDES:
        row = {"state_arrays": leaves[name]}
        for kind, values in times[name].items():
            row[f"{kind}_us"] = statistics.median(values)
            base = np.asarray(times[BASELINE][kind])
            row[f"{kind}_ratio"] = statistics.median(np.asarray(values) / base)
        out[name] = row
        print(
            f"{model_name:12s} {name:28s} arrays {row['state_arrays']:3d}  per call "
            f"{row['per_call_us']:6.0f} us ({row['per_call_ratio']:.2f})  dispatch "
            f"{row['dispatch_us']:6.0f} us  in scan {row['in_scan_us']:6.0f} us "
            f"({row['in_scan_ratio']:.2f})",
            flush=True,
        )
    return out


def run(quick: bool = False) -> dict:
    rounds, calls = (3, 100) if quick else (7, 300)
    seeds = (0,) if quick else (0, 1)
    result = {
        "particles": PARTICLES,
        "seeds": list(seeds),
        "models": {m: breakdown(m, seeds, rounds, calls) for m in MODEL_NAMES},
    }
    write_json("step_breakdown", result)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
