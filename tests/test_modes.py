"""Several modes: the mode search, the mixture-of-flows guide, its stratified ELBO, and
fit_guide's choice between one flow and a mixture. Small 1-D and 2-D targets and short
runs; the accuracy figures (dual moon, ring of eight, 20-D mixture) live in
benchmarks/modes.py."""

import pickle

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from jax.scipy.special import logsumexp
from models import normal_normal
from numpyro.infer import SVI, Predictive, Trace_ELBO

from numpyro_flows import (
    AutoFlowMixture,
    AutoIAF,
    Modes,
    StratifiedELBO,
    find_modes,
    fit_guide,
    flows,
    load_guide,
    neutra_nuts,
    psis_diagnostic,
    save_guide,
    to_inference_data,
)
from numpyro_flows.laplace import laplace_from_modes


def two_bumps(weight_right=0.5):
    """Two unit Gaussians at -3 and +3 (weights 1 - w, w) in x; y a standard normal."""
    x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), ()))
    numpyro.sample("y", dist.Normal(0.0, 1.0))
    log_w = jnp.log(jnp.array([1.0 - weight_right, weight_right]))
    numpyro.factor("bumps", logsumexp(log_w - 0.5 * (x - jnp.array([-3.0, 3.0])) ** 2))


def test_find_modes_separates_two_bumps_and_weighs_them():
    modes = find_modes(jax.random.key(0), two_bumps, 0.8)
    assert isinstance(modes, Modes) and modes.num_modes == 2
    # Heaviest first, at +3 (the latent vector is [x, y], in the model's site order).
    np.testing.assert_allclose(modes.locs[:, 0], [3.0, -3.0], atol=1e-2)
    np.testing.assert_allclose(modes.locs[:, 1], [0.0, 0.0], atol=1e-2)
    np.testing.assert_allclose(modes.weights, [0.8, 0.2], atol=1e-2)
    np.testing.assert_allclose(np.abs(modes.scale_trils[0]), np.eye(2), atol=1e-2)
    assert "2 found" in repr(modes)


@pytest.fixture(scope="module")
def mixture_fit():
    """fit_guide at its defaults on two bumps: the mode search, then a mixture of flows."""
    fit = fit_guide(
        jax.random.key(0),
        two_bumps,
        num_steps=500,
        num_particles=8,
        khat_samples=0,
        progress_bar=False,
    )
    assert isinstance(fit.guide, AutoFlowMixture) and fit.modes.num_modes == 2
    return fit.guide, fit.params


def test_mixture_guide_keeps_both_modes_in_its_draws_and_density(mixture_fit):
    guide, params = mixture_fit
    assert guide.num_components == 2
    # One flow per component, stacked; kept at the param site as one vector.
    assert params["auto_flow"].ndim == 1
    assert all(leaf.shape[0] == 2 for leaf in jax.tree.leaves(guide.flow_params(params)))
    np.testing.assert_allclose(guide.mixture_weights(params), [0.5, 0.5], atol=0.05)
    assert guide.affine == "full"
    draws = guide.sample_posterior(jax.random.key(1), params, sample_shape=(4000,))
    assert draws["x"].shape == (4000,) and draws["y"].shape == (4000,)
    assert 0.4 < float(jnp.mean(draws["x"] > 0)) < 0.6
    # The guide's density integrates to one over x (y integrated out analytically).
    grid = jnp.linspace(-9.0, 9.0, 2001)
    points = jnp.stack([grid, jnp.zeros_like(grid)], -1)
    density = jnp.exp(guide.get_posterior(params).log_prob(points)) * np.sqrt(2 * np.pi)
    np.testing.assert_allclose(float(jnp.sum(density) * (grid[1] - grid[0])), 1.0, atol=0.02)


def test_mixture_draws_and_densities_outside_jit_equal_those_inside(mixture_fit):
    """Outside jit the components are drawn and scored one by one (each flow's compiled
    loop is cached, where a loop under vmap compiled anew on every call): the same draws
    and densities as the vectorised path under jit."""
    guide, params = mixture_fit
    posterior = guide.get_posterior(params)
    eager = posterior.sample(jax.random.key(4), (64,))
    traced = jax.jit(lambda p: guide.get_posterior(p).sample(jax.random.key(4), (64,)))(params)
    assert eager.shape == (64, 2)
    np.testing.assert_allclose(eager, traced, rtol=1e-5, atol=1e-5)
    log_q = jax.jit(lambda p, x: guide.get_posterior(p).log_prob(x))(params, eager)
    np.testing.assert_allclose(posterior.log_prob(eager), log_q, rtol=1e-5, atol=1e-5)


def test_psis_predictive_and_arviz_see_both_modes(mixture_fit):
    guide, params = mixture_fit
    result = psis_diagnostic(jax.random.key(3), guide, params, num_samples=1000)
    assert result.khat < 0.7
    assert 0.4 < float(np.mean(result.latent[:, 0] > 0)) < 0.6
    # KL(q||p) from the same draws: p is normalised up to sqrt(2 pi) (two unit bumps of
    # weights 1/2, times N(y)).
    kl = float(np.mean(result.log_q - result.log_p)) - 0.5 * np.log(2 * np.pi)
    assert kl < 0.05
    predictive = Predictive(
        two_bumps, guide=guide, params=params, num_samples=50, return_sites=["x", "y"]
    )
    assert predictive(jax.random.key(4))["x"].shape == (50,)
    idata = to_inference_data(guide, params, num_samples=400, rng_key=jax.random.key(5))
    assert isinstance(idata, az.InferenceData)
    x = idata.posterior["x"].values.ravel()
    assert 0.35 < np.mean(x > 0) < 0.65


