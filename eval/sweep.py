"""``mecjax sweep``: a grid over scenario parameters and schedulers.

Every cell (one scenario x one scheduler) runs ``instances`` instances for
``slots`` slots, with the instance axis sharded over all devices
(:mod:`mecjax.sharding`). Finished cells are saved as they complete and
reused when the sweep is run again with the same settings, so an interrupted
sweep resumes without redoing them.

A sweep refuses bad input, a busy output directory and a job that would not
fit in memory before it computes or writes anything: every count, every grid
cell (as a whole :class:`mecjax.Scenario`) and the compiled program of the
largest cell are checked first, then ``DirectoryLock`` holds ``--out`` for the
whole job. The results, ``sweep.csv`` (one row per cell and metric),
``sweep.json`` (strict JSON) and ``sweep.png`` (a panel per metric against the
first grid axis), are written once every cell is done, each staged in full
before any of them replaces the previous sweep's, so a crash or a full disk
leaves the previous outputs as they were.

In a multi-host run (``--distributed`` or ``--coordinator``) every process
computes its shard of each cell; only process 0 holds the lock, saves cells and
writes the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import errno
import io
import itertools
import time
from pathlib import Path

import jax
import numpy as np

from mecjax import __version__, outputs, preflight, sharding
from mecjax.cli import ArgumentParser, profiled, run_program
from mecjax.config import Scenario
from mecjax.outputs import DirectoryLock, UserError
from mecjax.rollout import METRICS, compile_rollout, rollout
from mecjax.schedulers import available, make
from mecjax.sharding import distributed_args
from mecjax.sharding import is_writer as _is_writer   # a name of its own: tests stand in for it
from mecjax.stats import summarize
from eval.cells import cell_path, load_cell, save_cell

PLOTTED = ("latency_ms", "energy_j", "fairness", "mean_cost")
OUTPUTS = ("sweep.csv", "sweep.json", "sweep.png")
NULL_MEANS = ("null stands for a number that is not finite: a ci95/low/high is null when the "
              "cell has one instance (no interval), a mean is null when the metric is "
              "undefined (NaN) on the instances")
# Errors of the filesystem a user can act on (free space, permissions); printed as one line.
USER_OS_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


def _number(name: str, text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"grid field {name!r} takes {kind.__name__} values, got {text!r}") from None


def parse_grid_item(text: str) -> tuple[str, tuple]:
    """'n_devices=50,100,150' -> ('n_devices', (50, 100, 150)), checked against Scenario."""
    if "=" not in text:
        raise ValueError(f"grid item {text!r} must look like FIELD=V1,V2,...")
    name, values = text.split("=", 1)
    name = name.strip()
    fields = {f.name: f for f in dataclasses.fields(Scenario)}
    if name not in fields:
        raise ValueError(f"grid field {name!r} is not a Scenario field; valid fields: "
                         f"{', '.join(sorted(fields))}")
    default = getattr(Scenario(), name)
    out = []
    for v in values.split(","):
        v = v.strip()
        if isinstance(default, bool):
            if v.lower() not in ("true", "false"):
                raise ValueError(f"grid field {name!r} takes true/false, got {v!r}")
            out.append(v.lower() == "true")
        elif isinstance(default, int):
            out.append(_number(name, v, int))
        elif isinstance(default, str):
            out.append(v)
        else:
            out.append(_number(name, v, float))
    if not out:
        raise ValueError(f"grid field {name!r} has no values")
    repeated = sorted({repr(v) for v in out if out.count(v) > 1})
    if repeated:
        raise ValueError(f"grid field {name!r} repeats the value(s) {', '.join(repeated)}")
    return name, tuple(out)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    schedulers: tuple[str, ...]
    grid: tuple[tuple[str, tuple], ...]   # ((field, values), ...), first axis is plotted on x
    instances: int = 256
    slots: int = 10
    seed: int = 0

    def cells(self):
        names = [g[0] for g in self.grid]
        for values in itertools.product(*[g[1] for g in self.grid]):
            point = dict(zip(names, values))
            for sched in self.schedulers:
                yield point, sched

    def config(self, point: dict, sched: str) -> dict:
        # The metrics recorded: a cell saved before a metric was added is recomputed.
        return {"scheduler": sched, "scenario": point, "instances": self.instances,
                "slots": self.slots, "seed": self.seed, "mecjax": __version__,
                "metrics": list(METRICS)}


def validate_spec(spec: SweepSpec) -> list[Scenario]:
    """Raise :class:`UserError` naming the first problem of ``spec`` (a count below 1, an
    unknown or repeated scheduler, a repeated grid axis, a grid cell that is not a valid
    Scenario as a whole); return the Scenario of every grid point, in cell order."""
    for flag, value in (("--instances", spec.instances), ("--slots", spec.slots)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{flag} {value!r} must be an integer >= 1")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) \
            or not -2**63 <= spec.seed < 2**63:
        raise UserError(f"--seed {spec.seed!r} must be an integer in [-2**63, 2**63)")
    if not spec.schedulers:
        raise UserError("--schedulers names no scheduler")
    unknown = [n for n in spec.schedulers if n not in available()]
    if unknown:
        raise UserError(f"unknown scheduler(s) {unknown}; available: {', '.join(available())}")
    repeated = sorted({n for n in spec.schedulers if spec.schedulers.count(n) > 1})
    if repeated:
        raise UserError(f"--schedulers repeats {', '.join(repeated)}")
    if not spec.grid:
        raise UserError("the grid has no axis")
    names = [g[0] for g in spec.grid]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"--grid repeats the axis {', '.join(repeated)}; give each field once "
                        f"with all its values (FIELD=V1,V2,...)")
    scenarios = []
    for values in itertools.product(*[g[1] for g in spec.grid]):
        point = dict(zip(names, values))
        try:
            scenarios.append(Scenario(**point))
        except (ValueError, TypeError) as err:
            where = " ".join(f"{n}={v}" for n, v in point.items())
            raise UserError(f"grid cell {where}: {err}") from None
    return scenarios


def _largest(scenarios: list[Scenario]) -> Scenario:
    # The arrays of a slot scale with N x (M + 1) (decisions, channels) and N x knn (graph).
    return max(scenarios, key=lambda s: s.n_devices * (s.n_servers + 1 + s.knn))


def compile_cell(scenario: Scenario, sched: str, spec: SweepSpec, shard: bool):
    """The compiled program of one cell (as :func:`run_cell` runs it), without running it."""
    scheduler = make(sched)
    if shard:
        return sharding.compile_sharded_rollout(scheduler, scenario, spec.instances, spec.slots)
    return compile_rollout(scheduler, scenario, jax.random.key(spec.seed), spec.instances,
                           spec.slots)


def check_memory(spec: SweepSpec, scenarios: list[Scenario], shard: bool) -> None:
    """Refuse (:class:`mecjax.preflight.InsufficientMemoryError`) a sweep whose largest cell
    would not fit, from the compiled program of every scheduler on that cell."""
    largest = _largest(scenarios)
    measure = sharding.host_bytes if shard else preflight.compiled_bytes
    estimates = [measure(compile_cell(largest, s, spec, shard)) for s in spec.schedulers]
    known = [e for e in estimates if e is not None]
    if not known:
        return
    estimate = max(known)
    preflight.check_fits(estimate, "the sweep's largest cell",
                         "--instances or the grid's n_devices")


def run_cell(point: dict, sched: str, spec: SweepSpec, shard: bool) -> dict:
    scenario = Scenario(**point)
    t0 = time.perf_counter()
    key = jax.random.key(spec.seed)
    if shard:
        per_slot = sharding.sharded_rollout(make(sched), scenario, key, spec.instances, spec.slots)
    else:
        per_slot = {k: np.asarray(v) for k, v in
                    rollout(make(sched), scenario, key, spec.instances, spec.slots).items()}
    return {"config": spec.config(point, sched), "summary": summarize(per_slot),
            "per_instance": {k: np.asarray(v).mean(axis=1).tolist() for k, v in per_slot.items()},
            "wall_s": time.perf_counter() - t0, "devices": jax.device_count()}


def run_sweep(spec: SweepSpec, out_dir: str, shard: bool = True, log=print) -> list[dict]:
    """Run every cell of ``spec`` not already saved under ``out_dir/cells`` and write
    ``sweep.csv``, ``sweep.json`` and ``sweep.png`` to ``out_dir``; return the cells (on
    process 0; the other processes of a multi-host run return the cells they computed).

    Nothing is computed or written before ``spec`` is validated, the largest cell's
    program is known to fit in memory and ``out_dir`` is locked."""
    out = Path(out_dir)
    scenarios = validate_spec(spec)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    sharding.agreed(lambda: check_memory(spec, scenarios, shard),
                    "another process could not check the sweep's memory (see its error)")
    writer = _is_writer()
    todo = list(spec.cells())
    with contextlib.ExitStack() as stack:
        saved: list[dict | None] = [None] * len(todo)
        sharding.agreed(lambda: writer and stack.enter_context(DirectoryLock(out, "mecjax sweep")),
                        f"process 0 could not lock --out {out}")
        if writer:
            for i, (point, sched) in enumerate(todo):
                config = spec.config(point, sched)
                saved[i] = load_cell(cell_path(out / "cells", _stem(point, sched), config), config)
        # Every process must run the same cells (each runs its shard of every one).
        done = sharding.from_process_0(np.array([c is not None for c in saved], np.int32))
        log(f"mecjax sweep: {len(todo)} cells x {spec.instances} instances x {spec.slots} slots "
            f"on {jax.device_count()} device(s) [{jax.default_backend()}]"
            f"{', sharded' if shard else ''}, {int(done.sum())} done before")
        results, t_start = [], time.perf_counter()
        for k, (point, sched) in enumerate(todo, 1):
            label = f"{sched} " + " ".join(f"{n}={v}" for n, v in point.items())
            if done[k - 1]:
                if writer:
                    results.append(saved[k - 1])
                log(f"  [{k}/{len(todo)}] {label}: done before, reused")
                continue
            cell = run_cell(point, sched, spec, shard)
            if writer:
                save_cell(cell_path(out / "cells", _stem(point, sched), cell["config"]), cell)
            results.append(cell)
            elapsed = time.perf_counter() - t_start
            log(f"  [{k}/{len(todo)}] {label}: cost {cell['summary']['mean_cost']['mean']:.4f}, "
                f"latency {cell['summary']['latency_ms']['mean']:.1f} ms ({cell['wall_s']:.1f} s; "
                f"{elapsed:.0f} s so far)")
        if writer:
            record = {"spec": dataclasses.asdict(spec), "devices": jax.device_count(),
                      "processes": jax.process_count(), "backend": jax.default_backend(),
                      "jax": jax.__version__, "null_means": NULL_MEANS,
                      "cells": [{"config": c["config"], "summary": c["summary"],
                                 "wall_s": c["wall_s"]} for c in results],
                      "wall_s": time.perf_counter() - t_start}
            outputs.write_files_atomic({
                out / "sweep.csv": csv_bytes(spec, results),
                out / "sweep.json": outputs.dumps_strict(record, indent=2).encode(),
                out / "sweep.png": figure_bytes(spec, results)})
            log(f"wrote {out / 'sweep.csv'}, {out / 'sweep.json'} and {out / 'sweep.png'}")
    return results


def _stem(point: dict, sched: str) -> str:
    return sched + "_" + "_".join(f"{n}{v}" for n, v in point.items())


def _num(value) -> float:
    # A cell saved as strict JSON holds null where the number was not finite.
    return float("nan") if value is None else value


def csv_bytes(spec: SweepSpec, results: list[dict]) -> bytes:
    """``sweep.csv``: a header, then one row per cell and metric."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["scheduler"] + [g[0] for g in spec.grid]
               + ["metric", "mean", "ci95", "instances", "slots"])
    for cell in results:
        cfg = cell["config"]
        for metric in METRICS:
            m = cell["summary"][metric]
            w.writerow([cfg["scheduler"]] + [cfg["scenario"][g[0]] for g in spec.grid]
                       + [metric, f"{_num(m['mean']):.6g}", f"{_num(m['ci95']):.6g}",
                          spec.instances, spec.slots])
    return buf.getvalue().encode()


