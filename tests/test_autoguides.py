"""Flow guides with real SVI runs on a small model zoo, through every preset.

The default run trains every preset briefly (the plated hierarchical model); the runs on
constrained sites and against exact posteriors are marked ``slow``."""

import pickle
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from draws import normal
from models import (
    beta_bernoulli,
    constrained,
    discrete_latent,
    eight_schools,
    funnel,
    local_latents,
    normal_normal,
    normal_normal_exact,
    one_latent,
)
from numpyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from numpyro.infer.autoguide import AutoContinuous
from numpyro.infer.initialization import init_to_value

from numpyro_flows import AutoFlow, AutoIAF, AutoNeuralSpline, AutoRealNVP, _param_packing, flows
from numpyro_flows.serialization import load_guide, save_guide
from numpyro_flows.testing import randomize_params

PRESETS = {
    "iaf": lambda model, **kw: AutoIAF(model, **kw),
    "realnvp": lambda model, **kw: AutoRealNVP(model, **kw),
    "spline": lambda model, **kw: AutoNeuralSpline(model, **kw),
    "spline_coupling": lambda model, **kw: AutoNeuralSpline(model, coupling=True, **kw),
}


def fit(guide, model, *args, steps=2000, lr=1e-2, particles=4, elbo=Trace_ELBO, seed=0):
    optim = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.05))
    svi = SVI(model, guide, optim, elbo(num_particles=particles))
    result = svi.run(jax.random.key(seed), steps, *args, progress_bar=False)
    assert np.all(np.isfinite(result.losses))
    return result.params


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_conjugate_normal_elbo_and_moments(preset):
    guide = PRESETS[preset](normal_normal)
    params = fit(guide, normal_normal)
    mean, sd, log_evidence = normal_normal_exact()
    loss = Trace_ELBO(num_particles=20_000).loss(jax.random.key(1), params, normal_normal, guide)
    # -ELBO >= -log p(y), with equality when q is the exact (Gaussian) posterior.
    assert abs(float(loss) + log_evidence) < 0.05
    draws = guide.sample_posterior(jax.random.key(2), params, sample_shape=(20_000,))["mu"]
    assert abs(float(jnp.mean(draws)) - mean) < 0.02
    assert abs(float(jnp.std(draws)) / sd - 1) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_beta_bernoulli_posterior_mean(preset):
    guide = PRESETS[preset](beta_bernoulli)
    params = fit(guide, beta_bernoulli)
    from models import BERNOULLI_DATA

    exact = (2.0 + BERNOULLI_DATA.sum()) / (4.0 + BERNOULLI_DATA.shape[0])
    draws = guide.sample_posterior(jax.random.key(2), params, sample_shape=(10_000,))["p"]
    assert abs(float(jnp.mean(draws)) - float(exact)) < 0.05
    assert np.all((draws > 0) & (draws < 1))


# An autoregressive affine and an autoregressive spline guide in the default run; the
# coupling presets in the slow run.
@pytest.mark.parametrize(
    "preset",
    [pytest.param(p, marks=[pytest.mark.slow] * (p != "iaf")) for p in PRESETS],
)
def test_hierarchical_plated_model_with_deterministic_site(preset):
    guide = PRESETS[preset](eight_schools)
    params = fit(guide, eight_schools, steps=200)  # shapes and supports: no accuracy needed
    draws = guide.sample_posterior(jax.random.key(3), params, sample_shape=(2, 3))
    assert draws["theta_raw"].shape == (2, 3, 8)
    assert draws["theta"].shape == (2, 3, 8)
    assert np.all(draws["tau"] > 0)
    predictive = Predictive(eight_schools, guide=guide, params=params, num_samples=50)
    sim = predictive(jax.random.key(4))
    assert sim["obs"].shape == (50, 8)
    assert sim["theta"].shape == (50, 8)


