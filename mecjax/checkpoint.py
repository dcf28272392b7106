"""Save, restore and resume training runs with orbax.

A checkpoint directory holds one run: a sub-directory per saved step
(``<directory>/<step>/``, written by an orbax ``CheckpointManager``) with
three items: ``state``, the state pytree in orbax's own layout and tree
metadata (``StandardSave``; typed PRNG keys are stored by orbax as key data
plus their implementation); ``config``, the run's JSON config (method,
scenario, hyper-parameters); ``checksums``, JSON with the SHA-256 of the
config and of each leaf's bytes, and each key leaf's implementation.

Guarantees:

- ``restore`` compares orbax's tree metadata with the target before reading
  any array (:class:`CheckpointMismatchError` names the differing key paths)
  and every SHA-256 after: OCDBT/zarr do not checksum array data, so silent
  bit flips surface as :class:`CheckpointCorruptError`, as do unreadable files.
- ``save`` is synchronous and atomic (orbax writes a temporary directory and
  renames it when complete; the next ``save`` removes a crashed leftover),
  steps are monotone (an old step raises ``ValueError``) and only the newest
  ``keep`` steps stay, deleted after the new one is committed.
- Reading never writes: ``all_steps``, ``latest_step``, ``load_config`` and
  ``restore``, including every failure, leave the directory byte-identical.

Resume: ``state, config, step = restore(run_dir, init_state(key),
expect={"method": ...})`` if ``latest_step(run_dir)`` is not None, then
``save(run_dir, step, state, config)`` after each chunk.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["CheckpointCorruptError", "CheckpointMismatchError", "all_steps", "latest_step",
           "load_config", "restore", "save"]

FORMAT = "mecjax.checkpoint/2"
_STATE, _CONFIG, _SUMS = "state", "config", "checksums"


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the request: config fields or state structure differ."""


class CheckpointCorruptError(ValueError):
    """A checkpoint's files cannot be read back or do not match their recorded checksums."""


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _sha256(x) -> str:
    """SHA-256 of an array leaf's raw bytes in C order (a key's key data)."""
    arr = np.ascontiguousarray(jax.random.key_data(x) if _is_key(x) else x)
    return hashlib.sha256(arr.reshape(-1).view(np.uint8)).hexdigest()


def _config_sha(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _json(obj: Any, what: str) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists); TypeError if not JSON."""
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be JSON-serialisable: {e}") from None


def _leaves(tree) -> dict[str, Any]:
    """Leaves by key path, named as orbax's metadata names them (``['s']['opt']['0']``)."""
    return {"".join(f"[{k!r}]" for k in path): x for path, x in ocp.tree.to_flat_dict(tree).items()}


