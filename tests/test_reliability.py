"""A wrong answer is never silent: data checks, clear errors for misuse, degenerate
results and safe file writes (issue 12). The command line's side is in test_cli.py."""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.initialization import init_to_median

import numpyro_flows
from numpyro_flows import AutoIAF, AutoNeuralSpline, checks, flows
from numpyro_flows.checks import check_model_data
from numpyro_flows.neutra import NeuTraResult
from numpyro_flows.reports import mcmc_report
from numpyro_flows.serialization import load_guide, save_guide
from numpyro_flows.training import FitResult


# ---------------------------------------------------------------------- model data
def test_nested_lists_become_arrays_and_everything_else_passes_through():
    def sizes(n):
        return n

    args, kwargs = check_model_data(
        ([1.0, 2.0],),
        {
            "data": {"y": [[1.0, 2.0], [3.0, 4.0]], "counts": [1, 2], "mask": [True, False]},
            "n": 3,
            "name": "a",
            "missing": None,
            "flag": True,
            "fn": sizes,
            "shape": (3, 4),
            "ragged": [[1.0], [2.0, 3.0]],
            "array": np.ones(2),
        },
    )
    assert isinstance(args[0], jax.Array) and args[0].dtype == jnp.float32
    data = kwargs["data"]
    assert data["y"].shape == (2, 2) and data["y"].dtype == jnp.float32
    assert jnp.issubdtype(data["counts"].dtype, jnp.integer)
    assert data["mask"].dtype == jnp.bool_
    assert kwargs["n"] == 3 and kwargs["name"] == "a" and kwargs["missing"] is None
    assert kwargs["flag"] is True and kwargs["fn"] is sizes and kwargs["shape"] == (3, 4)
    assert [r.shape for r in kwargs["ragged"]] == [(1,), (2,)]
    assert kwargs["array"] is not None and isinstance(kwargs["array"], np.ndarray)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"y": [1.0, float("nan")]}, r"model data y\[1\] is NaN"),
        ({"data": {"y": [[1.0, 2.0], [3.0, float("inf")]]}}, r"data\['y'\]\[1, 1\] is infinite"),
        ({"y": [1.0, 1e30, 2e30]}, r"y\[1\] = 1e\+30 \(and 1 more\) is beyond 1.8e\+19"),
        ({"y": np.array([0.0, -1e25])}, r"y\[1\] = -1e\+25 is beyond .* float64"),
        ({"y": [1.0, None]}, r"y\[1\] is null \(None\) inside a list of numbers"),
        ({"y": [3_000_000_000]}, r"y\[0\] is an integer beyond the int32 range"),
    ],
)
def test_bad_values_are_named_by_key_and_index(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_model_data((), kwargs)


def test_positional_arguments_are_named_by_position():
    with pytest.raises(ValueError, match=r"args\[1\]\[0\] is NaN"):
        check_model_data((1.0, [float("nan")]), {})


def test_the_overflow_rule_follows_the_float_type(monkeypatch):
    """|x| > sqrt(finfo.max): 1e30 overflows when squared in float32, not in float64."""
    assert checks.overflow_bound() == pytest.approx(np.sqrt(np.finfo(np.float32).max))
    check_model_data((), {"y": [1e19]})  # large but valid
    monkeypatch.setattr(checks, "float_dtype", lambda: np.dtype(np.float64))
    check_model_data((), {"y": np.array([1e30])})
    with pytest.raises(ValueError, match="float64"):
        check_model_data((), {"y": np.array([1e200])})


# ---------------------------------------------------------------------- flows
COUPLING_FLOWS = {
    "realnvp": flows.realnvp,
    "glow": flows.glow,
    "neural_spline_coupling": lambda: flows.neural_spline(coupling=True),
}


@pytest.mark.parametrize("name", list(COUPLING_FLOWS))
def test_coupling_flows_accept_an_empty_batch(name, key):
    flow = COUPLING_FLOWS[name]()
    transform = flow.transform(flow.init(key, 2))
    empty = jnp.zeros((0, 2))
    y, log_det = transform.forward_and_log_det(empty)
    assert y.shape == (0, 2) and log_det.shape == (0,)
    x, log_det = transform.inverse_and_log_det(empty)
    assert x.shape == (0, 2) and log_det.shape == (0,)


def test_a_vector_of_the_wrong_size_gets_a_clear_error(key):
    flow = flows.realnvp()
    transform = flow.transform(flow.init(key, 2))
    message = "params are for events of size 2, but its input x was given size 3"
    with pytest.raises(ValueError, match=message):
        transform(jnp.zeros(3))
    with pytest.raises(ValueError, match="inverse input y was given size 3"):
        transform.inv(jnp.zeros((4, 3)))


def test_another_flows_params_get_a_clear_error(key):
    spline = flows.neural_spline()
    with pytest.raises(ValueError, match="These params do not fit the neural_spline flow"):
        spline.transform(flows.iaf().init(key, 3))
    with pytest.raises(ValueError, match="These params do not fit"):
        spline.transform({"not": jnp.zeros(2)})


def test_fit_on_no_rows_says_so(key):
    with pytest.raises(ValueError, match=r"data has no rows \(shape \(0, 2\)\)"):
        numpyro_flows.fit(key, flows.neural_spline(coupling=True), np.zeros((0, 2)))


# ---------------------------------------------------------------------- guides
def two_latents():
    numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


def three_latents():
    numpyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))


