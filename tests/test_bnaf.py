"""AutoBNAF (block neural autoregressive flow guide): training, init, saving, arguments.

The bijection itself runs through the shared contract (``registry.py``: ``bnaf``,
``bnaf_deep``, ``bnaf_gated``)."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.initialization import init_to_value

from numpyro_flows import AutoBNAF, flows
from numpyro_flows.serialization import load_guide, save_guide

MEAN = jnp.array([1.0, -2.0])
COV = jnp.array([[1.0, 0.8 * 0.5], [0.8 * 0.5, 0.25]])


def correlated_gaussian():
    numpyro.sample("z", dist.MultivariateNormal(MEAN, COV))


def train(guide, steps=800, lr=1e-2):
    optim = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.1))
    svi = SVI(correlated_gaussian, guide, optim, Trace_ELBO(num_particles=4))
    result = svi.run(jax.random.key(0), steps, progress_bar=False)
    assert np.all(np.isfinite(result.losses))
    return result.params, result.losses


@pytest.mark.slow
def test_trains_to_a_correlated_gaussian():
    guide = AutoBNAF(correlated_gaussian)
    params, losses = train(guide)
    # -ELBO = KL(q || p) here (the target is normalised).
    assert float(np.mean(losses[-100:])) < 0.03
    z = guide.sample_posterior(jax.random.key(1), params, sample_shape=(10_000,))["z"]
    np.testing.assert_allclose(jnp.mean(z, 0), MEAN, atol=0.05)
    np.testing.assert_allclose(jnp.cov(z.T), COV, atol=0.06)


@pytest.mark.slow  # 7 s; by default test_autoguides checks init_loc_fn on AutoNeuralSpline
def test_init_loc_fn_is_honoured():
    init = jnp.array([3.0, 4.0])
    guide = AutoBNAF(correlated_gaussian, init_loc_fn=init_to_value(values={"z": init}))
    svi = SVI(correlated_gaussian, guide, optax.adam(1e-3), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.key(0)))
    np.testing.assert_allclose(params["auto_loc"], init)
    # The flow starts at the identity: the guide is Normal(init, init_scale^2).
    z = guide.sample_posterior(jax.random.key(1), params, sample_shape=(10_000,))["z"]
    np.testing.assert_allclose(jnp.mean(z, 0), init, atol=0.05)
    np.testing.assert_allclose(jnp.std(z, 0), 1.0, atol=0.05)


def test_pickle_and_save_load_round_trip(tmp_path):
    guide = AutoBNAF(correlated_gaussian)
    params, _ = train(guide, steps=20)  # any trained params will do
    key = jax.random.key(2)
    expected = guide.sample_posterior(key, params, sample_shape=(5,))["z"]
    clone = pickle.loads(pickle.dumps(guide))
    np.testing.assert_array_equal(
        clone.sample_posterior(key, params, sample_shape=(5,))["z"], expected
    )
    path = tmp_path / "bnaf.pkl"
    save_guide(path, guide, params)
    loaded, loaded_params = load_guide(path)
    assert isinstance(loaded, AutoBNAF) and loaded.hidden_factors == (8, 8)
    z = loaded.sample_posterior(key, loaded_params, sample_shape=(5,))["z"]
    np.testing.assert_allclose(z, expected, rtol=1e-6)


def test_bad_arguments_say_what_to_pass():
    with pytest.raises(ValueError, match="hidden_factors must be a non-empty sequence"):
        AutoBNAF(correlated_gaussian, hidden_factors=[])
    with pytest.raises(ValueError, match="num_flows must be a positive integer"):
        AutoBNAF(correlated_gaussian, num_flows=0)
    with pytest.raises(ValueError, match="residual must be None or 'gated'"):
        flows.bnaf(2, residual="normal")
