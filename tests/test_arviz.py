"""InferenceData export from real SVI and NeuTra runs: groups, dims, coords, ArviZ
functions, NetCDF round trip, and clear errors."""

import warnings

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from models import LOCAL_DATA, SCHOOLS_SIGMA, SCHOOLS_Y, eight_schools, normal_normal
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDiagonalNormal
from scipy.special import logsumexp

from numpyro_flows import AutoIAF, neutra_nuts
from numpyro_flows._arviz_import import import_arviz
from numpyro_flows.arviz import to_inference_data
from numpyro_flows.reports import RunReportWarning

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

az = import_arviz()

SCHOOLS = ["Choate", "Deerfield", "Phillips Andover", "Phillips Exeter"]
SCHOOLS += ["Hotchkiss", "Lawrenceville", "St. Paul's", "Mt. Hermon"]
NUM_DRAWS = 500
EIGHT_SCHOOLS_SITES = ["mu", "tau", "theta_raw", "theta"]


@pytest.fixture(scope="module")
def trained_guide():
    guide = AutoIAF(eight_schools)
    svi = SVI(eight_schools, guide, optax.adam(1e-2), Trace_ELBO())
    return guide, svi.run(jax.random.key(0), 300, progress_bar=False).params


@pytest.fixture(scope="module")
def guide_idata(trained_guide):
    guide, params = trained_guide
    return to_inference_data(
        guide, params, rng_key=jax.random.key(1), num_samples=NUM_DRAWS, coords={"school": SCHOOLS}
    )


def short_neutra(trained_guide, seed, num_draws):
    """Two vectorised NeuTra chains of ``num_draws`` warm-up steps and draws each."""
    guide, params = trained_guide
    return neutra_nuts(
        jax.random.key(seed),
        guide,
        params,
        num_warmup=num_draws,
        num_samples=num_draws,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
        khat_samples=0,
    )


@pytest.fixture(scope="module")
def neutra_result(trained_guide):
    return short_neutra(trained_guide, 2, 100)


@pytest.fixture(scope="module")
def neutra_idata(neutra_result):
    return to_inference_data(neutra_result)


def loo(idata):
    # Pointwise Pareto k of LOO depends on the draws; a warning about it is not a failure
    # of the export.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        return az.loo(idata)


def check_arviz_functions(idata):
    summary = az.summary(idata)  # r_hat is NaN for the single chain of a guide
    assert "theta[Choate]" in summary.index or "theta[0]" in summary.index
    assert np.all(summary["ess_bulk"] > 10)
    result = loo(idata)
    assert np.isfinite(result.elpd_loo)
    axes = az.plot_trace(idata)
    try:
        assert axes.shape == (len(EIGHT_SCHOOLS_SITES), 2)
    finally:
        plt.close("all")


# ---------------------------------------------------------------------- guides
def test_guide_export_groups_dims_coords_and_shapes(guide_idata):
    idata = guide_idata
    assert set(idata.groups()) == {"posterior", "sample_stats", "log_likelihood", "observed_data"}
    post = idata.posterior
    assert list(post.data_vars) == EIGHT_SCHOOLS_SITES
    assert dict(post.sizes) == {"chain": 1, "draw": NUM_DRAWS, "school": 8}
    assert post["mu"].dims == ("chain", "draw")
    assert post["theta"].dims == post["theta_raw"].dims == ("chain", "draw", "school")
    assert list(post["school"].values) == SCHOOLS
    assert np.all(post["tau"] > 0)
    np.testing.assert_allclose(
        post["theta"], post["mu"] + post["tau"] * post["theta_raw"], rtol=1e-5, atol=1e-5
    )

    stats = idata.sample_stats
    assert set(stats.data_vars) == {"lp", "log_q", "log_weight"}
    assert stats["log_weight"].dims == ("chain", "draw")
    np.testing.assert_allclose(logsumexp(stats["log_weight"].values), 0.0, atol=1e-8)
    # Smoothing keeps the order of the weights: the heaviest draw stays the heaviest.
    log_ratio = (stats["lp"] - stats["log_q"]).values.ravel()
    assert np.argmax(stats["log_weight"].values.ravel()) == np.argmax(log_ratio)
    khat = stats.attrs["psis_khat"]
    assert np.isfinite(khat)
    assert 1.0 <= stats.attrs["psis_ess"] <= NUM_DRAWS
    np.testing.assert_allclose(stats.attrs["psis_khat_threshold"], 1 - 1 / np.log10(NUM_DRAWS))
    print(f"eight schools AutoIAF k-hat: {khat:.2f}")

    log_lik = idata.log_likelihood["obs"]
    assert log_lik.dims == ("chain", "draw", "school")
    expected = dist.Normal(post["theta"].values, np.asarray(SCHOOLS_SIGMA)).log_prob(
        np.asarray(SCHOOLS_Y)
    )
    np.testing.assert_allclose(log_lik.values, expected, rtol=1e-5)
    assert idata.observed_data["obs"].dims == ("school",)
    np.testing.assert_array_equal(idata.observed_data["obs"].values, SCHOOLS_Y)


