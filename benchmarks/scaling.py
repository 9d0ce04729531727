"""Step time of data-parallel flow-guide SVI against the number of simulated devices.

Each device count runs in its own process started with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (the flag must be set before JAX
starts). A process times, after compilation, the median wall time of

* ``single``: ``jax.jit(svi.update)`` on one device, nothing sharded, the minibatch
  already on the device (the baseline);
* ``sharded``: the :func:`numpyro_flows.distributed.data_parallel_svi` step with the
  minibatch already on the devices;
* ``end_to_end``: the same step fed a host (NumPy) minibatch, so the split and transfer to
  the devices are included;

and checks the sharded parameters after the timed steps against the single-device ones.

Run ``python benchmarks/scaling.py`` (or ``--quick``); results go to
``benchmarks/results/scaling.json`` and ``benchmarks/results/scaling.md``.

What this can tell: the simulated devices are all the same few CPU cores, so the numbers
measure the *overhead* of sharding (partitioned program, all-reduces, transfers) and that
the sharded program is correct; they cannot show a speed-up. See the note written with the
table.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEVICE_COUNTS = (1, 2, 4, 8)

NOTE = """\
**What the CPU simulation can and cannot tell.** `--xla_force_host_platform_device_count=N`
splits one host into N XLA CPU devices that share the same cores (here {cores}), so the
total compute per step does not grow with N: no speed-up beyond what those few cores give
can appear (at a large batch, 2 devices may keep 2 cores busy where one device used one),
and the times are noisy when other work shares the cores (the three variants are timed
interleaved, step by step, so their ratio is more reliable than the absolute times). What the
table does show is (1) that the sharded step is correct (the parameters after the timed
steps match the single-device run to float tolerance, column `max |Δθ|`), and (2) the
fixed cost of the partitioned program: N device launches per step, one all-reduce,
the replicated guide work (below) done N times over on the same cores, and, end to end,
splitting a host minibatch over N devices. That fixed cost is why the sharded step
grows with N at a small batch and matters less at a large one. The all-reduce is small: GSPMD
sums the log-likelihood and its gradient with respect to the latent sample
(`latent_dim + 1` floats per particle), then back-propagates through the flow on every
device; the guide's parameters and their gradients never cross devices.