@pytest.mark.slow  # compiling the LKJ and Dirichlet model dominates (~20 s per preset)
@pytest.mark.parametrize("preset", PRESETS)
def test_constrained_sites_stay_in_their_support(preset):
    guide = PRESETS[preset](constrained)
    params = fit(guide, constrained, steps=100)  # supports: no accuracy needed
    draws = guide.sample_posterior(jax.random.key(5), params, sample_shape=(200,))
    assert np.all(draws["scale"] > 0)
    assert np.all((draws["frac"] > -1) & (draws["frac"] < 2))
    np.testing.assert_allclose(draws["weights"].sum(-1), 1.0, rtol=1e-5)
    chol = draws["corr"]
    corr = chol @ jnp.swapaxes(chol, -1, -2)
    np.testing.assert_allclose(jnp.diagonal(corr, axis1=-2, axis2=-1), 1.0, rtol=1e-4)
    for site, support in [
        ("scale", dist.constraints.positive),
        ("weights", dist.constraints.simplex),
        ("corr", dist.constraints.corr_cholesky),
    ]:
        assert np.all(support(draws[site]))


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_one_dimensional_latent(preset):
    guide = PRESETS[preset](one_latent)
    # 16 particles: with 4 the gradient noise alone leaves the mean ~0.05 off.
    params = fit(guide, one_latent, steps=1500, particles=16)
    draws = guide.sample_posterior(jax.random.key(6), params, sample_shape=(20_000,))["z"]
    # Gamma(3, 2): mean 1.5, sd 0.866. In one dimension affine flows are a log-normal
    # fit (a little off in the sd); splines can bend to the exact shape.
    sd_tolerance = 0.03 if preset.startswith("spline") else 0.1
    assert abs(float(jnp.mean(draws)) - 1.5) < 0.05
    assert abs(float(jnp.std(draws)) - np.sqrt(3) / 2) < sd_tolerance


@pytest.mark.slow
def test_funnel_every_preset_trains_and_beats_its_start():
    for make in PRESETS.values():
        guide = make(funnel)
        svi = SVI(funnel, guide, optax.adam(5e-3), Trace_ELBO(num_particles=4))
        start = svi.get_params(svi.init(jax.random.key(0)))
        params = svi.run(jax.random.key(0), 1500, progress_bar=False).params
        elbo = Trace_ELBO(num_particles=4000)
        before = float(elbo.loss(jax.random.key(1), start, funnel, guide))
        after = float(elbo.loss(jax.random.key(1), params, funnel, guide))
        assert np.isfinite(after) and after < before - 1.0


def test_init_loc_fn_is_honoured_at_step_zero():
    init = {"mu": 3.0, "tau": 2.0}
    guide = AutoNeuralSpline(eight_schools, init_loc_fn=init_to_value(values=init), init_scale=0.01)
    svi = SVI(eight_schools, guide, optax.adam(1e-3), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.key(0)))
    draws = guide.sample_posterior(jax.random.key(1), params, sample_shape=(500,))
    np.testing.assert_allclose(jnp.mean(draws["mu"]), 3.0, atol=0.01)
    np.testing.assert_allclose(jnp.median(draws["tau"]), 2.0, rtol=0.01)
    median = guide.median(params)
    np.testing.assert_allclose(median["mu"], 3.0, atol=0.01)


def test_numpyro_autoguide_api():
    guide = AutoIAF(eight_schools, num_flows=2, hidden_dims=[20, 20])
    assert isinstance(guide, AutoContinuous)
    params = fit(guide, eight_schools, steps=300, elbo=TraceMeanField_ELBO)
    median = guide.median(params)
    assert set(median) >= {"mu", "tau", "theta_raw"}
    quantiles = guide.quantiles(params, [0.1, 0.5, 0.9])
    assert quantiles["theta_raw"].shape == (3, 8)
    assert np.all(np.diff(quantiles["mu"]) > 0)
    posterior = guide.get_posterior(params)
    latent = posterior.sample(jax.random.key(0), (7,))
    assert latent.shape == (7, guide.latent_dim)
    assert posterior.log_prob(latent).shape == (7,)
    transform = guide.get_transform(params)
    z = normal(1, (guide.latent_dim,))
    x = transform(z)
    expected = guide.get_base_dist().log_prob(z) - transform.log_abs_det_jacobian(z, x)
    np.testing.assert_allclose(posterior.log_prob(x), expected, rtol=1e-4, atol=1e-4)


