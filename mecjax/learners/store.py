"""Trained policies on the host: what a run's checkpoint records, loading a
run or an exported policy, and :class:`TrainedPolicy`, the loaded weights a
scheduler carries as data.

Checkpoints are read here, eagerly, never inside a traced function: a
scheduler loads its policy once when it is built and passes the arrays into
the jitted rollout as arguments (pytree leaves), so a retrained checkpoint
gives new data to the same compiled program instead of a stale constant.

A run directory (``mecjax train``) holds the full train state under
``ckpt/``; an exported policy directory (:func:`export_policy`, what
``results/checkpoints/`` ships) holds only ``learner.policy(state)``, with
``"kind": "policy"`` in its config. Both are read by
:func:`load_policy_checkpoint` and :func:`load_trained`.

A run of K > 1 seeds (``mecjax train --seeds K``) records ``"seeds": K`` in
its config and holds the K train states stacked on a leading axis;
:func:`export_policy` with ``seed=k`` exports seed k's policy as an ordinary
single-seed policy directory (:func:`seed_config`), which every scheduler
loads unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax

from mecjax import checkpoint as ckpt
from mecjax.checkpoint import CheckpointMismatchError
from mecjax.config import Scenario
from mecjax.learners.base import Learner, get_learner, seed_state, seeds_state_shapes

#: The scenario fields a policy's array shapes depend on (N and M).
SIZE_FIELDS = ("n_devices", "n_servers")


def run_config(learner: Learner, scenario: Scenario, seed: int, chunk: int,
               seeds: int = 1) -> dict:
    """What a checkpoint must match to be resumed or used. ``seeds``: K seeds
    ``seed .. seed + K - 1`` trained at once, recorded (``"seeds": K``) only
    when K > 1, so a single-seed run's config is the same as ever."""
    config = {"method": learner.name, "scenario": dataclasses.asdict(scenario),
              "hyper": learner.hyper(), "seed": seed, "chunk": chunk}
    if seeds != 1:
        config["seeds"] = seeds
    return config


def run_seeds(config: dict) -> int:
    """K, the number of seeds a run's config records (1 for a single-seed run)."""
    return int(config.get("seeds", 1))


def seed_config(config: dict, k: int) -> dict:
    """The config of seed ``k`` (0 .. K-1) of a K-seed run, as a single run with
    that seed would record it: ``seed`` is the run's seed + k, no ``seeds`` key,
    and the hyper-parameters the seed was initialised with
    (:meth:`~mecjax.learners.base.Learner.for_seed`)."""
    seeds = run_seeds(config)
    if not 0 <= k < seeds:
        raise ValueError(f"seed index {k} is out of range: the run has {seeds} seed(s), "
                         f"0..{seeds - 1}")
    if seeds == 1:
        return dict(config)
    seed = config["seed"] + k
    learner = get_learner(config["method"], **config["hyper"]).for_seed(seed)
    out = {key: v for key, v in config.items() if key != "seeds"}
    out.update(seed=seed, hyper=json.loads(json.dumps(learner.hyper())))
    return out


def _ckpt_dir(directory) -> Path:
    return Path(directory) / "ckpt"


def _learner_and_scenario(config: dict) -> tuple[Learner, Scenario]:
    return get_learner(config["method"], **config["hyper"]), Scenario(**config["scenario"])


def _check_method(config: dict, method: str, directory) -> None:
    if config.get("method") != method:
        raise CheckpointMismatchError(
            f"checkpoint {directory} was made for method={config.get('method')!r} but "
            f"{method!r} was requested")


def policy_shapes(learner: Learner, scenario) -> Any:
    """The structure of ``learner``'s policy for ``scenario``, ``jax.ShapeDtypeStruct`` leaves."""
    return jax.eval_shape(learner.policy, learner.state_shapes(scenario))


def run_state_shapes(learner: Learner, scenario: Scenario, config: dict) -> Any:
    """The structure of the train state a run with ``config`` saves: one
    learner's state, or K seeds' stacked [K, ...] when the run has K > 1 seeds."""
    seeds = run_seeds(config)
    if seeds == 1:
        return learner.state_shapes(scenario)
    return seeds_state_shapes(learner, scenario, config["seed"], seeds)


def load_run(run_dir, expect: dict | None = None):
    """``(learner, scenario, train_state, config)`` rebuilt from a run directory
    alone; a run of K > 1 seeds gives their stacked states (seed k's is
    :func:`~mecjax.learners.base.seed_state` ``(train_state, k)``)."""
    config = ckpt.load_config(_ckpt_dir(run_dir))
    learner, scenario = _learner_and_scenario(config)
    state, config, _ = ckpt.restore(_ckpt_dir(run_dir), run_state_shapes(learner, scenario, config),
                                    expect=expect)
    return learner, scenario, state, config