def test_guide_export_works_with_summary_loo_and_plot_trace(guide_idata):
    check_arviz_functions(guide_idata)


def test_plate_names_become_dims_and_user_dims_override():
    """Nested plates, a site in the outer plate only, event dims, deterministic sites,
    a factor."""
    y = jnp.arange(12.0).reshape(3, 4)

    def model(y=y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        numpyro.factor("penalty", -0.5 * mu**2)  # not an observation: not exported
        with numpyro.plate("group", 3, dim=-2):
            alpha = numpyro.sample("alpha", dist.Normal(0.0, 1.0))
            with numpyro.plate("item", 4, dim=-1):
                numpyro.deterministic("shift", alpha + mu)  # (3, 1): broadcast over items
                z = numpyro.deterministic("z", alpha + mu * jnp.ones(4))
                numpyro.sample("y", dist.Normal(z, 1.0), obs=y)
        with numpyro.plate("item", 4):
            loc = numpyro.sample("loc", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            numpyro.deterministic("loc2", 2 * loc)

    guide = AutoDiagonalNormal(model)
    svi = SVI(model, guide, optax.adam(1e-2), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.key(0)))
    idata = to_inference_data(
        guide,
        params,
        rng_key=jax.random.key(1),
        num_samples=50,
        dims={"w": ["component"]},
        coords={"component": ["a", "b", "c"], "item": [10, 20, 30, 40]},
    )
    post = idata.posterior
    expected = {
        "mu": ("chain", "draw"),
        "w": ("chain", "draw", "component"),
        "alpha": ("chain", "draw", "group", "alpha_dim_1"),
        "shift": ("chain", "draw", "group", "shift_dim_1"),
        "z": ("chain", "draw", "group", "item"),
        "loc": ("chain", "draw", "item", "loc_dim_1"),
        "loc2": ("chain", "draw", "item", "loc2_dim_1"),
    }
    assert {name: post[name].dims for name in post.data_vars} == expected
    assert post["alpha"].shape == (1, 50, 3, 1)
    assert list(post["component"].values) == ["a", "b", "c"]
    assert list(post["item"].values) == [10, 20, 30, 40]
    assert list(idata.log_likelihood.data_vars) == list(idata.observed_data.data_vars) == ["y"]
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "group", "item")
    assert idata.observed_data["y"].dims == ("group", "item")


# ---------------------------------------------------------------------- NeuTra
def test_neutra_export_groups_stats_and_original_sites(neutra_idata, neutra_result):
    idata = neutra_idata
    assert set(idata.groups()) == {"posterior", "sample_stats", "log_likelihood", "observed_data"}
    post = idata.posterior
    assert list(post.data_vars) == EIGHT_SCHOOLS_SITES  # no auto_shared_latent
    assert dict(post.sizes) == {"chain": 2, "draw": 100, "school": 8}
    np.testing.assert_array_equal(post["theta"].values, neutra_result.samples["theta"])
    stats = idata.sample_stats
    expected = {"diverging", "n_steps", "tree_depth", "acceptance_rate", "energy", "lp"}
    assert set(stats.data_vars) == expected | {"step_size"}
    for name in stats.data_vars:
        assert stats[name].dims == ("chain", "draw"), name
    assert stats["diverging"].dtype == bool
    np.testing.assert_array_equal(
        stats["lp"].values, -neutra_result.sample_stats["potential_energy"]
    )
    assert np.all(stats["step_size"].values == stats["step_size"].values[:, :1])
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "school")


