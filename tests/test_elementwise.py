"""NumPyro's elementwise transforms as flow layers: lifted to the vector event in a Chain,
in a Flow's Sequential, and under the bijection contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from draws import normal
from numpyro.distributions import constraints
from numpyro.distributions.transforms import (
    AffineTransform,
    ExpTransform,
    PowerTransform,
    SigmoidTransform,
    SoftplusTransform,
)

from numpyro_flows import FlowDistribution, fit, flows
from numpyro_flows.bijections import (
    Affine,
    Chain,
    ElementwiseTransform,
    TanhTransform,
    lift_elementwise,
)
from numpyro_flows.layers import CouplingLayer, Sequential, TransformLayer
from numpyro_flows.testing import check_transform, randomize_params

X = normal(0, (6, 3))
POSITIVE = jnp.exp(X)
# Inputs inside each transform's domain; moderate for the bounded codomains, where
# float32 saturates (sigmoid(20) == 1.0) and no inverse can recover x.
CASES = {
    "sigmoid": (SigmoidTransform(), 4.0 * X),
    # tanh's autodiff reference, 1 - tanh(x)^2, cancels in float32 beyond |x| ~ 3.
    "tanh": (TanhTransform(), X),
    "softplus": (SoftplusTransform(), 4.0 * X),
    "exp": (ExpTransform(), 4.0 * X),
    "power": (PowerTransform(3.0), POSITIVE),
    "affine_per_coordinate": (AffineTransform(jnp.array([1.0, -2.0, 0.5]), 2.0), 100.0 * X),
}


@pytest.mark.parametrize("name", CASES)
def test_elementwise_transforms_pass_the_contract_as_vector_bijections(name):
    transform, x = CASES[name]
    report = check_transform(transform, x, rtol=2e-4)
    assert "log-det vs autodiff" in report.checked and "round trip" in report.checked
    # The lifted log-det is NumPyro's per-coordinate log-det summed over the event axis.
    y, log_det = ElementwiseTransform(transform).forward_and_log_det(x)
    per_coordinate = jnp.broadcast_to(transform.log_abs_det_jacobian(x, transform(x)), x.shape)
    np.testing.assert_allclose(log_det, per_coordinate.sum(-1), rtol=1e-6)
    np.testing.assert_array_equal(y, transform(x))


def test_a_chain_lifts_elementwise_transforms_instead_of_failing_to_broadcast():
    flow = flows.realnvp(2, (8,))
    params = randomize_params(flow.init(jax.random.key(1), 3), jax.random.key(2), 0.3)
    chain = Chain([flow.transform(params), SigmoidTransform()])
    assert isinstance(chain.bijections[1], ElementwiseTransform)
    y, log_det = chain.forward_and_log_det(X)
    assert y.shape == X.shape and log_det.shape == (6,)
    assert np.all((y > 0) & (y < 1))
    check_transform(chain, X, rtol=2e-4)
    assert chain.bijections[1].codomain.event_dim == 1
    assert isinstance(chain.bijections[1].codomain.base_constraint, type(constraints.unit_interval))


def test_vector_transforms_and_bijections_are_not_wrapped():
    bijection = flows.iaf(1).transform(flows.iaf(1).init(jax.random.key(0), 3))
    assert lift_elementwise(bijection) is bijection
    with pytest.raises(ValueError, match="acts on each coordinate"):
        ElementwiseTransform(bijection)


@pytest.mark.slow  # the default run checks the lifting in the contract (chain_numpyro_...)
def test_a_flow_ending_in_a_sigmoid_models_data_in_the_unit_square():
    """Sequential takes a NumPyro transform among its layers: a flow on (0, 1)^2."""
    flow = flows.Flow(
        Sequential((CouplingLayer(Affine()), CouplingLayer(Affine()), SigmoidTransform()))
    )
    assert isinstance(flow.layer.layers[-1], TransformLayer)
    rng = np.random.default_rng(0)
    data = np.stack([rng.beta(2.0, 5.0, 2000), rng.beta(5.0, 2.0, 2000)], -1).astype(np.float32)
    result = fit(jax.random.key(0), flow, data, num_steps=300, batch_size=256, progress_bar=False)
    assert np.all(np.isfinite(result.train_losses))
    density = FlowDistribution(flow, result.params)
    draws = density.sample(jax.random.key(1), (500,))
    assert np.all((draws > 0) & (draws < 1))
    # Change of variables through the logit: the density of the uniform square is 0 nats,
    # the fitted product of Betas about 0.6 nats a point; the flow lies in between at least.
    held_out = float(jnp.mean(density.log_prob(data[:500])))
    assert held_out > 0.2, held_out


def test_transform_layer_rejects_what_is_not_a_vector_transform():
    with pytest.raises(TypeError, match="NumPyro Transform"):
        TransformLayer("sigmoid")
    from numpyro.distributions.transforms import CorrCholeskyTransform

    with pytest.raises(ValueError, match="flow layers act on vectors"):
        TransformLayer(CorrCholeskyTransform().inv)


def test_flows_of_transforms_first_or_only():
    """The event size comes from the first layer with parameters; a flow of fixed
    transforms only fits any size."""
    flow = flows.Flow(Sequential((AffineTransform(0.5, 2.0), CouplingLayer(Affine()))))
    params = flow.init(jax.random.key(0), 3)
    assert flow.event_size(params) == 3
    check_transform(flow.transform(params), X)
    fixed = flows.Flow(Sequential((ExpTransform(),)))
    y = fixed.transform(fixed.init(jax.random.key(0), 3))(X)
    np.testing.assert_allclose(y, jnp.exp(X), rtol=1e-6)
