"""``mecjax reproduce``: the paper's Tables 2-5 and Figures 4-6, measured.

Every method of the tables, plus the references, runs on the same instances
(common random numbers) at N = 50, 100, 150 with M = 3, and the unified
scheduler's ablations (Table 5) at N = 100. Each value is the mean over
instances of the per-instance average over slots, with its 95% t-interval
over instances, and the paper's value beside it. The digital twin's
forecaster is scored against the persistence forecast on held-out traces.
Learned methods run the checkpoints shipped under ``results/checkpoints``;
a method whose checkpoint is missing is listed as not measured, never filled in.

Each (method, N) cell is saved as it finishes; an interrupted run resumes
without redoing finished cells (a cell is reused only if it was made with the
same settings). This module runs the cells; :mod:`eval.report` writes the
tables and figures; :mod:`eval.plan` says what runs.

A run holds the lock of its output and cells directories for the whole job (a
second writer is refused), validates its settings before anything is written,
and compiles the largest pending cell first to refuse, with one line, a job
whose estimated peak memory does not fit (``--workers`` cells at once).

In a multi-host run (``--distributed`` or ``--coordinator``) every process runs
the same cells in the same order, in-process, each rollout cell's instances
sharded over every process's devices (:func:`mecjax.sharding.sharded_rollout`);
the cells without a sharded form (the bound cells, the twin's forecast score)
run whole on every process, which keeps the processes in step. Only process 0
holds the locks, reads and saves cells and writes the report; it decides which
cells are done and tells the others, and a refusal on any process stops all.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import time
from pathlib import Path

import jax
import numpy as np

from mecjax import __version__
from mecjax import preflight, sharding
from mecjax.cli import (ArgumentParser, enable_compilation_cache, int_list, profiled,
                        run_program)
from mecjax.config import Scenario
from mecjax.learners import twin
from mecjax.outputs import UserError, check_output_dir, lock_output_dir
from mecjax.rollout import compile_rollout, rollout
from mecjax.schedulers import available, make
from mecjax.stats import mean_ci, summarize
from eval.bounds import cooperative_bound_gaps
from eval.cells import cell_path, digest, load_cell, save_cell
from eval.plan import VARIANTS, Settings, checkpoint_identity, methods_in_order, plan_cells
from eval.report import write_outputs
from train.recipes import SHIPPED_ROOT, shipped_twin_dir


def run_cell(method: str, n: int, settings: Settings, config: dict,
             options: dict | None = None, shard: bool = False) -> dict:
    """One (method, N) cell; ``shard``: its instances split over every device of every
    process (:func:`mecjax.sharding.sharded_rollout`; each process gets the whole result)."""
    s = Scenario(n_devices=n, n_servers=settings.n_servers, horizon=settings.slots)
    t0 = time.perf_counter()
    # Built (its checkpoints read) on every process before the first collective: one that
    # cannot read them must stop the others, not leave them waiting.
    sched = sharding.agreed(lambda: make(method, **(options or {})),
                            f"another process could not build {method} (see its error)")
    key = jax.random.key(settings.seed)
    if shard:
        per_slot = sharding.sharded_rollout(sched, s, key, settings.instances, settings.slots)
    else:
        per_slot = rollout(sched, s, key, settings.instances, settings.slots)
        jax.block_until_ready(per_slot)
    # Per-instance slot averages: variants are compared paired, instance by instance.
    per_instance = {k: np.asarray(v, np.float64).mean(axis=1).tolist() for k, v in per_slot.items()}
    return {"config": config, "summary": summarize(per_slot), "per_instance": per_instance,
            "wall_s": time.perf_counter() - t0}


def _start_worker(compile_cache: str | None) -> None:
    """A cell worker: the parent's persistent compilation cache; no GPU preallocation
    (several workers may share one accelerator)."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if compile_cache:
        enable_compilation_cache(compile_cache)


def _compute_and_save(path: Path, compute, *args) -> dict:
    cell = compute(*args)
    save_cell(path, cell)
    return cell


def _compute(path: Path, compute, *args) -> dict:
    return compute(*args)


