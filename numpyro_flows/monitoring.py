"""SVI with a PSIS k-hat check every N steps, to stop once the guide is good enough.

Like :meth:`numpyro.infer.SVI.run`, but every ``check_every`` steps the guide's PSIS
k-hat (Yao et al. 2018, https://arxiv.org/abs/1802.02538) is measured on fresh draws
and shown in the progress bar; with ``stop_below`` the run ends at the first check whose
k-hat is below it. The checks come back in the result, nothing is kept on the objects.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import numpy as np
from numpyro.infer import SVI
from tqdm.auto import tqdm

from numpyro_flows._guide_support import require_continuous
from numpyro_flows.diagnostics import (
    log_ratio_fn,
    psis_from_log_ratios,
)


class KhatSVIRunResult(NamedTuple):
    """What :func:`run_svi_with_khat` returns (NumPyro's ``SVIRunResult`` plus the checks).

    Attributes:
        params: the parameters at the end of the run (``svi.get_params(state)``).
        state: the final ``SVIState`` (pass it as ``init_state`` to continue).
        losses: the loss of every step run ``(steps_run,)``; shorter than ``num_steps``
            when the run stopped early.
        check_steps: the step count at each check ``(num_checks,)``.
        khats: the PSIS k-hat at each check ``(num_checks,)`` (``inf`` where no guide draw
            had a finite model density, e.g. after the fit diverged).
        ess: the importance-sampling effective sample size at each check ``(num_checks,)``.
    """

    params: dict
    state: Any
    losses: np.ndarray
    check_steps: np.ndarray
    khats: np.ndarray
    ess: np.ndarray

    def __repr__(self) -> str:
        from numpyro_flows.reports import khat_verdict

        last = "no checks"
        if len(self.khats):
            verdict = khat_verdict(self.khats[-1], ess=self.ess[-1])
            last = f"last khat={self.khats[-1]:.3g} [{verdict}], ess={self.ess[-1]:.1f}"
        return (
            f"KhatSVIRunResult(steps={len(self.losses)}, checks={len(self.check_steps)}, {last}, "
            f"losses={np.shape(self.losses)}, params={{{_param_shapes(self.params)}}})"
        )

    __str__ = __repr__


def _param_shapes(params) -> str:
    """``name: shape`` of each top-level parameter (the leaf count for nested ones)."""
    items = []
    for name, value in (params or {}).items():
        leaves = jax.tree.leaves(value)
        nested = not (len(leaves) == 1 and leaves[0] is value)
        items.append(f"{name}: {f'{len(leaves)} arrays' if nested else np.shape(value)}")
    return ", ".join(items)


def run_svi_with_khat(
    rng_key,
    svi: SVI,
    num_steps: int,
    *args,
    check_every: int = 1000,
    num_samples: int = 1000,
    stop_below: float | None = None,
    progress_bar: bool = True,
    stable_update: bool = False,
    init_state=None,
    **kwargs,
) -> KhatSVIRunResult:
    """Runs SVI and measures the guide's PSIS k-hat every ``check_every`` steps.

    Steps between checks run in one compiled ``lax.scan``; the k-hat draws are compiled
    once. k-hat is itself an estimate: with ``stop_below`` use ``num_samples`` of 1000
    or more, and a threshold such as 0.5 (good) or 0.7 (usable); Yao et al. (2018),
    https://arxiv.org/abs/1802.02538; Vehtari et al. (2024),
    https://arxiv.org/abs/1507.02646.

    Args:
        rng_key: a JAX PRNG key (split for initialisation and for the k-hat draws).
        svi: a :class:`numpyro.infer.SVI` whose guide is an ``AutoContinuous`` (any
            ``numpyro_flows`` guide or NumPyro's ``AutoDiagonalNormal`` etc.).
        num_steps: the maximum number of SVI steps.
        *args, **kwargs: the model's arguments (the data), as for ``svi.run``.
        check_every: steps between k-hat checks (a check also follows the last step).
        num_samples: guide draws per check.
        stop_below: stop at the first check with ``khat < stop_below`` (``None``: never).
        progress_bar: show a tqdm bar with the mean loss and the last k-hat.
        stable_update: use ``svi.stable_update`` (skips steps with a non-finite loss).
        init_state: continue from this ``SVIState`` instead of ``svi.init``.

    Returns:
        A :class:`KhatSVIRunResult`.

    Example::

        svi = SVI(model, AutoNeuralSpline(model), optax.adam(3e-3), Trace_ELBO())
        result = run_svi_with_khat(jax.random.key(0), svi, 20_000, data, stop_below=0.5)
        print(result.check_steps, result.khats)
    """
    if not isinstance(svi, SVI):
        raise TypeError(f"svi must be a numpyro.infer.SVI, got {type(svi).__name__}.")
    require_continuous(svi.guide)
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
    if int(check_every) < 1:
        raise ValueError(f"check_every must be a positive integer, got {check_every}.")
    key_init, key_khat = jax.random.split(rng_key)
    state = svi.init(key_init, *args, **kwargs) if init_state is None else init_state
    update = svi.stable_update if stable_update else svi.update
    draw = log_ratio_fn(svi.guide, *args, num_samples=num_samples, **kwargs)

    @partial(jax.jit, static_argnums=1)
    def run_steps(state, length):
        def body(state, _):
            return update(state, *args, **kwargs)

        return jax.lax.scan(body, state, None, length=length)

    losses, check_steps, khats, ess = [], [], [], []
    step = 0
    with tqdm(total=int(num_steps), disable=not progress_bar) as bar:
        while step < num_steps:
            length = int(min(check_every, num_steps - step))
            state, chunk_losses = run_steps(state, length)
            step += length
            losses.append(np.asarray(chunk_losses))
            latent, log_p, log_q = draw(jax.random.fold_in(key_khat, step), svi.get_params(state))
            log_ratios = np.asarray(log_p) - np.asarray(log_q)
            if np.any(np.isfinite(log_ratios)):
                check = psis_from_log_ratios(log_ratios)
                khat, check_ess = check.khat, check.ess
            else:
                khat, check_ess = np.inf, 0.0
            check_steps.append(step)
            khats.append(khat)
            ess.append(check_ess)
            bar.update(length)
            bar.set_postfix_str(f"loss: {np.mean(losses[-1]):.4g}, k-hat: {khat:.2f}")
            if stop_below is not None and khat < stop_below:
                break
    return KhatSVIRunResult(
        params=svi.get_params(state),
        state=state,
        losses=np.concatenate(losses),
        check_steps=np.asarray(check_steps),
        khats=np.asarray(khats, np.float64),
        ess=np.asarray(ess, np.float64),
    )


__all__ = ["KhatSVIRunResult", "run_svi_with_khat"]
