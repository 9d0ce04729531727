"""Conditioner networks: MADE connectivity, widths, context, identity at init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from draws import normal

from numpyro_flows.nn import MADE, MLP
from numpyro_flows.testing import randomize_params


def made_jacobian(made, params, x, context=None):
    """d output[d, p] / d input[j] as an array (D, P, D); jitted: one compilation instead
    of one per operation."""
    return jax.jit(jax.jacfwd(lambda v, p, c: made.apply(p, v, c)))(x, params, context)


@pytest.mark.parametrize("skip, residual", [(False, False), (True, True)])
@pytest.mark.parametrize("dim", [2, 5])
def test_made_output_i_depends_only_on_inputs_before_i(dim, skip, residual):
    made = MADE(dim, (2 * dim, 2 * dim), 3, skip_connections=skip, residual=residual)
    params = randomize_params(made.init(jax.random.key(0)), jax.random.key(1), 1.0)
    jac = made_jacobian(made, params, normal(2, (dim,)))
    assert jac.shape == (dim, 3, dim)
    upper = np.triu(np.ones((dim, dim)))  # j >= i: forbidden
    np.testing.assert_array_equal(np.abs(jac) * upper[:, None, :], 0.0)
    # ... and every allowed dependency is actually present (the masks are not too strict).
    lower = 1 - upper
    assert np.all((np.abs(jac).sum(1) > 0) == (lower > 0))


@pytest.mark.parametrize("dim", [1, 3])
def test_made_context_reaches_every_output_also_the_first(dim):
    made = MADE(dim, (8,), 2, context_dim=2)
    params = randomize_params(made.init(jax.random.key(0)), jax.random.key(1), 1.0)
    jac = jax.jit(jax.jacfwd(lambda c, p: made.apply(p, jnp.ones(dim), c)))(jnp.ones(2), params)
    assert np.all(np.abs(jac).sum(-1) > 0)


def test_made_fresh_output_is_zero():
    made = MADE(4, (8, 8), 3, context_dim=2, skip_connections=True)
    out = made.apply(made.init(jax.random.key(0)), jnp.ones((5, 4)), jnp.ones((5, 2)))
    assert out.shape == (5, 4, 3)
    np.testing.assert_array_equal(out, 0.0)


def test_made_rejects_hidden_width_below_input_dim():
    with pytest.raises(ValueError, match="narrower than the input dimension 5"):
        MADE(5, (8, 4), 2)


def test_made_missing_or_malformed_context_is_a_clear_error():
    made = MADE(3, (6,), 2, context_dim=2)
    params = made.init(jax.random.key(0))
    with pytest.raises(ValueError, match="no context was given"):
        made.apply(params, jnp.ones(3))
    with pytest.raises(ValueError, match="context_dim=2"):
        made.apply(params, jnp.ones(3), jnp.ones(4))


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown activation"):
        MADE(3, (6,), 2, activation="swish-ish")


def test_stax_nonlinearity_is_accepted():
    from jax.example_libraries import stax

    made = MADE(3, (6,), 2, activation=stax.Tanh)
    params = randomize_params(made.init(jax.random.key(0)), jax.random.key(1), 1.0)
    assert np.all(np.isfinite(made.apply(params, jnp.ones(3))))


def test_mlp_with_context_and_empty_input():
    mlp = MLP(0, (8,), 4, context_dim=3)
    params = randomize_params(mlp.init(jax.random.key(0)), jax.random.key(1), 1.0)
    out_a = mlp.apply(params, jnp.zeros((2, 0)), jnp.zeros((2, 3)))
    out_b = mlp.apply(params, jnp.zeros((2, 0)), jnp.ones((2, 3)))
    assert out_a.shape == (2, 4)
    assert not np.allclose(out_a, out_b)
