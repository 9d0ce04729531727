"""Dropout in the MADE of autoregressive flows: train mode drops units with a key, eval
mode is the full network, and ``fit`` trains with a fresh key every step.

Every check runs under one ``jit`` per mode (eager flows compile op by op)."""

from functools import partial

import jax
import numpy as np
import optax
import pytest
from draws import normal

from numpyro_flows import flows
from numpyro_flows.layers import AutoregressiveLayer
from numpyro_flows.nn import MADE
from numpyro_flows.testing import check_transform, randomize_params
from numpyro_flows.training import fit, maximum_likelihood, negative_log_likelihood

X = normal(2, (6, 2))
MAF = flows.maf(2, (8,), dropout=0.3)


def _params(flow, dim=2):
    return randomize_params(flow.init(jax.random.key(0), dim), jax.random.key(1), scale=0.3)


@partial(jax.jit, static_argnums=(0, 3))
def _nll(flow, params, key, training):
    return negative_log_likelihood(flow, params, X, training=training, rng_key=key)


def test_eval_mode_is_the_network_without_dropout_and_train_mode_follows_the_key():
    params = _params(MAF)
    full = _nll(flows.maf(2, (8,)), params, None, False)
    # Evaluation mode (with or without a key) and training mode without a key: exactly
    # the full network (inverted dropout: no rescaling at evaluation).
    assert _nll(MAF, params, None, False) == full
    assert _nll(MAF, params, jax.random.key(3), False) == full
    assert _nll(MAF, params, None, True) == full
    # Training mode with a key: one key, one thinned network.
    assert _nll(MAF, params, jax.random.key(3), True) == _nll(MAF, params, jax.random.key(3), True)
    assert _nll(MAF, params, jax.random.key(3), True) != _nll(MAF, params, jax.random.key(4), True)
    assert _nll(MAF, params, jax.random.key(3), True) != full


def test_one_key_is_one_bijection_in_train_mode():
    # The sequential direction (sampling, D network calls) sees the same units dropped as
    # the parallel one, so the round trip holds with dropout on.
    params = _params(MAF)

    @jax.jit
    def round_trip(params, key, z):
        t = MAF.transform(params, training=True, rng_key=key)
        x, log_det = t.forward_and_log_det(z)
        z_back, inv_log_det = t.inverse_and_log_det(x)
        return z_back, log_det + inv_log_det

    z_back, log_det_sum = round_trip(params, jax.random.key(5), X)
    np.testing.assert_allclose(z_back, X, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_det_sum, 0.0, atol=1e-4)


@pytest.mark.slow
def test_maf_with_dropout_passes_the_contract_in_train_mode():
    # Eval mode is in the registry (VARIANTS["maf_dropout"]). Each point draws its own
    # mask, so a vmap over single points is another map: vmap=False.
    params = _params(MAF)
    check_transform(MAF.transform(params, training=True, rng_key=jax.random.key(5)), X, vmap=False)


def test_training_step_drops_units_and_the_validation_loss_does_not():
    params = _params(MAF)
    trainer = maximum_likelihood(MAF, optax.sgd(0.0))
    state = trainer.init(params)
    step = jax.jit(lambda key: trainer.step(state, X, None, key)[1].loss)
    assert step(jax.random.key(3)) != step(jax.random.key(4))
    full = _nll(MAF, params, None, False)
    np.testing.assert_allclose(jax.jit(trainer.loss)(params, None, X), full, rtol=1e-6)


@pytest.mark.slow  # compiling an epoch: ~4 s (the step with a key is in the default run)
def test_fit_trains_a_maf_with_dropout():
    data = normal(1, (128, 2), [1.0, 0.5])
    flow = flows.maf(2, (16,), dropout=0.2)
    result = fit(jax.random.key(0), flow, data, num_epochs=3, progress_bar=False)
    assert np.all(np.isfinite(result.train_losses))
    assert np.all(np.isfinite(result.val_losses))


@pytest.mark.parametrize("rate", [-0.1, 1.0, float("nan"), "high"])
def test_bad_dropout_rate_names_the_fix(rate):
    for make in (
        lambda: flows.maf(dropout=rate),
        lambda: AutoregressiveLayer(None, dropout=rate),
        lambda: MADE(2, (4,), 2, dropout=rate),
    ):
        with pytest.raises(ValueError, match=r"dropout must be .* in \[0, 1\).*dropout=0.1"):
            make()
