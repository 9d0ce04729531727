"""Shared test helpers. Tests run in float32; float64 checks run in their own process."""

import jax
import pytest


@pytest.fixture
def key():
    return jax.random.key(0)