def _cell_line(k: int, total: int, label: str, n: int, cell: dict) -> str:
    if "gap" in cell:
        return (f"  [{k}/{total}] {label} N={n}: gap {100 * cell['gap']['mean']:.2f}% "
                f"± {100 * cell['gap']['ci95']:.2f}% ({cell['wall_s']:.1f} s)")
    m = cell["summary"]
    return (f"  [{k}/{total}] {label} N={n}: latency {m['latency_ms']['mean']:.1f} ms, "
            f"energy {m['energy_j']['mean']:.3f} J, fairness {m['fairness']['mean']:.3f} "
            f"({cell['wall_s']:.1f} s)")


# Rough relative cost of a cell (compile + run on a CPU), to start the longest first.
_COST = {"dt_mec": 3.0, "unified": 2.5, "qio_mec": 1.6, "ts_hybrid_sb": 1.4,
         "cooperative_bound": 1.4, "cooperative": 1.1, "best_response": 1.0}


def run_pending(pending: list, workers: int, log=print, save: bool = True) -> dict:
    """Run the unfinished cells ``[(key, label, n, path, compute, *args)]``
    (``compute(*args)`` returns the cell), saving each as it finishes (unless ``save`` is
    false: the processes of a multi-host run other than process 0).

    ``workers`` > 1 runs that many cells at once in spawned processes, longest first:
    on a CPU, XLA's compiler leaves cores idle, and two workers overlap one cell's
    compile with another's. Results do not depend on ``workers``: each cell is its own
    program with its own keys.
    """
    done, total = {}, len(pending)
    if workers <= 1 or total <= 1:
        for k, (key, label, n, path, *job) in enumerate(pending, 1):
            done[key] = (_compute_and_save if save else _compute)(path, *job)
            log(_cell_line(k, total, label, n, done[key]))
        return done
    cache = jax.config.jax_compilation_cache_dir
    order = sorted(pending, key=lambda job: -_COST.get(job[0][0].split(":")[0], 0.6)
                   * (0.5 + job[2] / 150))
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(cache,)) as pool:
        futures = {pool.submit(_compute_and_save, path, *job): (key, label, n)
                   for key, label, n, path, *job in order}
        for k, future in enumerate(concurrent.futures.as_completed(futures), 1):
            key, label, n = futures[future]
            done[key] = future.result()
            log(_cell_line(k, total, label, n, done[key]))
    return done


def forecast_config(settings: Settings, ckpt_root: str) -> dict | None:
    """The settings of the twin's forecast score (None without a shipped twin)."""
    identity = checkpoint_identity(shipped_twin_dir(ckpt_root))
    if identity is None:
        return None
    # Held out: training draws its instances from keys split from key(seed) of the
    # run; these traces come from a key no training run uses.
    return {"what": "twin_forecast", "twin": identity, "instances": settings.instances,
            "slots": 48, "warmup": 8, "key": 1_000_003 + settings.seed, "mecjax": __version__}


def forecast_cell(settings: Settings, config: dict, ckpt_root: str, cells_dir: Path, log=print,
                  writer: bool = True) -> dict | None:
    """The shipped twin against persistence on held-out traces (cached like a cell; in a
    multi-host run, process 0's cache decides and every process computes it whole; None on
    the other processes when process 0 had it)."""
    file = cell_path(cells_dir, "twin_forecast", config)
    cell = load_cell(file, config) if writer else None
    if not sharding.from_process_0(np.array([cell is not None], np.int32))[0]:
        s = Scenario(n_devices=settings.sizes[0], n_servers=settings.n_servers)
        skill = sharding.agreed(
            lambda: twin.forecast_skill(twin.load_twin(shipped_twin_dir(ckpt_root), s), s,
                                        jax.random.key(config["key"]),
                                        n_instances=settings.instances, n_slots=48, warmup=8),
            "another process could not score the twin (see its error)")
        cell = {"config": config, "skill": {k: float(v) for k, v in skill.items()}}
        if writer:
            save_cell(file, cell)
    if cell is None:               # another process of a multi-host run: process 0 had it
        return None
    sk = cell["skill"]
    log(f"  twin forecaster vs persistence (held out): task MSE -{100 * sk['task_margin']:.1f}%, "
        f"channel MSE -{100 * sk['channel_margin']:.1f}%")
    return cell


def bound_config(settings: Settings, n: int) -> dict:
    return {**settings.cell_config("cooperative_bound", n), "fw_iterations": 200}


