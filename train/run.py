"""``mecjax train``: run any learner in jitted chunks, with progress,
periodic orbax checkpoints, resume, and a learning curve.

The whole chunk of ``chunk`` updates is one ``lax.scan`` under ``jit``
(PureJaxRL); the host only reports progress and saves between chunks. The
train state holds everything (parameters, optimizer states, replay buffers,
training instances, PRNG key), so a run interrupted and resumed from its
last checkpoint ends bit-identical to an uninterrupted one.

``--seeds K`` trains K independent seeds at once (PureJaxRL style): seed k
is the run ``--seed SEED+k`` would be, the K train states are stacked on a
leading axis and each chunk is one ``jit`` of ``vmap`` over the seeds
(:func:`~mecjax.learners.base.train_chunk_seeds`). Its ``metrics.csv`` has
the mean over the seeds of every metric (the columns of a single run) and
one column per seed of the progress metric (``mean_cost_s0``, ...); its
learning curve draws every seed and the mean. ``--task NAME`` trains on a
task of :mod:`mecjax.tasks` (default ``paper``); the run config records the
task's whole Scenario, so resuming on another task is refused.

A run directory holds ``ckpt/`` (orbax), ``metrics.csv`` (one row per
update) and ``learning_curve.png``. A run holds an exclusive lock on it
(:class:`~mecjax.outputs.DirectoryLock`: a second writer is refused), checks
the flags, the hyper-parameters, the run to resume and the memory the
compiled chunk needs before it writes anything, and writes ``metrics.csv``
and the plot atomically; on resume, ``metrics.csv`` is cut back to (or
repaired up to) the checkpoint's update.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from pathlib import Path

import jax
import numpy as np

from mecjax import tasks
from mecjax.outputs import DirectoryLock, UserError, write_text_atomic
from mecjax.preflight import check_compiled
from mecjax import checkpoint as ckpt
from mecjax.cli import ArgumentParser, parse_sets, profiled, run_program
from mecjax.config import Scenario
from mecjax.learners.base import (Learner, get_learner, init_seeds, seed_state,
                                  seeds_state_shapes, train_chunk, train_chunk_seeds)
from mecjax.learners.store import run_config
from train.curves import seed_column, write_learning_curve


class RunExistsError(UserError, FileExistsError):
    """The run directory already holds a training run and resuming was not asked for."""


def _parse_row(row: list[str], width: int, step: int) -> int | None:
    """The update number of a complete, parseable metrics row up to ``step``; else None."""
    if len(row) != width:
        return None
    try:
        update = int(row[0])
        [float(v) for v in row[1:]]
    except ValueError:
        return None
    return update if 1 <= update <= step else None


def _metrics_upto(path: Path, step: int, log, name: str) -> tuple[list[str] | None, list[list[str]]]:
    """The header and rows of ``metrics.csv`` for a run resumed at update ``step``.

    Keeps the complete rows with strictly increasing updates up to ``step``
    (later rows belong to a chunk that will rerun). A torn row, an empty or
    unreadable file is repaired rather than fatal: its bad rows are dropped
    (an unreadable file becomes a header only) with a one-line note, since the
    checkpoint, not this file, is what resuming relies on.
    """
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        rows = []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        log(f"[{name}] metrics.csv is unreadable ({type(err).__name__}); rebuilding it from "
            f"update {step} on")
        return None, []
    if not rows or not rows[0] or rows[0][0] != "update":
        if step > 0:
            log(f"[{name}] metrics.csv is empty or has no header; rebuilding it (updates 1-{step}"
                f" are not in it)")
        return None, []
    head, keep, dropped, last = rows[0], [], 0, 0
    for row in rows[1:]:
        update = _parse_row(row, len(head), step)
        if update is not None and update > last:
            keep.append(row)
            last = update
        elif not (len(row) == len(head) and row[0].strip().lstrip("-").isdigit()
                  and int(row[0]) > step):
            dropped += 1
    if dropped or len(keep) != step:
        log(f"[{name}] metrics.csv repaired: kept {len(keep)} row(s) up to update {step}, "
            f"dropped {dropped} torn or out-of-order row(s)")
    return head, keep


def _write_metrics(path: Path, head: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def _config_diff(saved: dict, wanted: dict) -> list[str]:
    """``field: checkpoint A, requested B`` for each field (scenario and hyper-parameters
    named by their own names) where the saved run config and the requested one differ."""
    out = []
    for k in list(wanted) + [k for k in saved if k not in wanted]:
        a, b = saved.get(k, "(absent)"), wanted.get(k, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b)
        elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):  # 1 != 1.0
            out.append(f"{k}: checkpoint {a!r}, requested {b!r}")
    return out


def _intact_steps(ckpt_dir: Path, shapes, config: dict, below: int) -> int | None:
    """The newest step before ``below`` that restores with its checksums intact."""
    for s in reversed([s for s in ckpt.all_steps(ckpt_dir) if s < below]):
        try:
            ckpt.restore(ckpt_dir, shapes, step=s, expect=config)
            return s
        except (ckpt.CheckpointCorruptError, ckpt.CheckpointMismatchError, FileNotFoundError):
            continue
    return None


def _set_aside(run_dir: Path, ckpt_dir: Path, after: int, log, name: str) -> None:
    """Move the checkpoints newer than ``after`` to ``run_dir/ckpt_set_aside/`` (kept, never
    deleted): saving continues from ``after``, and steps must grow."""
    aside = run_dir / "ckpt_set_aside"
    for s in [s for s in ckpt.all_steps(ckpt_dir) if s > after]:
        aside.mkdir(exist_ok=True)
        dest, i = aside / str(s), 1
        while dest.exists():
            dest, i = aside / f"{s}.{i}", i + 1
        os.replace(ckpt_dir / str(s), dest)
        log(f"[{name}] checkpoint of update {s} moved aside to {dest}")


def preflight(learner: Learner, scenario: Scenario, n: int, seeds: int = 1,
              seed: int = 0, compiler_options: dict | None = None):
    """Compile one chunk of ``n`` updates from the train state's shapes (nothing is
    allocated) and refuse, with one line, a run whose peak memory (train state in
    and out, replay buffers included, plus XLA's temporaries) does not fit here.
    With ``seeds`` K > 1 it is the K-seed program (K stacked states, vmapped).
    Returns the compiled chunk, ``compiled(state, scenario) -> (state, metrics)``,
    which the run executes: calling the jitted function instead would compile
    again whenever the state holds arrays read from a checkpoint (a resumed
    run, drl_gat's GAT), whose placement makes another cache key.
    ``compiler_options``: XLA options of the program (:func:`train`)."""
    if seeds == 1:
        compiled = train_chunk.lower(learner, learner.state_shapes(scenario), scenario,
                                     n).compile(compiler_options)
    else:
        try:
            shapes = seeds_state_shapes(learner, scenario, seed, seeds)
        except ValueError as err:
            raise UserError(str(err)) from None
        compiled = train_chunk_seeds.lower(learner, shapes, scenario, n).compile(
            compiler_options)
    check_compiled(compiled, f"training {learner.name} with N={scenario.n_devices}"
                   + (f", {seeds} seeds" if seeds > 1 else "") + f" (chunk of {n} updates)",
                   "--n-devices, --set n_envs=..., --set buffer_size=... (replay buffers), "
                   "--chunk" + (" or --seeds" if seeds > 1 else ""))
    return compiled


def train(learner: Learner, scenario: Scenario, run_dir, *, total_updates: int, chunk: int = 100,
          seed: int = 0, seeds: int = 1, resume: bool | str = False,
          from_step: int | None = None, keep: int = 3, stop_after: int | None = None,
          check_memory: bool = True, compiler_options: dict | None = None, log=print):
    """Train ``learner`` for ``total_updates`` updates; returns the final train state.

    ``seeds``: K independent seeds ``seed .. seed + K - 1`` at once (one vmapped
    chunk; seed k starts as a single run with ``seed + k`` would); the returned
    and checkpointed state is then the K states stacked on a leading axis, and
    the run config records ``"seeds": K``. K = 1 is an ordinary single run.

    ``resume``: True continues the run in ``run_dir`` from its latest checkpoint
    (refusing one made for another method, scenario or hyper-parameters, and a
    directory with no run: :class:`UserError`); ``"auto"`` continues a run if
    there is one and starts fresh otherwise; False refuses a directory that
    already holds checkpoints (:class:`RunExistsError`), so nothing saved is
    overwritten. ``from_step``: resume from that saved step instead of the
    latest (e.g. when the latest is corrupt); the newer ones are moved to
    ``run_dir/ckpt_set_aside/``. ``stop_after``: stop after that many chunks
    (to test resume). ``check_memory``: refuse a run that would not fit in
    memory (:func:`preflight`) before anything is written. ``compiler_options``: XLA
    options of the chunk programs (``jax.jit``'s), e.g. a low optimisation level for a
    short run, whose time is mostly compiling; None: XLA's defaults.

    The run holds :class:`~mecjax.outputs.DirectoryLock` on ``run_dir``
    throughout; ``metrics.csv`` is rewritten atomically after each chunk.
    """
    if total_updates < 1 or chunk < 1:
        raise ValueError(f"total_updates={total_updates} and chunk={chunk} must be >= 1")
    if seeds < 1:
        raise ValueError(f"seeds={seeds} must be >= 1")
    if seeds == 1:  # a single run records the hyper-parameters its seed resolves to
        learner = learner.for_seed(seed)
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file, not a directory; choose another "
                        f"--run-dir")
    if from_step is not None:
        resume = True
    lock = DirectoryLock(run_dir, "mecjax train")
    try:
        if run_dir.is_dir():   # refuse a second writer before compiling anything
            lock.acquire()
        started = _start(learner, scenario, run_dir, seed=seed, seeds=seeds,
                         chunk=chunk, resume=resume, from_step=from_step,
                         total_updates=total_updates, check_memory=check_memory, lock=lock,
                         compiler_options=compiler_options, log=log)
        state, step, head, rows, compiled = started
        return _run(learner, scenario, run_dir, state, step, head, rows, seed=seed, seeds=seeds,
                    chunk=chunk, total_updates=total_updates, keep=keep,
                    stop_after=stop_after, compiled=compiled,
                    compiler_options=compiler_options, log=log)
    finally:
        lock.release()


def _start(learner, scenario, run_dir: Path, *, seed, seeds, chunk, resume, from_step,
           total_updates, check_memory, lock, compiler_options, log):
    """Checks, preflight, lock and restore: ``(state, step, metrics header, rows,
    compiled chunk of min(chunk, total_updates) updates or None)``."""
    ckpt_dir = run_dir / "ckpt"
    metrics_path = run_dir / "metrics.csv"
    config = json.loads(json.dumps(run_config(learner, scenario, seed, chunk, seeds)))
    steps = ckpt.all_steps(ckpt_dir)
    if resume is True and not steps:
        raise UserError(f"nothing to resume in {run_dir}: no checkpoint under {ckpt_dir} (check "
                        f"the path; a fresh run needs no --resume)")
    if steps and not resume:
        raise RunExistsError(f"{run_dir} already holds a training run (checkpoint at update "
                             f"{steps[-1]}); pass resume=True (--resume) to continue it, or "
                             f"choose another run directory")
    if steps:
        want = steps[-1] if from_step is None else from_step
        if want not in steps:
            raise UserError(f"no checkpoint for update {want} in {ckpt_dir}; saved: "
                            f"{', '.join(map(str, steps))}")
        try:
            diff = _config_diff(ckpt.load_config(ckpt_dir, want), config)
        except ckpt.CheckpointCorruptError:
            diff = []  # restoring it below names the damage and an intact step
        if diff:
            raise ckpt.CheckpointMismatchError(
                f"{run_dir} holds a run with other settings ({'; '.join(diff)}); pass the same "
                f"settings to resume it, or choose another --run-dir")
    # A finished run (rerun to export, say) compiles nothing: no chunk is left to run.
    compiled = None
    if check_memory and (want if steps else 0) < total_updates:
        compiled = preflight(learner, scenario, min(chunk, total_updates), seeds, seed,
                             compiler_options)
    lock.acquire()
    if ckpt.all_steps(ckpt_dir) != steps:
        raise UserError(f"{run_dir} changed while this run was starting; run it again")
    state = (learner.init(jax.random.key(seed), scenario) if seeds == 1
             else init_seeds(learner, scenario, seed, seeds))
    if not steps:
        return state, 0, None, [], compiled
    try:
        state, _, step = ckpt.restore(ckpt_dir, state, step=want, expect=config)
    except ckpt.CheckpointCorruptError as err:
        ok = _intact_steps(ckpt_dir, state, config, want)
        hint = (f"update {ok} is intact: resume from it with --resume --from-step {ok} (the "
                f"newer checkpoints are moved to {run_dir / 'ckpt_set_aside'})" if ok is not None
                else "no earlier checkpoint is intact; start a new run in another --run-dir")
        raise ckpt.CheckpointCorruptError(f"{err}; {hint}") from err
    _set_aside(run_dir, ckpt_dir, step, log, learner.name)
    head, rows = _metrics_upto(metrics_path, step, log, learner.name)
    log(f"[{learner.name}] resumed from update {step}")
    return state, step, head, rows, compiled


def _columns(names, progress: str, seeds: int) -> list[str]:
    """The ``metrics.csv`` columns after ``update``: every metric (a K-seed run:
    its mean over the seeds), then, for K > 1, the progress metric of each seed."""
    return sorted(names) + ([seed_column(progress, k) for k in range(seeds)] if seeds > 1 else [])


def _metric_table(metrics: dict, progress: str, seeds: int) -> tuple[list[str], np.ndarray]:
    """``(columns, [n, columns] values)`` of one chunk's metrics (``{name: [n]}``,
    or ``{name: [K, n]}`` for K > 1 seeds; :func:`_columns`)."""
    names = sorted(metrics)
    if seeds == 1:
        cols = [np.asarray(metrics[k], np.float64) for k in names]
    else:
        cols = ([np.asarray(metrics[k], np.float64).mean(0) for k in names]
                + list(np.asarray(metrics[progress], np.float64)))
    return _columns(names, progress, seeds), np.stack(cols, -1)


def _run(learner, scenario, run_dir: Path, state, step, head, rows, *, seed, seeds, chunk,
         total_updates, keep, stop_after, compiled, compiler_options, log):
    ckpt_dir = run_dir / "ckpt"
    metrics_path = run_dir / "metrics.csv"
    config = run_config(learner, scenario, seed, chunk, seeds)
    metric = learner.progress_metric
    if step > 0:
        if head is None:  # unreadable file: its header from the metrics' names (traced only)
            one = state if seeds == 1 else jax.eval_shape(lambda s: seed_state(s, 0), state)
            head = ["update"] + _columns(jax.eval_shape(learner.update, one, scenario)[1],
                                         metric, seeds)
        _write_metrics(metrics_path, head, rows)
    t0, chunks, done = time.perf_counter(), 0, step
    programs = {}   # chunk length -> compiled program (with compiler_options, no preflight)
    chunk_fn = train_chunk if seeds == 1 else train_chunk_seeds
    while step < total_updates:
        n = min(chunk, total_updates - step)
        if compiled is not None and n == min(chunk, total_updates):
            state, metrics = compiled(state, scenario)     # preflight's program
        elif compiler_options is not None:   # compiled once per chunk length
            if n not in programs:
                programs[n] = chunk_fn.lower(learner, state, scenario, n).compile(
                    compiler_options)
            state, metrics = programs[n](state, scenario)
        else:
            state, metrics = chunk_fn(learner, state, scenario, n)
        metrics = jax.device_get(metrics)
        names, values = _metric_table(metrics, metric, seeds)
        if head != ["update"] + names:
            if rows:
                log(f"[{learner.name}] metrics.csv had other columns {head}; rebuilding it")
            head, rows = ["update"] + names, []
        rows += [[str(step + i + 1)] + [f"{v:.6g}" for v in row] for i, row in enumerate(values)]
        _write_metrics(metrics_path, head, rows)
        step += n
        ckpt.save(ckpt_dir, step, state, config, keep=keep)
        value = np.asarray(metrics[metric], np.float64)
        label = "mean cost" if metric == "mean_cost" else metric
        spread = ("" if seeds == 1 else "  (seeds " + ", ".join(
            f"{v:.5f}" for v in value.mean(-1)) + ")")
        rate = (step - done) / max(time.perf_counter() - t0, 1e-9)
        log(f"[{learner.name}] update {step}/{total_updates}  {label} {value.mean():.5f}{spread}  "
            f"({time.perf_counter() - t0:.1f} s, {rate:.0f} updates/s)")
        chunks += 1
        if stop_after is not None and chunks >= stop_after and step < total_updates:
            log(f"[{learner.name}] stopped after {chunks} chunk(s) at update {step}")
            return state
    if metrics_path.exists():
        title = f"{learner.name}, N={scenario.n_devices}, M={scenario.n_servers}"
        write_learning_curve(run_dir, title if seeds == 1 else f"{title}, {seeds} seeds", metric,
                             seeds)
    return state


def build_parser() -> argparse.ArgumentParser:
    tr = ArgumentParser(prog="mecjax train", description="train a learned scheduler, "
                                 "with checkpoints and resume")
    tr.add_argument("method", help="drl_fgso, gat_mec, tsg_marl, twin (the DT forecaster) or "
                                   "drl_gat (DRL on GAT embeddings; --set gat_checkpoint=DIR)")
    tr.add_argument("--task", default="paper",
                    help="the task to train on (mecjax.tasks: " + ", ".join(tasks.names())
                         + "; default paper)")
    tr.add_argument("--n-devices", type=int, default=50)
    tr.add_argument("--n-servers", type=int, help="override the task's M")
    tr.add_argument("--updates", type=int, default=2000, help="training updates (slots)")
    tr.add_argument("--chunk", type=int, default=100, help="updates per jitted chunk/checkpoint")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--seeds", type=int, default=1, metavar="K",
                    help="train K independent seeds SEED..SEED+K-1 at once (vmapped); drl_gat "
                         "reads seed k's GAT from gat_checkpoint with {seed} in it")
    tr.add_argument("--run-dir", help="default runs/METHOD_N<n> (paper) or "
                                      "runs/METHOD_<task-id>_N<n>")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in --run-dir from its latest checkpoint (an error if "
                         "there is none; a fresh run needs no flag)")
    tr.add_argument("--from-step", type=int, metavar="STEP",
                    help="with --resume: continue from the saved checkpoint of update STEP "
                         "instead of the latest (e.g. when the latest is corrupt); the newer "
                         "checkpoints are moved, not deleted, to RUN_DIR/ckpt_set_aside/, and "
                         "metrics.csv is cut back to STEP")
    tr.add_argument("--set", action="append", metavar="NAME=VALUE",
                    help="a hyper-parameter of the learner (repeatable)")
    tr.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace to DIR")
    return tr


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        task = tasks.spec(args.task)
    except ValueError as err:
        raise UserError(f"--task: {err}") from None
    try:
        learner = get_learner(args.method, **parse_sets(args.set))
        sizes = {"n_devices": args.n_devices}
        if args.n_servers is not None:
            sizes["n_servers"] = args.n_servers
        scenario = tasks.make(task.id, **sizes)
        if args.updates < 1 or args.chunk < 1:
            raise ValueError(f"--updates {args.updates} and --chunk {args.chunk} must be >= 1")
        if args.seeds < 1:
            raise ValueError(f"--seeds {args.seeds} must be >= 1")
        if args.from_step is not None and not args.resume:
            raise ValueError(f"--from-step {args.from_step} needs --resume")
    except ValueError as err:
        raise UserError(str(err)) from None
    where = "" if task.name == "paper" else f"_{task.id}"
    run_dir = args.run_dir or f"runs/{args.method}{where}_N{args.n_devices}"
    with profiled(args.profile):
        train(learner, scenario, run_dir, total_updates=args.updates, chunk=args.chunk,
              seed=args.seed, seeds=args.seeds, resume=args.resume, from_step=args.from_step)
    print(f"run directory: {run_dir} (ckpt/, metrics.csv, learning_curve.png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("train", main))
