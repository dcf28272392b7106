"""``mecjax sweep``: a grid over scenario parameters and schedulers.

Every cell (one scenario x one scheduler) runs ``instances`` instances for
``slots`` slots, with the instance axis sharded over all devices
(:mod:`mecjax.sharding`). Finished cells are saved as they complete and
reused when the sweep is run again with the same settings, so an interrupted
sweep resumes without redoing them. Results stream to ``sweep.csv`` (one row
per cell and metric, appended as cells finish) and ``sweep.json``, and a
figure per metric plots it against the first grid axis.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import time
from pathlib import Path

import jax
import numpy as np

from mecjax.outputs import UserError
from mecjax import __version__
from mecjax.cli import profiled, run_program
from mecjax.config import Scenario
from mecjax.rollout import METRICS, rollout
from mecjax.schedulers import available, make
from mecjax.stats import summarize
from eval.cells import cell_path, load_cell, save_cell

PLOTTED = ("latency_ms", "energy_j", "fairness", "mean_cost")


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
        return {"scheduler": sched, "scenario": point, "instances": self.instances,
                "slots": self.slots, "seed": self.seed, "mecjax": __version__}


def run_cell(point: dict, sched: str, spec: SweepSpec, shard: bool) -> dict:
    scenario = Scenario(**point)  # validates every grid value, naming the field
    t0 = time.perf_counter()
    key = jax.random.key(spec.seed)
    if shard:
        from mecjax.sharding import sharded_rollout

        per_slot = sharded_rollout(make(sched), scenario, key, spec.instances, spec.slots)
    else:
        per_slot = {k: np.asarray(v) for k, v in
                    rollout(make(sched), scenario, key, spec.instances, spec.slots).items()}
    return {"config": spec.config(point, sched), "summary": summarize(per_slot),
            "per_instance": {k: np.asarray(v).mean(axis=1).tolist() for k, v in per_slot.items()},
            "wall_s": time.perf_counter() - t0, "devices": jax.device_count()}


def run_sweep(spec: SweepSpec, out_dir: str, shard: bool = True, log=print) -> list[dict]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, values in spec.grid:
        for v in values:
            Scenario(**{name: v})  # fail fast on an invalid grid value, before any work
    todo = list(spec.cells())
    log(f"mecjax sweep: {len(todo)} cells x {spec.instances} instances x {spec.slots} slots on "
        f"{jax.device_count()} device(s) [{jax.default_backend()}]"
        f"{', sharded' if shard else ''}")
    csv_path = out / "sweep.csv"
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerow(["scheduler"] + [g[0] for g in spec.grid]
                               + ["metric", "mean", "ci95", "instances", "slots"])
    results, t_start = [], time.perf_counter()
    for k, (point, sched) in enumerate(todo, 1):
        config = spec.config(point, sched)
        stem = sched + "_" + "_".join(f"{n}{v}" for n, v in point.items())
        path = cell_path(out / "cells", stem, config)
        cell = load_cell(path, config)
        label = f"{sched} " + " ".join(f"{n}={v}" for n, v in point.items())
        if cell is not None:
            log(f"  [{k}/{len(todo)}] {label}: done before, reused")
        else:
            cell = run_cell(point, sched, spec, shard)
            save_cell(path, cell)
            elapsed = time.perf_counter() - t_start
            log(f"  [{k}/{len(todo)}] {label}: cost {cell['summary']['mean_cost']['mean']:.4f}, "
                f"latency {cell['summary']['latency_ms']['mean']:.1f} ms ({cell['wall_s']:.1f} s; "
                f"{elapsed:.0f} s so far)")
        results.append(cell)
        with open(csv_path, "a", newline="") as f:
            w = csv.writer(f)
            for metric in METRICS:
                m = cell["summary"][metric]
                w.writerow([sched] + [point[g[0]] for g in spec.grid]
                           + [metric, f"{m['mean']:.6g}", f"{m['ci95']:.6g}", spec.instances,
                              spec.slots])
    (out / "sweep.json").write_text(json.dumps(
        {"spec": dataclasses.asdict(spec), "devices": jax.device_count(),
         "backend": jax.default_backend(), "jax": jax.__version__,
         "cells": [{"config": c["config"], "summary": c["summary"], "wall_s": c["wall_s"]}
                   for c in results], "wall_s": time.perf_counter() - t_start}, indent=2))
    write_figures(spec, results, out)
    log(f"wrote {csv_path}, {out / 'sweep.json'} and {out / 'sweep.png'}")
    return results


def write_figures(spec: SweepSpec, results: list[dict], out: Path) -> None:
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
            ax.errorbar(xs, [c["summary"][metric]["mean"] for c in cells],
                        yerr=[c["summary"][metric]["ci95"] for c in cells], marker="o",
                        capsize=3, label=label)
        ax.set_xlabel(x_name)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"mecjax sweep: {spec.instances} instances x {spec.slots} slots per point, "
                 "95% CI over instances", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    sw = argparse.ArgumentParser(prog="mecjax sweep", description="grid over scenario "
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
    sw.add_argument("--distributed", action="store_true",
                    help="call jax.distributed.initialize() first (multi-host runs)")
    sw.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace to DIR")
    return sw


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.distributed:
        from mecjax.sharding import maybe_initialize_distributed

        maybe_initialize_distributed()
    try:
        grid = tuple(parse_grid_item(g) for g in (args.grid or ["n_devices=50,100,150"]))
        names = tuple(n.strip() for n in args.schedulers.split(",") if n.strip())
        unknown = [n for n in names if n not in available()]
        if unknown:
            raise ValueError(f"unknown scheduler(s) {unknown}; available: {', '.join(available())}")
        for name, values in grid:
            for v in values:
                Scenario(**{name: v})  # names the invalid field and its allowed range
    except ValueError as err:
        raise UserError(str(err)) from None
    spec = SweepSpec(schedulers=names, grid=grid, instances=args.instances, slots=args.slots,
                     seed=args.seed)
    with profiled(args.profile):
        run_sweep(spec, args.out, shard=not args.no_shard)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("sweep", main))