def figure_bytes(spec: SweepSpec, results: list[dict]) -> bytes:
    """``sweep.png``: a panel per plotted metric against the first grid axis, a line per
    scheduler and value of the other axes, with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name = spec.grid[0][0]
    others = [g[0] for g in spec.grid[1:]]
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4 * len(PLOTTED), 3.6))
    series: dict[tuple, list] = {}
    for cell in results:
        cfg = cell["config"]
        key = (cfg["scheduler"],) + tuple(cfg["scenario"][o] for o in others)
        series.setdefault(key, []).append(cell)
    for ax, metric in zip(axes, PLOTTED):
        for key, cells in series.items():
            cells = sorted(cells, key=lambda c: c["config"]["scenario"][x_name])
            xs = [c["config"]["scenario"][x_name] for c in cells]
            label = key[0] + "".join(f", {o}={v}" for o, v in zip(others, key[1:]))
            ax.errorbar(xs, [_num(c["summary"][metric]["mean"]) for c in cells],
                        yerr=[_num(c["summary"][metric]["ci95"]) for c in cells], marker="o",
                        capsize=3, label=label)
        ax.set_xlabel(x_name)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"mecjax sweep: {spec.instances} instances x {spec.slots} slots per point, "
                 "95% CI over instances", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def build_parser() -> argparse.ArgumentParser:
    sw = ArgumentParser(prog="mecjax sweep", description="grid over scenario "
                                 "parameters and schedulers, sharded over all devices")
    sw.add_argument("--schedulers", default="local,best_response,qio_mec",
                    help="comma-separated scheduler names")
    sw.add_argument("--grid", action="append", metavar="FIELD=V1,V2",
                    help="a Scenario field and its values; repeat for more axes "
                         "(default n_devices=50,100,150); the first is the figure's x axis")
    sw.add_argument("--instances", type=int, default=256)
    sw.add_argument("--slots", type=int, default=10)
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--out", default="results/sweeps/default")
    sw.add_argument("--no-shard", action="store_true", help="plain vmap on the default device")
    sharding.add_distributed_arguments(sw)
    sw.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace to DIR")
    return sw


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        grid = tuple(parse_grid_item(g) for g in (args.grid or ["n_devices=50,100,150"]))
    except ValueError as err:
        raise UserError(str(err)) from None
    names = tuple(n.strip() for n in args.schedulers.split(",") if n.strip())
    spec = SweepSpec(schedulers=names, grid=grid, instances=args.instances, slots=args.slots,
                     seed=args.seed)
    validate_spec(spec)   # before joining a multi-host run: a typo should not wait for peers
    dist = distributed_args(args)
    if dist is not None:
        sharding.initialize_distributed(**dist)
    try:
        with profiled(args.profile):
            run_sweep(spec, args.out, shard=not args.no_shard)
    except OSError as err:
        if err.errno not in USER_OS_ERRORS:
            raise
        raise UserError(f"cannot write {err.filename or args.out}: {err.strerror}; the "
                        f"previous outputs in {args.out} are unchanged") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("sweep", main))
