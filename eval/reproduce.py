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
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import os
import time
from pathlib import Path

import jax
import numpy as np

from mecjax.outputs import UserError
from mecjax import __version__
from mecjax.cli import int_list, profiled, run_program
from mecjax.config import Scenario
from mecjax.learners import twin
from mecjax.rollout import rollout
from mecjax.schedulers import make
from mecjax.stats import mean_ci, summarize
from eval.bounds import cooperative_bound_gaps
from eval.cells import cell_path, load_cell, save_cell
from eval.plan import VARIANTS, Settings, checkpoint_identity, plan_cells
from eval.report import write_outputs
from train.recipes import SHIPPED_ROOT, shipped_twin_dir


def run_cell(method: str, n: int, settings: Settings, config: dict,
             options: dict | None = None) -> dict:
    s = Scenario(n_devices=n, n_servers=settings.n_servers, horizon=settings.slots)
    t0 = time.perf_counter()
    sched = make(method, **(options or {}))
    per_slot = rollout(sched, s, jax.random.key(settings.seed), settings.instances, settings.slots)
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
        from mecjax.cli import enable_compilation_cache
        enable_compilation_cache(compile_cache)


def _compute_and_save(path: Path, compute, *args) -> dict:
    cell = compute(*args)
    save_cell(path, cell)
    return cell


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


def run_pending(pending: list, workers: int, log=print) -> dict:
    """Run the unfinished cells ``[(key, label, n, path, compute, *args)]``
    (``compute(*args)`` returns the cell), saving each as it finishes.

    ``workers`` > 1 runs that many cells at once in spawned processes, longest first:
    on a CPU, XLA's compiler leaves cores idle, and two workers overlap one cell's
    compile with another's. Results do not depend on ``workers``: each cell is its own
    program with its own keys.
    """
    done, total = {}, len(pending)
    if workers <= 1 or total <= 1:
        for k, (key, label, n, path, *job) in enumerate(pending, 1):
            done[key] = _compute_and_save(path, *job)
            log(_cell_line(k, total, label, n, done[key]))
        return done
    import jax

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


def forecast_cell(settings: Settings, ckpt_root: str, cells_dir: Path, log=print) -> dict | None:
    """The shipped twin against persistence on held-out traces (cached like a cell)."""
    path = shipped_twin_dir(ckpt_root)
    identity = checkpoint_identity(path)
    if identity is None:
        return None
    # Held out: training draws its instances from keys split from key(seed) of the
    # run; these traces come from a key no training run uses.
    config = {"what": "twin_forecast", "twin": identity, "instances": settings.instances,
              "slots": 48, "warmup": 8, "key": 1_000_003 + settings.seed, "mecjax": __version__}
    file = cell_path(cells_dir, "twin_forecast", config)
    cell = load_cell(file, config)
    if cell is None:
        s = Scenario(n_devices=settings.sizes[0], n_servers=settings.n_servers)
        skill = twin.forecast_skill(twin.load_twin(path, s), s, jax.random.key(config["key"]),
                                    n_instances=settings.instances, n_slots=48, warmup=8)
        cell = {"config": config, "skill": {k: float(v) for k, v in skill.items()}}
        save_cell(file, cell)
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
    per_instance = cooperative_bound_gaps(s, settings.seed, settings.instances,
                                          settings.slots, config["fw_iterations"])
    return {"config": config, "per_instance": per_instance,
            "gap": mean_ci(per_instance["gap"]), "wall_s": time.perf_counter() - t0}


def reproduce(settings: Settings | None = None, out_dir: str = "results",
              cache_dir: str | None = None, ckpt_root: str = SHIPPED_ROOT, log=print,
              workers: int = 1) -> dict:
    settings = settings or Settings.from_config("default")
    out = Path(out_dir)
    cells_dir = Path(cache_dir) if cache_dir else out / "reproduce_cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    todo, missing = plan_cells(settings, ckpt_root)
    log(f"mecjax reproduce: {len(todo)} cells ({settings.instances} instances x "
        f"{settings.slots} slots each); not measured: {', '.join(missing) or 'none'}")
    cells = {}
    t_start = time.perf_counter()
    forecast = forecast_cell(settings, ckpt_root, cells_dir, log) \
        if settings.methods is None or {"dt_mec", "unified"} & set(settings.methods) else None
    pending, bounds = [], {}
    for k, (key, label, name, n, options, flags, identity) in enumerate(todo, 1):
        config = settings.cell_config(name, n)
        if identity:
            config["checkpoint"] = identity
        if flags:
            config["flags"] = flags
        stem = f"{name}_N{n}" if not flags else f"{name}_{'_'.join(sorted(flags))}_N{n}"
        path = cell_path(cells_dir, stem, config)
        cell = load_cell(path, config)
        if cell is not None:
            log(f"  [{k}/{len(todo)}] {label} N={n}: done before, reused")
            cells[key] = cell
        else:
            pending.append((key, label, n, path, run_cell, name, n, settings, config, options or {}))
    # The cooperative reference's gap to a bound on each slot's optimum (run like a cell).
    for n in settings.sizes if settings.methods is None or "cooperative" in settings.methods else ():
        config = bound_config(settings, n)
        path = cell_path(cells_dir, f"cooperative_bound_N{n}", config)
        cell = load_cell(path, config)
        if cell is not None:
            bounds[n] = cell
        else:
            pending.append((("cooperative_bound", n), "cooperative vs slot-optimum bound", n, path,
                            compute_bound_cell, settings, n, config))
    if pending:
        log(f"  running {len(pending)} cells" + (f", {workers} at once" if workers > 1 else ""))
    for key, cell in run_pending(pending, workers, log).items():
        if key[0] == "cooperative_bound":
            bounds[key[1]] = cell
        else:
            cells[key] = cell
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
    rep = argparse.ArgumentParser(prog="mecjax reproduce",
                                  description="regenerate the paper's tables and figures")
    rep.add_argument("--full", action="store_true",
                     help="paper scale ([full] of eval/configs/reproduce.toml): for a GPU")
    rep.add_argument("--instances", type=int, help="instances per cell (default 32)")
    rep.add_argument("--slots", type=int, help="slots per instance (default 25)")
    rep.add_argument("--sizes", type=int_list, help="device counts (default 50,100,150)")
    rep.add_argument("--seed", type=int, help="default 0")
    rep.add_argument("--out", default="results", help="where tables and figures are written")
    rep.add_argument("--cache", help="where finished cells are kept (default OUT/reproduce_cells)")
    rep.add_argument("--workers", type=int,
                     help="cells run at once, each in its own process (default 2, with --full 1: "
                          "on a CPU two overlap compiling; results do not depend on it)")
    rep.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace to DIR")
    return rep


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        base = Settings.from_config("full" if args.full else "default")
        workers = args.workers if args.workers is not None else (1 if args.full else 2)
        for name in ("instances", "slots", "workers"):
            value = workers if name == "workers" else getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} {value} must be >= 1")
        settings = dataclasses.replace(
            base, **{k: v for k, v in (("instances", args.instances), ("slots", args.slots),
                                       ("seed", args.seed), ("sizes", args.sizes))
                     if v is not None})
    except ValueError as err:
        raise UserError(str(err)) from None
    with profiled(args.profile):
        reproduce(settings, out_dir=args.out, cache_dir=args.cache, workers=workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("reproduce", main))
