"""PSIS diagnostics: k-hat on Neal's funnel, weights, evidence, resampling, k-hat monitoring."""

import jax
import numpy as np
import optax
import pytest
from models import funnel, normal_normal, normal_normal_exact
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDiagonalNormal, AutoNormal
from scipy.special import logsumexp

from numpyro_flows import AutoNeuralSpline
from numpyro_flows.arviz import to_inference_data
from numpyro_flows.diagnostics import (
    khat_threshold,
    log_ratio_fn,
    psis_diagnostic,
    psis_from_log_ratios,
    psis_resample,
)
from numpyro_flows.laplace import khat_or_inf
from numpyro_flows.monitoring import run_svi_with_khat
from numpyro_flows.reports import khat_verdict, verdict_is_bad


def median_khat(guide, params, *args, num_samples=2000, repeats=5, seed=100):
    """k-hat is noisy when the weights are heavy-tailed: the median of a few estimates."""
    draw = log_ratio_fn(guide, *args, num_samples=num_samples)
    khats = []
    for i in range(repeats):
        _, log_p, log_q = draw(jax.random.key(seed + i), params)
        khats.append(psis_from_log_ratios(np.asarray(log_p) - np.asarray(log_q)).khat)
    return float(np.median(khats)), np.round(khats, 2)


@pytest.fixture(scope="module")
def funnel_mean_field():
    mean_field = AutoDiagonalNormal(funnel)
    svi = SVI(funnel, mean_field, optax.adam(1e-2), Trace_ELBO())
    return mean_field, svi.run(jax.random.key(0), 1000, progress_bar=False).params


@pytest.mark.slow
def test_funnel_khat_mean_field_is_bad_and_a_trained_spline_is_better(funnel_mean_field):
    mean_field, mf_params = funnel_mean_field
    spline = AutoNeuralSpline(funnel, init_scale=1.0)
    svi = SVI(funnel, spline, optax.adam(1e-2), Trace_ELBO(num_particles=4))
    spline_params = svi.run(jax.random.key(0), 2000, progress_bar=False).params
    khat_mf, all_mf = median_khat(mean_field, mf_params)
    khat_spline, all_spline = median_khat(spline, spline_params)
    print(f"funnel k-hat: mean-field {khat_mf:.2f} {all_mf}, spline {khat_spline:.2f} {all_spline}")
    assert khat_mf > 0.7
    assert khat_spline < khat_mf


def test_export_of_a_model_without_observations(funnel_mean_field):
    mean_field, params = funnel_mean_field
    idata = to_inference_data(mean_field, params, rng_key=jax.random.key(3), num_samples=200)
    assert set(idata.groups()) == {"posterior", "sample_stats"}
    assert idata.posterior["v"].dims == ("chain", "draw")
    assert idata.posterior["x"].dims == ("chain", "draw", "x_dim_0")
    assert idata.posterior["x"].shape == (1, 200, 4)
    assert (
        idata.sample_stats.attrs["psis_khat"]
        == psis_from_log_ratios(
            (idata.sample_stats["lp"] - idata.sample_stats["log_q"]).values[0]
        ).khat
    )


# ---------------------------------------------------------------------- PSIS on known ratios
def gaussian_log_ratios(target_scale, num_samples=4000):
    """log N(x | 0, s^2) - log N(x | 0, 1) at x ~ N(0, 1): k = 1 - 1/s^2 for s > 1."""
    x = np.random.default_rng(0).normal(size=num_samples)
    return -0.5 * (x / target_scale) ** 2 - np.log(target_scale) + 0.5 * x**2


def test_khat_separates_light_and_heavy_tailed_weights():
    light = psis_from_log_ratios(gaussian_log_ratios(0.5))
    heavy = psis_from_log_ratios(gaussian_log_ratios(3.0))
    assert light.khat < 0.5 < 0.7 < heavy.khat
    assert heavy.ess < light.ess <= 4000
    for result in (light, heavy):
        np.testing.assert_allclose(logsumexp(result.log_weights), 0.0, atol=1e-10)
    # Both targets are normalised densities: the evidence is 1.
    np.testing.assert_allclose(light.log_evidence, 0.0, atol=0.05)


def test_nonfinite_ratios_get_zero_weight():
    log_ratios = gaussian_log_ratios(0.8, num_samples=200)
    log_ratios[:3] = [np.nan, -np.inf, np.nan]
    result = psis_from_log_ratios(log_ratios)
    assert np.all(result.log_weights[:3] == -np.inf)
    assert np.all(np.isfinite(result.log_weights[3:]))
    np.testing.assert_allclose(logsumexp(result.log_weights), 0.0, atol=1e-10)
    with pytest.raises(ValueError, match="not finite at any guide draw"):
        psis_from_log_ratios(np.full(100, np.nan))


def test_equal_ratios_are_a_failure_and_small_samples_are_refused():
    """All ratios equal: in floating point, float precision swamped by a huge log density
    far more often than an exact guide. Never "ok" (k-hat used to be -inf, which passes
    every ``khat < 0.7`` check)."""
    result = psis_from_log_ratios(np.full(100, -2.0))
    assert result.khat == np.inf
    assert "all 100 finite importance ratios are equal" in result.failure
    assert khat_verdict(result.khat, ess=result.ess, failure=result.failure).startswith(
        "failed: degenerate weights"
    )
    np.testing.assert_allclose(result.log_evidence, -2.0)
    with pytest.raises(ValueError, match="at least 21 draws"):
        psis_from_log_ratios(np.zeros(20))


