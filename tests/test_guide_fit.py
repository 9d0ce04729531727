"""fit_guide (the one-call fit), the learned non-centring it applies, and NeuTra on its
result. Small budgets: the accuracy runs live in benchmarks/neutra_bench.py."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from models import discrete_latent, eight_schools, eight_schools_centered, funnel, normal_normal
from numpyro import handlers
from numpyro.infer.autoguide import AutoDiagonalNormal, AutoNormal
from numpyro.infer.initialization import init_to_value
from numpyro.infer.util import potential_energy

from numpyro_flows import AutoIAF, AutoNeuralSpline, GuideFit, fit_guide, neutra_nuts
from numpyro_flows.diagnostics import MIN_PSIS_SAMPLES, log_ratio_fn
from numpyro_flows.guide_fit import _PlateauPlan
from numpyro_flows.reparam import NonCentredModel, hierarchical_sites, non_centred
from numpyro_flows.reports import MCMCReport, RunReportWarning

SMALL = {"max_steps": 600, "chunk_size": 200, "num_particles": 4, "khat_samples": 200}


def quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k-hat of a short fit
        return fit_guide(*args, progress_bar=False, **kwargs)


@pytest.fixture(scope="module")
def centred_fit():
    return quiet_fit(jax.random.key(0), eight_schools_centered, **SMALL)


def test_defaults_fit_a_hierarchical_model_with_learned_non_centring(centred_fit):
    fit = centred_fit
    assert isinstance(fit, GuideFit)
    assert isinstance(fit.guide, AutoIAF) and fit.guide.affine == "full"
    assert isinstance(fit.guide.model, NonCentredModel)
    assert fit.guide.model.sites == ("theta",)
    centring = float(fit.params["theta_centered"])
    assert 0.0 < centring < 1.0
    assert fit.num_steps == len(fit.losses) == len(fit.learning_rates) <= SMALL["max_steps"]
    assert np.mean(fit.losses[-100:]) < np.mean(fit.losses[:100])
    assert np.isfinite(fit.khat)
    # The mode search found the one mode: the Laplace start is taken from it, without a
    # second search (and its compilation).
    assert fit.modes.num_modes == 1
    np.testing.assert_array_equal(fit.guide.laplace.loc, fit.modes.locs[0])
    assert fit.guide.laplace.iterations == 0
    assert not fit.guide._laplace_unchecked  # checked by fit_guide's own PSIS draws
    text = repr(fit)
    assert "khat=" in text and len(text) < 250
    # The original sites come back (as deterministic sites of the reparameterised model).
    draws = fit.guide.sample_posterior(jax.random.key(1), fit.params, sample_shape=(7,))
    assert draws["theta"].shape == (7, 8) and draws["tau"].shape == (7,)


def test_khat_uses_the_fitted_centring(centred_fit):
    """log p in the PSIS ratios is the model at the fitted centring, not its initial value."""
    fit = centred_fit
    draw = log_ratio_fn(fit.guide, num_samples=30)
    latent, log_p, _ = draw(jax.random.key(2), fit.params)
    centring = {"theta_centered": fit.params["theta_centered"]}
    model = handlers.substitute(fit.guide.model, data=centring)
    expected = [-potential_energy(model, (), {}, fit.guide._unpack_latent(z)) for z in latent[:3]]
    np.testing.assert_allclose(log_p[:3], expected, rtol=1e-4, atol=1e-3)


def short_neutra(fit, seed, num_draws):
    """Two vectorised chains of ``num_draws`` warm-up steps and draws each."""
    return neutra_nuts(
        jax.random.key(seed),
        fit.guide,
        fit.params,
        num_warmup=num_draws,
        num_samples=num_draws,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
        khat_samples=0,
    )


@pytest.mark.slow  # a NeuTra-NUTS run; the default run has test_arviz's NeuTra export
def test_neutra_on_fit_guide_returns_the_original_sites_and_a_report(centred_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunReportWarning)  # a short run's report
        result = short_neutra(centred_fit, 3, 100)
    assert set(result.samples) == {"mu", "tau", "theta"}
    assert result.samples["theta"].shape == (2, 100, 8)
    report = result.summary()
    assert isinstance(report, MCMCReport)
    assert report.num_divergences == int(np.sum(result.sample_stats["diverging"]))
    assert "divergen" in str(report)


@pytest.mark.slow  # moved to keep the default run under 7 minutes
def test_fixed_num_steps_is_a_cosine_schedule():
    fit = quiet_fit(
        jax.random.key(0),
        normal_normal,
        num_steps=300,
        chunk_size=128,
        num_particles=2,
        khat_samples=100,
    )
    assert fit.num_steps == 300
    rates = fit.learning_rates
    assert rates[0] == pytest.approx(3e-3) and rates[-1] < 1e-4
    assert np.all(np.diff(rates) <= 1e-12)


def test_plateau_plan_decays_then_stops():
    plan = _PlateauPlan(1e-2, max_steps=10_000, decay=0.5, num_decays=2)
    rng = np.random.default_rng(0)
    plan.update(10 + rng.normal(size=100))  # first chunk: an improvement on inf
    assert plan.learning_rate == 1e-2
    plan.update(5 + rng.normal(size=100))  # clearly better
    assert plan.learning_rate == 1e-2
    for _ in range(3):  # flat: three plateaus, the third ends it
        plan.update(5 + rng.normal(size=100))
    assert plan.done and plan.learning_rate == pytest.approx(1.25e-3)


@pytest.mark.slow  # moved to keep the default run under 7 minutes
def test_guide_may_be_an_instance_a_class_or_a_factory():
    short = {**SMALL, "max_steps": SMALL["chunk_size"]}  # which guide, not how good
    instance = AutoDiagonalNormal(normal_normal)
    fit = quiet_fit(jax.random.key(0), normal_normal, guide=instance, **short)
    assert fit.guide is instance
    fit = quiet_fit(jax.random.key(0), funnel, guide=AutoNeuralSpline, **short)
    assert isinstance(fit.guide, AutoNeuralSpline)
    assert fit.guide.model.sites == ("x",)  # built on the reparameterised model


@pytest.mark.parametrize(
    "model, kwargs, error, match",
    [
        (discrete_latent, {}, ValueError, "discrete latent site 'k'"),
        (lambda: numpyro.deterministic("c", 1.0), {}, ValueError, "no latent sample sites"),
        (normal_normal, {"y": jnp.array([1.0, jnp.nan])}, ValueError, r"y\[1\] is NaN"),
        (normal_normal, {"guide": AutoNormal(normal_normal)}, TypeError, "AutoContinuous"),
        (normal_normal, {"guide": "iaf"}, TypeError, "guide class or factory"),
        (normal_normal, {"num_particles": 0}, ValueError, "num_particles"),
    ],
)
def test_bad_input_gets_a_clear_error(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit_guide(jax.random.key(0), model, progress_bar=False, **kwargs)


def test_hierarchical_sites_are_the_location_scale_sites_with_latent_parents():
    assert hierarchical_sites(eight_schools_centered) == ["theta"]
    assert hierarchical_sites(funnel) == ["x"]
    assert hierarchical_sites(eight_schools) == []  # already non-centred
    assert non_centred(normal_normal) is normal_normal
    wrapped = non_centred(eight_schools_centered)
    assert non_centred(wrapped) is wrapped
    assert "theta" in repr(wrapped)


@pytest.mark.slow  # the default run has fit_guide dropping a bad Laplace start
def test_auto_warm_start_uses_a_mode_and_skips_a_funnel():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "auto" never warns
        regression = AutoIAF(normal_normal, warm_start="auto")
        with handlers.seed(rng_seed=0):
            regression._setup_prototype()
        assert regression.frame is not None
        neck = AutoIAF(funnel, warm_start="auto")
        with handlers.seed(rng_seed=0):
            neck._setup_prototype()
        assert neck.frame is None


@pytest.mark.slow  # the default run has the start accepted (centred_fit)
def test_a_laplace_start_with_a_bad_khat_is_dropped():
    """The mode search finds one mode of the funnel, but the Laplace Gaussian there is a
    needle in the neck (PSIS k-hat > 0.7): the guide starts plainly instead."""
    fit = fit_guide(
        jax.random.key(0),
        funnel,
        reparam=False,
        num_steps=1,
        num_particles=1,
        khat_samples=MIN_PSIS_SAMPLES * 10,
        progress_bar=False,
    )
    assert fit.modes.num_modes == 1
    assert fit.guide.frame is None and not fit.guide._laplace_unchecked
    with pytest.raises(ValueError, match="khat_samples must be 0 .* or at least 21"):
        fit_guide(jax.random.key(0), funnel, khat_samples=5, progress_bar=False)


def finite_only_at_zero():
    z = numpyro.sample("z", numpyro.distributions.Normal(0.0, 1.0))
    numpyro.factor("broken", jnp.where(z == 0.0, 0.0, jnp.nan))


def nan_everywhere():
    z = numpyro.sample("z", numpyro.distributions.Normal(0.0, 1.0))
    numpyro.factor("broken", jnp.nan * z)


def test_a_loss_that_stays_nan_is_an_error_naming_the_fix():
    """Steps with a NaN loss are skipped; a chunk of them is retried with smaller steps,
    then it is an error."""
    at_zero = init_to_value(values={"z": 0.0})
    with pytest.raises(FloatingPointError, match="stayed NaN or infinite from step 0"):
        fit_guide(
            jax.random.key(0),
            finite_only_at_zero,
            guide=lambda m: AutoIAF(m, init_loc_fn=at_zero),
            progress_bar=False,
            **SMALL,
        )
    with pytest.raises(ValueError, match="not finite at any initial point"):
        fit_guide(jax.random.key(0), nan_everywhere, progress_bar=False, **SMALL)


def test_package_jit_compiles_the_same_function_with_cpu_options(monkeypatch):
    """package_jit (fit_guide's chunk, the mode search, the PSIS draws) is jax.jit with
    XLA's backend optimisation level 1 on the CPU: the same values, as a decorator with
    jit's keywords too, and options XLA accepts (an unknown option name would fail here)."""
    from numpyro_flows import _compile

    def f(x, n):
        return jnp.sum(jnp.sin(x) ** n)

    x = jnp.linspace(0.0, 1.0, 5)
    decorated = _compile.package_jit(static_argnums=1)(f)
    np.testing.assert_allclose(decorated(x, 2), jax.jit(f, static_argnums=1)(x, 2), rtol=1e-6)
    monkeypatch.setattr(_compile, "CPU_COMPILER_OPTIONS", {"not_an_xla_option": 1})
    if _compile._JIT_TAKES_OPTIONS and jax.default_backend() == "cpu":
        with pytest.raises(Exception, match="not_an_xla_option"):
            _compile.package_jit(f, static_argnums=1)(x, 3)