def _manager(d: Path, **options) -> ocp.CheckpointManager:
    # create=False, no root metadata and a lightweight init: opening a manager writes nothing.
    defaults = dict(create=False, enable_async_checkpointing=False, lightweight_initialize=True,
                    save_root_metadata=False)
    handlers = {_STATE: ocp.StandardCheckpointHandler(), _CONFIG: ocp.JsonCheckpointHandler(),
                _SUMS: ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(d, options=ocp.CheckpointManagerOptions(**defaults | options),
                                 item_handlers=handlers)


@contextlib.contextmanager
def _reading(where: str, what: str):
    """Raise any failure to read ``what`` as CheckpointCorruptError, after cleaning up orbax.

    orbax runs a read on a fresh event loop and stops at the first failed
    array, leaving the other reads pending on the closed loop. Left to the
    garbage collector, they report "Task exception was never retrieved" at an
    arbitrary later point (once, on CPython 3.11.7, inside ``ast.parse``,
    raising SystemError there). Let them finish and collect them now, quietly.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - whatever the reader raises, the files are damaged
        time.sleep(0.05)
        log = logging.getLogger("asyncio")
        log.addFilter(_quiet)
        try:
            gc.collect()
        finally:
            log.removeFilter(_quiet)
        raise CheckpointCorruptError(f"{where} is corrupt: cannot read {what} "
                                     f"({type(e).__name__}: {e})") from e


def _quiet(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(("Task exception was never retrieved",
                                               "Task was destroyed but it is pending"))


def _is_closed_loop(exc) -> bool:
    """``exc`` is asyncio's "Event loop is closed" (nothing else)."""
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


class _ClosedLoopFilter(logging.Filter):
    """Drop the log records of asyncio tasks (orbax's and tensorstore's) that failed only
    because an interrupted save or read had already closed their event loop.

    One record per abandoned task, each with a traceback: hundreds of lines that bury the
    real error (a full disk, a corrupt file) raised just before. Records carrying any
    other exception, and every other message, pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            exc = getattr(record, "exception", None)   # asyncio's context dict, if attached
        return not (_is_closed_loop(exc) or record.getMessage().rstrip().endswith(
            "RuntimeError: Event loop is closed"))


def _quiet_unraisable(unraisable) -> None:
    """``sys.unraisablehook`` that drops "Event loop is closed" from coroutines abandoned on
    a closed loop (printed as "Exception ignored in ...") and passes anything else to the
    hook it replaced."""
    if _is_closed_loop(getattr(unraisable, "exc_value", None)):
        return
    _previous_unraisablehook(unraisable)


def _install_noise_filters() -> None:
    global _previous_unraisablehook
    for name in ("asyncio", "absl", "orbax", "orbax.checkpoint"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _ClosedLoopFilter) for f in log.filters):
            log.addFilter(_ClosedLoopFilter())
    if sys.unraisablehook is not _quiet_unraisable:
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _quiet_unraisable


_previous_unraisablehook = sys.unraisablehook
_install_noise_filters()


def all_steps(directory) -> list[int]:
    """The committed steps in ``directory``, ascending (``[]`` if it does not exist)."""
    d = Path(os.path.abspath(directory))
    if not d.exists():
        return []
    with _manager(d) as mngr:
        return sorted(int(s) for s in mngr.all_steps())


def latest_step(directory) -> int | None:
    """The newest committed step in ``directory``; ``None`` if there is none or no directory."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def save(directory, step: int, state, config: Mapping[str, Any], *, keep: int | None = 3) -> Path:
    """Save ``state`` and ``config`` as checkpoint ``step`` of ``directory``; return the step dir.

    ``state``: a pytree of non-empty jax/numpy arrays and typed PRNG key arrays
    (``None`` nodes allowed); ``config``: a JSON dict (tuples read back as
    lists). Keeps the newest ``keep`` steps (``None``: all); returns once the
    step is committed. Raises ``TypeError``/``ValueError`` before writing
    anything for a bad leaf, config, ``keep`` or a step not newer than the latest.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be a positive int or None, got {keep!r}")
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise TypeError("config must be a dict with str keys")
    config = _json(dict(config), "config")
    leaves = {}
    for path, x in _leaves(state).items():
        if not isinstance(x, (jax.Array, np.ndarray)):
            raise TypeError(f"state leaf {path} is a {type(x).__name__}; checkpoints hold "
                            "jax/numpy arrays and PRNG key arrays")
        if x.size == 0:  # orbax refuses zero-size arrays
            raise ValueError(f"state leaf {path} has zero size {x.shape}; it cannot be saved")
        leaves[path] = {"sha256": _sha256(x),
                        "key_impl": str(jax.random.key_impl(x)) if _is_key(x) else None}
    d, step = Path(os.path.abspath(directory)), int(step)
    steps = all_steps(d)
    if step in steps:
        raise ValueError(f"a checkpoint for step {step} already exists in {d}")
    if steps and step < steps[-1]:
        raise ValueError(f"step {step} is older than the latest checkpoint (step {steps[-1]}) in "
                         f"{d}; a directory holds one run: save to a new directory to branch it")
    sums = {"format": FORMAT, "config_sha256": _config_sha(config), "leaves": leaves}
    items = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state),
                                  _CONFIG: ocp.args.JsonSave(config), _SUMS: ocp.args.JsonSave(sums)})
    with _manager(d, create=True, max_to_keep=keep, cleanup_tmp_directories=True) as mngr:
        mngr.save(step, args=items, force=True)
        mngr.wait_until_finished()
    return d / str(step)


def _open(d: Path, step: int | None) -> tuple[int, str, dict, dict]:
    """Resolve ``step`` and read its config and checksums; (step, where, config, sums)."""
    if not d.exists():
        raise FileNotFoundError(f"checkpoint directory {d} does not exist")
    steps = all_steps(d)
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {d} (no committed step directories)")
    if step is not None and int(step) not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {d}; saved steps: {steps}")
    step = steps[-1] if step is None else int(step)
    where = f"checkpoint {d / str(step)} (step {step})"
    with _reading(where, "its config and checksums"), _manager(d) as mngr:
        out = mngr.restore(step, args=ocp.args.Composite(
            **{_CONFIG: ocp.args.JsonRestore(), _SUMS: ocp.args.JsonRestore()}))
    config, sums = out[_CONFIG], out[_SUMS]
    if not isinstance(sums, dict) or sums.get("format") != FORMAT:
        raise CheckpointCorruptError(f"{where} is corrupt or not a {FORMAT} checkpoint")
    if not isinstance(config, dict) or _config_sha(config) != sums.get("config_sha256"):
        raise CheckpointCorruptError(f"{where} is corrupt: its config does not match its SHA-256")
    return step, where, config, sums


def load_config(directory, step: int | None = None) -> dict:
    """The config saved with ``step`` (default: the latest), without reading any array."""
    return _open(Path(os.path.abspath(directory)), step)[2]


def _check_expect(config: dict, expect: Mapping[str, Any], where: str) -> None:
    problems = []
    for name, want in _json(dict(expect), "expect").items():
        have = config.get(name)
        if name not in config:
            problems.append(f"{name}: not in the saved config, expected {want!r}")
        elif json.dumps(have, sort_keys=True) != json.dumps(want, sort_keys=True):  # 1 != 1.0
            if name == "method":
                problems.insert(0, f"checkpoint was made for method={have!r} but {want!r} was requested")
            else:
                problems.append(f"{name}: saved {have!r}, expected {want!r}")
    if problems:
        raise CheckpointMismatchError(f"{where} does not match the request: " + "; ".join(problems))


def _check_fits(saved: dict[str, tuple], target, where: str) -> None:
    """Raise CheckpointMismatchError naming every key path where checkpoint and target differ."""
    want = _leaves(target)
    problems = [f"{p}: in the checkpoint but not in the target" for p in saved if p not in want]
    problems += [f"{p}: in the target but not in the checkpoint" for p in want if p not in saved]
    for p, t in want.items():
        if not isinstance(t, (jax.Array, jax.ShapeDtypeStruct, np.ndarray)):
            raise TypeError(f"restore target leaf {p} is a {type(t).__name__}; use arrays, "
                            "PRNG key arrays or jax.ShapeDtypeStruct")
        if p in saved and saved[p] != (tuple(t.shape), str(t.dtype)):
            problems.append(f"{p}: saved shape {saved[p][0]} {saved[p][1]}, target is shape "
                            f"{tuple(t.shape)} {t.dtype}")
    if problems:
        raise CheckpointMismatchError(f"{where} does not fit the restore target:\n  "
                                      + "\n  ".join(problems))


def _on_this_machine(leaf):
    """An abstract leaf without a sharding, placed on this process's default device.

    Left unplaced, orbax restores onto the sharding saved in the metadata, which names the
    saving machine's devices: a checkpoint written on a GPU (or on ``cpu:1``) would not load
    on a CPU-only machine, nor a CPU-written one on a GPU.
    """
    if isinstance(leaf, jax.ShapeDtypeStruct) and getattr(leaf, "sharding", None) is None:
        # local_devices: in a multi-process run, devices()[0] belongs to process 0.
        device = jax.local_devices()[0]
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                    sharding=jax.sharding.SingleDeviceSharding(device))
    return leaf


def restore(directory, target, *, step: int | None = None, expect: Mapping[str, Any] | None = None):
    """Restore a checkpoint into the structure of ``target``; return ``(state, config, step)``.

    ``target``: a pytree with the saved structure, of concrete arrays or
    ``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape``); typed PRNG key
    leaves for keys. Leaves come back as the target's: jax arrays (on its
    sharding) or numpy arrays. ``step`` defaults to the latest; every field of
    ``expect`` must equal the saved config's.

    Raises ``FileNotFoundError`` (no directory, checkpoint or step),
    :class:`CheckpointMismatchError` (``expect``, or structure, shape, dtype
    differences, before any array is read) and :class:`CheckpointCorruptError`
    (unreadable or altered files). Never modifies the directory.
    """
    d = Path(os.path.abspath(directory))
    step, where, config, sums = _open(d, step)
    if expect is not None:
        _check_expect(config, expect, where)
    with _reading(where, "its state metadata"), _manager(d) as mngr:
        saved = {}  # (shape, dtype) of each leaf as restored: a key's logical shape and key dtype
        for p, meta in _leaves(mngr.item_metadata(step)[_STATE].tree).items():
            shape, impl = tuple(meta.shape), sums["leaves"][p]["key_impl"]
            key = None if impl is None else jax.random.key(0, impl=impl)
            saved[p] = ((shape, str(np.dtype(meta.dtype))) if key is None else
                        (shape[:len(shape) - jax.random.key_data(key).ndim], str(key.dtype)))
        if set(saved) != set(sums["leaves"]):
            raise ValueError("its checksums do not list the leaves of its state")
    _check_fits(saved, target, where)
    target = jax.tree.map(_on_this_machine, target)
    with _reading(where, "its arrays"), _manager(d) as mngr:  # the metadata fit: failure is damage
        state = mngr.restore(step, args=ocp.args.Composite(
            **{_STATE: ocp.args.StandardRestore(target)}))[_STATE]
    # orbax restores leaves saved from numpy as numpy even for abstract targets
    state = jax.tree.map(lambda t, x: jax.device_put(x, t.sharding) if isinstance(
        t, jax.ShapeDtypeStruct) and isinstance(x, np.ndarray) else x, target, state)
    for p, x in _leaves(state).items():
        if _sha256(x) != sums["leaves"][p]["sha256"]:
            raise CheckpointCorruptError(f"{where} is corrupt: leaf {p} does not match its SHA-256")
    return state, config, step