def test_neutra_export_works_with_summary_ess_rhat_loo_and_plot_trace(neutra_idata):
    summary = az.summary(neutra_idata)
    assert {"r_hat", "ess_bulk"} <= set(summary.columns)
    assert np.all(np.isfinite(summary["r_hat"]))
    assert set(az.ess(neutra_idata).data_vars) == set(EIGHT_SCHOOLS_SITES)
    assert az.rhat(neutra_idata)["theta"].dims == ("school",)
    assert np.all(np.isfinite(az.bfmi(neutra_idata)))
    check_arviz_functions(neutra_idata)


# ---------------------------------------------------------------------- NetCDF
@pytest.mark.parametrize("source", ["guide_idata", "neutra_idata"])
def test_netcdf_round_trip_is_bit_identical(source, request, tmp_path):
    idata = request.getfixturevalue(source).copy()
    # A NaN draw must survive too (NetCDF fill values could otherwise mask it).
    idata.posterior["mu"].values[0, 1] = np.nan
    path = tmp_path / "idata.nc"
    idata.to_netcdf(str(path))
    loaded = az.from_netcdf(str(path))
    assert set(loaded.groups()) == set(idata.groups())
    for group in idata.groups():
        before, after = idata[group], loaded[group]
        assert before.attrs == after.attrs, group
        assert list(before.data_vars) == list(after.data_vars), group
        for name in before.coords:
            assert before[name].dtype == after[name].dtype, (group, name)
            np.testing.assert_array_equal(before[name].values, after[name].values)
        for name in before.data_vars:
            a, b = before[name], after[name]
            assert a.dims == b.dims, (group, name)
            assert a.dtype == b.dtype, (group, name)
            assert a.values.tobytes() == b.values.tobytes(), (group, name)
            if a.dtype.kind == "f":
                assert np.isnan(a.values).sum() == np.isnan(b.values).sum(), (group, name)
    assert np.isnan(loaded.posterior["mu"].values).sum() == 1


# ---------------------------------------------------------------------- errors
def test_bad_input_gets_an_error_naming_the_fix(trained_guide, neutra_result):
    guide, params = trained_guide
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="trained guide"):
        to_inference_data(object())
    with pytest.raises(TypeError, match="from_numpyro"):
        to_inference_data(MCMC(NUTS(normal_normal), num_warmup=1, num_samples=1))
    with pytest.raises(ValueError, match="svi.get_params"):
        to_inference_data(guide, rng_key=key)
    with pytest.raises(ValueError, match="rng_key=jax.random.key"):
        to_inference_data(guide, params)
    with pytest.raises(ValueError, match="has not been trained"):
        to_inference_data(guide, {}, rng_key=key)
    with pytest.raises(TypeError, match="do not pass params, rng_key"):
        to_inference_data(neutra_result, params, rng_key=key)

    def subsampled(x=LOCAL_DATA):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0], subsample_size=10):
            numpyro.sample("x", dist.Normal(mu, 1.0), obs=numpyro.subsample(x, event_dim=0))

    guide = AutoDiagonalNormal(subsampled)
    svi = SVI(subsampled, guide, optax.adam(1e-2), Trace_ELBO())
    params = svi.get_params(svi.init(key))
    with pytest.raises(ValueError, match="subsampling"):
        to_inference_data(guide, params, rng_key=key)


def test_neutra_warns_with_the_fix_when_the_run_is_bad(trained_guide):
    # Far too short chains; the guide and model of neutra_result (compiled by then: last).
    with pytest.warns(RunReportWarning, match="run report.*(r-hat|ESS|divergen)"):
        short_neutra(trained_guide, 4, 20)
