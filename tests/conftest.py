"""Shared test helpers. Tests run in float32; float64 checks run in their own process."""

import os
import shutil
import tempfile

import jax
import pytest

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    # One persistent compilation cache for the run, shared by the xdist workers and the
    # subprocesses tests start (they inherit the environment): many tests build the same
    # guide on the same model, and XLA then compiles it once. Tracing is not cached, so
    # the retracing checks still see every trace. The directory is new for each run and
    # removed at its end, so nothing carries over between runs.
    if _CACHE_ENV not in os.environ:
        config._jax_cache_dir = tempfile.mkdtemp(prefix="numpyro-flows-tests-jax-cache-")
        os.environ[_CACHE_ENV] = config._jax_cache_dir
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.05")
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )


def pytest_unconfigure(config):
    cache_dir = getattr(config, "_jax_cache_dir", None)
    if cache_dir is not None:
        shutil.rmtree(cache_dir, ignore_errors=True)
        os.environ.pop(_CACHE_ENV, None)


@pytest.fixture
def key():
    return jax.random.key(0)