def compute_bound_cell(settings: Settings, n: int, config: dict) -> dict:
    """The cooperative reference's gap to a lower bound on each slot's optimum at N = n
    (:mod:`eval.bounds`)."""
    t0 = time.perf_counter()
    s = Scenario(n_devices=n, n_servers=settings.n_servers, horizon=settings.slots)
    per_instance = sharding.agreed(
        lambda: cooperative_bound_gaps(s, settings.seed, settings.instances, settings.slots,
                                       config["fw_iterations"]),
        "another process could not compute the bound (see its error)")
    return {"config": config, "per_instance": per_instance,
            "gap": mean_ci(per_instance["gap"]), "wall_s": time.perf_counter() - t0}


def validate_settings(settings: Settings, workers: int = 1, distributed: bool = False) -> None:
    """Raise :class:`UserError` naming the first setting out of range (nothing run yet)."""
    for name, value in (("instances", settings.instances), ("slots", settings.slots),
                        ("workers", workers)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"--{name} {value} must be an integer >= 1")
    if distributed and workers > 1:
        # Worker processes would each join nothing: the cells of a multi-host run are
        # collectives that every process runs in-process, in the same order.
        raise UserError(f"--workers {workers} cannot be used with --distributed: a multi-host "
                        f"run computes its cells in-process, sharded over every host's devices")
    if not settings.sizes or any(not isinstance(n, int) or n < 1 for n in settings.sizes):
        raise UserError(f"--sizes {settings.sizes} must be positive device counts")
    # Keys are 32-bit without x64: seed 2**32 would silently equal seed 0.
    if not isinstance(settings.seed, int) or not 0 <= settings.seed < 2 ** 32:
        raise UserError(f"--seed {settings.seed} must be an integer in [0, 2**32)")
    # A scheduler with no row in the tables would be silently skipped: refuse it.
    known = [name for _, name in methods_in_order() if name in available()]
    unknown = [m for m in settings.methods or () if m not in known]
    if unknown:
        raise UserError(f"--methods: {', '.join(unknown)} not among the tables' methods "
                        f"({', '.join(known)})")
    for n in settings.sizes:
        try:
            Scenario(n_devices=n, n_servers=settings.n_servers, horizon=settings.slots)
        except ValueError as err:
            raise UserError(f"--sizes {n}: {err}") from None


def _largest_cell(pending: list, shard: bool = False) -> tuple[str, int, dict, bool] | None:
    """(scheduler, N, options, sharded) of the pending cell expected to need the most
    memory: the largest N, then the most work per slot. ``shard``: whether the rollout
    cells are sharded (the bound cells never are)."""
    cells = []
    for key, _label, n, _path, compute, *args in pending:
        if compute is run_cell:
            cells.append((args[0], n, args[4], shard))
        else:                      # the bound cells roll the cooperative reference out, whole
            cells.append(("cooperative", n, {}, False))
    return max(cells, key=lambda c: (c[1], _COST.get(c[0], 0.6)), default=None)


def check_memory(pending: list, settings: Settings, workers: int, shard: bool = False) -> None:
    """Compile the largest pending cell's rollout (compiling reserves no buffers) and
    refuse, with one line, a job whose peak (``workers`` cells at once) does not fit.
    ``shard``: the rollout cells run sharded over every device (a multi-host run)."""
    largest = _largest_cell(pending, shard)
    if largest is None:
        return
    method, n, options, shard = largest
    s = Scenario(n_devices=n, n_servers=settings.n_servers, horizon=settings.slots)
    # The program the cell will run: with the persistent compilation cache, the
    # cell's compile of it is then a cache hit.
    if shard:
        compiled = sharding.compile_sharded_rollout(make(method, **options), s,
                                                    settings.instances, settings.slots)
        per_cell = sharding.host_bytes(compiled)
    else:
        compiled = compile_rollout(make(method, **options), s, jax.random.key(settings.seed),
                                   settings.instances, settings.slots)
        per_cell = preflight.compiled_bytes(compiled)
    what = f"the largest reproduce cell ({method} at N={n})"
    if per_cell is not None and workers > 1:
        per_cell, what = per_cell * workers, f"{what} x {workers} workers"
    preflight.check_fits(per_cell, what, "--instances or --slots"
                         + (" or --workers" if workers > 1 else ""))


