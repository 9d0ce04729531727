"""Multi-device SVI and NeuTra chains, on 8 simulated CPU devices in a separate process.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` only takes effect if it is set
before JAX starts, so the checks (distributed_checks.py) run in a fresh interpreter and
this process keeps its single device. The cheap argument checks run here.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from numpyro_flows.distributed import make_mesh, shard_batch

NUM_CHECKS = 6  # lines ending ": ok" printed by distributed_checks.py


def test_sharded_svi_and_neutra_chains_equal_the_single_device_run():
    here = Path(__file__).parent
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(here), str(here.parent)]),
        XLA_FLAGS=flags.strip(),
        JAX_PLATFORMS="cpu",
    )
    result = subprocess.run(
        [sys.executable, str(here / "distributed_checks.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok") == NUM_CHECKS, result.stdout


@pytest.mark.skipif(jax.device_count() != 1, reason="checks the one-device main process")
def test_make_mesh_and_shard_batch_on_one_device():
    mesh = make_mesh()
    assert dict(mesh.shape) == {"data": 1}
    x = shard_batch(np.ones((4, 2), np.float32), mesh)
    assert x.shape == (4, 2) and x.sharding.spec == jax.sharding.PartitionSpec("data")
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        make_mesh(2)
    with pytest.raises(ValueError, match="leading batch axis"):
        shard_batch({"n": np.float32(3.0)}, mesh)
