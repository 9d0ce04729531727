"""Multi-device SVI and NeuTra chains, on 8 simulated CPU devices in a separate process.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` only takes effect if it is set
before JAX starts, so the checks (distributed_checks.py) run in a fresh interpreter and
this process keeps its single device. The cheap argument checks run here.

The default run checks that data-parallel SVI on 8 devices equals the single-device run;
the other multi-device checks (subsample indices, argument errors, NeuTra chains over
devices) are marked ``slow``.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from numpyro_flows.distributed import make_mesh, shard_batch

# distributed_checks.py's checks and the lines ending ": ok" that each prints.
SVI_CHECKS = {"check_data_parallel_svi_matches_single_device": 2}
# The slow run: the subsample indices through the sharded plate, the argument errors,
# the NeuTra chains over devices (three 8-chain NUTS runs) and AutoHybridFlow's locals
# over devices.
CHAIN_CHECKS = {
    "check_init_and_subsample_indices": 1,
    "check_clear_errors": 1,
    "check_neutra_chains_over_devices": 2,
    "check_hybrid_guide_data_parallel_matches_single_device": 1,
}


def run_checks(checks):
    """The named checks of distributed_checks.py, in a fresh process with 8 CPU devices."""
    here = Path(__file__).parent
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(here), str(here.parent)]),
        XLA_FLAGS=flags.strip(),
        JAX_PLATFORMS="cpu",
    )
    calls = "; ".join(f"checks.{name}()" for name in checks)
    result = subprocess.run(
        [sys.executable, "-c", f"import distributed_checks as checks; {calls}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok") == sum(checks.values()), result.stdout


@pytest.mark.slow  # a fresh process on 8 simulated devices; the one-device checks stay
def test_sharded_svi_equals_the_single_device_run():
    run_checks(SVI_CHECKS)


@pytest.mark.slow
def test_subsample_indices_errors_and_neutra_chains_over_devices():
    run_checks(CHAIN_CHECKS)


def test_every_multi_device_check_runs():
    """No check of distributed_checks.py is left out of the two runs above (read from its
    source: importing it here would need the 8 devices)."""
    source = (Path(__file__).parent / "distributed_checks.py").read_text()
    names = {node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}
    assert {n for n in names if n.startswith("check_")} == set(SVI_CHECKS) | set(CHAIN_CHECKS)


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
