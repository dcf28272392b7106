"""``mecjax leaderboard``: every method on every task, with intervals over training
seeds and evaluation instances -> ``results/leaderboard.{md,csv,json}`` and
``results/figures/leaderboard_headroom.png``.

Every scheduler that runs at N = 50 runs on every task of :mod:`mecjax.tasks` on
the same evaluation instances (common random numbers: one key for every method).
The learned ones (DRL-FGSO, GAT-MEC, TSG-MARL, DT-MEC through its twin, and the
unified scheduler through all five of its learned modules) run once per training
seed, each with the checkpoints trained with that seed for that task
(:func:`task_shipped_dir`); the others have no training seed and run once. On the
coupled tasks (:data:`COUPLED_TASKS`) DT-MEC also runs with the persistence
forecast instead of its twin and at each look-ahead horizon, so the suite answers
whether forecasting and look-ahead help where one slot's decision changes the next.

The statistics (:mod:`mecjax.stats`, in the style of rliable: Agarwal et al. 2021)
are computed when the report is written, from the per-instance values each cell
keeps: per (method, task) the mean and a bootstrap interval over seeds and
instances; the headroom share; across tasks the interquartile mean of the headroom
share and the probability of improvement over the references. ``docs/leaderboard.md``
says what each means.

One cell per (task, method, variant, training seed), saved atomically as it
finishes (:mod:`eval.cells`); a rerun reuses the finished cells made with the same
settings and checkpoints and recomputes the others. The cells of one (task,
method, variant) run in one process, their schedulers stripped of their checkpoint
paths (:func:`mecjax.schedulers.learned.in_memory`), so the three seeds share one
compiled program. The job holds the lock of the output and cells directories, refuses
bad settings and missing checkpoints with one line before anything is written, and
compiles the largest pending cell first to refuse, with one line, a job that does
not fit in memory.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import dataclasses
import functools
import io
import math
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from mecjax import __version__
from mecjax import checkpoint as ckpt
from mecjax import preflight
from mecjax import tasks as task_registry
from mecjax.checkpoint import CheckpointMismatchError
from mecjax.cli import (ArgumentParser, enable_compilation_cache, run_program,
                        settings_profile)
from mecjax.config import Scenario, as_params
from mecjax.learners import twin
from mecjax.learners.store import SIZE_FIELDS
from mecjax.outputs import (UserError, check_output_dir, dumps_strict, lock_output_dir,
                            write_files_atomic)
from mecjax.rollout import compile_rollout, rollout
from mecjax.schedulers import make, scheduler_class
from mecjax.schedulers.learned import LearnedScheduler, in_memory
from mecjax.stats import (iqm, probability_of_improvement_ci, ratio_of_means_ci,
                          stratified_bootstrap_ci)
from eval.cells import cell_path, load_cell, save_cell
from eval.plan import checkpoint_identity

CONFIG = Path(__file__).resolve().parent / "configs" / "leaderboard.toml"
SHIPPED_ROOT = "results/checkpoints"
TRAIN_COMMAND = "mecjax train-shipped --tasks all"
CELL_FORMAT = 1


def task_shipped_dir(task_id: str, method: str, seed: int, root: str = SHIPPED_ROOT) -> str:
    """Where the policy of ``method`` (a learner: drl_fgso, gat_mec, tsg_marl, drl_gat,
    twin) trained on task ``task_id`` with training seed ``seed`` ships."""
    # The one place that knows the layout (train.recipes will own it as
    # task_shipped_dir(task_id, method, seed, root)).
    return f"{root}/tasks/{task_id}/{method}_s{seed}"


#: scheduler name -> label, in the tables' order: references, then the paper's methods.
METHODS = {
    "local": "all-local",
    "random": "random",
    "nearest": "nearest",
    "greedy": "greedy",
    "best_response": "best response (Nash)",
    "cooperative": "cooperative (reference)",
    "pso": "PSO",
    "qio_mec": "QIO-MEC",
    "ts_hybrid_sb": "TS-Hybrid-SB",
    "drl_fgso": "DRL-FGSO",
    "gat_mec": "GAT-MEC",
    "tsg_marl": "TSG-MARL",
    "dt_mec": "DT-MEC",
    "unified": "Unified",
}
#: registered schedulers left out, and why.
EXCLUDED = {
    "exact": "exhaustive search over all (M+1)^N assignments: small N only (see mecjax optgap)",
    "qio_mec_multi": "a variant of QIO-MEC (multi-qubit encoding): in mecjax reproduce --full",
    "qio_mec_warm": "a variant of QIO-MEC (warm start): in mecjax reproduce --full",
}
#: learned method -> {scheduler option: the learner whose checkpoint it reads}.
LEARNED = {
    "drl_fgso": {"checkpoint": "drl_fgso"},
    "gat_mec": {"checkpoint": "gat_mec"},
    "tsg_marl": {"checkpoint": "tsg_marl"},
    "dt_mec": {"checkpoint": "twin"},
    "unified": {"drl_gat_checkpoint": "drl_gat", "drl_checkpoint": "drl_fgso",
                "gat_checkpoint": "gat_mec", "marl_checkpoint": "tsg_marl",
                "twin_checkpoint": "twin"},
}
FLOOR, REFERENCE = "local", "cooperative"     # the headroom share's 0 and 1
# The tasks where one slot's decision changes the next slots (results/tasks.md, 50 slots):
# in congested-v0 a server starts 98% of the slots with a backlog and devices queue local
# work across slots; in energy-harvesting-v0 batteries run out within the horizon (38% of
# the devices cannot pay for a local task under all-local, 31% under the cooperative
# reference). In the other four no server has a backlog, no device queues and at most 1%
# of the batteries run low: nothing carries from one slot to the next but the channel.
COUPLED_TASKS = ("congested-v0", "energy-harvesting-v0")
FORECASTS = ("twin", "persistence")
# (name, title, higher is better) of the metrics in the tables.
METRICS = (("mean_cost", "mean cost", False), ("welfare_cost", "welfare cost", False),
           ("utility", "utility", True), ("latency_ms", "latency (ms)", False),
           ("energy_j", "energy (J)", False), ("fairness", "fairness", True),
           ("deadline_miss", "deadline miss", False), ("failed", "failed", False))
BOOT_SEED = 0     # every interval's replicates: the report is a function of the cells


def dt_main() -> tuple[str, int]:
    """(forecast, horizon) of DT-MEC as ``make("dt_mec")`` builds it."""
    cls = scheduler_class("dt_mec")
    return cls.forecast, cls.horizon


# ---------------------------------------------------------------------------- settings

@dataclasses.dataclass(frozen=True)
class Settings:
    instances: int = 8
    slots: int = 12
    seed: int = 0                           # key of the evaluation instances
    train_seeds: tuple[int, ...] = (0, 1, 2)
    horizons: tuple[int, ...] = (1, 3, 5)   # DT-MEC variants' look-ahead on the coupled tasks
    reps: int = 2000                        # bootstrap replicates
    workers: int = 2
    tasks: tuple[str, ...] | None = None    # versioned task ids (None: every task)
    methods: tuple[str, ...] | None = None  # scheduler names (None: every method)
    n_devices: int | None = None            # None: each task's own N
    learned: bool = True                    # False: leave the learned methods out

    @classmethod
    def from_config(cls, profile: str = "default", path: Path = CONFIG) -> "Settings":
        """The ``[profile]`` section of ``eval/configs/leaderboard.toml``."""
        return cls(**settings_profile(cls, path, profile))

    def task_ids(self) -> list[str]:
        return list(self.tasks) if self.tasks is not None else task_registry.names()

    def method_names(self) -> list[str]:
        """The methods to run, in table order; all-local and the cooperative reference
        always (the headroom share's floor and reference)."""
        chosen = set(METHODS) if self.methods is None else set(self.methods) | {FLOOR, REFERENCE}
        return [m for m in METHODS if m in chosen
                and (self.learned or m not in LEARNED or m == "dt_mec")]


def validate_settings(settings: Settings) -> None:
    """Raise :class:`UserError` naming the first setting out of range (nothing run yet)."""
    for name, value, least in (("instances", settings.instances, 2), ("slots", settings.slots, 1),
                               ("workers", settings.workers, 1), ("reps", settings.reps, 100)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UserError(f"--{name} {value} must be an integer >= {least}"
                            + (" (intervals need two instances)" if name == "instances" else ""))
    # Keys are 32-bit without x64: seed 2**32 would silently equal seed 0.
    if isinstance(settings.seed, bool) or not isinstance(settings.seed, int) \
            or not 0 <= settings.seed < 2 ** 32:
        raise UserError(f"--seed {settings.seed} must be an integer in [0, 2**32)")
    seeds = settings.train_seeds
    if not seeds or len(set(seeds)) != len(seeds) \
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise UserError(f"--train-seeds {','.join(map(str, seeds))} must be distinct "
                        f"non-negative integers")
    if not settings.horizons or any(not isinstance(h, int) or h < 1 for h in settings.horizons):
        raise UserError(f"horizons {settings.horizons} must be integers >= 1")
    if settings.n_devices is not None and (not isinstance(settings.n_devices, int)
                                           or settings.n_devices < 1):
        raise UserError(f"--n-devices {settings.n_devices} must be an integer >= 1")
    for name in settings.methods or ():
        if name in EXCLUDED:
            raise UserError(f"--methods: {name} is not on the leaderboard: {EXCLUDED[name]}")
        if name not in METHODS:
            raise UserError(f"--methods: unknown method {name!r}; the leaderboard's: "
                            f"{', '.join(METHODS)}")
    if settings.tasks is not None and not settings.tasks:
        raise UserError("--tasks names no task")
    for task in settings.task_ids():
        try:
            task_scenario(task, settings.n_devices)
        except ValueError as err:
            raise UserError(f"--tasks {task}: {err}") from None


def canonical_tasks(names) -> tuple[str, ...]:
    """The versioned ids of task names (``congested`` -> ``congested-v0``); UserError naming
    an unknown one."""
    out = []
    for name in names:
        try:
            out.append(task_registry.spec(name).id)
        except ValueError as err:
            raise UserError(f"--tasks: {err}") from None
    return tuple(dict.fromkeys(out))


@functools.lru_cache(maxsize=None)
def task_scenario(task: str, n_devices: int | None = None):
    """The task's Scenario (at ``n_devices`` if given; immutable, so built once)."""
    return task_registry.make(task) if n_devices is None else \
        task_registry.make(task, n_devices=n_devices)


# ---------------------------------------------------------------------------- plan

@dataclasses.dataclass
class Cell:
    task: str
    method: str
    variant: str                 # "" for the method itself, e.g. "persistence, H=1"
    seed: int | None             # training seed (None: a method without training)
    options: dict                # scheduler options, checkpoints included
    config: dict                 # what the saved cell must match to be reused
    path: Path

    @property
    def group(self) -> tuple[str, str, str]:
        return self.task, self.method, self.variant

    def label(self) -> str:
        variant = f" [{self.variant}]" if self.variant else ""
        seed = f" seed {self.seed}" if self.seed is not None else ""
        return f"{self.task} {METHODS[self.method]}{variant}{seed}"


def variants(method: str, task: str, settings: Settings) -> list[tuple[str, dict]]:
    """(variant, options) of ``method`` on ``task``: the method itself, and on the coupled
    tasks DT-MEC with each forecast and horizon."""
    out = [("", {})]
    if method == "dt_mec" and task in COUPLED_TASKS:
        for forecast in FORECASTS:
            for h in sorted(set(settings.horizons)):
                if (forecast, h) != dt_main():
                    out.append((variant_name(forecast, h), {"forecast": forecast, "horizon": h}))
    return out


def variant_name(forecast: str, horizon: int) -> str:
    return f"{forecast}, H={horizon}"


def variant_rank(variant: str, settings: Settings) -> int:
    """Table order of DT-MEC's variants: by forecast, then horizon (the method itself, ``""``,
    in its place)."""
    names = [variant_name(f, h) for f in FORECASTS for h in sorted(set(settings.horizons))]
    variant = variant or variant_name(*dt_main())
    return names.index(variant) if variant in names else -1


def needs_checkpoints(method: str, options: dict) -> bool:
    return method in LEARNED and options.get("forecast") != "persistence"


def plan(settings: Settings, root: str, cells_dir: Path) -> tuple[list[Cell], list[str]]:
    """``(cells, missing)``: every cell of ``settings`` and the checkpoint directories it
    needs that are not under ``root``."""
    cells, missing, identities = [], [], {}
    for task in settings.task_ids():
        n = task_scenario(task, settings.n_devices).n_devices
        for method in settings.method_names():
            for variant, flags in variants(method, task, settings):
                learned = needs_checkpoints(method, flags)
                if learned and not settings.learned:
                    continue
                for seed in settings.train_seeds if learned else (None,):
                    ckpts = {opt: task_shipped_dir(task, learner, seed, root)
                             for opt, learner in LEARNED[method].items()} if learned else {}
                    identity = {}
                    for opt, path in ckpts.items():
                        if path not in identities:     # unified reads the others' too
                            identities[path] = checkpoint_identity(path)
                            if identities[path] is not None:
                                check_checkpoint(path, LEARNED[method][opt],
                                                 task_scenario(task, settings.n_devices))
                        identity[opt] = identities[path]
                        if identity[opt] is None:
                            missing.append(path)
                    config = {"what": "leaderboard", "task": task, "n_devices": n,
                              "method": method, "options": flags, "train_seed": seed,
                              "checkpoints": identity, "instances": settings.instances,
                              "slots": settings.slots, "seed": settings.seed,
                              "mecjax": __version__, "cell_format": CELL_FORMAT}
                    stem = "_".join([task, method]
                                    + [f"{k}-{v}" for k, v in sorted(flags.items())]
                                    + ([f"s{seed}"] if seed is not None else []))
                    cells.append(Cell(task, method, variant, seed, {**flags, **ckpts}, config,
                                      cell_path(cells_dir, stem, config)))
    return cells, list(dict.fromkeys(missing))


def check_checkpoint(path: str, learner: str, scenario) -> None:
    """Refuse, from its saved config alone (no array read), a checkpoint of another
    learner or trained for another scenario than the task's
    (:class:`~mecjax.checkpoint.CheckpointMismatchError`, one line): before any cell runs,
    not when its cell comes."""
    config = ckpt.load_config(Path(path) / "ckpt")
    if config.get("method") != learner:
        raise CheckpointMismatchError(f"checkpoint {path} was made for method="
                                      f"{config.get('method')!r} but {learner!r} was expected")
    trained = Scenario(**config["scenario"])
    if learner == "twin":         # any N; the same M and forecast-relevant fields
        twin.check_twin_scenario(trained, scenario, path)
        return
    have = {f: getattr(trained, f) for f in SIZE_FIELDS}
    want = {f: getattr(scenario, f) for f in SIZE_FIELDS}
    if have != want:
        raise CheckpointMismatchError(f"checkpoint {path} ({learner}) was trained for {have} "
                                      f"but the task has {want}")


# ---------------------------------------------------------------------------- cells

def check_scheduler(scheduler, scenario) -> None:
    """Refuse, on the host and naming the checkpoint, weights trained for another
    scenario (the check in ``init`` runs on the traced, path-less copy)."""
    modules = getattr(scheduler, "modules", None)
    parts = list(modules.values()) if isinstance(modules, dict) else [scheduler]
    for part in parts:
        if isinstance(part, LearnedScheduler) and part.trained is not None:
            part.check_trained(scenario)


def build(method: str, options: dict, scenario):
    """The cell's scheduler: its checkpoints read and checked, their paths then dropped
    (:func:`in_memory`) so every seed's scheduler runs in one compiled program."""
    scheduler = make(method, **options)
    check_scheduler(scheduler, scenario)
    return in_memory(scheduler)


def run_group(cells: list[Cell], settings: Settings) -> list[dict]:
    """Compute and save the cells of one (task, method, variant), in order.

    The scenario goes in as :class:`~mecjax.config.EnvParams` (its constants are data),
    so tasks that differ only in constants (paper-v0 and paper-energy-scale-v0) share a
    program too."""
    scenario = task_scenario(cells[0].task, settings.n_devices)
    params = as_params(scenario)
    out = []
    for cell in cells:
        t0 = time.perf_counter()
        scheduler = build(cell.method, cell.options, scenario)
        per_slot = rollout(scheduler, params, jax.random.key(settings.seed), settings.instances,
                           settings.slots)
        per_slot = jax.device_get(per_slot)
        result = {"config": cell.config,
                  "per_instance": {k: np.asarray(v, np.float64).mean(axis=1).tolist()
                                   for k, v in per_slot.items()},
                  "wall_s": time.perf_counter() - t0}
        save_cell(cell.path, result)
        out.append(result)
    return out


# Rough relative cost of a cell (compile + run on a CPU), to start the longest first and
# to choose the preflight's cell.
_COST = {"unified": 6.0, "dt_mec": 4.0, "qio_mec": 2.0, "ts_hybrid_sb": 2.0, "pso": 2.0,
         "cooperative": 1.6, "best_response": 1.3}


def _cost(cells: list[Cell], settings: Settings) -> float:
    c = cells[0]
    m = task_scenario(c.task, settings.n_devices).n_servers
    h = c.options.get("horizon", dt_main()[1]) if c.method == "dt_mec" else 1
    return _COST.get(c.method, 1.0) * (1 + 0.1 * m) * (0.7 + 0.1 * h) * (1 + 0.3 * len(cells))


def check_memory(groups: list[list[Cell]], settings: Settings, workers: int) -> None:
    """Compile the pending cell expected to need the most memory (compiling reserves no
    buffers) and refuse, with one line, a job whose peak (``workers`` cells at once) does
    not fit. With the persistent compilation cache the cell's own compile is then a hit."""
    if not groups:
        return
    cells = max(groups, key=lambda g: _cost(g, settings))
    cell = cells[0]
    scenario = task_scenario(cell.task, settings.n_devices)
    compiled = compile_rollout(build(cell.method, cell.options, scenario), as_params(scenario),
                               jax.random.key(settings.seed), settings.instances, settings.slots)
    need = preflight.compiled_bytes(compiled)
    what = f"the largest leaderboard cell ({cell.label()})"
    if need is not None and workers > 1:
        need, what = need * workers, f"{what} x {workers} workers"
    preflight.check_fits(need, what, "--instances or --slots" + (" or --workers" if workers > 1
                                                                 else ""))


def _start_worker(compile_cache: str | None) -> None:
    """A cell worker: the parent's persistent compilation cache; no GPU preallocation."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if compile_cache:
        enable_compilation_cache(compile_cache)


def _cell_line(k: int, total: int, cell: Cell, result: dict) -> str:
    pi = result["per_instance"]
    return (f"  [{k}/{total}] {cell.label()}: mean cost {np.mean(pi['mean_cost']):.4f}, "
            f"latency {np.mean(pi['latency_ms']):.1f} ms, deadline miss "
            f"{np.mean(pi['deadline_miss']):.3f} ({result['wall_s']:.1f} s)")


def run_pending(groups: list[list[Cell]], settings: Settings, workers: int, log=print) -> dict:
    """Run the pending cells, one (task, method, variant) group per job, ``workers`` jobs
    at once in spawned processes (longest first); return ``{cell path: result}``. Results
    do not depend on ``workers``: every cell has its own program input and the same key."""
    total = sum(len(g) for g in groups)
    done, k = {}, 0
    if workers <= 1 or len(groups) <= 1:
        for group in groups:
            for cell, result in zip(group, run_group(group, settings)):
                k += 1
                done[cell.path] = result
                log(_cell_line(k, total, cell, result))
        return done
    order = sorted(groups, key=lambda g: -_cost(g, settings))
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker, initargs=(jax.config.jax_compilation_cache_dir,))
    try:
        futures = {pool.submit(run_group, group, settings): group for group in order}
        for future in concurrent.futures.as_completed(futures):
            for cell, result in zip(futures[future], future.result()):
                k += 1
                done[cell.path] = result
                log(_cell_line(k, total, cell, result))
    except BaseException:
        # Stop now, at a failure or an interrupt: the cells finished so far are saved for
        # the next run. The workers are ended here: a worker turns an interrupt into its
        # job's result and would wait for more work, and shutdown would wait for it.
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return done


def machine() -> dict:
    dev = jax.devices()[0]
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "jax": jax.__version__, "backend": jax.default_backend(),
            "device": getattr(dev, "device_kind", str(dev)), "python": platform.python_version()}


def leaderboard(settings: Settings | None = None, out_dir: str = "results",
                cells_dir: str | None = None, root: str = SHIPPED_ROOT, log=print,
                check_mem: bool = True) -> dict:
    """Run the unfinished cells of ``settings`` and write the leaderboard under ``out_dir``
    (the cells under ``cells_dir``, default ``OUT/leaderboard_cells``), holding the lock of
    both for the whole job; return the report's record."""
    settings = settings or Settings.from_config("default")
    if settings.tasks is not None:          # "congested" -> "congested-v0": cells name versions
        settings = dataclasses.replace(settings, tasks=canonical_tasks(settings.tasks))
    validate_settings(settings)
    out = check_output_dir(out_dir, "--out")
    cells_path = check_output_dir(cells_dir, "--cells") if cells_dir else out / "leaderboard_cells"
    cells, missing = plan(settings, root, cells_path)
    if missing:
        raise UserError(f"{len(missing)} checkpoint(s) missing under {root}, the first "
                        f"{missing[0]}: train them with `{TRAIN_COMMAND}`, or leave the learned "
                        f"methods out with --no-learned")
    with contextlib.ExitStack() as stack:
        stack.enter_context(lock_output_dir(out, "mecjax leaderboard", "--out"))
        if cells_path.resolve() != out.resolve():
            stack.enter_context(lock_output_dir(cells_path, "mecjax leaderboard", "--cells"))
        return _leaderboard(settings, cells, out, root, log, check_mem)


def _leaderboard(settings: Settings, cells: list[Cell], out: Path, root: str, log,
                 check_mem: bool) -> dict:
    t0 = time.perf_counter()
    results, pending = {}, {}
    for cell in cells:
        saved = load_cell(cell.path, cell.config)
        if saved is None:
            pending.setdefault(cell.group, []).append(cell)
        else:
            results[cell.path] = saved
    log(f"mecjax leaderboard: {len(cells)} cells ({settings.instances} instances x "
        f"{settings.slots} slots each; {len(settings.task_ids())} tasks, "
        f"{len(settings.method_names())} methods, training seeds "
        f"{', '.join(map(str, settings.train_seeds))}); {len(results)} done before, reused"
        + ("" if settings.learned else "; learned methods left out (--no-learned)"))
    groups = list(pending.values())
    if groups and check_mem:
        check_memory(groups, settings, min(settings.workers, len(groups)))
    if groups:
        log(f"  running {sum(map(len, groups))} cells in {len(groups)} groups (a task, method "
            f"and variant: one compiled program for its seeds)"
            + (f", {settings.workers} at once" if settings.workers > 1 else ""))
    results.update(run_pending(groups, settings, settings.workers, log))
    wall = time.perf_counter() - t0
    record = build_record(settings, cells, results, root)
    record["run"] = {"wall_s": wall, "cells_computed": sum(map(len, groups)),
                     "cells_reused": len(cells) - sum(map(len, groups)),
                     "cell_seconds": sum(r.get("wall_s", 0.0) for r in results.values()),
                     "machine": machine()}
    files = render_outputs(record, out)
    try:
        write_files_atomic(files)
    except OSError as err:
        raise UserError(f"could not write the leaderboard under {out} ({err.strerror or err}); "
                        f"the previous one is unchanged") from err
    log(f"wrote {out / 'leaderboard.md'}, .csv, .json and {out / 'figures' / HEATMAP} "
        f"({wall:.0f} s)")
    return record


# ---------------------------------------------------------------------------- statistics

def _runs(cells: list[Cell], results: dict) -> dict:
    """``{(task, method, variant): {"seeds": [...], metric: [K, I] array}}``."""
    runs = {}
    for cell in cells:
        entry = runs.setdefault(cell.group, {"seeds": [], "per_instance": {}})
        entry["seeds"].append(cell.seed)
        for metric, values in results[cell.path]["per_instance"].items():
            entry["per_instance"].setdefault(metric, []).append(values)
    for entry in runs.values():
        entry["per_instance"] = {k: np.asarray(v, np.float64)
                                 for k, v in entry["per_instance"].items()}
    return runs


def _ci(d: dict) -> dict:
    return {k: d[k] for k in ("mean", "low", "high", "ci95")}


def headroom_values(runs: dict, task: str, method: str, variant: str = "") -> np.ndarray | None:
    """Per (seed, instance) headroom share ``[K, I]`` of a run on ``task``: the
    instance's saving over all-local, (cost_local - cost_method), divided by the task's
    mean saving of the cooperative reference, mean(cost_local - cost_cooperative). The
    normaliser is one number per task (a per-instance one can be near zero): the mean of
    these values is the task's headroom share. None when the task's normaliser is zero
    or a run is missing."""
    got = [runs.get((task, m, v)) for m, v in ((FLOOR, ""), (REFERENCE, ""), (method, variant))]
    if any(g is None for g in got):
        return None
    floor, ref, mine = (g["per_instance"]["mean_cost"] for g in got)
    den = floor.mean() - ref.mean()
    if not np.isfinite(den) or abs(den) <= 1e-12 * max(abs(floor.mean()), 1e-30):
        return None
    return (floor[0][None, :] - mine) / den


def build_record(settings: Settings, cells: list[Cell], results: dict, root: str) -> dict:
    """Every number of the report, from the cells' per-instance values."""
    runs = _runs(cells, results)
    reps = settings.reps
    rows = []
    for (task, method, variant), entry in runs.items():
        pi = entry["per_instance"]
        row = {"task": task, "method": method, "label": METHODS[method], "variant": variant,
               "train_seeds": [s for s in entry["seeds"] if s is not None],
               "instances": int(pi["mean_cost"].shape[1])}
        for metric, _, _ in METRICS:
            row[metric] = _ci(stratified_bootstrap_ci([pi[metric]], reps=reps, seed=BOOT_SEED))
        floor, ref = runs.get((task, FLOOR, "")), runs.get((task, REFERENCE, ""))
        row["headroom_share"] = None
        if floor is not None and ref is not None:
            hs = ratio_of_means_ci(floor["per_instance"]["mean_cost"][0],
                                   ref["per_instance"]["mean_cost"][0], pi["mean_cost"],
                                   reps=reps, seed=BOOT_SEED)
            row["headroom_share"] = None if math.isnan(hs["mean"]) else _ci(hs)
        rows.append(row)
    order = {m: i for i, m in enumerate(METHODS)}
    task_order = {t: i for i, t in enumerate(settings.task_ids())}
    rows.sort(key=lambda r: (task_order[r["task"]], order[r["method"]],
                             variant_rank(r["variant"], settings)))
    return {"settings": dataclasses.asdict(settings), "tasks": settings.task_ids(),
            "methods": settings.method_names(), "checkpoint_root": root,
            "excluded": EXCLUDED, "coupled_tasks": [t for t in COUPLED_TASKS
                                                    if t in settings.task_ids()],
            "rows": rows, "aggregate": aggregate(runs, settings),
            "dt_differences": dt_differences(runs, settings)}


def aggregate(runs: dict, settings: Settings) -> list[dict]:
    """Per method, across the tasks: the IQM and mean of the per-(seed, instance)
    headroom shares (strata = tasks) and the probability of improvement over the
    cooperative reference and over all-local, each with its bootstrap interval."""
    out = []
    for method in settings.method_names():
        tasks = [t for t in settings.task_ids() if headroom_values(runs, t, method) is not None]
        if not tasks:
            continue
        mine = [headroom_values(runs, t, method) for t in tasks]
        row = {"method": method, "label": METHODS[method], "tasks": tasks,
               "iqm": _ci(stratified_bootstrap_ci(mine, iqm, settings.reps, seed=BOOT_SEED)),
               "mean": _ci(stratified_bootstrap_ci(mine, np.mean, settings.reps,
                                                   seed=BOOT_SEED))}
        for ref in (REFERENCE, FLOOR):
            theirs = [headroom_values(runs, t, ref) for t in tasks]
            row[f"poi_over_{ref}"] = _ci(probability_of_improvement_ci(
                mine, theirs, settings.reps, seed=BOOT_SEED))
        out.append(row)
    return out


def dt_differences(runs: dict, settings: Settings) -> list[dict]:
    """On each coupled task, paired over instances (and seeds): twin - persistence at each
    horizon, and H - H_min for each forecast, of the mean cost and of the headroom share."""
    out = []
    horizons = sorted(set(settings.horizons))
    main = dt_main()

    def run(task, forecast, h):
        variant = "" if (forecast, h) == main else variant_name(forecast, h)
        return runs.get((task, "dt_mec", variant)), variant

    for task in [t for t in COUPLED_TASKS if t in settings.task_ids()]:
        pairs = [(f"twin - persistence, H={h}", ("twin", h), ("persistence", h))
                 for h in horizons]
        pairs += [(f"{f}: H={h} - H={horizons[0]}", (f, h), (f, horizons[0]))
                  for f in FORECASTS for h in horizons[1:]]
        for what, a, b in pairs:
            (ra, va), (rb, vb) = run(task, *a), run(task, *b)
            if ra is None or rb is None:
                continue
            ca, cb = ra["per_instance"]["mean_cost"], rb["per_instance"]["mean_cost"]
            # Same seed with same seed; a run without training seed pairs with every seed.
            diff = ca - cb if ca.shape == cb.shape else \
                (ca - cb[:1]) if cb.shape[0] == 1 else (ca[:1] - cb)
            row = {"task": task, "comparison": what, "a": a, "b": b,
                   "mean_cost": _ci(stratified_bootstrap_ci([diff], reps=settings.reps,
                                                            seed=BOOT_SEED))}
            ha, hb = headroom_values(runs, task, "dt_mec", va), \
                headroom_values(runs, task, "dt_mec", vb)
            row["headroom_share"] = None
            if ha is not None and hb is not None:
                hd = ha - hb if ha.shape == hb.shape else \
                    (ha - hb[:1]) if hb.shape[0] == 1 else (ha[:1] - hb)
                row["headroom_share"] = _ci(stratified_bootstrap_ci([hd], reps=settings.reps,
                                                                    seed=BOOT_SEED))
            out.append(row)
    return out


# ---------------------------------------------------------------------------- report

HEATMAP = "leaderboard_headroom.png"


def _num(x: float, digits: int) -> str:
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text   # no "-0.000"


def _fmt(ci: dict | None, digits: int = 3) -> str:
    if ci is None:
        return "-"
    return (f"{_num(ci['mean'], digits)} [{_num(ci['low'], digits)}, "
            f"{_num(ci['high'], digits)}]")


def _verdict(ci: dict, better_if_negative: bool = True) -> str:
    """What the interval of a paired difference a - b says of a (a lower cost is better)."""
    if ci["low"] > 0:
        return "worse" if better_if_negative else "better"
    if ci["high"] < 0:
        return "better" if better_if_negative else "worse"
    return "no clear difference"


def _row(record: dict, task: str, method: str, variant: str = "") -> dict | None:
    for r in record["rows"]:
        if (r["task"], r["method"], r["variant"]) == (task, method, variant):
            return r
    return None


def findings(record: dict) -> list[str]:
    """The "what this shows" sentences, generated from the numbers."""
    lines = []
    for task in record["tasks"]:
        ranked = sorted((r for r in record["rows"] if r["task"] == task and not r["variant"]
                         and r["headroom_share"] is not None
                         and r["method"] not in (FLOOR, REFERENCE)),
                        key=lambda r: -r["headroom_share"]["mean"])
        if not ranked:
            continue
        best = ranked[0]
        hs = best["headroom_share"]
        if hs["low"] > 1:
            vs = "clearly beats the cooperative reference"
        elif hs["high"] < 1:
            vs = "falls short of the cooperative reference, which is best"
        else:
            vs = "matches the cooperative reference within its interval"
        text = f"- {task}: {best['label']} has the highest headroom share ({_fmt(hs, 2)}) and {vs}"
        if len(ranked) > 1:
            second = ranked[1]
            clear = hs["low"] > second["headroom_share"]["high"]
            text += (f"; {'clear of' if clear else 'its interval overlaps that of'} the "
                     f"runner-up, {second['label']} ({_fmt(second['headroom_share'], 2)})")
        learned = [r for r in ranked if r["method"] in LEARNED]
        if learned and learned[0] is not best:
            text += (f"; the best learned method is {learned[0]['label']} "
                     f"({_fmt(learned[0]['headroom_share'], 2)})")
        lines.append(text + ".")
    others = [a for a in record["aggregate"] if a["method"] not in (FLOOR, REFERENCE)]
    if others:
        top = max(others, key=lambda a: a["iqm"]["mean"])
        lines.append(f"- Across the {len(top['tasks'])} tasks, {top['label']} has the highest "
                     f"interquartile mean headroom share ({_fmt(top['iqm'], 2)}); its "
                     f"probability of improvement over the cooperative reference is "
                     f"{_fmt(top['poi_over_cooperative'], 2)} and over all-local "
                     f"{_fmt(top['poi_over_local'], 2)}.")
    for task in record["coupled_tasks"]:
        diffs = [d for d in record["dt_differences"] if d["task"] == task]
        fc = [d for d in diffs if d["comparison"].startswith("twin - persistence")]
        if fc:
            lines.append(f"- {task}, does the twin's forecast help DT-MEC (twin - persistence, "
                         f"mean cost)? " + "; ".join(
                             f"H={d['a'][1]}: {_verdict(d['mean_cost'])} "
                             f"({_fmt(d['mean_cost'], 4)})" for d in fc) + ".")
        la = [d for d in diffs if not d["comparison"].startswith("twin - persistence")]
        if la:
            lines.append(f"- {task}, does a longer look-ahead help DT-MEC (mean cost)? "
                         + "; ".join(f"{d['a'][0]}, H={d['a'][1]} against H={d['b'][1]}: "
                                     f"{_verdict(d['mean_cost'])} ({_fmt(d['mean_cost'], 4)})"
                                     for d in la) + ".")
    return lines


def render_markdown(record: dict) -> str:
    s, run = record["settings"], record.get("run", {})
    tasks, methods = record["tasks"], record["methods"]
    mach = run.get("machine", {})
    seeds = ", ".join(map(str, s["train_seeds"]))
    lines = [
        "# Leaderboard: every method on every task",
        "",
        f"Written by `mecjax leaderboard`: {s['instances']} evaluation instances x "
        f"{s['slots']} slots per cell (evaluation key {s['seed']}; the same instances for "
        f"every method of a task), N = {s['n_devices'] or 'each task’s own (50)'}; learned "
        f"methods once per training seed ({seeds}) with the checkpoints trained for that task "
        f"and seed (`{record['checkpoint_root']}/tasks/<task>/<method>_s<seed>/`); the other "
        f"methods have no training seed: one run, intervals over instances only. Each value: "
        f"the mean over seeds and instances of the per-instance average over slots, [95% "
        f"stratified bootstrap interval] over training seeds and instances ({s['reps']} "
        f"replicates, percentile; `docs/leaderboard.md`).",
        "",
    ]
    if not s["learned"]:
        lines += ["The learned methods were left out of this run (`--no-learned`); DT-MEC's "
                  "persistence variants, which read no checkpoint, were run.", ""]
    lines += ["Not on the leaderboard: " + "; ".join(f"`{k}` ({v})" for k, v in
                                                     record["excluded"].items()) + ".", ""]
    # Headroom share, methods x tasks.
    lines += ["## Headroom share", "",
              "(mean cost of all-local - mean cost of the method) / (mean cost of all-local - "
              "mean cost of the cooperative reference) on the task's instances: 1 is the "
              "reference's saving, 0 none, below 0 a higher cost than all-local. The interval "
              "re-estimates the denominator in every replicate (instances paired).", "",
              "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for method in methods:
        cells = [_row(record, t, method) for t in tasks]
        if all(c is None for c in cells):
            continue
        lines.append(f"| {METHODS[method]} | " + " | ".join(
            _fmt(c["headroom_share"], 2) if c else "-" for c in cells) + " |")
    lines += ["", f"Figure: `figures/{HEATMAP}`.", ""]
    # Aggregate.
    if record["aggregate"]:
        lines += ["## Across the tasks", "",
                  "Interquartile mean (25% trimmed) and mean of the per-(seed, instance) "
                  "headroom shares pooled over the tasks (each instance's saving over all-local "
                  "divided by the task's mean saving of the cooperative reference), with "
                  "stratified bootstrap intervals (strata: tasks; within a task, seeds and "
                  "instances resampled). P(X > Y): the probability that the method's headroom "
                  "share on a random (seed, instance) of a task exceeds the other's on a "
                  "random one, averaged over the tasks (Mann-Whitney U / nm; rliable's "
                  "probability of improvement).", "",
                  "| method | tasks | IQM | mean | P(> cooperative) | P(> all-local) |",
                  "|---|---|---|---|---|---|"]
        for a in record["aggregate"]:
            lines.append(f"| {a['label']} | {len(a['tasks'])} | {_fmt(a['iqm'], 2)} | "
                         f"{_fmt(a['mean'], 2)} | {_fmt(a['poi_over_cooperative'], 2)} | "
                         f"{_fmt(a['poi_over_local'], 2)} |")
        lines.append("")
    # DT-MEC variants.
    coupled = record["coupled_tasks"]
    dt_rows = [r for r in record["rows"] if r["method"] == "dt_mec" and r["task"] in coupled]
    if dt_rows:
        main = variant_name(*dt_main())
        lines += ["## DT-MEC: forecast and look-ahead on the coupled tasks", "",
                  f"Coupled tasks: {', '.join(coupled)} (in `results/tasks.md` server backlogs "
                  "and device queues carry work from slot to slot in congested-v0, and "
                  "batteries run out within the horizon in energy-harvesting-v0; in the other "
                  "tasks nothing but the channel carries over). DT-MEC plans H slots ahead on "
                  "its twin's forecast, or on the persistence (last-value) forecast, which "
                  "needs no training: one run.", "",
                  "| task | forecast, H | seeds | mean cost | headroom share | deadline miss | "
                  "failed |", "|---|---|---|---|---|---|---|"]
        for r in dt_rows:
            lines.append(f"| {r['task']} | {r['variant'] or main} | {len(r['train_seeds']) or '-'}"
                         f" | {_fmt(r['mean_cost'], 4)} | {_fmt(r['headroom_share'], 2)} | "
                         f"{_fmt(r['deadline_miss'])} | {_fmt(r['failed'])} |")
        if record["dt_differences"]:
            lines += ["", "Paired differences (same instances; the same training seed where "
                      "both have one): negative mean cost, positive headroom share = the first "
                      "is better.", "",
                      "| task | difference | mean cost | headroom share | verdict |",
                      "|---|---|---|---|---|"]
            for d in record["dt_differences"]:
                lines.append(f"| {d['task']} | {d['comparison']} | {_fmt(d['mean_cost'], 4)} | "
                             f"{_fmt(d['headroom_share'], 2)} | "
                             f"{_verdict(d['mean_cost'])} |")
        lines.append("")
    # Per task, every metric.
    lines += ["## Every metric, per task", ""]
    for task in tasks:
        lines += [f"### {task}", "",
                  "| method | seeds | " + " | ".join(t for _, t, _ in METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for r in record["rows"]:
            if r["task"] != task:
                continue
            label = r["label"] + (f" [{r['variant']}]" if r["variant"] else "")
            lines.append(f"| {label} | {len(r['train_seeds']) or '-'} | " + " | ".join(
                _fmt(r[m], 1 if m == "latency_ms" else 4 if m.endswith("cost") else 3)
                for m, _, _ in METRICS) + " |")
        lines.append("")
    lines += ["## What this shows", "", *findings(record), "",
              "## Setup", "",
              f"- Tasks: {', '.join(tasks)}; methods: {', '.join(METHODS[m] for m in methods)}.",
              f"- {s['instances']} instances x {s['slots']} slots per cell, evaluation key "
              f"{s['seed']}, training seeds {seeds}, {s['reps']} bootstrap replicates.",
              f"- Machine: {mach.get('platform', '?')}, {mach.get('cpu_count', '?')} cores "
              f"({mach.get('affinity', '?')} usable), jax {mach.get('jax', '?')} "
              f"({mach.get('backend', '?')}: {mach.get('device', '?')}).",
              f"- This run: {run.get('wall_s', 0):.0f} s wall, {run.get('cells_computed', 0)} "
              f"cells computed and {run.get('cells_reused', 0)} reused from an earlier run; the "
              f"cells' own times, in the runs that computed them, sum to "
              f"{run.get('cell_seconds', 0):.0f} s (a cell's time includes its program's "
              f"compile when it was the first of its seeds).", ""]
    return "\n".join(lines)


CSV_STATS = ("mean", "low", "high")


def render_csv(record: dict) -> str:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    names = [m for m, _, _ in METRICS] + ["headroom_share"]
    w.writerow(["task", "method", "label", "variant", "train_seeds", "instances"]
               + [f"{m}_{k}" for m in names for k in CSV_STATS])
    for r in record["rows"]:
        vals = []
        for m in names:
            vals += [f"{r[m][k]:.6g}" if r[m] is not None else "" for k in CSV_STATS]
        w.writerow([r["task"], r["method"], r["label"], r["variant"],
                    " ".join(map(str, r["train_seeds"])), r["instances"]] + vals)
    return buf.getvalue()


def render_heatmap(record: dict) -> bytes:
    """PNG of the methods x tasks heatmap of the headroom share, annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = record["tasks"]
    methods = [m for m in record["methods"] if any(_row(record, t, m) for t in tasks)]
    values = np.full((len(methods), len(tasks)), np.nan)
    for i, m in enumerate(methods):
        for j, t in enumerate(tasks):
            r = _row(record, t, m)
            if r is not None and r["headroom_share"] is not None:
                values[i, j] = r["headroom_share"]["mean"]
    fig, ax = plt.subplots(figsize=(max(1.6 * len(tasks) + 3, 7), 0.42 * len(methods) + 1.8))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="lightgrey")
    # Colours clipped to [-1, 1.2] (a method far worse than all-local would wash out the
    # rest); the annotation gives the value.
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-1.0, vmax=1.2, aspect="auto")
    for i in range(len(methods)):
        for j in range(len(tasks)):
            r = _row(record, tasks[j], methods[i])
            hs = r["headroom_share"] if r else None
            text = "-" if hs is None else f"{hs['mean']:.2f}\n[{hs['low']:.2f}, {hs['high']:.2f}]"
            dark = hs is not None and not -0.5 <= hs["mean"] <= 1.1   # the colour map's ends
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(tasks)), tasks, rotation=25, ha="right", fontsize=8)
    ax.set_yticks(range(len(methods)), [METHODS[m] for m in methods], fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.03, label="headroom share (1 = cooperative reference)")
    ax.set_title("Headroom share (1: the cooperative reference's saving over all-local, 0: "
                 "none)\nmean [95% bootstrap interval over training seeds and instances]",
                 fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def render_outputs(record: dict, out: Path) -> dict:
    """``{path: bytes}`` of the leaderboard's files under ``out`` (nothing written)."""
    meta = dict(record, versions={"mecjax": __version__, "jax": jax.__version__,
                                  "numpy": np.__version__, "python": platform.python_version()})
    return {out / "leaderboard.md": render_markdown(record).encode(),
            out / "leaderboard.csv": render_csv(record).encode(),
            out / "leaderboard.json": dumps_strict(meta, indent=2).encode(),
            out / "figures" / HEATMAP: render_heatmap(record)}


# ---------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="mecjax leaderboard",
                        description="every method on every task, with intervals over training "
                                    "seeds and instances (results/leaderboard.*)")
    ap.add_argument("--full", action="store_true",
                    help="GPU scale ([full] of eval/configs/leaderboard.toml)")
    ap.add_argument("--tasks", help="comma-separated task names (default: every task)")
    ap.add_argument("--methods", help="comma-separated scheduler names (default: every method; "
                                      "all-local and cooperative always run: the headroom "
                                      "share's floor and reference)")
    ap.add_argument("--instances", type=int, help="evaluation instances per cell (default 8)")
    ap.add_argument("--slots", type=int, help="slots per instance (default 12)")
    ap.add_argument("--seed", type=int, help="key of the evaluation instances (default 0)")
    ap.add_argument("--train-seeds", help="training seeds of the checkpoints (default 0,1,2)")
    ap.add_argument("--n-devices", type=int,
                    help="run every task at this N (default: the task's own; the learned "
                         "methods need checkpoints trained at it)")
    ap.add_argument("--workers", type=int,
                    help="groups of cells (a task, method and variant) run at once, each in "
                         "its own process (default 2, with --full 1)")
    ap.add_argument("--reps", type=int, help="bootstrap replicates (default 2000)")
    ap.add_argument("--no-learned", action="store_true",
                    help="leave out the methods that need checkpoints (DRL-FGSO, GAT-MEC, "
                         "TSG-MARL, DT-MEC with its twin, Unified)")
    ap.add_argument("--out", default="results", help="where leaderboard.* and figures/ go")
    ap.add_argument("--cells", help="where finished cells are kept (default "
                                    "OUT/leaderboard_cells)")
    ap.add_argument("--root", default=SHIPPED_ROOT,
                    help="root of the shipped checkpoints (default results/checkpoints)")
    return ap


def settings_from_args(args) -> Settings:
    """The settings of the command line, validated (:class:`UserError`)."""
    base = Settings.from_config("full" if args.full else "default")
    try:
        seeds = tuple(int(v) for v in args.train_seeds.split(",") if v.strip()) \
            if args.train_seeds is not None else None
    except ValueError:
        raise UserError(f"--train-seeds {args.train_seeds!r}: expected comma-separated "
                        f"integers") from None
    methods = tasks = None
    if args.methods is not None:
        methods = tuple(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
        if not methods:
            raise UserError(f"--methods {args.methods!r} names no method")
    if args.tasks is not None:
        tasks = canonical_tasks(t.strip() for t in args.tasks.split(",") if t.strip())
        if not tasks:
            raise UserError(f"--tasks {args.tasks!r} names no task")
    changes = {k: v for k, v in (("instances", args.instances), ("slots", args.slots),
                                 ("seed", args.seed), ("train_seeds", seeds),
                                 ("workers", args.workers), ("reps", args.reps),
                                 ("methods", methods), ("tasks", tasks),
                                 ("n_devices", args.n_devices)) if v is not None}
    if args.no_learned:
        changes["learned"] = False
    settings = dataclasses.replace(base, **changes)
    validate_settings(settings)
    return settings


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    enable_compilation_cache()
    try:
        leaderboard(settings, out_dir=args.out, cells_dir=args.cells, root=args.root)
    except KeyboardInterrupt:
        cells = args.cells or Path(args.out) / "leaderboard_cells"
        print(f"mecjax leaderboard: interrupted; the finished cells are kept under {cells}: "
              f"the same command resumes", file=sys.stderr)
        return 130
    return 0


__all__ = ["COUPLED_TASKS", "EXCLUDED", "LEARNED", "METHODS", "Settings", "build_record",
           "leaderboard", "main", "plan", "render_outputs", "task_shipped_dir"]

if __name__ == "__main__":
    raise SystemExit(run_program("leaderboard", main))