def test_autoiaf_takes_autoiafnormal_arguments():
    from jax.example_libraries import stax

    guide = AutoIAF(
        funnel, num_flows=2, hidden_dims=[8, 8], skip_connections=True, nonlinearity=stax.Tanh
    )
    params = fit(guide, funnel, steps=50)
    made = guide.flow_params(params)  # the MADE parameters of both layers, stacked
    assert [layer["w"].shape for layer in made["hidden"]] == [(2, 5, 8), (2, 8, 8)]
    assert "skip" in made
    default = AutoIAF(funnel)
    svi = SVI(funnel, default, optax.adam(1e-3), Trace_ELBO())
    default_params = svi.get_params(svi.init(jax.random.key(0)))
    # NumPyro's default: two hidden layers as wide as the latent dimension.
    hidden = default.flow_params(default_params)["hidden"]
    assert [layer["w"].shape[-1] for layer in hidden] == [5, 5]


def test_the_flow_site_holds_one_vector_and_a_pytree_there_still_works():
    guide = AutoIAF(funnel, num_flows=2)
    svi = SVI(funnel, guide, optax.adam(1e-3), Trace_ELBO())
    state = svi.init(jax.random.key(0))
    params = svi.get_params(state)
    tree = guide.flow_params(params)
    # One vector: the SVI state is its value, Adam's two moments of it, and the affine
    # layer's (fewer arrays to create on each step called from Python).
    assert params["auto_flow"].shape == (sum(leaf.size for leaf in jax.tree.leaves(tree)),)
    assert len(jax.tree.leaves(state)) == 12
    # A pytree at the site (params saved before packing) is the flow's params as they are.
    params = {**params, "auto_flow": randomize_params(tree, jax.random.key(1), 0.3)}
    packed = {
        **params,
        "auto_flow": jnp.concatenate([a.ravel() for a in jax.tree.leaves(params["auto_flow"])]),
    }
    key = jax.random.key(2)
    np.testing.assert_array_equal(
        guide.sample_posterior(key, params, sample_shape=(4,))["x"],
        guide.sample_posterior(key, packed, sample_shape=(4,))["x"],
    )


def test_a_large_flow_keeps_its_pytree_at_the_site(monkeypatch):
    monkeypatch.setattr(_param_packing, "PACK_MAX_VALUES", 100)
    guide = AutoIAF(funnel, num_flows=2)
    svi = SVI(funnel, guide, optax.adam(1e-3), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.key(0)))
    assert isinstance(params["auto_flow"], dict)
    assert guide.flow_params(params) is params["auto_flow"]


@pytest.mark.slow
def test_full_affine_captures_correlation():
    def correlated():
        numpyro.sample(
            "z", dist.MultivariateNormal(jnp.zeros(2), jnp.array([[1.0, 0.95], [0.95, 1.0]]))
        )

    guide = AutoFlow(correlated, flow=flows.iaf(num_flows=1), affine="full")
    params = fit(guide, correlated, steps=1500)
    assert "auto_scale_tril" in params
    draws = guide.sample_posterior(jax.random.key(0), params, sample_shape=(20_000,))["z"]
    assert abs(float(jnp.corrcoef(draws.T)[0, 1]) - 0.95) < 0.02


def test_local_latents_get_a_clear_error():
    guide = AutoIAF(local_latents)
    svi = SVI(local_latents, guide, optax.adam(1e-3), Trace_ELBO())
    expected = "local latent site 'z'.*subsampled plate 'data'.*AutoHybridFlow.*AutoNormal"
    with pytest.raises(ValueError, match=expected):
        svi.init(jax.random.key(0))


