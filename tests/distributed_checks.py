"""Multi-device checks, run by test_distributed.py in a process started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set before JAX
starts, so these cannot run in the main pytest process).

Each check prints one line with "ok"; the test counts them.

Tolerances. The single-device reference and the sharded run execute the same maths on the
same batch with the same PRNG key; only the order of floating-point reductions differs
(per-device partial sums, then an all-reduce). In float32 that is ~1e-7 relative per
reduction. Adam divides each gradient by its running RMS, so a relative error in a gradient
component becomes the same relative error in that component's step (lr * 1e-7); after 20
steps parameters of size ~1 agree to ~1e-6. We assert rtol=1e-5, atol=1e-6 on parameters
and rtol=1e-5 on every loss of the trajectory. A 1-device mesh compiles to the same program
as ``jax.jit(svi.update)`` and must be bit-identical.
"""

import copy
import os
import sys
import warnings

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    sys.exit(
        "Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (see test_distributed.py)"
    )

warnings.simplefilter("error")  # as pytest does in the main process

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import optax  # noqa: E402
from numpyro.diagnostics import effective_sample_size  # noqa: E402
from numpyro.handlers import substitute  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402

from numpyro_flows import AutoHybridFlow, AutoIAF, flows  # noqa: E402
from numpyro_flows.distributed import (  # noqa: E402
    data_parallel_svi,
    make_mesh,
    replicate,
    shard_batch,
    sharded_chains,
)
from numpyro_flows.neutra import neutra_nuts  # noqa: E402
from numpyro_flows.reports import RunReportWarning  # noqa: E402
from numpyro_flows.testing import randomize_params  # noqa: E402

# Short fixed-step runs: their run report (r-hat, ESS) is not what these checks test.
warnings.filterwarnings("ignore", category=RunReportWarning)

NUM_DATA, BATCH, DIM, STEPS = 1024, 64, 3, 20
RNG = np.random.default_rng(0)
X = RNG.normal(size=(NUM_DATA, DIM)).astype(np.float32)
Y = (RNG.uniform(size=NUM_DATA) < 1 / (1 + np.exp(-X @ [1.0, -2.0, 0.5]))).astype(np.float32)
# A per-datum constant that a model reads through the plate's indices.
OFFSET = jnp.asarray(RNG.normal(size=NUM_DATA).astype(np.float32))
BATCHES = np.stack([RNG.choice(NUM_DATA, BATCH, replace=False) for _ in range(STEPS)])

PARAM_TOL = dict(rtol=1e-5, atol=1e-6)
LOSS_RTOL = 1e-5


def logistic(x, y=None):
    """Global latents; the minibatch's observations in a subsampled plate (scaled N / B)."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([DIM]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", NUM_DATA, subsample_size=x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


def logistic_offset(x, y=None):
    """As ``logistic``, plus a per-datum offset looked up by the plate's indices."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([DIM]).to_event(1))
    with numpyro.plate("data", NUM_DATA, subsample_size=x.shape[0]) as idx:
        numpyro.sample("y", dist.Bernoulli(logits=x @ w + OFFSET[idx]), obs=y)


def make_svi(model):
    return SVI(model, AutoIAF(model, num_flows=2), optax.adam(1e-2), Trace_ELBO())


def single_device_run(svi, state, step_args):
    """The reference: ``jax.jit(svi.update)`` on the default device, nothing sharded."""
    update = jax.jit(svi.update)
    losses = []
    for args in step_args:
        state, loss = update(state, *args)
        losses.append(float(loss))
    return np.array(losses), svi.get_params(state)


def scan_run(dp, state, stacked):
    """All steps in one jitted ``lax.scan`` over minibatches stacked ``(steps, B, ...)``."""
    return jax.jit(lambda s, xy: jax.lax.scan(lambda s, b: dp.update(s, *b), s, xy))(state, stacked)


def assert_same_run(losses, params, ref_losses, ref_params, exact=False):
    if exact:
        np.testing.assert_array_equal(losses, ref_losses)
    else:
        np.testing.assert_allclose(losses, ref_losses, rtol=LOSS_RTOL)
    assert set(params) == set(ref_params)
    for name in ref_params:
        for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(ref_params[name])):
            if exact:
                np.testing.assert_array_equal(a, b, err_msg=name)
            else:
                np.testing.assert_allclose(a, b, **PARAM_TOL, err_msg=name)