def test_mixture_guide_saves_loads_and_pickles(mixture_fit, tmp_path):
    guide, params = mixture_fit
    path = tmp_path / "mixture.pkl"
    save_guide(path, guide, params)
    loaded, loaded_params = load_guide(path)
    key = jax.random.key(6)
    expected = guide.sample_posterior(key, params, sample_shape=(5,))
    got = loaded.sample_posterior(key, loaded_params, sample_shape=(5,))
    np.testing.assert_array_equal(np.asarray(got["x"]), np.asarray(expected["x"]))
    again = pickle.loads(pickle.dumps(guide))
    assert again.num_components == 2


def test_neutra_rejects_a_mixture_with_the_fix(mixture_fit):
    guide, params = mixture_fit
    with pytest.raises(ValueError, match="no single bijection.*modes=False"):
        neutra_nuts(jax.random.key(0), guide, params, num_warmup=10, num_samples=10)


@pytest.mark.slow  # the default run has fit_guide training a mixture with it
def test_svi_with_a_mixture_guide_and_the_stratified_elbo():
    guide = AutoFlowMixture(two_bumps, flow=flows.realnvp(1))
    svi = SVI(two_bumps, guide, optax.adam(3e-3), StratifiedELBO(num_particles=4))
    result = svi.run(jax.random.key(0), 300, progress_bar=False)
    assert np.all(np.isfinite(result.losses))
    draws = guide.sample_posterior(jax.random.key(1), result.params, sample_shape=(2000,))
    assert 0.4 < float(jnp.mean(draws["x"] > 0)) < 0.6


@pytest.mark.slow
def test_one_flow_where_there_is_one_mode_or_when_told():
    small = {"num_steps": 200, "num_particles": 4, "khat_samples": 0, "progress_bar": False}
    single = fit_guide(jax.random.key(0), two_bumps, modes=False, **small)
    assert isinstance(single.guide, AutoIAF) and single.modes is None
    # A search passed in is used as it is.
    modes = find_modes(jax.random.key(0), normal_normal)
    fit = fit_guide(jax.random.key(0), normal_normal, modes=modes, **small)
    assert isinstance(fit.guide, AutoIAF) and fit.modes is modes


def test_stratified_elbo_is_the_trace_elbo_for_other_guides():
    guide = AutoIAF(normal_normal)
    svi = SVI(normal_normal, guide, optax.adam(1e-3), StratifiedELBO(num_particles=3))
    state = svi.init(jax.random.key(0))
    params = svi.get_params(state)
    ours = StratifiedELBO(3).loss(jax.random.key(1), params, normal_normal, guide)
    numpyros = Trace_ELBO(3).loss(jax.random.key(1), params, normal_normal, guide)
    np.testing.assert_allclose(float(ours), float(numpyros), rtol=1e-6)


def test_modes_are_flattened_in_the_order_of_the_guides():
    """Sites in the model's order, not sorted by name (JAX sorts the keys of a dict it
    returns): the order of AutoContinuous guides, whose latent vector the modes place."""

    def model():
        numpyro.sample("w", dist.Normal(jnp.array([1.0, 2.0]), 0.1).to_event(1))
        numpyro.sample("b", dist.Normal(-3.0, 0.1))

    found = find_modes(jax.random.key(0), model, num_starts=4)
    np.testing.assert_allclose(found.locs[0], [1.0, 2.0, -3.0], atol=1e-3)
    guide = AutoIAF(model)
    with numpyro.handlers.seed(rng_seed=0):
        guide._setup_prototype()
    assert list(guide._init_locs) == ["w", "b"]


def test_a_laplace_start_comes_from_a_search_with_exactly_one_mode():
    def modes(k):
        return Modes(np.ones((k, 2)), np.tile(np.eye(2), (k, 1, 1)), np.zeros(k), np.zeros(k), 8, k)

    assert laplace_from_modes(None) is None
    assert laplace_from_modes(modes(0)) is None and laplace_from_modes(modes(2)) is None
    result = laplace_from_modes(modes(1))
    np.testing.assert_array_equal(result.loc, [1.0, 1.0])
    np.testing.assert_array_equal(result.scale_tril, np.eye(2))
    assert result.converged and result.iterations == 0


def test_bad_arguments_name_the_fix():
    with pytest.raises(TypeError, match="find_modes"):
        AutoFlowMixture(two_bumps, modes=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="at least 1"):
        StratifiedELBO(0)
    with pytest.raises(TypeError, match="modes must be True, False or a Modes"):
        fit_guide(jax.random.key(0), two_bumps, modes="yes", progress_bar=False)
    modes = find_modes(jax.random.key(0), normal_normal)
    guide = AutoFlowMixture(two_bumps, modes=modes)
    with pytest.raises(ValueError, match="same model"):
        SVI(two_bumps, guide, optax.adam(1e-3), StratifiedELBO()).init(jax.random.key(0))
