"""``mecjax train-shipped``: train the checkpoints shipped under ``results/checkpoints``.

Runs the recipe of each learner (``train/configs/<method>.toml``) for each of
its sizes: the full, resumable run goes to ``RUNS/<method>_N<n>/`` and only
the small policy (no replay buffers, optimizer states or training instances)
is exported to ``ROOT/<method>_N<n>/``. Rerunning resumes unfinished runs and
re-exports nothing that is already exported.

``--tasks all`` (or a comma list of task names) trains instead every method
on each task of :mod:`mecjax.tasks`, at the task's N, with the same recipes
and ``--seeds`` K (default :data:`~train.recipes.TASK_SEEDS`) seeds at once
(one vmapped run, :func:`train.run.train`): the run goes to
``RUNS/tasks/<task-id>/<method>/`` and seed k's policy is exported to
``ROOT/tasks/<task-id>/<method>_s<k>/`` (:func:`~train.recipes.task_shipped_dir`).
drl_gat's seed k trains on the frozen GAT of gat_mec's seed k of the same task.
"""

from __future__ import annotations

import argparse
import time

from mecjax import tasks
from mecjax.outputs import UserError
from mecjax.cli import ArgumentParser, int_list, run_program
from mecjax.config import Scenario
from mecjax.learners.base import get_learner
from mecjax.learners.store import export_policy
from train.recipes import (SHIPPED_ORDER, SHIPPED_ROOT, TASK_SEEDS, load_recipe, shipped_dir,
                           task_shipped_dir)
from train.run import train


def build_parser() -> argparse.ArgumentParser:
    ts = ArgumentParser(prog="mecjax train-shipped",
                                 description="train the checkpoints shipped in results/checkpoints")
    ts.add_argument("--methods", help=f"comma-separated (default: {','.join(SHIPPED_ORDER)})")
    ts.add_argument("--sizes", type=int_list, help="device counts (default: each recipe's sizes; "
                                                   "not with --tasks: a task has its N)")
    ts.add_argument("--tasks", metavar="all|NAME,...",
                    help="train the per-task checkpoints of these tasks (all: "
                         + ", ".join(tasks.names()) + ") instead of the paper's N = 50/100/150")
    ts.add_argument("--seeds", type=int, metavar="K",
                    help=f"with --tasks: training seeds 0..K-1 at once (default {TASK_SEEDS})")
    ts.add_argument("--root", default=SHIPPED_ROOT, help="where the policies are shipped")
    ts.add_argument("--runs", default="runs/shipped", help="where the full, resumable runs go")
    ts.add_argument("--seed", type=int, default=0,
                    help="training seed (with --tasks: the first of the K seeds; the shipped "
                         "directories are named by the training seed, <method>_s<seed>)")
    ts.add_argument("--max-updates", type=int, metavar="N",
                    help="cap every recipe's updates at N (and its chunk at N): a quick check "
                         "that every method runs, into a scratch --root and --runs; never "
                         "for the shipped checkpoints")
    return ts


def _task_ids(text: str) -> list[str]:
    """The versioned ids of ``--tasks`` (``all`` or a comma list of names)."""
    if text.strip() == "all":
        return tasks.names()
    try:
        return list(dict.fromkeys(tasks.spec(n.strip()).id for n in text.split(",") if n.strip()))
    except ValueError as err:
        raise UserError(f"--tasks: {err}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else SHIPPED_ORDER
    task_ids = _task_ids(args.tasks) if args.tasks is not None else None
    try:
        unknown = [m for m in methods if m not in SHIPPED_ORDER]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(SHIPPED_ORDER)}")
        if task_ids is not None and not task_ids:
            raise ValueError("--tasks names no task")
        if task_ids is None and args.seeds is not None:
            raise ValueError("--seeds needs --tasks (the paper checkpoints are one seed each)")
        if task_ids is not None and args.sizes:
            raise ValueError("--sizes does not apply to --tasks (each task has its N)")
        if args.seeds is not None and args.seeds < 1:
            raise ValueError(f"--seeds {args.seeds} must be >= 1")
        if args.max_updates is not None and args.max_updates < 1:
            raise ValueError(f"--max-updates {args.max_updates} must be >= 1")
        recipes = {m: load_recipe(m) for m in methods}
    except ValueError as err:
        raise UserError(str(err)) from None
    cap = args.max_updates

    def budget(recipe):
        if cap is None:
            return recipe.updates, recipe.chunk
        return min(recipe.updates, cap), min(recipe.chunk, cap)

    if task_ids is not None:
        return _train_tasks(task_ids, methods, recipes, budget, args)
    for method in methods:
        recipe = recipes[method]
        updates, chunk = budget(recipe)
        # The twin is per device: one size serves every N, whatever --sizes says.
        sizes = recipe.sizes if method == "twin" else (args.sizes or recipe.sizes)
        for n in sizes:
            run_dir = shipped_dir(method, n, args.runs)
            learner = get_learner(method, **recipe.hyper_for(n, args.root))
            train(learner, Scenario(n_devices=n), run_dir, total_updates=updates,
                  chunk=chunk, seed=args.seed, resume="auto", keep=1)
            out = export_policy(run_dir, shipped_dir(method, n, args.root))
            print(f"[{method}] N={n}: policy exported to {out}")
    return 0


def _train_tasks(task_ids, methods, recipes, budget, args) -> int:
    """Every method of ``methods`` on every task, ``--seeds`` seeds at once; seed k's
    policy exported to ``task_shipped_dir(task, method, seed + k, root)``."""
    seeds = args.seeds or TASK_SEEDS
    t_all, times = time.perf_counter(), []
    for task_id in task_ids:
        scenario = tasks.make(task_id)
        for method in methods:
            recipe = recipes[method]
            updates, chunk = budget(recipe)
            run_dir = f"{args.runs}/tasks/{task_id}/{method}"
            learner = get_learner(method, **recipe.hyper_for_task(task_id, args.root))
            t0 = time.perf_counter()
            train(learner, scenario, run_dir, total_updates=updates, chunk=chunk,
                  seed=args.seed, seeds=seeds, resume="auto", keep=1)
            for k in range(seeds):
                out = task_shipped_dir(task_id, method, args.seed + k, args.root)
                export_policy(run_dir, out, seed=k if seeds > 1 else None)
            times.append((task_id, method, time.perf_counter() - t0))
            print(f"[{method}] {task_id}: {seeds} seed(s) in {times[-1][2]:.0f} s, policies "
                  f"exported to {task_shipped_dir(task_id, method, '<k>', args.root)}",
                  flush=True)
    print(f"trained {len(times)} run(s) of {seeds} seed(s) in "
          f"{time.perf_counter() - t_all:.0f} s", flush=True)
    for method in methods:
        total = sum(t for _, m, t in times if m == method)
        print(f"  {method}: {total:.0f} s over {len(task_ids)} task(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("train-shipped", main))
