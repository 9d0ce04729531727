"""Image flows: the image bijections under the contract, the multiscale factories as
distributions, and fitting dequantized images."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from draws import normal
from registry import IMAGE_FACTORIES, IMAGE_SHAPE

from numpyro_flows import flows
from numpyro_flows.bijections import (
    ActNorm,
    Affine,
    Invert,
    LogitPreprocess,
    LULinear,
    lift_elementwise,
)
from numpyro_flows.bijections.image import (
    ChannelSplit,
    ConvCoupling,
    PerPixel,
    Squeeze,
    checkerboard,
)
from numpyro_flows.density import FlowDistribution
from numpyro_flows.images import UniformDequantization, VariationalDequantization, bits_per_dim
from numpyro_flows.nn.conv import ConvResNet, conv2d
from numpyro_flows.testing import check_transform, randomize_params
from numpyro_flows.training import fit


def images(shape=IMAGE_SHAPE, num=3, seed=0, scale=1.0):
    return normal(seed, (num, *shape), scale)


def random(params, seed=1, scale=0.3):
    return randomize_params(params, jax.random.key(seed), scale)


def coupling(mask, channels=4, parity=0):
    fixed = channels // 2 if mask == "channel" else channels
    out = (channels - fixed if mask == "channel" else channels) * 2
    network = ConvResNet(fixed, 8, out, 1)
    params = random(network.init(jax.random.key(0)))
    return ConvCoupling(Affine(), network, params, mask, parity)


def per_channel(channels=4):
    loc, raw = random((jnp.zeros(channels), jnp.zeros(channels)))
    return loc, raw


LAYERS = {
    "actnorm_per_channel": lambda: PerPixel(ActNorm(*per_channel())),
    "conv1x1_lu": lambda: PerPixel(
        LULinear(
            *random(tuple(jnp.zeros((4, 4)) for _ in "lu")) + random((jnp.zeros(4), jnp.zeros(4)))
        )
    ),
    "conv1x1_lu_inverse": lambda: PerPixel(
        Invert(
            LULinear(*random((jnp.zeros((4, 4)), jnp.zeros((4, 4)), jnp.zeros(4), jnp.zeros(4))))
        )
    ),
    "squeeze": Squeeze,
    "channel_split": lambda: ChannelSplit(
        PerPixel(ActNorm(*per_channel(1))), PerPixel(ActNorm(*per_channel(3))), 1
    ),
    "coupling_channel": lambda: coupling("channel"),
    "coupling_checkerboard": lambda: coupling("checkerboard", parity=1),
    "coupling_packed_checkerboard": lambda: coupling("packed_checkerboard", parity=1),
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n == "coupling_checkerboard" else n
        for n in LAYERS
    ],
)
def test_image_layer_contract(name):
    x = jnp.concatenate([images((4, 4, 4)), images((4, 4, 4), 1, seed=1, scale=1e3)])
    check_transform(LAYERS[name](), x, log_det_rtol=1e-5)


@pytest.mark.parametrize("parity", [0, 1])
def test_packed_checkerboard_moves_the_other_squares_only(parity):
    x = images((4, 6, 4))
    y, log_det = coupling("packed_checkerboard", parity=parity).forward_and_log_det(x)
    fixed = np.broadcast_to(checkerboard(4, 6, parity), x.shape)
    np.testing.assert_array_equal(np.asarray(y)[fixed], np.asarray(x)[fixed])
    assert np.all(np.asarray(y)[~fixed] != np.asarray(x)[~fixed])
    # The conditioner sees the fixed squares only: changing a moving square moves nothing else.
    x2 = x.at[:, 0, 1 - parity].add(1.0)
    y2, _ = coupling("packed_checkerboard", parity=parity).forward_and_log_det(x2)
    changed = np.any(np.asarray(y2) != np.asarray(y), axis=(0, -1))
    assert changed.sum() == 1 and changed[0, 1 - parity]
    with pytest.raises(ValueError, match="even image width"):
        flows.multiscale_realnvp(1, 2, 8, mask="packed_checkerboard").init(
            jax.random.key(0), (6, 6, 1)
        )


def test_logit_preprocessing_contract_and_formula():
    t = PerPixel(lift_elementwise(LogitPreprocess(0.05)))
    y = images((4, 4, 1), scale=3.0)
    check_transform(t, y, log_det_rtol=1e-5)
    x = jnp.linspace(0.0, 1.0, 5)
    p = 0.05 + 0.9 * x
    np.testing.assert_allclose(LogitPreprocess(0.05).inv(x), np.log(p / (1 - p)), rtol=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        LogitPreprocess(0.5)


def test_conv2d_equals_xla_convolution():
    for c_in, c_out in [(2, 8), (8, 3)]:  # both ways of computing it
        x = normal(0, (2, 5, 6, c_in))
        w = normal(1, (3, 3, c_in, c_out))
        reference = jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        np.testing.assert_allclose(conv2d(x, w, 0.0), reference, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGE_FACTORIES)
def test_image_flow_contract_and_fresh_identity(name):
    flow = IMAGE_FACTORIES[name]()
    params = flow.init(jax.random.key(0), IMAGE_SHAPE)
    assert flow.event_shape(params) == IMAGE_SHAPE
    logit = flow.layer.logit_alpha
    # A fresh flow is the identity (followed by its logit preprocessing, if any).
    z = images()
    x, log_det = jax.jit(lambda p, z: flow.transform(p).forward_and_log_det(z))(params, z)
    expected, expected_log_det = (
        (z, 0.0)
        if logit is None
        else PerPixel(lift_elementwise(LogitPreprocess(logit))).forward_and_log_det(z)
    )
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_det, expected_log_det, rtol=1e-5, atol=1e-4)
    # Random params, in the sampling direction (base -> image).
    check_transform(flow.transform(random(params, scale=0.2)), z, log_det_rtol=1e-5)


@pytest.mark.slow  # the default run checks the image inputs' errors below without a fit
def test_fit_dequantized_images_then_sample_and_score_them():
    # 4 x 4 "images" of 5 levels: two blobs, so there is structure to learn.
    rng = np.random.default_rng(0)
    rows = rng.random((400, 4, 4, 2)) < np.where(rng.random((400, 1, 1, 1)) < 0.5, 0.8, 0.2)
    levels = rows * 3 + rng.integers(0, 2, rows.shape)
    # One level keeps the compile short; the multiscale wiring is checked in the contract.
    flow = flows.multiscale_glow(1, 2, 8)
    dequantize = UniformDequantization(5)
    result = fit(
        jax.random.key(0),
        flow,
        levels,
        dequantize=dequantize,
        optimizer=optax.adam(3e-3),
        num_epochs=200,
        batch_size=64,
        patience=3,
        progress_bar=False,
    )
    assert result.stop_reason == "early_stopping"
    bits = bits_per_dim(result.val_losses, IMAGE_SHAPE, 5)
    assert bits[result.best_epoch] < bits[0] < np.log2(5) + 0.5
    # The fitted flow as a distribution on (4, 4, 2): samples in the logit's range, a
    # density of x (the logit's log-det counted), clear errors for the wrong shapes.
    d = FlowDistribution(flow, result.params)
    assert d.event_shape == IMAGE_SHAPE
    samples = jax.jit(lambda key: d.sample(key, (5,)))(jax.random.key(1))
    assert samples.shape == (5, *IMAGE_SHAPE)
    assert ((samples > -0.06) & (samples < 1.06)).all()
    log_p = jax.jit(d.log_prob)(samples)
    assert log_p.shape == (5,) and np.isfinite(log_p).all()
    z, _ = flow.transform(result.params).inverse_and_log_det(samples)
    assert not np.allclose(log_p, d.base_dist.log_prob(z))


def test_image_flows_name_the_problem_with_their_inputs():
    flow = flows.multiscale_glow(1, 2, 8)
    levels = np.random.default_rng(0).integers(0, 5, (20, *IMAGE_SHAPE))
    d = FlowDistribution(flow, flow.init(jax.random.key(0), IMAGE_SHAPE))
    images = np.full((2, *IMAGE_SHAPE), 0.5, np.float32)
    with pytest.raises(ValueError, match=r"images of shape \(4, 4, 2\)"):
        d.log_prob(images[..., :1])
    images[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        d.log_prob(images)
    dequantize = UniformDequantization(5)
    with pytest.raises(ValueError, match="height and width must be divisible by 2"):
        flow.init(jax.random.key(0), (5, 6, 1))
    with pytest.raises(ValueError, match=r"\(height, width, channels\)"):
        flow.init(jax.random.key(0), 16)
    with pytest.raises(ValueError, match="image flows"):
        flows.iaf().init(jax.random.key(0), (4, 4, 1))
    with pytest.raises(ValueError, match="integer levels 0..4"):
        fit(jax.random.key(0), flow, levels / 4.5, dequantize=dequantize, num_epochs=1)
    with pytest.raises(ValueError, match="channel axis"):
        fit(jax.random.key(0), flow, levels[..., 0], num_epochs=1)


@pytest.mark.slow  # moved to keep the default run under 7 minutes
def test_variational_dequantization_log_density():
    q = VariationalDequantization(5, hidden_channels=8, num_steps=2)
    params = random(q.init(jax.random.key(0), (4, 4, 2)), scale=0.3)
    k = jnp.asarray(np.random.default_rng(1).integers(0, 5, (1, 4, 4, 2)), jnp.float32)
    e = jax.random.normal(jax.random.key(3), k.shape)  # the draw q makes with key 3

    @jax.jit
    def check(params):
        x, log_q = q(jax.random.key(3), k, params)
        u, log_q_of_e = q.noise(e, k, params)
        flat = lambda v: q.noise(v.reshape(k.shape), k, params)[0].reshape(-1)  # noqa: E731
        return x * 5 - k, log_q, u, log_q_of_e, jax.jacfwd(flat)(e.reshape(-1))

    u, log_q, u_of_e, log_q_of_e, jacobian = check(params)
    assert ((u > 0) & (u < 1)).all()
    np.testing.assert_allclose(u_of_e, u, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_q_of_e, log_q, rtol=1e-6)
    # log q(u | k) is the change of variables from the Gaussian draw e -> u.
    reference = jnp.sum(jax.scipy.stats.norm.logpdf(e)) - jnp.linalg.slogdet(jacobian)[1]
    np.testing.assert_allclose(log_q[0], reference, rtol=1e-4)


@pytest.mark.slow
def test_fit_trains_a_variational_dequantizer_with_the_flow():
    levels = np.random.default_rng(1).integers(0, 5, (64, 4, 4, 2))
    q = VariationalDequantization(5, hidden_channels=8, num_steps=2)
    params = q.init(jax.random.key(0), (4, 4, 2))
    # fit trains q with the flow and returns its params apart from the flow's.
    flow = flows.multiscale_glow(1, 1, 8)
    result = fit(
        jax.random.key(0),
        flow,
        levels,
        dequantize=q,
        num_epochs=2,
        batch_size=32,
        progress_bar=False,
    )
    assert np.isfinite(result.train_losses).all()
    assert jax.tree.structure(result.dequantizer_params) == jax.tree.structure(params)
    assert FlowDistribution(flow, result.params).event_shape == (4, 4, 2)
    with pytest.raises(ValueError, match="for images"):
        fit(jax.random.key(0), flows.maf(), levels.reshape(64, -1), dequantize=q, num_epochs=1)
