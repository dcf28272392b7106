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


def maybe_initialize_distributed() -> None:
    """Join a multi-host run (``jax.distributed.initialize`` reads the cluster's
    environment: SLURM, Open MPI, GKE TPU, or JAX_COORDINATOR_ADDRESS et al.)."""
    jax.distributed.initialize()


@partial(jax.jit, static_argnums=(3,))
def _rollout_from_key_data(scheduler, params, key_data, n_slots: int):
    return jax.vmap(lambda kd: rollout_instance(scheduler, params, jax.random.wrap_key_data(kd),
                                                n_slots))(key_data)


def padded_size(n_instances: int, n_devices: int) -> int:
    return -(-n_instances // n_devices) * n_devices


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
