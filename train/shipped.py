"""``mecjax train-shipped``: train the checkpoints shipped under ``results/checkpoints``.

Runs the recipe of each learner (``train/configs/<method>.toml``) for each of
its sizes: the full, resumable run goes to ``RUNS/<method>_N<n>/`` and only
the small policy (no replay buffers, optimizer states or training instances)
is exported to ``ROOT/<method>_N<n>/``. Rerunning resumes unfinished runs and
re-exports nothing that is already exported.
"""

from __future__ import annotations

import argparse

from mecjax.outputs import UserError
from mecjax.cli import ArgumentParser, int_list, run_program
from mecjax.config import Scenario
from mecjax.learners.base import get_learner
from mecjax.learners.store import export_policy
from train.recipes import SHIPPED_ORDER, SHIPPED_ROOT, load_recipe, shipped_dir
from train.run import train


def build_parser() -> argparse.ArgumentParser:
    ts = ArgumentParser(prog="mecjax train-shipped",
                                 description="train the checkpoints shipped in results/checkpoints")
    ts.add_argument("--methods", help=f"comma-separated (default: {','.join(SHIPPED_ORDER)})")
    ts.add_argument("--sizes", type=int_list, help="device counts (default: each recipe's sizes)")
    ts.add_argument("--root", default=SHIPPED_ROOT, help="where the policies are shipped")
    ts.add_argument("--runs", default="runs/shipped", help="where the full, resumable runs go")
    ts.add_argument("--seed", type=int, default=0)
    return ts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else SHIPPED_ORDER
    try:
        unknown = [m for m in methods if m not in SHIPPED_ORDER]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(SHIPPED_ORDER)}")
        recipes = {m: load_recipe(m) for m in methods}
    except ValueError as err:
        raise UserError(str(err)) from None
    for method in methods:
        recipe = recipes[method]
        # The twin is per device: one size serves every N, whatever --sizes says.
        sizes = recipe.sizes if method == "twin" else (args.sizes or recipe.sizes)
        for n in sizes:
            run_dir = shipped_dir(method, n, args.runs)
            learner = get_learner(method, **recipe.hyper_for(n, args.root))
            train(learner, Scenario(n_devices=n), run_dir, total_updates=recipe.updates,
                  chunk=recipe.chunk, seed=args.seed, resume="auto", keep=1)
            out = export_policy(run_dir, shipped_dir(method, n, args.root))
            print(f"[{method}] N={n}: policy exported to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("train-shipped", main))