def test_discrete_latent_gets_a_clear_error():
    guide = AutoNeuralSpline(discrete_latent)
    svi = SVI(discrete_latent, guide, optax.adam(1e-3), Trace_ELBO())
    with pytest.raises(ValueError, match="discrete latent site 'k'.*Marginalise"):
        svi.init(jax.random.key(0))


def test_wrong_arguments_get_clear_errors():
    with pytest.raises(TypeError, match="must be a numpyro_flows Flow"):
        AutoFlow(funnel, flow="iaf")
    with pytest.raises(ValueError, match="init_scale"):
        AutoNeuralSpline(funnel, init_scale=0.0)
    with pytest.raises(ValueError, match="affine"):
        AutoIAF(funnel, affine="dense")


@pytest.mark.slow
def test_pickle_and_save_load_in_a_fresh_process(tmp_path):
    guide = AutoNeuralSpline(eight_schools, num_flows=2)
    params = fit(guide, eight_schools, steps=20)  # any trained params will do
    expected = guide.sample_posterior(jax.random.key(7), params, sample_shape=(5,))

    clone = pickle.loads(pickle.dumps(guide))
    again = clone.sample_posterior(jax.random.key(7), params, sample_shape=(5,))
    for site in ("mu", "tau", "theta_raw"):
        np.testing.assert_array_equal(again[site], expected[site])

    path = tmp_path / "guide.pkl"
    path.write_bytes(b"an older file that must survive a failed save")
    with pytest.raises(TypeError):
        save_guide(path, object(), params)
    assert path.read_bytes().startswith(b"an older file")
    save_guide(path, guide, params)
    np.save(tmp_path / "expected_mu.npy", np.asarray(expected["mu"]))
    script = f"""
import jax, numpy as np
from numpyro_flows.serialization import load_guide
guide, params = load_guide({str(path)!r})
draws = guide.sample_posterior(jax.random.key(7), params, sample_shape=(5,))
np.testing.assert_array_equal(draws["mu"], np.load({str(tmp_path / "expected_mu.npy")!r}))
assert draws["theta_raw"].shape == (5, 8) and "obs" not in draws
print("identical")
"""
    repo = Path(__file__).parent.parent
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=repo, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "identical" in out.stdout
    loaded, loaded_params = load_guide(path, model=eight_schools)
    sim = Predictive(eight_schools, guide=loaded, params=loaded_params, num_samples=3)(
        jax.random.key(0)
    )
    assert sim["theta"].shape == (3, 8)


def test_laplace_warm_start_starts_at_the_exact_gaussian_posterior():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    x[:, 1] = x[:, 0] + 0.05 * rng.normal(size=50)  # collinear predictors
    y = x @ np.array([1.0, -1.0, 0.5]) + rng.normal(size=50)

    def regression():
        w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
        numpyro.sample("y", dist.Normal(x @ w, 1.0).to_event(1), obs=y)

    precision = x.T @ x + np.eye(3) / 100.0
    cov = np.linalg.inv(precision)
    mean = cov @ x.T @ y
    guide = AutoIAF(regression, affine="full", warm_start="laplace")
    svi = SVI(regression, guide, optax.adam(1e-3), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.key(0)))  # step 0: no SVI yet
    assert guide.laplace.converged
    draws = guide.sample_posterior(jax.random.key(1), params, sample_shape=(40_000,))["w"]
    np.testing.assert_allclose(
        jnp.mean(draws, 0), mean, atol=0.02 * np.sqrt(np.diag(cov)).max() * 5
    )
    np.testing.assert_allclose(jnp.cov(draws.T), cov, rtol=0.05, atol=1e-4)


def test_laplace_warm_start_falls_back_without_a_mode():
    from models import eight_schools_centered

    guide = AutoNeuralSpline(eight_schools_centered, warm_start="laplace")
    svi = SVI(eight_schools_centered, guide, optax.adam(1e-3), Trace_ELBO())
    with pytest.warns(UserWarning, match="Laplace warm start"):
        params = svi.get_params(svi.init(jax.random.key(0)))
    assert np.all(np.isfinite(params["auto_loc"]))