def test_one_draw_with_all_the_weight_is_a_failure():
    log_ratios = 30.0 * np.random.default_rng(0).normal(size=1000)
    result = psis_from_log_ratios(log_ratios)
    assert result.ess < 2
    assert "one draw carries" in result.failure
    assert "failed: degenerate weights" in repr(result)
    spike = np.random.default_rng(0).normal(size=1000)
    spike[0] = 1000.0
    result = psis_from_log_ratios(spike)
    assert result.khat == np.inf and "tail fit failed" in result.failure


def test_khat_verdicts_never_call_a_non_finite_khat_ok():
    assert khat_verdict(0.3) == "ok"
    assert khat_verdict(0.6) == "doubtful (0.5-0.7)"
    assert khat_verdict(0.75) == "bad (> 0.7)"
    for khat in (-np.inf, np.inf, np.nan, None):
        assert khat_verdict(khat).startswith("failed: degenerate weights"), khat
    assert khat_verdict(0.2, ess=1.0).startswith("failed: degenerate weights: ESS 1.00")
    assert verdict_is_bad("bad (> 0.7)") and verdict_is_bad("failed: x")
    assert not verdict_is_bad("doubtful (0.5-0.7)")


def test_result_reprs_show_khat_ess_and_shapes_not_arrays(normal_run):
    guide, result = normal_run
    psis = psis_diagnostic(jax.random.key(1), guide, result.params, num_samples=1000)
    text = repr(psis)
    assert text == str(psis)
    assert "ess=" in text and "of 1000" in text and "latent=(1000, 1)" in text
    assert "log_weights=(1000,)" in text and "[ok]" in text
    assert len(text) < 300
    text = repr(result)
    assert text.startswith("KhatSVIRunResult(") and "last khat=" in text
    assert f"losses=({len(result.losses)},)" in text and "auto_loc: (1,)" in text
    assert len(text) < 300


def test_khat_threshold_follows_vehtari_et_al():
    np.testing.assert_allclose(khat_threshold(100), 0.5)
    np.testing.assert_allclose(khat_threshold(1000), 2 / 3)
    assert khat_threshold(10**6) == 0.7


# ---------------------------------------------------------------------- a real SVI run
@pytest.fixture(scope="module")
def normal_run():
    """Conjugate model with a guide family that contains the posterior, monitored."""
    guide = AutoDiagonalNormal(normal_normal)
    svi = SVI(normal_normal, guide, optax.adam(2e-2), Trace_ELBO())
    result = run_svi_with_khat(
        jax.random.key(0),
        svi,
        4000,
        check_every=100,
        num_samples=1000,
        stop_below=0.3,
        progress_bar=False,
    )
    return guide, result


def test_khat_monitoring_stops_once_the_fit_is_good(normal_run):
    _, result = normal_run
    print(
        "k-hat checks:", dict(zip(result.check_steps.tolist(), np.round(result.khats, 2).tolist()))
    )
    num_checks = len(result.check_steps)
    assert 1 < num_checks < 40  # stopped early, after more than one check
    np.testing.assert_array_equal(result.check_steps, 100 * np.arange(1, num_checks + 1))
    assert result.losses.shape == (result.check_steps[-1],)
    assert result.khats[-1] < 0.3
    assert np.all(result.khats[:-1] >= 0.3)
    assert result.khats.shape == result.ess.shape == (num_checks,)
    assert set(result.params) == {"auto_loc", "auto_scale"}


def test_evidence_and_resampled_draws_match_the_exact_posterior(normal_run):
    guide, result = normal_run
    post_mean, post_sd, log_evidence = normal_normal_exact()
    psis = psis_diagnostic(jax.random.key(1), guide, result.params, num_samples=4000)
    assert psis.khat < 0.5
    assert psis.ess > 1000
    assert psis.latent.shape == (4000, 1)
    assert psis.log_p.shape == psis.log_q.shape == psis.log_weights.shape == (4000,)
    np.testing.assert_allclose(psis.log_evidence, log_evidence, atol=0.05)
    draws = psis_resample(jax.random.key(2), guide, result.params, num_samples=4000)
    assert draws["mu"].shape == (4000,)
    np.testing.assert_allclose(np.mean(draws["mu"]), post_mean, atol=4 * post_sd / np.sqrt(1000))
    np.testing.assert_allclose(np.std(draws["mu"]), post_sd, rtol=0.1)


def test_bad_input_gets_an_error_naming_the_fix(normal_run):
    guide, result = normal_run
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="AutoContinuous"):
        psis_diagnostic(key, AutoNormal(normal_normal), result.params)
    with pytest.raises(ValueError, match="has not been trained"):
        psis_diagnostic(key, guide, {})
    with pytest.raises(TypeError, match="result.params"):
        psis_diagnostic(key, guide, result)
    with pytest.raises(ValueError, match="at least 21 draws"):
        psis_diagnostic(key, guide, result.params, num_samples=10)
    svi = SVI(normal_normal, guide, optax.adam(1e-2), Trace_ELBO())
    with pytest.raises(ValueError, match="check_every"):
        run_svi_with_khat(key, svi, 10, check_every=0, progress_bar=False)


def test_khat_of_an_exact_proposal_and_of_one_without_target_density():
    # The Laplace Gaussian of a Gaussian model: log p moves exactly with log q (equal
    # weights, no tail to fit). It is a perfect start, not a degenerate one.
    log_q = -0.5 * np.random.default_rng(0).standard_normal(200) ** 2
    assert khat_or_inf(log_q - 12.3, log_q) == -np.inf
    assert khat_or_inf(np.full(200, -np.inf), log_q) == np.inf
    noisy = log_q + 0.01 * np.random.default_rng(1).standard_normal(200)
    assert khat_or_inf(noisy, log_q) < 0.7
