"""Every flow factory and every bijection family through the shared contract checks.

The default run checks every layer at D = 4 (and an affine coupling and an affine
autoregressive layer at D = 1, an edge case), the context path of the affine layers and
BNAF, and whole flows where they add more than their layers (at D = 5: the guide's IAF,
Glow, NICE, planar and radial); the slow run checks every flow at D = 1, 2, 5 and 50 (a
600 x 600 Jacobian per flow) and every layer at both sizes and with a context."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from draws import normal
from registry import FACTORIES, LAYERS, VARIANTS

from numpyro_flows.bijections.base import CONDITIONER_INPUT_SCALE, conditioner_input
from numpyro_flows.testing import check_transform, randomize_params

DIMS = [1, 2, 5, 50]
# Whole flows in the default run, at D = 5 (the others are stacks of layers checked one
# by one below, through the same Scan as these).
DEFAULT_RUN_FLOWS = ("iaf", "glow", "nice", "planar", "radial")
# One latent dimension is an edge case for coupling (an empty half) and autoregressive
# layers (no conditioner input): checked on one layer of each in the default run.
DEFAULT_RUN_1D_LAYERS = ("affine_coupling", "affine_autoregressive")
# A context enters through MADE, the coupling conditioner and BNAF's own first layer.
DEFAULT_RUN_CONDITIONAL = ("affine_autoregressive", "affine_coupling", "bnaf_gated")
SCALES = (1.0, 1e2, 1e4)


def slow_if(condition, *values):
    return pytest.param(*values, marks=[pytest.mark.slow] * bool(condition))


def points(dim, num=4, seed=2):
    """``num`` standard-normal points at each scale up to |x| = 1e4, as one batch."""
    scales = np.asarray(SCALES)[:, None, None]
    return normal(seed, (len(SCALES), num, dim), scales).reshape(-1, dim)


def random_transform(flow, dim, seed=1, context_dim=0, context=None):
    params = flow.init(jax.random.key(0), dim, context_dim)
    params = randomize_params(params, jax.random.key(seed), scale=0.2)
    state = flow.init_state(dim)
    if state is not None:
        state = randomize_params(state, jax.random.key(seed + 1), scale=0.2)
    return flow.transform(params, context, state=state)


@pytest.mark.parametrize(
    "name, dim",
    [
        slow_if(
            name not in DEFAULT_RUN_FLOWS or dim != 5,
            name,
            dim,
        )
        for name in FACTORIES
        for dim in DIMS
    ],
)
def test_flow_contract_with_random_params(name, dim):
    flow = FACTORIES[name]()
    check_transform(
        random_transform(flow, dim),
        points(dim),
        gradient_reaches_every_leaf=dim > 1,
    )


# Structural options of the factories: their building blocks are in the default run.
@pytest.mark.parametrize("name", [slow_if(True, n) for n in VARIANTS])
def test_factory_variant_contract_with_random_params(name):
    check_transform(random_transform(VARIANTS[name](), 4), points(4, num=3))


@pytest.mark.parametrize("name", FACTORIES)
def test_fresh_flow_is_identity(name):
    flow = FACTORIES[name]()
    x = points(3)[:8]
    y, log_det = flow.transform(flow.init(jax.random.key(3), 3)).forward_and_log_det(x)
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)


@pytest.mark.parametrize("name", FACTORIES)
def test_jit_does_not_retrace_for_new_params(name):
    flow = FACTORIES[name]()
    base = flow.init(jax.random.key(0), 3)
    traces = []

    @jax.jit
    def forward(transform, x):
        traces.append(1)
        return transform.forward_and_log_det(x)

    x = points(3)[:4]
    outputs = []
    for seed in range(3):
        transform = flow.transform(randomize_params(base, jax.random.key(seed), 0.2))
        outputs.append(forward(transform, x)[0])
    assert len(traces) == 1
    assert not np.allclose(outputs[0], outputs[1])


@pytest.mark.parametrize(
    "name, dim",
    [
        slow_if(dim == 1 and name not in DEFAULT_RUN_1D_LAYERS, name, dim)
        for name in LAYERS
        for dim in [1, 4]
    ],
)
def test_bijection_contract(name, dim):
    from numpyro_flows.flows import Flow

    layer, _ = LAYERS[name]
    check_transform(random_transform(Flow(layer), dim), points(dim, num=3))


@pytest.mark.parametrize(
    "name",
    [
        slow_if(n not in DEFAULT_RUN_CONDITIONAL, n)
        for n, (_, conditional) in LAYERS.items()
        if conditional
    ],
)
def test_conditional_bijection_contract(name):
    from numpyro_flows.flows import Flow

    layer, _ = LAYERS[name]
    dim, context_dim = 3, 2
    context = normal(5, (4, context_dim))
    x = normal(6, (4, dim))
    flow = Flow(layer)
    transform = random_transform(flow, dim, context_dim=context_dim, context=context)
    check_transform(transform, x, vmap=False)
    # The context changes the map, and one context broadcasts over a batch of x.
    other = random_transform(flow, dim, context_dim=context_dim, context=context + 1.0)
    assert not np.allclose(transform(x), other(x))
    single = random_transform(flow, dim, context_dim=context_dim, context=context[0])
    np.testing.assert_allclose(single(x)[0], transform(x)[0], rtol=1e-5, atol=1e-5)


def test_conditioner_input_derivatives_are_those_of_its_formula():
    # conditioner_input carries its own slope (a custom JVP): values, first and second
    # derivatives must be those of the plain formula: inside, either side of the edge at
    # |x| = 5 and far out.
    def formula(x):
        c = CONDITIONER_INPUT_SCALE
        return jnp.clip(x, -c, c) + jnp.sign(x) * jnp.log1p(jnp.maximum(jnp.abs(x) - c, 0.0))

    x = jnp.array([-1e4, -7.0, -4.9, -1.0, 0.0, 0.3, 4.99, 5.01, 9.0, 1e4], jnp.float32)
    np.testing.assert_array_equal(conditioner_input(x), formula(x))
    for order in (1, 2):
        ours, plain = conditioner_input, formula
        for _ in range(order):
            ours, plain = jax.grad(ours), jax.grad(plain)
        np.testing.assert_allclose(jax.vmap(ours)(x), jax.vmap(plain)(x), rtol=1e-6)
