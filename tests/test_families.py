"""Family-specific checks: planar on both branches, radial, ActNorm init, LU, BatchNorm,
MADE order inside a flow, data-dependent init and running statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from draws import normal

from numpyro_flows import flows
from numpyro_flows.bijections import LULinear, Planar, Radial
from numpyro_flows.layers import ActNormLayer, BatchNormLayer, Repeat, Sequential
from numpyro_flows.testing import check_transform, randomize_params


@pytest.mark.parametrize("wu", [2.0, -0.5, -3.0])
def test_planar_invertible_on_both_sides_of_the_constraint(wu):
    """w.u > 0, -1 < w.u < 0 (no correction needed) and w.u < -1 (corrected)."""
    w = jnp.array([1.0, 0.5, -0.3])
    u = wu * w / jnp.sum(w * w)
    planar = Planar(w, u, jnp.array(0.3))
    _, u_hat, _ = planar._params(jnp.float32)
    assert float(jnp.sum(w * u_hat)) > -1.0
    x = normal(0, (64, 3), 3.0)
    check_transform(planar, x)


def test_radial_contracting_and_expanding():
    for raw_beta in (-4.0, 3.0):
        radial = Radial(jnp.array([0.5, -1.0]), jnp.array(0.2), jnp.array(raw_beta))
        x = jnp.concatenate([normal(1, (32, 2)), jnp.array([[0.5, -1.0]])])
        check_transform(radial, x)


def test_actnorm_data_init_normalises_and_survives_a_constant_column():
    data = normal(0, (256, 3), [5.0, 0.1, 0.0])
    data = data + jnp.array([10.0, -2.0, 7.0])
    flow = flows.Flow(Sequential((ActNormLayer(),)))
    params, _ = flow.data_init(flow.init(jax.random.key(1), 3), data)
    z, _ = flow.transform(params).inverse_and_log_det(data)
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(jnp.mean(z, 0), 0.0, atol=1e-4)
    np.testing.assert_allclose(jnp.std(z[:, :2], 0), 1.0, atol=1e-4)
    np.testing.assert_allclose(params[0]["raw_log_scale"][2], 0.0)  # constant column: scale 1


def test_glow_data_init_reaches_every_actnorm():
    flow = flows.glow(num_flows=3)
    data = normal(0, (512, 4), 4.0) + 3.0
    params, _ = flow.data_init(flow.init(jax.random.key(1), 4), data)
    z, _ = flow.transform(params).inverse_and_log_det(data)
    np.testing.assert_allclose(jnp.mean(z, 0), 0.0, atol=1e-3)
    assert not np.allclose(params[0]["raw_log_scale"], 0.0)


def test_lu_log_det_is_the_sum_of_the_log_diagonal():
    params = randomize_params(
        {"lower": jnp.zeros((4, 4)), "upper": jnp.zeros((4, 4)), "raw": jnp.zeros(4)},
        jax.random.key(0),
        1.0,
    )
    lu = LULinear(params["lower"], params["upper"], params["raw"], jnp.ones(4))
    _, log_det = lu.forward_and_log_det(jnp.zeros(4))
    _, _, log_diag, _ = lu.factors()
    np.testing.assert_allclose(log_det, jnp.sum(log_diag), rtol=1e-6)
    np.testing.assert_allclose(log_det, jnp.linalg.slogdet(lu.weight())[1], rtol=1e-5)


def test_autoregressive_layers_are_triangular_in_their_declared_order():
    flow = flows.iaf(num_flows=2, permutation="random")
    dim = 5
    params = randomize_params(flow.init(jax.random.key(0), dim), jax.random.key(1), 1.0)
    scan = flow.transform(params)
    orders = flow.layer.permutations(dim)
    x = normal(2, (dim,))
    jacobian = jax.jit(lambda layer, x: jax.jacfwd(layer)(x))  # one compilation, not per op
    for i in range(2):
        jac = np.asarray(jacobian(scan.layer(i), x))
        in_order = jac[np.ix_(orders[i], orders[i])]
        np.testing.assert_array_equal(np.triu(in_order, 1), 0.0)
        assert np.all(np.abs(np.tril(in_order, -1)).sum(1)[1:] > 0)


def test_coupling_halves_swap_and_pairs_start_from_new_orders():
    """'halves': the second layer of each pair reverses the first (so the two halves swap
    roles), a new pair starts from a new order, and with D <= 2 it is 'reverse'."""
    repeat = flows.realnvp(num_flows=5).layer
    orders = repeat.permutations(6)
    assert sorted(orders[2]) == list(range(6)) and not np.array_equal(orders[2], orders[0])
    for first, second in ((0, 1), (2, 3)):
        np.testing.assert_array_equal(orders[second], orders[first][::-1])
    transformed = [set(order[3:]) for order in orders]
    assert transformed[0] | transformed[1] == set(range(6))
    np.testing.assert_array_equal(
        repeat.permutations(2), Repeat(repeat.layer, 5, "reverse").permutations(2)
    )


def test_auto_orders_reverse_in_two_dimensions_and_are_random_beyond():
    """'auto' (maf's default): the identity and its reverse are the only orders of two
    coordinates, so alternate them; with more, a fixed random order per layer."""
    repeat = flows.maf(num_flows=5).layer
    assert repeat.permutation == "auto"
    np.testing.assert_array_equal(
        repeat.permutations(2), Repeat(repeat.layer, 5, "reverse").permutations(2)
    )
    np.testing.assert_array_equal(
        repeat.permutations(6), Repeat(repeat.layer, 5, "random").permutations(6)
    )
    assert len({tuple(order) for order in repeat.permutations(6)}) == 5


def test_conditioners_start_with_spread_biases_and_a_zero_last_layer():
    """Random hidden biases (a unit fed by one coordinate bends somewhere other than 0);
    the last layer is zero, so a fresh flow is the identity; data flows are wider."""
    params = flows.realnvp(invert=True).init(jax.random.key(0), 2)
    bias = np.asarray(params["hidden"][0]["b"])
    assert np.all(np.abs(bias) < 1.0) and np.std(bias) > 0.1  # U(-1, 1) for fan-in 1
    assert not np.any(np.asarray(params["out"]["w"])) and not np.any(params["out"]["b"])
    assert bias.shape[-1] == 32  # max(2 D, 32) for data: 8 layers, half the width
    assert flows.realnvp().init(jax.random.key(0), 2)["hidden"][0]["b"].shape[-1] == 16
    assert flows.maf().init(jax.random.key(0), 2)["hidden"][0]["b"].shape[-1] == 64


def test_batchnorm_state_is_not_trained_and_running_statistics_move():
    flow = flows.Flow(Sequential((BatchNormLayer(),)))
    data = normal(0, (1000, 2), 3.0) + 5.0
    params = flow.init(jax.random.key(1), 2)
    state = flow.init_state(2)
    assert set(params[0]) == {"log_gamma", "beta"}  # statistics are not parameters
    state = flow.update_state(params, state, data, momentum=1.0)
    np.testing.assert_allclose(state[0]["mean"], jnp.mean(data, 0), rtol=1e-5)
    half = flow.update_state(params, flow.init_state(2), data, momentum=0.5)
    np.testing.assert_allclose(half[0]["mean"], 0.5 * jnp.mean(data, 0), rtol=1e-5)
    # Training mode normalises with the batch, evaluation with the running statistics.
    train = flow.transform(params, state=flow.init_state(2), training=True)
    z, _ = train.inverse_and_log_det(data)
    np.testing.assert_allclose(jnp.mean(z, 0), 0.0, atol=1e-4)
    evaluation = flow.transform(params, state=state)
    z_eval, _ = evaluation.inverse_and_log_det(data)
    np.testing.assert_allclose(z_eval, z, atol=1e-3)
    with pytest.raises(ValueError, match="running statistics"):
        flow.transform(params)


def test_context_for_unconditional_flow_is_a_clear_error():
    flow = flows.iaf()
    params = flow.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="context_dim=0"):
        flow.transform(params, context=jnp.ones(2))
    with pytest.raises(ValueError, match="takes no context"):
        flows.planar().transform(flows.planar().init(jax.random.key(0), 3), context=jnp.ones(2))