On real GPUs the per-datum likelihood and its gradient run on N chips at once, so a step
whose time is dominated by the minibatch falls towards 1/N of the single-GPU time, until
two costs the simulation cannot show dominate: the latency of the all-reduce (microseconds
over NVLink, more between hosts) and the replicated work (sampling the flow, its
log-density and gradient, the optimiser update), identical on every device and so not
divided by N. Host-to-device bandwidth is not modelled either. A flow guide on a small
batch is replicated-work bound and does not need several GPUs; measure on the target
machine before choosing a device count.
"""


# ---------------------------------------------------------------------- one device count
def worker(num_devices: int, batch: int, steps: int, seed: int = 0) -> dict:
    import jax
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    import optax
    from numpyro.infer import SVI, Trace_ELBO

    from numpyro_flows import AutoIAF
    from numpyro_flows.distributed import data_parallel_svi, make_mesh, replicate, shard_batch

    assert jax.device_count() == num_devices, jax.devices()
    num_data, dim = 100_000, 16
    rng = np.random.default_rng(seed)
    x_all = rng.normal(size=(num_data, dim)).astype(np.float32)
    w_true = rng.normal(size=dim).astype(np.float32)
    y_all = (rng.uniform(size=num_data) < 1 / (1 + np.exp(-x_all @ w_true))).astype(np.float32)

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([dim]).to_event(1))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", num_data, subsample_size=x.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)

    svi = SVI(model, AutoIAF(model, num_flows=2), optax.adam(1e-3), Trace_ELBO())
    # A few distinct minibatches, cycled: host memory stays small at large batch sizes.
    index = [rng.choice(num_data, batch, replace=False) for _ in range(8)]
    state0 = svi.init(jax.random.key(seed), x_all[index[0]], y_all[index[0]])

    distinct = [(x_all[i], y_all[i]) for i in index]
    dp = data_parallel_svi(svi, make_mesh(num_devices))
    sharded_distinct = [shard_batch(args, dp.mesh) for args in distinct]
    variants = {  # name: (step function, state, minibatches)
        "single": [jax.jit(svi.update), state0, jax.device_put(distinct, jax.devices()[0])],
        "sharded": [dp.update, replicate(state0, dp.mesh), sharded_distinct],
        "end_to_end": [dp.update, replicate(state0, dp.mesh), distinct],
    }
    compile_s, times = {}, {name: [] for name in variants}
    for k in range(steps):
        # Interleaved, so that load from other processes hits every variant alike.
        for name, variant in variants.items():
            step, state, batches = variant
            start = time.perf_counter()
            variant[1], loss = step(state, *batches[k % len(batches)])
            jax.block_until_ready(loss)
            elapsed = time.perf_counter() - start
            if k == 0:
                compile_s[name] = elapsed  # the first call compiles
            else:
                times[name].append(elapsed)
    median_us = {name: 1e6 * float(np.median(t)) for name, t in times.items()}
    deviation = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(
            jax.tree.leaves(svi.get_params(variants["sharded"][1])),
            jax.tree.leaves(svi.get_params(variants["single"][1])),
        )
    )
    return {
        "devices": num_devices,
        "batch": batch,
        "rows_per_device": batch // num_devices,
        "steps_timed": steps - 1,
        "single_us": median_us["single"],
        "sharded_us": median_us["sharded"],
        "end_to_end_us": median_us["end_to_end"],
        "sharded_compile_s": compile_s["sharded"],
        "single_compile_s": compile_s["single"],
        "max_param_deviation": deviation,
    }


# ---------------------------------------------------------------------- the sweep
def run_worker(num_devices: int, batch: int, steps: int) -> dict:
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(
        os.environ,
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={num_devices}".strip(),
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    )
    command = [sys.executable, __file__, "--worker", str(num_devices)]
    command += ["--batch", str(batch), "--steps", str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        raise RuntimeError(f"worker for {num_devices} devices failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Data-parallel SVI step time vs simulated devices",
        "",
        f"AutoIAF (2 layers) on a 17-latent logistic regression, N = 100 000, "
        f"{meta['cpu_count']} CPU cores, jax {meta['jax']}, {meta['date']}. "
        "Median µs per step after compilation.",
        "",
        "| batch | devices | rows/device | single-device µs | sharded µs | sharded / single "
        "| end-to-end µs | compile s | max \\|Δθ\\| |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['devices']} | {r['rows_per_device']} | {r['single_us']:.0f} "
            f"| {r['sharded_us']:.0f} | {r['sharded_us'] / r['single_us']:.2f} "
            f"| {r['end_to_end_us']:.0f} | {r['sharded_compile_s']:.1f} "
            f"| {r['max_param_deviation']:.1e} |"
        )
    return "\n".join(lines + ["", NOTE.format(cores=meta["cpu_count"])])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one batch size, fewer steps")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.steps)))
        return

    batches, steps = ((256,), 31) if args.quick else ((256, 65536), 201)
    rows = []
    for batch in batches:
        for n in DEVICE_COUNTS:
            row = run_worker(n, batch, steps)
            print(
                f"batch {batch:5d}  devices {n}  single {row['single_us']:8.0f} µs  "
                f"sharded {row['sharded_us']:8.0f} µs  end-to-end {row['end_to_end_us']:8.0f} µs"
                f"  max|Δθ| {row['max_param_deviation']:.1e}",
                flush=True,
            )
            rows.append(row)
    meta = {
        "date": datetime.date.today().isoformat(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "jax": importlib.metadata.version("jax"),
        "quick": args.quick,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = markdown(rows, meta)
    (RESULTS / "scaling.md").write_text(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
