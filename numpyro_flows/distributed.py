"""Scale out with JAX's own SPMD: data-parallel minibatch SVI and NeuTra chains over devices.

Nothing here schedules work itself. A minibatch is split over a 1-D device mesh
(:class:`jax.sharding.NamedSharding` with ``PartitionSpec("data")``), the SVI state (guide
parameters, optimiser state, PRNG key) is replicated, and one :func:`jax.jit`-ed
``SVI.update`` runs on every device: XLA's SPMD partitioner (GSPMD) keeps the per-datum
log-likelihood on the device that holds the datum and all-reduces the sums, hence the
gradient. NeuTra chains go over devices with NumPyro's ``chain_method="parallel"``
(:func:`jax.pmap`) or with :func:`sharded_chains`, a ``chain_method`` that runs blocks of
vectorised chains under :func:`jax.shard_map`.

Data parallelism means: the observations sit in a plate subsampled to the minibatch
(``numpyro.plate("data", N, subsample_size=B)``), whose ``N / B`` scaling NumPyro applies;
the global latents and the guide parameters are replicated. With
:class:`~numpyro_flows.AutoHybridFlow`, local latents in that plate are drawn on the
device that holds their row.

Example::

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([x.shape[-1]]).to_event(1))
        with numpyro.plate("data", NUM_DATA, subsample_size=x.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)

    svi = SVI(model, AutoIAF(model), optax.adam(1e-3), Trace_ELBO())
    dp = data_parallel_svi(svi, make_mesh())          # every device of every host
    state = dp.init(jax.random.key(0), x[:B], y[:B])
    for idx in batches:                                # host-side minibatch indices
        state, loss = dp.update(state, x[idx], y[idx])
    params = dp.get_params(state)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from numpyro.handlers import substitute
from numpyro.infer import SVI
from numpyro.infer.svi import SVIState

from numpyro_flows.bijections.base import _is_concrete

DATA_AXIS = "data"
CHAIN_AXIS = "chains"


# ---------------------------------------------------------------------- meshes and arrays
def make_mesh(
    num_devices: int | None = None,
    axis_name: str = DATA_AXIS,
    *,
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """A 1-D device mesh for data parallelism.

    Args:
        num_devices: mesh size (default: all of ``devices``).
        axis_name: name of the mesh axis the batch is split over.
        devices: the devices to use (default :func:`jax.devices`, i.e. every device of every
            process after :func:`jax.distributed.initialize`).

    Returns:
        A :class:`jax.sharding.Mesh` with one axis of type ``AxisType.Auto``: shardings
        propagate through NumPyro's code by GSPMD, without explicit-sharding annotations.
    """
    devices = list(jax.devices() if devices is None else devices)
    num_devices = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"num_devices must be between 1 and the {len(devices)} available devices, got "
            f"{num_devices}. On CPU, simulate more with "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts."
        )
    return jax.make_mesh(
        (num_devices,), (axis_name,), axis_types=(AxisType.Auto,), devices=devices[:num_devices]
    )


def batch_sharding(mesh: Mesh, axis_name: str = DATA_AXIS) -> NamedSharding:
    """Leading (batch) axis split over ``axis_name``, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(axis_name))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch, mesh: Mesh, axis_name: str = DATA_AXIS):
    """Splits the leading axis of every array in ``batch`` (a pytree) over the mesh.

    In one process the leaves are the whole minibatch. With several processes
    (:func:`jax.distributed.initialize`) each process passes *its own* rows and the global
    minibatch is all of them, placed by :func:`jax.make_array_from_process_local_data`
    on the process's devices (the likelihood is a sum over rows, so their order does not
    matter). Leaves already sharded this way are returned as they are.

    Args:
        batch: a pytree of arrays with a common leading batch axis.
        mesh: the device mesh (see :func:`make_mesh`).
        axis_name: the mesh axis to split over.

    Returns:
        The same pytree of global :class:`jax.Array` s, sharded ``PartitionSpec(axis_name)``.

    Raises:
        ValueError: a leaf is a scalar, or its global batch size is not a multiple of the
            mesh size.
    """
    sharding = batch_sharding(mesh, axis_name)
    size = mesh.shape[axis_name]
    multi_process = jax.process_count() > 1

    def put(leaf):
        if np.ndim(leaf) == 0:
            raise ValueError(
                "Every leaf of a sharded batch needs a leading batch axis; got a scalar. Pass "
                "constants (such as the data size) through model_kwargs instead."
            )
        if not _is_concrete(leaf):  # inside jit or lax.scan: a constraint
            _check_divisible(np.shape(leaf)[0], size, axis_name)
            return jax.lax.with_sharding_constraint(leaf, sharding)
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        local = isinstance(leaf, np.ndarray | np.generic) or (
            isinstance(leaf, jax.Array) and leaf.is_fully_addressable
        )
        rows = np.shape(leaf)[0] * (jax.process_count() if multi_process and local else 1)
        _check_divisible(rows, size, axis_name)
        if multi_process and local:
            return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))
        return jax.device_put(leaf, sharding)

    return jax.tree.map(put, batch)