def check_data_parallel_svi_matches_single_device():
    assert jax.device_count() == 8
    svi = make_svi(logistic)
    state0 = svi.init(jax.random.key(0), X[BATCHES[0]], Y[BATCHES[0]])
    step_args = [(X[i], Y[i]) for i in BATCHES]
    ref_losses, ref_params = single_device_run(svi, state0, step_args)
    for n in (1, 8):
        dp = data_parallel_svi(svi, make_mesh(n))
        state = replicate(state0, dp.mesh)
        losses = []
        for x, y in step_args:
            previous = state
            state, loss = dp.update(state, x, y)
            losses.append(float(loss))
        # evaluate is the loss that update reports, without the step (another program).
        np.testing.assert_allclose(dp.evaluate(previous, x, y), loss, rtol=LOSS_RTOL)
        assert_same_run(np.array(losses), dp.get_params(state), ref_losses, ref_params, n == 1)
        # What ran where: each row of the batch on one device, the state on all of them.
        x = shard_batch(step_args[0][0], dp.mesh)
        assert len(x.sharding.device_set) == n
        assert {s.data.shape for s in x.addressable_shards} == {(BATCH // n, DIM)}
        for leaf in jax.tree.leaves(state):
            assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == n
        if n == 8:
            # The step also runs under lax.scan over stacked minibatches (S, B, ...).
            stacked = (np.stack([a[0] for a in step_args]), np.stack([a[1] for a in step_args]))
            state, scan_losses = scan_run(dp, replicate(state0, dp.mesh), stacked)
            assert_same_run(scan_losses, dp.get_params(state), ref_losses, ref_params)
        print(f"data-parallel SVI on {n} device(s) matches the single-device run: ok", flush=True)


NUM_GROUPS, PER_GROUP = 512, 3
GROUP_Y = RNG.normal(size=(NUM_GROUPS, PER_GROUP)).astype(np.float32) + 0.5
GROUP_BATCHES = np.stack([RNG.choice(NUM_GROUPS, BATCH, replace=False) for _ in range(STEPS)])


def hierarchy(y):
    """A local latent per group, in the plate the minibatch's rows are split over."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("groups", NUM_GROUPS, subsample_size=y.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(mu, 1.0))
        numpyro.sample("y", dist.Normal(theta[:, None], 1.0).to_event(1), obs=y)


def check_hybrid_guide_data_parallel_matches_single_device():
    """AutoHybridFlow: its encoder runs on each device's rows, its parameters replicated;
    with the minibatch's indices given, as data_parallel_svi(subsample_plate=...) takes."""
    guide = AutoHybridFlow(hierarchy, global_flow=flows.iaf(1), local_flow=flows.iaf(1))
    svi = SVI(hierarchy, guide, optax.adam(1e-2), Trace_ELBO())
    first = GROUP_BATCHES[0]
    state0 = svi.init(jax.random.key(0), GROUP_Y[first])

    def reference_update(state, y, idx):
        local = copy.copy(svi)  # shares the constrain_fn set by svi.init
        local.model = substitute(hierarchy, data={"groups": idx})
        local.guide = substitute(guide, data={"groups": idx})
        return local.update(state, y)

    reference = jax.jit(reference_update)
    state, ref_losses = state0, []
    for idx in GROUP_BATCHES:
        state, loss = reference(state, GROUP_Y[idx], idx)
        ref_losses.append(float(loss))
    ref_params = svi.get_params(state)
    dp = data_parallel_svi(svi, make_mesh(8), subsample_plate="groups")
    state, losses = replicate(state0, dp.mesh), []
    for idx in GROUP_BATCHES:
        state, loss = dp.update(state, GROUP_Y[idx], indices=idx)
        losses.append(float(loss))
    assert_same_run(np.array(losses), dp.get_params(state), np.array(ref_losses), ref_params)
    print("data-parallel AutoHybridFlow on 8 devices matches one device: ok", flush=True)


def check_init_and_subsample_indices():
    """``init`` as ``SVI.init``; the minibatch's indices replace the plate's random draw."""
    dp_guide, ref_guide = (AutoIAF(logistic_offset, num_flows=2) for _ in range(2))
    optim, loss = optax.adam(1e-2), Trace_ELBO()
    first = BATCHES[0]
    dp = data_parallel_svi(
        SVI(logistic_offset, dp_guide, optim, loss), make_mesh(8), subsample_plate="data"
    )
    state = dp.init(jax.random.key(1), X[first], Y[first], indices=first)

    def plated(idx):
        """The model and guide with ``idx`` substituted for the plate's random draw."""
        model = substitute(logistic_offset, data={"data": idx})
        return SVI(model, substitute(ref_guide, data={"data": idx}), optim, loss)

    reference = plated(jnp.asarray(first))
    ref_state = reference.init(jax.random.key(1), X[first], Y[first])
    assert_same_run([], dp.get_params(state), [], reference.get_params(ref_state), exact=True)

    @jax.jit
    def reference_update(state, x, y, idx):
        svi = plated(idx)
        svi.constrain_fn = reference.constrain_fn
        return svi.update(state, x, y)

    ref_losses, losses = [], []
    for i in BATCHES:
        ref_state, loss_value = reference_update(ref_state, X[i], Y[i], jnp.asarray(i))
        ref_losses.append(float(loss_value))
        state, loss_value = dp.update(state, X[i], Y[i], indices=i)
        losses.append(float(loss_value))
    ref_params = reference.get_params(ref_state)
    assert_same_run(np.array(losses), dp.get_params(state), np.array(ref_losses), ref_params)
    # A plate that drew its own indices would read other offsets: equality with the
    # reference shows that the given indices reached the model on every device.
    print("init, and subsample indices substituted into the sharded plate: ok", flush=True)


def check_clear_errors():
    dp = data_parallel_svi(make_svi(logistic), make_mesh(8))
    for batch, indices, message in [
        (60, None, "multiple of the 8 devices"),
        (64, np.arange(64), "subsample_plate"),
    ]:
        try:
            dp.update(None, X[:batch], Y[:batch], indices=indices)
        except ValueError as error:
            assert message in str(error), error
        else:
            raise AssertionError(f"expected a ValueError about {message}")
    print("clear errors for an indivisible batch and stray indices: ok", flush=True)


# ---------------------------------------------------------------------- NeuTra chains
LOC = jnp.array([1.0, -1.0])
COV = jnp.array([[1.0, 0.8], [0.8, 1.0]])


def gaussian():
    """A correlated 2-D Gaussian: the exact posterior moments are LOC and COV."""
    numpyro.sample("z", dist.MultivariateNormal(LOC, covariance_matrix=COV))


def neutra_guide():
    guide = AutoIAF(gaussian, num_flows=1, hidden_dims=[8], init_scale=1.0)
    svi = SVI(gaussian, guide, optax.adam(1e-3), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.key(0)))
    # A generic, non-identity flow: NeuTra is exact whatever the guide.
    # (the flow's pytree: weight matrices get noise scaled by their fan-in)
    params["auto_flow"] = randomize_params(guide.flow_params(params), jax.random.key(1), 0.3)
    return guide, params


NUM_CHAINS, NUM_DRAWS, NUM_COMPARED = 8, 300, 50


def run_chains(guide, params, chain_method):
    # Fixed step size and unit mass matrix (the geometry NeuTra's warped space is built
    # for): with no adaptation to amplify them, the last-bit differences between
    # differently compiled programs stay at float level for many draws.
    return neutra_nuts(
        jax.random.key(2),
        guide,
        params,
        num_warmup=0,
        num_samples=NUM_DRAWS,
        num_chains=NUM_CHAINS,
        chain_method=chain_method,
        progress_bar=False,
        khat_samples=0,
        nuts_kwargs=dict(adapt_step_size=False, adapt_mass_matrix=False, step_size=0.4),
    )


def devices_of(result):
    return result.mcmc.last_state.z["auto_shared_latent"].sharding.device_set


def assert_targets_the_posterior(z):
    """Pooled mean within 5 Monte Carlo standard errors, sd within 20%, of the exact ones."""
    ess = effective_sample_size(np.asarray(z))
    assert np.all(ess > 200), ess
    mean, sd = z.reshape(-1, 2).mean(0), z.reshape(-1, 2).std(0)
    exact_sd = np.sqrt(np.diag(COV))
    assert np.all(np.abs(mean - LOC) < 5 * exact_sd / np.sqrt(ess)), (mean, ess)
    np.testing.assert_allclose(sd, exact_sd, rtol=0.2)


def check_neutra_chains_over_devices():
    guide, params = neutra_guide()
    # The 1-device reference runs the 8 chains vectorised on device 0. (NumPyro's default on
    # one device, "sequential", compiles once per chain, ~10 s each here; with adaptation
    # off its draws agree with these to ~1e-6 as well.)
    one = run_chains(guide, params, sharded_chains(devices=jax.devices()[:1]))
    assert len(devices_of(one)) == 1
    assert_targets_the_posterior(one.samples["z"])
    runs = {
        "parallel (pmap), 8 devices": (run_chains(guide, params, "parallel"), 8),
        "sharded_chains, 4 devices x 2": (
            run_chains(guide, params, sharded_chains(devices=jax.devices()[:4])),
            4,
        ),
    }
    for name, (result, num_devices) in runs.items():
        assert len(devices_of(result)) == num_devices, (name, devices_of(result))
        assert set(result.samples) == set(one.samples) == {"z"}
        assert result.samples["z"].shape == one.samples["z"].shape == (8, NUM_DRAWS, 2)
        for stat in one.sample_stats:
            assert result.sample_stats[stat].shape == one.sample_stats[stat].shape, stat
        # The same chains as on one device; over the first draws to float tolerance (a
        # float-level difference may, rarely, flip one accept or U-turn decision later).
        np.testing.assert_allclose(
            result.samples["z"][:, :NUM_COMPARED], one.samples["z"][:, :NUM_COMPARED], atol=1e-4
        )
        assert_targets_the_posterior(result.samples["z"])
        print(f"NeuTra chains, {name}, equal the 1-device chains: ok", flush=True)


CHECKS = [
    check_data_parallel_svi_matches_single_device,
    check_init_and_subsample_indices,
    check_clear_errors,
    check_neutra_chains_over_devices,
    check_hybrid_guide_data_parallel_matches_single_device,
]

if __name__ == "__main__":
    import time

    for check in CHECKS:
        start = time.perf_counter()
        check()
        print(f"  ({check.__name__}: {time.perf_counter() - start:.1f} s)", flush=True)
