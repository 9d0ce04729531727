"""NeuTra: the reparameterisation identity for every guide, and real NUTS runs.

The default run checks the identity for the IAF guide; the other guides and the funnel's
NUTS comparison are marked ``slow``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from draws import normal
from models import eight_schools, funnel
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.util import potential_energy

from numpyro_flows import AutoIAF, AutoNeuralSpline, AutoRealNVP, neutra_nuts, neutra_reparam
from numpyro_flows.testing import randomize_params

GUIDES = {
    "iaf": lambda m: AutoIAF(m),
    "realnvp": lambda m: AutoRealNVP(m),
    "spline": lambda m: AutoNeuralSpline(m),
    "spline_coupling": lambda m: AutoNeuralSpline(m, coupling=True, affine="full"),
}


def trained(make, model, steps=1500, seed=0):
    guide = make(model)
    svi = SVI(model, guide, optax.adam(5e-3), Trace_ELBO(num_particles=4))
    return guide, svi.run(jax.random.key(seed), steps, progress_bar=False).params


SLOW_IDENTITY = {"realnvp", "spline", "spline_coupling"}  # iaf in the default run


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] * (n in SLOW_IDENTITY)) for n in GUIDES]
)
def test_reparameterised_potential_identity(name):
    """U_z(z) = U_x(T(z)) - log|det J_T(z)| at z = 0, a random z and z = 10 * 1."""
    guide = GUIDES[name](eight_schools)
    svi = SVI(eight_schools, guide, optax.adam(1e-3), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.key(0)))
    # Move away from the identity init: noise on the flow's pytree, so that weight matrices
    # get it scaled by their fan-in (the param site takes a pytree as it is).
    flow = randomize_params(guide.flow_params(params), jax.random.key(1), 0.3)
    params = {**params, "auto_flow": flow}
    reparam = neutra_reparam(guide, params)
    warped = reparam.reparam(eight_schools)
    transform = guide.get_transform(params)
    dim = guide.latent_dim
    for z in (jnp.zeros(dim), normal(2, (dim,)), 10 * jnp.ones(dim)):
        u_z = potential_energy(warped, (), {}, {"auto_shared_latent": z})
        x = transform(z)
        u_x = potential_energy(eight_schools, (), {}, guide._unpack_latent(x))
        expected = u_x - transform.log_abs_det_jacobian(z, x)
        assert np.isfinite(float(u_z))
        np.testing.assert_allclose(u_z, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_neutra_on_the_funnel_has_fewer_divergences_than_plain_nuts():
    guide, params = trained(GUIDES["spline"], funnel, steps=3000)
    kwargs = dict(num_warmup=400, num_samples=400, progress_bar=False)
    result = neutra_nuts(jax.random.key(3), guide, params, khat_samples=0, **kwargs)
    plain = MCMC(NUTS(funnel), **kwargs)
    plain.run(jax.random.key(3), extra_fields=("diverging",))
    plain_div = int(plain.get_extra_fields()["diverging"].sum())
    neutra_div = int(result.sample_stats["diverging"].sum())
    assert plain_div > 0
    assert neutra_div < plain_div


@pytest.mark.slow  # a NeuTra-NUTS run; the default run has test_arviz's NeuTra export
def test_neutra_result_layout_stats_and_khat_warning():
    guide, params = trained(GUIDES["iaf"], eight_schools, steps=5)
    with pytest.warns(UserWarning, match="k-hat"):
        result = neutra_nuts(
            jax.random.key(4),
            guide,
            params,
            num_warmup=100,
            num_samples=50,
            num_chains=2,
            chain_method="vectorized",
            progress_bar=False,
        )
    assert result.khat > 0.7
    assert set(result.samples) == {"mu", "tau", "theta_raw", "theta"}
    assert result.samples["theta"].shape == (2, 50, 8)
    assert result.samples["tau"].shape == (2, 50)
    assert np.all(result.samples["tau"] > 0)
    for stat in ("diverging", "num_steps", "tree_depth", "accept_prob", "energy"):
        assert result.sample_stats[stat].shape == (2, 50), stat
    assert result.sample_stats["step_size"].shape == (2,)


def test_neutra_reparam_needs_a_set_up_guide():
    with pytest.raises(ValueError, match="train it with SVI"):
        neutra_reparam(AutoIAF(funnel), {})
    with pytest.raises(TypeError, match="AutoContinuous"):
        neutra_reparam(object(), {})