def _check_divisible(rows: int, size: int, axis_name: str) -> None:
    if rows % size:
        raise ValueError(
            f"The batch size {rows} is not a multiple of the {size} devices on mesh axis "
            f"'{axis_name}'. Pick a minibatch size divisible by the number of devices."
        )


def replicate(tree, mesh: Mesh):
    """Copies every array of ``tree`` (e.g. an ``SVIState``) to every device of ``mesh``.

    With several processes every process must pass the same values (JAX checks it).
    """
    sharding = replicated_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda leaf: _replicate_across_processes(leaf, sharding), tree)


def _replicate_across_processes(leaf, sharding):
    # Multi-controller device_put takes host values (equal on every process) or global
    # arrays, not arrays committed to one local device: go through the host.
    if not (isinstance(leaf, jax.Array) and leaf.is_fully_addressable):
        return jax.device_put(leaf, sharding)
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = jax.device_put(np.asarray(jax.random.key_data(leaf)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    return jax.device_put(np.asarray(leaf), sharding)


# ---------------------------------------------------------------------- data-parallel SVI
class DataParallelSVI(NamedTuple):
    """Pure functions of data-parallel SVI over one device mesh (see :func:`data_parallel_svi`).

    Attributes:
        mesh: the device mesh.
        init: ``init(rng_key, *batch, indices=None) -> SVIState``, replicated over the mesh
            (runs ``SVI.init``: the guide is set up on this batch).
        update: ``update(state, *batch, indices=None) -> (state, loss)``, one jitted SVI step
            with the batch split over the mesh; the state and the loss come back replicated.
            It also runs inside ``jax.jit`` and ``jax.lax.scan`` (over minibatches stacked
            ``(steps, B, ...)``), where the batch gets a sharding constraint.
        evaluate: ``evaluate(state, *batch, indices=None) -> loss`` without a step.
        get_params: ``get_params(state) -> dict`` of constrained guide parameters.
    """

    mesh: Mesh
    init: Callable[..., SVIState]
    update: Callable[..., tuple[SVIState, jax.Array]]
    evaluate: Callable[..., jax.Array]
    get_params: Callable[[SVIState], dict]


def data_parallel_svi(
    svi: SVI,
    mesh: Mesh | None = None,
    *,
    axis_name: str = DATA_AXIS,
    subsample_plate: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> DataParallelSVI:
    """Data-parallel minibatch SVI: the batch split over ``mesh``, the state replicated.

    Every positional argument of the model is a minibatch array (or pytree of arrays) whose
    leading axis is the batch; its rows are split over the devices of ``mesh``. The model
    puts its observations in a plate of the full data size subsampled to the minibatch
    (``numpyro.plate(name, N, subsample_size=B)`` with ``obs=`` the minibatch rows), so the
    likelihood is scaled by ``N / B``; global latents are replicated (locals, with
    :class:`~numpyro_flows.AutoHybridFlow`, are drawn where their rows are).

    One step is ``SVI.update`` under :func:`jax.jit` with the state replicated and the
    batch sharded; GSPMD partitions the per-datum terms and all-reduces their sums. The
    result equals the single-device ``jax.jit(svi.update)`` on the same batch and key, up
    to the order of floating-point reductions.

    Args:
        svi: a :class:`numpyro.infer.SVI` (model, guide, optimiser, loss).
        mesh: a device mesh with an axis ``axis_name`` (default :func:`make_mesh` over all
            devices); on a mesh with more axes the batch is replicated over the others.
        axis_name: the mesh axis the batch is split over.
        subsample_plate: name of the model's subsampled plate. If given, ``update`` and
            friends take ``indices=`` (the minibatch's row numbers in the full data, shape
            ``(B,)``) and substitute them for the plate's own random draw, which otherwise
            costs ``O(N)`` per step on every device (a permutation of the full data size).
        model_kwargs: keyword arguments of the model and guide, fixed for the run and
            closed over (static Python values such as the data size are fine).

    Returns:
        A :class:`DataParallelSVI` of pure ``init`` / ``update`` / ``evaluate`` /
        ``get_params`` functions.
    """
    mesh = make_mesh(axis_name=axis_name) if mesh is None else mesh
    if axis_name not in mesh.shape:
        raise ValueError(f"The mesh has no axis '{axis_name}' (axes: {tuple(mesh.shape)}).")
    model_kwargs = dict(model_kwargs or {})
    replicated = replicated_sharding(mesh)
    sharded = batch_sharding(mesh, axis_name)

    def bound(indices) -> SVI:
        if indices is None:
            return svi
        # A shallow copy shares the optimiser and the constrain_fn set by SVI.init.
        local = copy.copy(svi)
        local.model = substitute(svi.model, data={subsample_plate: indices})
        local.guide = substitute(svi.guide, data={subsample_plate: indices})
        return local

    def _update(state, batch, indices):
        return bound(indices).update(state, *batch, **model_kwargs)

    def _evaluate(state, batch, indices):
        return bound(indices).evaluate(state, *batch, **model_kwargs)

    jit_update = jax.jit(
        _update,
        in_shardings=(replicated, sharded, sharded),
        out_shardings=(replicated, replicated),
    )
    jit_evaluate = jax.jit(
        _evaluate, in_shardings=(replicated, sharded, sharded), out_shardings=replicated
    )

    def place(batch, indices):
        if indices is not None and subsample_plate is None:
            raise ValueError(
                "indices were given but data_parallel_svi was built without "
                "subsample_plate=<the name of the model's subsampled plate>."
            )
        batch = shard_batch(batch, mesh, axis_name)
        if indices is not None:
            indices = shard_batch(indices, mesh, axis_name)
        return batch, indices

    def init(rng_key, *batch, indices=None) -> SVIState:
        batch, indices = place(batch, indices)
        local = bound(indices)
        state = local.init(rng_key, *batch, **model_kwargs)
        svi.constrain_fn = local.constrain_fn  # SVI.init sets it; every step needs it
        return replicate(state, mesh)

    def update(state: SVIState, *batch, indices=None) -> tuple[SVIState, jax.Array]:
        return jit_update(state, *place(batch, indices))

    def evaluate(state: SVIState, *batch, indices=None) -> jax.Array:
        return jit_evaluate(state, *place(batch, indices))

    return DataParallelSVI(mesh, init, update, evaluate, svi.get_params)


# ---------------------------------------------------------------------- chains over devices
def sharded_chains(
    devices: Sequence[Any] | None = None, axis_name: str = CHAIN_AXIS
) -> Callable[[Callable], Callable]:
    """A ``chain_method`` that splits chains over devices and vectorises them within one.

    For :class:`numpyro.infer.MCMC` and :func:`~numpyro_flows.neutra.neutra_nuts`.

    The chains are split into equal blocks, one per device, with :func:`jax.shard_map`;
    each device runs its block with :func:`jax.vmap`. Unlike ``"parallel"``
    (:func:`jax.pmap`, one chain per device, falling back to sequential when chains
    outnumber devices) any number of chains works: 16 chains on 8 devices is 2 per device.
    The devices used are the largest number of ``devices`` that divides the number of
    chains. The chains share no data, so no collective runs between devices.

    Args:
        devices: devices to run on (default :func:`jax.local_devices`: NumPyro gathers the
            draws on the host, so chains stay within one process).
        axis_name: name of the mesh axis of chains.

    Returns:
        A callable to pass as ``chain_method``; draws come back ``(chains, draws, ...)`` as
        with every other chain method. NumPyro disables its progress bar for callables
        (and warns if ``progress_bar=True``).

    Example::

        result = neutra_nuts(key, guide, params, data, num_chains=16,
                             chain_method=sharded_chains(), progress_bar=False)
    """

    def chain_method(map_fn: Callable) -> Callable:
        def run(map_args):
            num_chains = jax.tree.leaves(map_args)[0].shape[0]
            pool = list(jax.local_devices() if devices is None else devices)
            size = max(n for n in range(1, min(len(pool), num_chains) + 1) if num_chains % n == 0)
            mesh = jax.make_mesh(
                (size,), (axis_name,), axis_types=(AxisType.Auto,), devices=pool[:size]
            )
            spec = PartitionSpec(axis_name)
            # check_vma=False: the chains are independent and nothing in them is reduced
            # across devices, so there is no replication to check; the flows' layer scans
            # also carry per-chain values that the checker would need annotated.
            blocks = jax.shard_map(
                jax.vmap(map_fn), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False
            )
            return jax.jit(blocks)(map_args)

        return run

    return chain_method


__all__ = [
    "CHAIN_AXIS",
    "DATA_AXIS",
    "DataParallelSVI",
    "batch_sharding",
    "data_parallel_svi",
    "make_mesh",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "sharded_chains",
]
