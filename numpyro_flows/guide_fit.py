"""``fit_guide``: the recommended one-call way to train a flow guide.

It chooses the guide (when none is given), the optimiser and its schedule, the number of
particles and the number of steps, trains, and checks the result with PSIS k-hat. Every
choice is an argument with a documented default, and the defaults are what
``benchmarks/`` measures (NeuTra on funnels and hierarchical models, posteriordb).

The schedule is driven by the loss rather than a fixed step count: Adam runs in compiled
chunks of ``chunk_size`` steps; when a chunk's mean loss no longer improves on the best
chunk so far by more than its own noise, the learning rate drops by ``decay``; after
``num_decays`` drops (or ``max_steps``) training stops. A small model converges in a few
thousand steps, a large or hard one keeps going, and the final steps at a low learning
rate remove most of the Monte Carlo jitter from the parameters (what a cosine decay does,
without knowing the length in advance).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoContinuous, AutoGuide
from tqdm.auto import tqdm

from numpyro_flows._compile import package_jit
from numpyro_flows._guide_support import latent_sites, reject_discrete_latents
from numpyro_flows.autoguides import LAPLACE_KHAT_MAX, AutoIAF
from numpyro_flows.checks import check_model_data
from numpyro_flows.diagnostics import (
    KHAT_BAD,
    MIN_PSIS_SAMPLES,
    PSISResult,
    log_ratio_fn,
    psis_diagnostic,
    psis_from_log_ratios,
)
from numpyro_flows.hybrid import AutoHybridFlow, subsampled_local_sites
from numpyro_flows.laplace import khat_or_inf, laplace_from_modes
from numpyro_flows.mixture import AutoFlowMixture
from numpyro_flows.modes import Modes, find_modes
from numpyro_flows.objectives import StratifiedELBO
from numpyro_flows.reparam import non_centred
from numpyro_flows.reports import RunReportWarning, verdict_is_bad

# Fewest draws per mixture component per step.
MIN_STRATUM_PARTICLES = 2

# A chunk with more non-finite losses than this (steps skipped by svi.stable_update) is
# undone and retried with the learning rate times RESTART_DECAY, at most MAX_RESTARTS times.
MAX_SKIPPED_FRACTION = 0.1
RESTART_DECAY = 0.1
MAX_RESTARTS = 3

# A fixed step budget decays the learning rate along a cosine to this fraction of it.
COSINE_FLOOR = 0.01

# Latent dimension up to which the default guide's affine layer is a full lower-triangular
# scale (O(D^2) parameters) and the mode search runs (it needs a Hessian per start);
# above it, a diagonal affine layer and no search.
FULL_AFFINE_MAX_DIM = 200


class GuideFit(NamedTuple):
    """What :func:`fit_guide` returns.

    Attributes:
        guide: the trained guide (set up with the model).
        params: its fitted parameters (pass to ``sample_posterior``, ``neutra_nuts``...).
        losses: the loss (negative ELBO) at every step, ``(num_steps,)``.
        khat: PSIS k-hat of the fitted guide (``nan`` if the check was skipped).
        psis: the full :class:`~numpyro_flows.diagnostics.PSISResult` (``None`` if
            skipped).
        num_steps: the number of SVI steps taken.
        num_particles: ELBO particles per step.
        learning_rates: the learning rate of every step, ``(num_steps,)``.
        seconds: wall time of the fit, set-up and compilation included.
        modes: what the mode search found (:class:`~numpyro_flows.modes.Modes`), or
            ``None`` where it did not run. With two or more modes the guide is an
            :class:`~numpyro_flows.AutoFlowMixture`.
    """

    guide: AutoContinuous | AutoHybridFlow
    params: dict
    losses: np.ndarray
    khat: float
    psis: PSISResult | None
    num_steps: int
    num_particles: int
    learning_rates: np.ndarray
    seconds: float
    modes: Modes | None = None

    @property
    def verdict(self) -> str:
        """The PSIS verdict in words (``ok``, ``doubtful ...``, ``bad ...``, ``failed: ...``)."""
        return "not checked" if self.psis is None else self.psis.verdict

    def __repr__(self) -> str:
        return (
            f"GuideFit(guide={type(self.guide).__name__}, num_steps={self.num_steps}, "
            f"num_particles={self.num_particles}, final_loss={_final_loss(self.losses):.4g}, "
            f"khat={self.khat:.2f} [{self.verdict}], seconds={self.seconds:.1f})"
        )


def default_guide(
    model, latent_size: int | None = None, modes: Modes | None = None
) -> AutoContinuous:
    """The guide :func:`fit_guide` trains when none is given.

    An :class:`~numpyro_flows.AutoIAF` (three IAF layers, NumPyro's MADE widths
    ``[D, D]``) behind a full lower-triangular affine layer (diagonal above
    ``FULL_AFFINE_MAX_DIM`` latent values), starting at ``init_scale=0.1`` and at the
    Laplace approximation where the posterior has a usable mode (``warm_start="auto"``).

    Why this one (``benchmarks/neutra_bench.py`` and ``benchmarks/posteriordb``, figures in
    ``docs/benchmarks.md``): as a NeuTra transport the affine autoregressive family keeps
    warping all the way out, where a spline is the identity beyond its bound, which is
    where a funnel's neck lies; the spline presets kept a few divergences on eight schools
    where this guide had none, at a lower ESS per gradient. The full affine layer takes the
    linear correlations off the flow, and the Laplace start puts badly scaled regressions
    in a whitened frame from the first step. The spline presets remain the more flexible
    posterior approximations (``guide=AutoNeuralSpline``) when the guide's draws, not
    NeuTra, are the goal.

    Args:
        model: a NumPyro model.
        latent_size: the number of latent values, if known (for the affine choice).
        modes: a mode search of ``model`` (:func:`~numpyro_flows.find_modes`). Where it
            found exactly one mode, the Laplace start is taken from it (the mode and the
            curvature there) instead of a second search.
    """
    guide = AutoIAF(model, init_scale=0.1, affine=_affine_for(latent_size), warm_start="auto")
    guide._known_laplace = laplace_from_modes(modes)
    return guide


def _affine_for(latent_size: int | None) -> str:
    small = latent_size is None or latent_size <= FULL_AFFINE_MAX_DIM
    return "full" if small else "diagonal"


def _search_modes(rng_key, modes, model, latent_size, args, kwargs) -> Modes | None:
    """The modes to fit: a given search, a new one, or ``None`` (no search)."""
    if isinstance(modes, Modes):
        return modes
    if not isinstance(modes, bool):
        raise TypeError(f"modes must be True, False or a Modes, got {type(modes).__name__}.")
    if not modes or (latent_size is not None and latent_size > FULL_AFFINE_MAX_DIM):
        return None
    with warnings.catch_warnings():
        # A start in a region where the model is not finite is simply not a mode.
        warnings.simplefilter("ignore")
        return find_modes(rng_key, model, *args, **kwargs)


def fit_guide(
    rng_key,
    model: Callable,
    *model_args,
    guide: AutoContinuous | Callable | None = None,
    reparam: bool = True,
    modes: bool | Modes = True,
    num_steps: int | None = None,
    num_particles: int = 16,
    learning_rate: float = 3e-3,
    max_steps: int = 30_000,
    chunk_size: int = 500,
    decay: float = 0.3,
    num_decays: int = 3,
    clip_norm: float = 10.0,
    loss=None,
    khat_samples: int = 2000,
    progress_bar: bool = True,
    **model_kwargs,
) -> GuideFit:
    """Trains a flow guide for ``model`` with SVI and checks it with PSIS; one call.

    What it decides, each overridable:

    * the guide: :func:`default_guide` (an IAF behind a full affine layer), or, where
      the posterior has several separated modes, an
      :class:`~numpyro_flows.AutoFlowMixture` with one flow per mode trained with
      :class:`~numpyro_flows.StratifiedELBO` (one flow trained by the ELBO keeps one mode
      and drops the rest; the modes are found first by :func:`~numpyro_flows.find_modes`);
      where latents sit in a subsampled plate (a latent per datum or group), an
      :class:`~numpyro_flows.AutoHybridFlow` (no mode search and no learned non-centring
      then; PSIS on the full data);
    * the model's geometry: with ``reparam=True``, hierarchical location-scale sites
      (``theta ~ Normal(mu, tau)`` with ``mu`` or ``tau`` latent) get a learned degree
      of non-centring (:mod:`numpyro_flows.reparam`), trained with the guide;
    * the schedule: Adam with clipped gradients, the learning rate lowered at each
      plateau of the loss, stopping after ``num_decays`` plateaus (module docstring) or
      ``num_steps`` steps of cosine decay when given;
    * the check: PSIS k-hat of the fitted guide, with a warning that names the problem
      and the fix when the fit cannot be trusted.

    Args:
        rng_key: a JAX PRNG key.
        model: a NumPyro model with continuous latent sites.
        *model_args, **model_kwargs: the model's arguments (the data). Lists are turned
            into arrays and NaN, inf or overflowing values are rejected by name
            (:func:`numpyro_flows.checks.check_model_data`).
        guide: ``None`` (the default guide), a guide class or factory taking the model
            (e.g. ``AutoNeuralSpline`` or ``lambda m: AutoIAF(m, num_flows=5)``; it is
            built on the reparameterised model), or an ``AutoContinuous`` instance (ours
            or NumPyro's) or :class:`~numpyro_flows.AutoHybridFlow`, used with its own
            model as it is.
        reparam: learn the non-centring of hierarchical sites (ignored for a guide
            instance, which is bound to its model already).
        modes: with the default guide: ``True`` looks for separated modes
            (:func:`~numpyro_flows.find_modes`, up to ``FULL_AFFINE_MAX_DIM`` latent values)
            and fits a mixture of flows where it finds two or more; ``False`` always fits
            one flow (e.g. for NeuTra, which needs one); or the
            :class:`~numpyro_flows.modes.Modes` of an earlier search on the same model
            (after ``reparam``: ``fit.modes``).
        num_steps: a fixed number of steps with a cosine-decayed learning rate
            (``learning_rate`` to ``learning_rate / 100``). Default ``None``: the
            loss-driven schedule of the module docstring.
        num_particles: ELBO particles per step (more particles, less gradient noise).
        learning_rate: Adam's initial learning rate.
        max_steps: the most steps the loss-driven schedule may take.
        chunk_size: steps per compiled chunk (the schedule decides between chunks).
        decay: factor applied to the learning rate at each plateau.
        num_decays: plateaus before the loss-driven schedule stops.
        clip_norm: gradients are clipped to this global norm (one bad draw cannot throw
            the flow far away). Steps with a non-finite loss or gradient are skipped; a
            chunk with more than ``MAX_SKIPPED_FRACTION`` of them is undone and retried with
            a tenth of the learning rate (``MAX_RESTARTS`` times), then it is an error.
        loss: an ELBO (default ``Trace_ELBO(num_particles)``; for a mixture,
            ``StratifiedELBO`` with ``num_particles / K`` draws per component, at least
            ``MIN_STRATUM_PARTICLES``).
        khat_samples: guide draws for the final PSIS k-hat (0 skips it; otherwise at
            least 21). The same compiled draws check the default guide's Laplace start
            from the mode search before training (its k-hat below ``LAPLACE_KHAT_MAX``).
        progress_bar: show progress (steps, loss, learning rate).

    Returns:
        A :class:`GuideFit`; ``fit.guide.model`` is the model the guide was trained on
        (the reparameterised one where ``reparam`` applied).

    Example::

        fit = fit_guide(jax.random.key(0), model, data)
        result = neutra_nuts(jax.random.key(1), fit.guide, fit.params, data, num_chains=4)
    """
    start = time.perf_counter()
    model_args, model_kwargs = check_model_data(model_args, model_kwargs)
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model (a callable), got {type(model).__name__}.")
    found = None
    key_modes = jax.random.fold_in(rng_key, 1)  # leaves the training keys as they were
    if isinstance(guide, AutoContinuous | AutoHybridFlow):
        model = guide.model
    elif subsampled_local_sites(model, model_args, model_kwargs):
        # Local latents in a subsampled plate: an amortised guide over the locals, no
        # mode search (a mode of a minibatch is not one of the posterior) and no learned
        # non-centring (it adds a parameter per local value).
        check_latent_sites(model, model_args, model_kwargs)
        guide = AutoHybridFlow(model) if guide is None else _build_guide(guide, model)
    else:
        latent_size = check_latent_sites(model, model_args, model_kwargs)
        if reparam:
            model = non_centred(model, *model_args, **model_kwargs)
        if guide is None:
            found = _search_modes(key_modes, modes, model, latent_size, model_args, model_kwargs)
            if found is not None and found.num_modes > 1:
                guide = AutoFlowMixture(model, modes=found, affine=_affine_for(latent_size))
            else:
                guide = default_guide(model, latent_size, found)
                # The Laplace start from the search is checked below, with the draws of
                # the final PSIS (one compiled function for both).
                guide._check_known_laplace = not khat_samples
        else:
            guide = _build_guide(guide, model)
    _check_positive_int("num_particles", num_particles)
    _check_positive_int("chunk_size", chunk_size)
    _check_positive_int("max_steps", max_steps)
    _check_khat_samples(khat_samples)
    if num_steps is not None:
        _check_positive_int("num_steps", num_steps)
        chunk_size = min(chunk_size, num_steps)
    if not 0 < decay < 1:
        raise ValueError(f"decay must lie in (0, 1), got {decay}.")
    key_init, key_khat = jax.random.split(rng_key)

    if num_steps is None:
        optimizer = optax.inject_hyperparams(_clipped_adam)(
            learning_rate=learning_rate, clip=clip_norm
        )
    else:
        schedule = optax.cosine_decay_schedule(learning_rate, num_steps, COSINE_FLOOR)
        optimizer = _clipped_adam(schedule, clip_norm)
    if loss is None and isinstance(guide, AutoFlowMixture) and found is not None:
        per_component = -(-num_particles // found.num_modes)
        loss = StratifiedELBO(max(per_component, MIN_STRATUM_PARTICLES))
    loss = Trace_ELBO(num_particles=num_particles) if loss is None else loss
    svi = SVI(model, guide, optimizer, loss)
    state = _init_svi(svi, key_init, model_args, model_kwargs)
    draw = _psis_draws(guide, khat_samples, model_args, model_kwargs)
    if getattr(guide, "_laplace_unchecked", False):
        # The guide starts as the Laplace Gaussian at the mode the search found: its PSIS
        # k-hat (as AutoFlow's own check) decides whether to keep that start. If not, a
        # guide with a search of its own from init_loc_fn's point, as without modes.
        key_check = jax.random.fold_in(rng_key, 2)
        if _khat_of(draw, key_check, svi.get_params(state)) < LAPLACE_KHAT_MAX:
            guide._laplace_unchecked = False
        else:
            guide = default_guide(model, latent_size)
            svi = SVI(model, guide, optimizer, loss)
            state = _init_svi(svi, key_init, model_args, model_kwargs)
            draw = _psis_draws(guide, khat_samples, model_args, model_kwargs)

    @package_jit
    def run_chunk(state, num_active):
        # Every chunk has the same length (one compilation); steps past `num_active` (the
        # end of a fixed budget) leave the state as it is.
        def body(state, i):
            # A step whose loss or gradient is not finite is skipped (the state is kept).
            new_state, loss = svi.stable_update(state, *model_args, **model_kwargs)
            keep = i < num_active
            return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new_state, state), loss

        return jax.lax.scan(body, state, jnp.arange(chunk_size))

    plan = (
        _FixedPlan(num_steps, learning_rate)
        if num_steps
        else _PlateauPlan(learning_rate, max_steps, decay, num_decays)
    )
    losses, rates = [], []
    restarts = MAX_RESTARTS
    # Between chunks Python is back in control: Ctrl-C stops within one chunk.
    with tqdm(total=plan.total, disable=not progress_bar, desc="fit_guide") as bar:
        while not plan.done:
            if num_steps is None:
                state = _set_learning_rate(state, plan.learning_rate)
            keep = min(chunk_size, plan.remaining)
            new_state, chunk = run_chunk(state, keep)
            chunk = np.asarray(chunk)[:keep]
            finite = np.isfinite(chunk)
            if np.mean(~finite) > MAX_SKIPPED_FRACTION:
                # The guide keeps drawing where the model has no finite density: go back
                # to the state before the chunk and take smaller steps.
                if num_steps is not None or restarts == 0:
                    first = plan.steps + int(np.argmin(finite))
                    raise FloatingPointError(_non_finite_message(first))
                restarts -= 1
                plan.learning_rate *= RESTART_DECAY
                continue
            chunk = np.where(finite, chunk, np.max(chunk[finite]))
            state = new_state
            losses.append(chunk)
            rates.append(plan.rates(keep))
            plan.update(chunk)
            bar.total = plan.total
            bar.update(keep)
            bar.set_postfix_str(f"loss {np.mean(chunk):.4g}, lr {plan.learning_rate:.1e}")
    params = svi.get_params(state)
    losses = np.concatenate(losses)
    psis = None
    khat = float("nan")
    if khat_samples:
        if draw is None:
            psis = psis_diagnostic(
                key_khat, guide, params, *model_args, num_samples=khat_samples, **model_kwargs
            )
        else:
            latent, log_p, log_q = (np.asarray(a) for a in draw(key_khat, params))
            psis = psis_from_log_ratios(log_p - log_q, latent, log_p, log_q)
        khat = psis.khat
        _warn_if_untrustworthy(psis)
    return GuideFit(
        guide=guide,
        params=params,
        losses=losses,
        khat=khat,
        psis=psis,
        num_steps=len(losses),
        num_particles=num_particles,
        learning_rates=np.concatenate(rates),
        seconds=time.perf_counter() - start,
        modes=found,
    )


def _init_svi(svi, rng_key, model_args, model_kwargs):
    try:
        return svi.init(rng_key, *model_args, **model_kwargs)
    except RuntimeError as error:
        if "valid initial parameters" not in str(error):
            raise
        raise ValueError(
            "The model's log density is not finite at any initial point tried (NumPyro: "
            f"{error}). Look for operations that give NaN or inf (log of a negative value, "
            "an overflowing exp, a scale that can be 0), or start elsewhere: a guide with "
            "init_loc_fn=init_to_median or init_to_value(values=...)."
        ) from None


def _psis_draws(guide, khat_samples, model_args, model_kwargs):
    """The compiled PSIS draws of ``guide`` (:func:`~numpyro_flows.diagnostics.log_ratio_fn`),
    or ``None`` where the check is skipped or the guide has no flat latent vector (an
    :class:`~numpyro_flows.AutoHybridFlow`: :func:`psis_diagnostic` handles it)."""
    if not khat_samples or isinstance(guide, AutoHybridFlow):
        return None
    return log_ratio_fn(guide, *model_args, num_samples=khat_samples, **model_kwargs)


def _khat_of(draw, rng_key, params) -> float:
    """PSIS k-hat of the guide at ``params`` (:func:`~numpyro_flows.laplace.khat_or_inf`)."""
    _, log_p, log_q = draw(rng_key, _strongly_typed(params))
    return khat_or_inf(log_p, log_q)


def _strongly_typed(params):
    # Parameters fresh from init may be weakly typed (made from Python floats); the trained
    # ones are not, and jit would compile the PSIS draws once for each kind.
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.result_type(a)), params)


# ---------------------------------------------------------------------- schedules
def _clipped_adam(learning_rate, clip):
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(learning_rate))


def _set_learning_rate(state, learning_rate):
    # The optimiser state of optax.inject_hyperparams holds the learning rate as an array:
    # changing it between chunks does not recompile.
    # NumPyro's optax wrapper keeps (step, (params, optax_state)).
    step, (values, inner) = state.optim_state
    old = inner.hyperparams["learning_rate"]
    hyperparams = {**inner.hyperparams, "learning_rate": jnp.asarray(learning_rate, old.dtype)}
    return state._replace(optim_state=(step, (values, inner._replace(hyperparams=hyperparams))))


class _Plan:
    """Steps taken of at most ``total``, and the learning rate of the next chunk."""

    def __init__(self, total: int, learning_rate: float):
        self.total = total
        self.steps = 0
        self.learning_rate = learning_rate

    @property
    def done(self):
        return self.steps >= self.total

    @property
    def remaining(self):
        return self.total - self.steps


class _FixedPlan(_Plan):
    """``num_steps`` steps of a cosine schedule (the optimiser holds the schedule)."""

    def __init__(self, num_steps: int, learning_rate: float):
        super().__init__(num_steps, learning_rate)
        self._initial = learning_rate

    def _schedule(self, step):
        # optax.cosine_decay_schedule(learning_rate, total, COSINE_FLOOR), which the optimiser
        # runs, in NumPy: evaluated eagerly with JAX it compiled a kernel per call shape.
        fraction = np.minimum(step, self.total) / self.total
        cosine = 0.5 * (1 + np.cos(np.pi * fraction))
        return self._initial * ((1 - COSINE_FLOOR) * cosine + COSINE_FLOOR)

    def rates(self, n):
        return self._schedule(np.arange(self.steps, self.steps + n))

    def update(self, chunk_losses):
        self.steps += len(chunk_losses)
        self.learning_rate = float(self._schedule(self.steps))


class _PlateauPlan(_Plan):
    """Drops the learning rate when a chunk's mean loss stops improving; stops after
    ``num_decays`` drops or ``max_steps`` steps."""

    def __init__(self, learning_rate, max_steps, decay, num_decays):
        super().__init__(max_steps, learning_rate)
        self.decay = decay
        self.decays_left = num_decays
        self.best = np.inf

    def rates(self, n):
        return np.full(n, self.learning_rate)

    def update(self, chunk_losses):
        self.steps += len(chunk_losses)
        mean = float(np.mean(chunk_losses))
        # The chunk mean's noise, from the spread of the mean of its tenths (losses are
        # autocorrelated along a run, so the plain standard error would be too small).
        tenths = np.array_split(chunk_losses, 10)
        noise = float(np.std([np.mean(t) for t in tenths]) / np.sqrt(len(tenths)))
        improved = mean < self.best - 2 * noise
        self.best = min(self.best, mean)
        if improved:
            return
        self.decays_left -= 1
        self.learning_rate *= self.decay
        if self.decays_left < 0:
            self.total = self.steps  # done


# ---------------------------------------------------------------------- checks
def _build_guide(make_guide, model) -> AutoContinuous:
    if isinstance(make_guide, AutoGuide):
        raise TypeError(_not_continuous(f"got {type(make_guide).__name__}"))
    if not callable(make_guide):
        raise TypeError(
            "guide must be None, an AutoContinuous guide, or a guide class or factory taking "
            f"the model (e.g. AutoNeuralSpline), got {type(make_guide).__name__}."
        )
    guide = make_guide(model)
    if not isinstance(guide, AutoContinuous | AutoHybridFlow):
        raise TypeError(_not_continuous(f"the guide factory returned {type(guide).__name__}"))
    return guide


def _not_continuous(what: str) -> str:
    return (
        "fit_guide trains an AutoContinuous guide (AutoIAF, AutoNeuralSpline, AutoFlow, "
        f"NumPyro's AutoIAFNormal, ...) or an AutoHybridFlow; {what}, which has no joint "
        "density over all latents. For other guides use numpyro.infer.SVI directly."
    )


def check_latent_sites(model, args, kwargs) -> int | None:
    """A clear error for a model without latent sites or with discrete ones.

    Runs the model once (seeded, argument validation off, nothing recorded outside);
    a model that fails here is left to the guide's own set-up to report.

    Returns:
        The number of latent values (``None`` if the model could not be run here).
    """
    sites = latent_sites(model, args, kwargs)
    if sites is None:
        return None
    if not sites:
        raise ValueError(
            "The model has no latent sample sites: there is no posterior to fit a guide to. "
            "Check that the data are passed as observations (obs=...) and that at least one "
            "numpyro.sample site is not observed."
        )
    reject_discrete_latents(sites, "fit_guide")
    return sum(int(np.size(site["value"])) for site in sites.values())


def _check_khat_samples(khat_samples):
    if khat_samples and not (
        isinstance(khat_samples, int | np.integer) and khat_samples >= MIN_PSIS_SAMPLES
    ):
        raise ValueError(
            f"khat_samples must be 0 (no PSIS check) or at least {MIN_PSIS_SAMPLES} draws "
            f"(1000 or more for a reliable k-hat), got {khat_samples!r}."
        )


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _final_loss(losses) -> float:
    losses = np.asarray(losses)
    return float(np.mean(losses[-100:])) if losses.size else float("nan")


def _non_finite_message(step: int) -> str:
    return (
        f"The loss stayed NaN or infinite from step {step} on, also with smaller steps: the "
        "guide draws latents where the model's log density is not finite. Check the model "
        "for values outside its support (e.g. a scale that can reach 0, an exp that "
        "overflows), or pass a smaller learning_rate or init_scale."
    )


def _warn_if_untrustworthy(psis: PSISResult):
    verdict = psis.verdict
    if verdict.startswith("failed"):
        warnings.warn(
            f"The fitted guide cannot be checked: {verdict}. Look at fit.losses for a "
            "divergence and train again (a smaller learning_rate, more num_particles).",
            RunReportWarning,
            stacklevel=3,
        )
    elif verdict_is_bad(verdict):
        warnings.warn(
            f"The fitted guide's PSIS k-hat is {psis.khat:.2f} > {KHAT_BAD}: it misses part "
            "of the posterior, so its draws are not the posterior. Use it as a NeuTra "
            "transport (neutra_nuts stays exact), or fit a more flexible guide "
            "(guide=AutoNeuralSpline) or for longer (num_decays, max_steps).",
            RunReportWarning,
            stacklevel=3,
        )


__all__ = ["FULL_AFFINE_MAX_DIM", "GuideFit", "check_latent_sites", "default_guide", "fit_guide"]
