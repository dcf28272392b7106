"""Sharding the instance axis over every local (or, after ``jax.distributed``,
global) device with ``jax.sharding``.

Instances are independent, so the batch axis of a rollout is split over a
one-dimensional ``Mesh`` with a ``NamedSharding``; XLA runs each device's
share and nothing is communicated until the results are gathered. On one
CPU, one GPU or many the code is the same. To try several devices on a CPU,
set ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX starts.

Instance b gets the same key as in :func:`mecjax.rollout.rollout`, so sharded
and unsharded runs give the same per-instance numbers (sums over the batch
may differ in the last bits: reduction order).
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mecjax.config import as_params
from mecjax.rollout import rollout_instance
from mecjax.schedulers.base import Scheduler

AXIS = "instances"


def instance_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    # make_mesh defaults to Explicit axes, which breaks a plain vmap over keys made inside
    # jit (docs/design.md, measured facts); Auto lets XLA propagate the batch sharding.
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Join a multi-host run. With no arguments ``jax.distributed.initialize`` takes the
    number of processes and this process's id from a cluster manager it detects (SLURM,
    Open MPI, Kubernetes, mpi4py); elsewhere give all three (``--coordinator HOST:PORT
    --num-processes P --process-id I`` on the command line)."""
    kw = {k: v for k, v in (("coordinator_address", coordinator), ("num_processes", num_processes),
                            ("process_id", process_id)) if v is not None}
    jax.distributed.initialize(**kw)


@partial(jax.jit, static_argnums=(3,))
def _rollout_from_key_data(scheduler, params, key_data, n_slots: int):
    return jax.vmap(lambda kd: rollout_instance(scheduler, params, jax.random.wrap_key_data(kd),
                                                n_slots))(key_data)


def padded_size(n_instances: int, n_devices: int) -> int:
    return -(-n_instances // n_devices) * n_devices


def compile_sharded_rollout(scheduler: Scheduler, params, n_instances: int,
                            n_slots: int | None = None, mesh: Mesh | None = None):
    """The compiled program :func:`sharded_rollout` runs for these sizes, without running
    it (for a memory preflight, ``mecjax.preflight.check_compiled``)."""
    n_slots = as_params(params).horizon if n_slots is None else n_slots
    mesh = instance_mesh() if mesh is None else mesh
    total = padded_size(n_instances, mesh.devices.size)
    keys = jax.eval_shape(lambda: jax.random.key_data(jax.random.split(jax.random.key(0), total)))
    keys = jax.ShapeDtypeStruct(keys.shape, keys.dtype,
                                sharding=NamedSharding(mesh, PartitionSpec(AXIS)))
    return _rollout_from_key_data.lower(scheduler, params, keys, n_slots).compile()


def sharded_rollout(scheduler: Scheduler, params, key: jax.Array, n_instances: int,
                    n_slots: int | None = None, mesh: Mesh | None = None) -> dict[str, np.ndarray]:
    """:func:`mecjax.rollout.rollout` with the instance axis sharded over ``mesh``.

    Pads the batch to a multiple of the device count (the padding repeats the
    last instance and is dropped). Returns host NumPy arrays ``{metric: [B, T]}``,
    gathered from every process in a multi-host run.
    """
    if n_instances < 1:
        raise ValueError(f"n_instances={n_instances} must be >= 1")
    n_slots = as_params(params).horizon if n_slots is None else n_slots
    mesh = instance_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    total = padded_size(n_instances, n_dev)
    key_data = np.asarray(jax.random.key_data(jax.random.split(key, n_instances)))
    key_data = np.concatenate([key_data, np.repeat(key_data[-1:], total - n_instances, 0)])
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    # Each process supplies only the shards it holds: the same code runs on one host or many.
    global_keys = jax.make_array_from_callback(key_data.shape, sharding, lambda idx: key_data[idx])
    out = _rollout_from_key_data(scheduler, params, global_keys, n_slots)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        out = multihost_utils.process_allgather(out, tiled=True)
    return {k: np.asarray(v)[:n_instances] for k, v in out.items()}