def reproduce(settings: Settings | None = None, out_dir: str = "results",
              cache_dir: str | None = None, ckpt_root: str = SHIPPED_ROOT, log=print,
              workers: int = 1, check_mem: bool = True, distributed: bool = False) -> dict | None:
    """Run the unfinished cells of ``settings`` and write the report under ``out_dir``,
    holding the lock of ``out_dir`` (and of the cells directory) for the whole job; return
    the report's record.

    ``distributed``: one process of a multi-host run (``jax.distributed`` already
    joined), which every process calls with the same arguments: cells run in-process,
    sharded over every process's devices; only process 0 locks, reads and writes, and
    the others return None."""
    settings = settings or Settings.from_config("default")
    validate_settings(settings, workers, distributed)
    writer = sharding.is_writer()
    out = Path(out_dir)
    cells_dir = Path(cache_dir) if cache_dir else out / "reproduce_cells"
    with contextlib.ExitStack() as stack:
        def lock():
            if not writer:
                return
            check_output_dir(out, "--out")
            if cache_dir:
                check_output_dir(cells_dir, "--cache")
            stack.enter_context(lock_output_dir(out, "mecjax reproduce", "--out"))
            if cells_dir.resolve() != out.resolve():
                # Its own lock too: another run may use these cells through --cache.
                stack.enter_context(lock_output_dir(cells_dir, "mecjax reproduce", "--cache"))

        sharding.agreed(lock, f"process 0 could not lock --out {out} (see its error)")
        return _reproduce(settings, out, cells_dir, ckpt_root, log, workers, check_mem,
                          distributed, writer)


def _reproduce(settings: Settings, out: Path, cells_dir: Path, ckpt_root: str, log,
               workers: int, check_mem: bool, distributed: bool, writer: bool) -> dict | None:
    wants_forecast = settings.methods is None or bool({"dt_mec", "unified"} & set(settings.methods))
    todo, missing, forecast_settings = sharding.agreed(
        lambda: (*plan_cells(settings, ckpt_root),
                 forecast_config(settings, ckpt_root) if wants_forecast else None),
        "another process could not plan the cells (see its error)")
    log(f"mecjax reproduce: {len(todo)} cells ({settings.instances} instances x "
        f"{settings.slots} slots each); not measured: {', '.join(missing) or 'none'}"
        + (f"; {jax.process_count()} process(es), {jax.device_count()} devices"
           if distributed else ""))
    t_start = time.perf_counter()
    jobs = []     # (config, (key, label, n, path, compute, *args)) of every cell, done or not
    for key, label, name, n, options, flags, identity in todo:
        config = settings.cell_config(name, n)
        if identity:
            config["checkpoint"] = identity
        if flags:
            config["flags"] = flags
        stem = f"{name}_N{n}" if not flags else f"{name}_{'_'.join(sorted(flags))}_N{n}"
        jobs.append((config, (key, label, n, cell_path(cells_dir, stem, config), run_cell, name,
                              n, settings, config, options or {}, distributed)))
    # The cooperative reference's gap to a bound on each slot's optimum (run like a cell).
    for n in settings.sizes if settings.methods is None or "cooperative" in settings.methods else ():
        config = bound_config(settings, n)
        jobs.append((config, (("cooperative_bound", n), "cooperative vs slot-optimum bound", n,
                              cell_path(cells_dir, f"cooperative_bound_N{n}", config),
                              compute_bound_cell, settings, n, config)))
    if distributed:
        # Every process must run the same cells in the same order (each is a collective):
        # the plan depends on the checkpoints each host sees, so compare it first.
        plan = digest({"cells": [config for config, _ in jobs], "forecast": forecast_settings,
                       "missing": missing})
        if not sharding.same_on_every_process(plan):
            raise UserError(f"the processes plan different cells: every host must see the same "
                            f"checkpoints under {ckpt_root} and run the same command")
    # Process 0 alone reads the cells saved before and tells the others which are done.
    saved = [load_cell(job[3], config) if writer else None for config, job in jobs]
    done = sharding.from_process_0(np.array([c is not None for c in saved], np.int32))
    cells, bounds, pending = {}, {}, []
    for k, ((_, job), cell, was_done) in enumerate(zip(jobs, saved, done), 1):
        key, label, n = job[:3]
        if not was_done:
            pending.append(job)
        elif key[0] == "cooperative_bound":
            bounds[n] = cell
        else:
            log(f"  [{k}/{len(todo)}] {label} N={n}: done before, reused")
            cells[key] = cell
    if pending and check_mem:
        sharding.agreed(lambda: check_memory(pending, settings, min(workers, len(pending)),
                                             distributed),
                        "another process could not check the largest cell's memory (see its "
                        "error)")
    forecast = forecast_cell(settings, forecast_settings, ckpt_root, cells_dir, log, writer) \
        if forecast_settings else None
    if pending:
        log(f"  running {len(pending)} cells" + (f", {workers} at once" if workers > 1 else ""))
    for key, cell in run_pending(pending, workers, log, save=writer).items():
        if key[0] == "cooperative_bound":
            bounds[key[1]] = cell
        else:
            cells[key] = cell
    if not writer:
        return None                 # process 0 holds the cells saved before and reports
    cells = {key: cells[key] for key, *_ in todo}      # plan order, whatever finished first
    for method, variants in VARIANTS.items():
        if (method, settings.ablation_size) in cells:
            cells[(f"{method}:{next(iter(variants))}", settings.ablation_size)] = \
                cells[(method, settings.ablation_size)]
    for n, cell in sorted(bounds.items()):
        log(f"  cooperative vs slot-optimum bound N={n}: gap {100 * cell['gap']['mean']:.2f}% "
            f"± {100 * cell['gap']['ci95']:.2f}%")
    bounds = {n: cell["gap"] for n, cell in sorted(bounds.items())}
    result = {"settings": dataclasses.asdict(settings), "missing": missing,
              "cells": {f"{m}@{n}": c for (m, n), c in cells.items()}, "bounds": bounds,
              "twin_forecast": forecast["skill"] if forecast else None,
              "wall_s": time.perf_counter() - t_start}
    write_outputs(result, cells, settings, out)
    log(f"wrote {out / 'paper_tables.md'} and figures under {out / 'figures'}")
    return result


