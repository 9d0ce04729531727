"""Shared benchmark plumbing: fitting SVI fast, timing with medians, writing results."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO

RESULTS = Path(__file__).parent / "results"


def cosine_adam(lr_start: float, lr_end: float, steps: int):
    return optax.adam(optax.cosine_decay_schedule(lr_start, steps, lr_end / lr_start))


def fit_svi(
    model,
    guide,
    *,
    steps: int,
    optimizer,
    particles: int,
    seed: int,
    model_kwargs: dict | None = None,
    chunk: int = 1000,
):
    """Runs SVI in jitted ``lax.scan`` chunks; returns ``(params, losses, seconds, ok)``.

    ``seconds`` is the training wall time after the first chunk compiled (a warm-up chunk
    of the same length is not run: the compile time is measured separately).
    """
    model_kwargs = model_kwargs or {}
    svi = SVI(model, guide, optimizer, Trace_ELBO(num_particles=particles))
    state = svi.init(jax.random.key(seed), **model_kwargs)

    def run_chunk(state, length):
        def body(s, _):
            s, loss = svi.update(s, **model_kwargs)
            return s, loss

        return jax.lax.scan(body, state, None, length=length)

    runner = jax.jit(run_chunk, static_argnums=1)
    losses, elapsed, done = [], 0.0, 0
    while done < steps:
        length = min(chunk, steps - done)
        t0 = time.perf_counter()
        new_state, chunk_losses = runner(state, length)
        jax.block_until_ready(chunk_losses)
        elapsed += time.perf_counter() - t0
        chunk_losses = np.asarray(chunk_losses)
        if not np.all(np.isfinite(chunk_losses)):
            return svi.get_params(state), np.concatenate(losses + [chunk_losses]), elapsed, False
        state = new_state
        losses.append(chunk_losses)
        done += length
    return svi.get_params(state), np.concatenate(losses), elapsed, True


def median_time(fn: Callable, repeats: int = 5, number: int = 1) -> float:
    """Median over ``repeats`` of the mean wall time of ``number`` calls (seconds)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            out = fn()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def machine() -> dict:
    import numpyro

    return {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "device": str(jax.devices()[0]),
        "cpu": platform.processor() or platform.machine(),
        "cores": __import__("os").cpu_count(),
    }


def read_json(name: str) -> dict | None:
    """The payload of ``results/{name}.json``, or ``None`` if there is none."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1, default=float))
    return path
