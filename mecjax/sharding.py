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

A multi-host run (``jax.distributed``) is driven from the command line by the
flags :func:`add_distributed_arguments` adds; every process runs the same
program, and the helpers below keep them in step: only process 0 writes
(:func:`is_writer`), a decision only it can take (what a cache holds) reaches
the others through :func:`from_process_0`, and a step that fails on one process
(a refusal, an unreadable checkpoint) is raised on all (:func:`agreed`) instead
of leaving the others waiting in a collective.
"""

from __future__ import annotations

import argparse
import hashlib
from functools import partial

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mecjax.config import as_params
from mecjax.outputs import UserError
from mecjax.preflight import compiled_bytes
from mecjax.rollout import rollout_instances
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


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a multi-host run: ``--distributed``, ``--coordinator``,
    ``--num-processes``, ``--process-id`` (read back by :func:`distributed_args`)."""
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() first (multi-host runs; the "
                             "cluster manager, SLURM, Open MPI, Kubernetes, gives the processes)")
    parser.add_argument("--coordinator", metavar="HOST:PORT",
                        help="multi-host run without a cluster manager: process 0's address "
                             "(implies --distributed; give --num-processes and --process-id too)")
    parser.add_argument("--num-processes", type=int, metavar="P")
    parser.add_argument("--process-id", type=int, metavar="I")


def distributed_args(args: argparse.Namespace) -> dict | None:
    """The keyword arguments of :func:`initialize_distributed` the flags of
    :func:`add_distributed_arguments` ask for, or None for a single-process run."""
    manual = (args.coordinator, args.num_processes, args.process_id)
    if all(v is None for v in manual):
        return {} if args.distributed else None
    if any(v is None for v in manual):
        raise UserError("--coordinator, --num-processes and --process-id go together")
    if args.num_processes < 1:
        raise UserError(f"--num-processes {args.num_processes} must be >= 1")
    if not 0 <= args.process_id < args.num_processes:
        raise UserError(f"--process-id {args.process_id} must be in [0, {args.num_processes})")
    return {"coordinator": args.coordinator, "num_processes": args.num_processes,
            "process_id": args.process_id}


def is_writer() -> bool:
    """Whether this process writes: process 0 of a multi-host run, or the only one (one
    writer per shared directory)."""
    return jax.process_index() == 0


def all_agree(flag: bool) -> bool:
    """Whether every process of a multi-host run says ``flag`` (a collective: every
    process must call it); in a single process, ``flag``."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.array([flag], np.int32))))


def from_process_0(values: np.ndarray) -> np.ndarray:
    """Process 0's ``values`` on every process (a collective; the array's shape and dtype
    must be the same on all); in a single process, ``values``."""
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(values))


def agreed(step, elsewhere: str):
    """``step()`` on every process, then a check that none failed: an error raised on any
    process (a refusal such as a busy directory, or an unreadable checkpoint) is raised on
    every one (its own error where it was raised, ``UserError(elsewhere)`` on the others),
    so no process is left waiting in a collective for one that stopped. Returns
    ``step()``'s value."""
    try:
        value, error = step(), None
    except Exception as err:       # whatever it is, the others must not wait for this one
        value, error = None, err
    if not all_agree(error is None):
        raise error or UserError(elsewhere)
    return value


def same_on_every_process(text: str) -> bool:
    """Whether every process of a multi-host run holds the same ``text`` (compared by a
    SHA-256 digest; a collective)."""
    mine = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
    return all_agree(bool(np.array_equal(from_process_0(mine), mine)))


def host_bytes(compiled) -> int | None:
    """Peak bytes a compiled sharded program needs on this host (None where the backend does
    not say): XLA reports one device's share; CPU "devices" of one process share the host's
    memory, so on a CPU that share counts once per local device."""
    per_device = compiled_bytes(compiled)
    if per_device is None or jax.local_devices()[0].platform != "cpu":
        return per_device
    return per_device * jax.local_device_count()


@partial(jax.jit, static_argnums=(3,))
def _rollout_from_key_data(scheduler, params, key_data, n_slots: int):
    return rollout_instances(scheduler, params, jax.random.wrap_key_data(key_data), n_slots)


def padded_size(n_instances: int, n_devices: int) -> int:
    return -(-n_instances // n_devices) * n_devices


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def replicated(tree, mesh: Mesh):
    """``tree`` with every array leaf (e.g. a learned scheduler's weights, loaded on one
    device) copied whole to every device of ``mesh``. A jitted program takes no argument
    committed to one device beside others spread over the mesh; every process supplies its
    own devices' copies, so each must hold the same values (the same checkpoint)."""
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(x):
        if not _is_array(x):
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree)


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
    whole = NamedSharding(mesh, PartitionSpec())
    scheduler, params = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=whole) if _is_array(x) else x,
        (scheduler, params))
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
    scheduler, params = replicated((scheduler, params), mesh)
    out = _rollout_from_key_data(scheduler, params, global_keys, n_slots)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        out = multihost_utils.process_allgather(out, tiled=True)
    return {k: np.asarray(v)[:n_instances] for k, v in out.items()}