def build_parser() -> argparse.ArgumentParser:
    rep = ArgumentParser(prog="mecjax reproduce",
                                  description="regenerate the paper's tables and figures")
    rep.add_argument("--full", action="store_true",
                     help="paper scale ([full] of eval/configs/reproduce.toml): for a GPU")
    rep.add_argument("--instances", type=int, help="instances per cell (default 32)")
    rep.add_argument("--slots", type=int, help="slots per instance (default 25)")
    rep.add_argument("--sizes", help="device counts (default 50,100,150)")
    rep.add_argument("--seed", type=int, help="default 0")
    rep.add_argument("--methods", help="comma-separated scheduler names of the tables' methods "
                                       "to run, e.g. local,greedy (default: all of them)")
    rep.add_argument("--out", default="results", help="where tables and figures are written")
    rep.add_argument("--cache", help="where finished cells are kept (default OUT/reproduce_cells)")
    rep.add_argument("--workers", type=int,
                     help="cells run at once, each in its own process (default 2, with --full "
                          "or --distributed 1: on a CPU two overlap compiling; results do not "
                          "depend on it)")
    sharding.add_distributed_arguments(rep)
    rep.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace to DIR")
    return rep


def settings_from_args(args) -> tuple[Settings, int]:
    """(settings, workers) of the command line, validated (:class:`UserError`; a multi-host
    run's flags too)."""
    try:
        base = Settings.from_config("full" if args.full else "default")
        sizes = int_list(args.sizes) if args.sizes is not None else None
    except (ValueError, argparse.ArgumentTypeError) as err:
        raise UserError(f"--sizes: {err}" if args.sizes is not None else str(err)) from None
    methods = None
    if args.methods is not None:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        if not methods:
            raise UserError(f"--methods {args.methods!r} names no scheduler")
    distributed = sharding.distributed_args(args) is not None
    workers = args.workers if args.workers is not None else (1 if args.full or distributed else 2)
    settings = dataclasses.replace(
        base, **{k: v for k, v in (("instances", args.instances), ("slots", args.slots),
                                   ("seed", args.seed), ("sizes", sizes),
                                   ("methods", methods)) if v is not None})
    validate_settings(settings, workers, distributed)
    return settings, workers


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Before joining a multi-host run: a typo should not wait for the other processes.
    settings, workers = settings_from_args(args)
    dist = sharding.distributed_args(args)
    if dist is not None:
        sharding.initialize_distributed(**dist)
    with profiled(args.profile):
        reproduce(settings, out_dir=args.out, cache_dir=args.cache, workers=workers,
                  distributed=dist is not None)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("reproduce", main))
