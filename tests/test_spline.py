"""Rational-quadratic spline: monotone, identity tails, continuity at the bound."""

import jax
import jax.numpy as jnp
import numpy as np
from draws import normal, uniform

from numpyro_flows.bijections import RationalQuadraticSpline

SPLINE = RationalQuadraticSpline(num_bins=8, bound=3.0)
# Jitted: one compilation per input shape instead of one per operation (eager).
forward = jax.jit(SPLINE.forward_and_log_det)
inverse = jax.jit(SPLINE.inverse_and_log_det)


def random_params(shape, seed=0, scale=1.0):
    return normal(seed, shape + (SPLINE.num_params,), scale)


def test_zero_params_are_the_identity():
    x = jnp.linspace(-5, 5, 101)
    y, log_det = forward(x, jnp.zeros((101, SPLINE.num_params)))
    np.testing.assert_allclose(y, x, atol=1e-5)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


def test_monotone_and_maps_the_interval_onto_itself():
    x = jnp.linspace(-3, 3, 2001)
    params = jnp.broadcast_to(random_params((), seed=1), (2001, SPLINE.num_params))
    y, log_det = forward(x, params)
    assert np.all(np.diff(np.asarray(y)) > 0)
    assert np.all(np.isfinite(log_det))
    np.testing.assert_allclose([y[0], y[-1]], [-3.0, 3.0], atol=1e-5)


def test_identity_tails_and_continuous_density_at_the_bound():
    params = random_params((), seed=2)
    eps = 1e-4
    for edge in (-3.0, 3.0):
        inside = edge - np.sign(edge) * eps
        outside = edge + np.sign(edge) * eps
        inside, outside = jnp.float32(inside), jnp.float32(outside)
        y_in, ld_in = forward(inside, params)
        y_out, ld_out = forward(outside, params)
        assert float(y_out) == float(outside)  # identity outside
        np.testing.assert_allclose(y_in, inside, atol=1e-3)  # value joins the tail
        np.testing.assert_allclose(ld_in, 0.0, atol=1e-2)  # slope 1 at the bound
        assert float(ld_out) == 0.0


def test_inverse_and_its_log_det():
    x = uniform(3, (500, 4), -4.0, 4.0)
    params = random_params((500, 4), seed=4, scale=0.5)
    y, log_det = forward(x, params)
    x_back, inv_log_det = inverse(y, params)
    np.testing.assert_allclose(x_back, x, atol=1e-4)
    np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-4)


def test_log_det_matches_autodiff_and_gradients_are_finite_everywhere():
    x = jnp.concatenate([jnp.linspace(-4, 4, 41), jnp.array([-3.0, 3.0, 0.0, 1e4])])
    params = jnp.broadcast_to(random_params((), seed=5), x.shape + (SPLINE.num_params,))

    def value(v, p):
        return SPLINE.forward_and_log_det(v, p)[0]

    @jax.jit
    def slope_log_det_and_gradient(x, params):
        slope = jax.vmap(jax.grad(value))(x, params)
        _, log_det = SPLINE.forward_and_log_det(x, params)
        g = jax.grad(lambda p: jnp.sum(SPLINE.forward_and_log_det(x, p)[1]))(params)
        return slope, log_det, g

    slope, log_det, g = slope_log_det_and_gradient(x, params)
    np.testing.assert_allclose(jnp.log(slope), log_det, atol=1e-4)
    assert np.all(np.isfinite(g))
