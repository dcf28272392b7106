"""``mecjax train``: run any learner in jitted chunks, with progress,
periodic orbax checkpoints, resume, and a learning curve.

The whole chunk of ``chunk`` updates is one ``lax.scan`` under ``jit``
(PureJaxRL); the host only reports progress and saves between chunks. The
train state holds everything (parameters, optimizer states, replay buffers,
training instances, PRNG key), so a run interrupted and resumed from its
last checkpoint ends bit-identical to an uninterrupted one.

A run directory holds ``ckpt/`` (orbax), ``metrics.csv`` (one row per
update) and ``learning_curve.png``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import jax
import numpy as np

from mecjax.outputs import UserError
from mecjax import checkpoint as ckpt
from mecjax.cli import parse_sets, profiled, run_program
from mecjax.config import Scenario
from mecjax.learners.base import Learner, get_learner, train_chunk
from mecjax.learners.store import run_config
from train.curves import write_learning_curve


def _append_metrics(path: Path, start: int, metrics: dict) -> None:
    names = sorted(metrics)
    rows = np.stack([np.asarray(metrics[k], np.float64) for k in names], -1)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["update"] + names)
        for i, row in enumerate(rows):
            w.writerow([start + i + 1] + [f"{v:.6g}" for v in row])


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows written after the checkpoint being resumed (their chunk will rerun)."""
    if not path.exists():
        return
    with open(path) as f:
        rows = list(csv.reader(f))
    keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(keep)
    tmp.replace(path)


def train(learner: Learner, scenario: Scenario, run_dir, *, total_updates: int, chunk: int = 100,
          seed: int = 0, resume: bool = False, keep: int = 3, stop_after: int | None = None,
          log=print):
    """Train ``learner`` for ``total_updates`` updates; returns the final train state.

    ``resume``: continue from the latest checkpoint in ``run_dir`` (refusing one
    made for another method, scenario or hyper-parameters). Without it, a run
    directory that already holds checkpoints is refused, so nothing saved is
    overwritten. ``stop_after``: stop after that many chunks (to test resume).
    """
    if total_updates < 1 or chunk < 1:
        raise ValueError(f"total_updates={total_updates} and chunk={chunk} must be >= 1")
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "ckpt"
    metrics_path = run_dir / "metrics.csv"
    config = run_config(learner, scenario, seed, chunk)
    latest = ckpt.latest_step(ckpt_dir) if ckpt_dir.exists() else None
    state = learner.init(jax.random.key(seed), scenario)
    step = 0
    if latest is not None:
        if not resume:
            raise FileExistsError(f"{run_dir} already holds a training run (checkpoint at update "
                                  f"{latest}); pass resume=True (--resume) to continue it, or "
                                  f"choose another run directory")
        state, _, step = ckpt.restore(ckpt_dir, state, expect=config)
        _truncate_metrics(metrics_path, step)
        log(f"[{learner.name}] resumed from update {step}")
    elif resume:
        log(f"[{learner.name}] nothing to resume in {run_dir}; starting fresh")
    run_dir.mkdir(parents=True, exist_ok=True)
    if step == 0 and metrics_path.exists():
        metrics_path.unlink()
    t0, chunks = time.perf_counter(), 0
    while step < total_updates:
        n = min(chunk, total_updates - step)
        state, metrics = train_chunk(learner, state, scenario, n)
        metrics = jax.device_get(metrics)
        _append_metrics(metrics_path, step, metrics)
        step += n
        ckpt.save(ckpt_dir, step, state, config, keep=keep)
        metric = learner.progress_metric
        value = float(np.mean(metrics[metric]))
        label = "mean cost" if metric == "mean_cost" else metric
        rate = step / max(time.perf_counter() - t0, 1e-9)
        log(f"[{learner.name}] update {step}/{total_updates}  {label} {value:.5f}  "
            f"({time.perf_counter() - t0:.1f} s, {rate:.0f} updates/s)")
        chunks += 1
        if stop_after is not None and chunks >= stop_after and step < total_updates:
            log(f"[{learner.name}] stopped after {chunks} chunk(s) at update {step}")
            return state
    write_learning_curve(run_dir, f"{learner.name}, N={scenario.n_devices}, M={scenario.n_servers}",
                         learner.progress_metric)
    return state


def build_parser() -> argparse.ArgumentParser:
    tr = argparse.ArgumentParser(prog="mecjax train", description="train a learned scheduler, "
                                 "with checkpoints and resume")
    tr.add_argument("method", help="drl_fgso, gat_mec, tsg_marl, twin (the DT forecaster) or "
                                   "drl_gat (DRL on GAT embeddings; --set gat_checkpoint=DIR)")
    tr.add_argument("--n-devices", type=int, default=50)
    tr.add_argument("--n-servers", type=int, default=3)
    tr.add_argument("--updates", type=int, default=2000, help="training updates (slots)")
    tr.add_argument("--chunk", type=int, default=100, help="updates per jitted chunk/checkpoint")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--run-dir", help="default runs/METHOD_N<n>")
    tr.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    tr.add_argument("--set", action="append", metavar="NAME=VALUE",
                    help="a hyper-parameter of the learner (repeatable)")
    tr.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace to DIR")
    return tr


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        learner = get_learner(args.method, **parse_sets(args.set))
        scenario = Scenario(n_devices=args.n_devices, n_servers=args.n_servers)
        if args.updates < 1 or args.chunk < 1:
            raise ValueError(f"--updates {args.updates} and --chunk {args.chunk} must be >= 1")
    except ValueError as err:
        raise UserError(str(err)) from None
    run_dir = args.run_dir or f"runs/{args.method}_N{args.n_devices}"
    with profiled(args.profile):
        train(learner, scenario, run_dir, total_updates=args.updates, chunk=args.chunk,
              seed=args.seed, resume=args.resume)
    print(f"run directory: {run_dir} (ckpt/, metrics.csv, learning_curve.png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("train", main))