def initial_params(model, guide):
    """A guide's parameters as SVI sets them up (what is saved and loaded, without the
    compilation of a training step)."""
    svi = SVI(model, guide, optax.adam(1e-3), Trace_ELBO())
    return svi.get_params(svi.init(jax.random.key(0)))


@pytest.fixture(scope="module")
def saved_guide(tmp_path_factory):
    guide = AutoNeuralSpline(two_latents)
    path = tmp_path_factory.mktemp("guide") / "guide.pkl"
    save_guide(path, guide, initial_params(two_latents, guide))
    return path


def test_saved_guides_get_the_umask_mode(tmp_path, saved_guide):
    guide, params = load_guide(saved_guide)
    old = os.umask(0o027)
    try:
        save_guide(tmp_path / "g.pkl", guide, params)
    finally:
        os.umask(old)
    assert (tmp_path / "g.pkl").stat().st_mode & 0o777 == 0o640


def test_a_loaded_guide_given_another_guides_params_says_so(saved_guide):
    guide, _ = load_guide(saved_guide)
    key = jax.random.key(1)
    other = initial_params(three_latents, AutoNeuralSpline(three_latents))
    with pytest.raises(ValueError, match="'auto_flow' holds 1611 values where .* has 1170"):
        guide.sample_posterior(key, other, sample_shape=(5,))
    iaf = initial_params(two_latents, AutoIAF(two_latents))
    with pytest.raises(ValueError, match="made for another guide"):
        guide.sample_posterior(key, iaf, sample_shape=(5,))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty: it is not a numpyro_flows guide file"),
        (None, "is damaged or not a numpyro_flows guide file"),  # truncated
        (b"\x80\x05garbage\xff\xfe", "is damaged or not a numpyro_flows guide file"),
        ("é".encode("latin-1") * 10, "is damaged or not a numpyro_flows guide file"),
        (pickle.dumps([1, 2]), "is not a numpyro_flows guide file: it holds a pickled list"),
    ],
)
def test_load_guide_names_a_damaged_file(tmp_path, saved_guide, content, message):
    path = tmp_path / "bad.pkl"
    path.write_bytes(saved_guide.read_bytes()[:100] if content is None else content)
    with pytest.raises(ValueError, match=message) as error:
        load_guide(path)
    assert str(path) in str(error.value)


def blows_up(y):
    """Finite at the median (theta = 0); the likelihood's loc overflows for most of
    init_to_uniform's draws in (-2, 2), as an ODE solution can."""
    theta = numpyro.sample("theta", dist.Normal(0.0, 0.1).expand([4]).to_event(1))
    loc = jnp.exp(jnp.exp(5.0 * jnp.max(jnp.abs(theta))))
    numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)


@pytest.mark.slow  # 9-30 s a preset; the default run sets up guides on valid models everywhere
@pytest.mark.parametrize("preset", [AutoNeuralSpline, AutoIAF])
def test_the_discrete_latent_check_does_not_fail_a_valid_model_under_validation(preset):
    guide = preset(blows_up, init_loc_fn=init_to_median, init_scale=0.1)
    with numpyro.validation_enabled():
        svi = SVI(blows_up, guide, optax.adam(1e-3), Trace_ELBO())
        result = svi.run(jax.random.key(0), 5, np.array([3.0, 2.5]), progress_bar=False)
    assert result.losses.shape == (5,)
    assert np.all(np.isfinite(result.losses))


# ---------------------------------------------------------------------- reports and reprs
def test_mcmc_report_names_each_problem_and_its_fix():
    rng = np.random.default_rng(0)
    stuck = rng.normal(size=(2, 50, 3)) + np.array([0.0, 1.0])[:, None, None]
    report = mcmc_report({"b": stuck}, {"diverging": np.ones((2, 50), bool)})
    assert report.num_divergences == 100
    assert report.max_rhat > 1.01 and report.max_rhat_site == "b"
    problems = report.problems()
    assert problems[0].startswith("100 divergent transitions: raise target_accept_prob")
    assert any("max r-hat" in p and "run longer chains" in p for p in problems)
    assert any(p.startswith("min bulk ESS") for p in problems)
    assert any(p.startswith("min tail ESS") for p in problems)
    assert "<< BAD" in str(report)
    good = mcmc_report({"a": rng.normal(size=(4, 500))}, {"diverging": np.zeros((4, 500))})
    assert good.problems() == [] and "BAD" not in str(good)


def test_result_tuples_print_short():
    fit = FitResult(
        params={"w": np.zeros((1000, 8)), "b": np.zeros(8)},
        state=None,
        train_losses=np.linspace(3, 1, 200),
        val_losses=np.linspace(3, 1.1, 200),
        best_epoch=199,
        num_steps=4000,
        stop_reason="completed",
    )
    text = repr(fit)
    assert "stop_reason='completed'" in text and "2 arrays (8008 values)" in text
    assert len(text) < 300
    neutra = NeuTraResult(
        samples={"mu": np.zeros((4, 1000)), "theta": np.zeros((4, 1000, 8))},
        sample_stats={"diverging": np.zeros((4, 1000), bool)},
        khat=0.42,
        mcmc=None,
        reparam=None,
    )
    assert repr(neutra) == (
        "NeuTraResult(khat=0.42, divergences=0, samples={mu: (4, 1000), theta: (4, 1000, 8)})"
    )