def export_policy(run_dir, out_dir, keep: int = 1, seed: int | None = None) -> Path:
    """Save only the trained policy of ``run_dir`` (no replay buffers, optimizer
    states or training instances) as a small checkpoint under ``out_dir/ckpt``,
    at the run's latest step; nothing is written if that step of this run is
    exported already. A directory holding another run's policy is refused
    (``FileExistsError``), never silently kept. Returns that ``ckpt`` directory.

    ``seed``: for a run of K > 1 seeds (required there), the index k in 0..K-1
    of the seed to export; its policy is saved as an ordinary single-seed
    policy (:func:`seed_config`: the seed it is, no ``seeds`` key), so every
    scheduler loads it as it loads any other. A single-seed run takes None or 0.
    """
    config = ckpt.load_config(_ckpt_dir(run_dir))
    seeds = run_seeds(config)
    if seeds > 1 and seed is None:
        raise ValueError(f"{run_dir} holds {seeds} seeds: pass seed=k (0..{seeds - 1}) to "
                         f"export one")
    k = 0 if seed is None else seed
    wanted = {**seed_config(config, k), "kind": "policy"}
    step = ckpt.latest_step(_ckpt_dir(run_dir))
    out = _ckpt_dir(out_dir)
    exported = ckpt.latest_step(out)
    if exported is not None:
        if ckpt.load_config(out) != wanted:
            raise FileExistsError(f"{out_dir} holds a policy exported from another run (its "
                                  f"saved config differs); remove it or export elsewhere")
        if exported == step:
            return out
    learner, _, state, config = load_run(run_dir)
    if seeds > 1:
        learner, state = learner.for_seed(wanted["seed"]), seed_state(state, k)
    ckpt.save(out, step, learner.policy(state), wanted, keep=keep)
    return out


def _refuse_seeds(config: dict, directory) -> None:
    seeds = run_seeds(config)
    if seeds > 1:
        raise CheckpointMismatchError(
            f"{directory} is a run of {seeds} seeds, not one policy: export one with "
            f"export_policy(run_dir, out_dir, seed=k) (k in 0..{seeds - 1}) and load that")


def load_policy_checkpoint(directory, expect: dict | None = None):
    """``(learner, scenario, policy, config)`` from a run directory (full train
    state) or an exported policy directory. ``expect``: config fields that
    must match (:class:`~mecjax.checkpoint.CheckpointMismatchError` otherwise)."""
    config = ckpt.load_config(_ckpt_dir(directory))
    _refuse_seeds(config, directory)
    learner, scenario = _learner_and_scenario(config)
    if config.get("kind") == "policy":
        policy, config, _ = ckpt.restore(_ckpt_dir(directory), policy_shapes(learner, scenario),
                                         expect=expect)
        return learner, scenario, policy, config
    state, config, _ = ckpt.restore(_ckpt_dir(directory), learner.state_shapes(scenario),
                                    expect=expect)
    return learner, scenario, learner.policy(state), config


@dataclasses.dataclass(frozen=True)
class TrainedPolicy:
    """A policy and where it came from, as a pytree: ``policy``'s arrays are
    the leaves; ``method``, ``checkpoint`` and the ``scenario`` it was trained
    for are static (hashable) metadata, so the sizes can be checked while
    tracing (:meth:`check_sizes`)."""

    method: str
    checkpoint: str        # the directory it was loaded from ("" = built in memory)
    scenario: Scenario     # what it was trained for
    policy: Any            # the learner's policy pytree

    def check_sizes(self, params, fields: tuple[str, ...] = SIZE_FIELDS) -> None:
        """Raise :class:`~mecjax.checkpoint.CheckpointMismatchError` naming the
        fields (by default N and M: static, also under ``jit``) in which the
        scenario ``params`` differs from the one the policy was trained for."""
        have = {f: getattr(self.scenario, f) for f in fields}
        want = {f: getattr(params, f) for f in fields}     # Scenario or EnvParams
        if have != want:
            show = lambda d: ", ".join(f"{k}={v}" for k, v in d.items())  # noqa: E731
            raise CheckpointMismatchError(
                f"checkpoint {self.checkpoint or '(in memory)'} ({self.method}) was trained for "
                f"{show(have)} but the scenario has {show(want)}")


jax.tree_util.register_dataclass(TrainedPolicy, data_fields=["policy"],
                                 meta_fields=["method", "checkpoint", "scenario"])


def load_trained(directory, method: str) -> TrainedPolicy:
    """The policy of ``directory`` (run or exported), which must be a ``method``
    checkpoint (:class:`~mecjax.checkpoint.CheckpointMismatchError` otherwise).
    Reads it now, on the host; the caller checks the scenario sizes."""
    config = ckpt.load_config(_ckpt_dir(directory))
    _check_method(config, method, directory)
    _, scenario, policy, _ = load_policy_checkpoint(directory, expect={"method": method})
    return TrainedPolicy(method=method, checkpoint=str(directory), scenario=scenario,
                         policy=policy)


def trained_shapes(directory, method: str) -> TrainedPolicy:
    """:func:`load_trained` without reading any array: the policy's leaves are
    ``jax.ShapeDtypeStruct`` (from the checkpoint's config alone)."""
    config = ckpt.load_config(_ckpt_dir(directory))
    _check_method(config, method, directory)
    _refuse_seeds(config, directory)
    learner, scenario = _learner_and_scenario(config)
    return TrainedPolicy(method=method, checkpoint=str(directory), scenario=scenario,
                         policy=policy_shapes(learner, scenario))


def load_policy(directory, method: str, n_devices: int, n_servers: int) -> Any:
    """The policy pytree of ``directory``, checked against ``method`` and the
    sizes N = ``n_devices``, M = ``n_servers``."""
    trained = load_trained(directory, method)
    trained.check_sizes(Scenario(n_devices=n_devices, n_servers=n_servers))
    return trained.policy


__all__ = ["SIZE_FIELDS", "TrainedPolicy", "export_policy", "load_policy",
           "load_policy_checkpoint", "load_run", "load_trained", "policy_shapes", "run_config",
           "run_seeds", "run_state_shapes", "seed_config", "trained_shapes"]
