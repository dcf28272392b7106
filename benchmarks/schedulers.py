"""``mecjax bench schedulers``: decisions per second of every paper method.

Each scheduler (with the checkpoints shipped under ``results/checkpoints``
for the learned ones) is rolled out on B instances for T slots, the whole
rollout one jitted ``lax.scan`` as in ``mecjax reproduce``; the time is the
best of ``repeats`` runs after a warm-up run (compilation excluded), with
``block_until_ready``. A decision is one slot of one instance (all N
devices' actions, the prices and the shares); the environment's own step is
included, so ``all-local`` is the floor every scheduler pays. Writes
``results/benchmarks/scheduler_throughput.{md,json}``.
"""

from __future__ import annotations

import jax

from benchmarks.common import best_time, write_benchmark
from mecjax.config import Scenario
from mecjax.outputs import UserError
from mecjax.rollout import rollout
from mecjax.schedulers import make
from eval.plan import learned_checkpoint, methods_in_order
from train.recipes import SHIPPED_ROOT


def bench_schedulers(ns=(50, 150), instances: int = 32, slots: int = 5, repeats: int = 2,
                     ckpt_root: str = SHIPPED_ROOT, out_dir: str | None = "results/benchmarks",
                     methods: tuple[str, ...] | None = None, log=print) -> list[dict]:
    """Decisions per second of each method (``methods``: scheduler names, default every
    method of the report; all-local always runs first, as the floor)."""
    order = [m for m in methods_in_order() if m[1] != "local"]
    if methods is not None:
        unknown = sorted(set(methods) - {name for _, name in order} - {"local"})
        if unknown:
            raise UserError(f"--methods: unknown {', '.join(unknown)}; known: "
                            f"{', '.join(name for _, name in order)}")
        order = [m for m in order if m[1] in methods]
    rows = []
    for n in ns:
        s = Scenario(n_devices=n, horizon=slots)
        floor = None
        for label, name in [("all-local", "local")] + order:
            found = learned_checkpoint(name, n, ckpt_root)
            if found is None:
                log(f"  {label} N={n}: no checkpoint under {ckpt_root}, skipped")
                continue
            sched = make(name, **found[0])
            key = jax.random.key(0)

            def run():
                return jax.block_until_ready(rollout(sched, s, key, instances, slots))

            run()                                                          # compile
            t = best_time(run, repeats)
            per_s = instances * slots / t
            floor = per_s if name == "local" else floor
            row = {"method": label, "scheduler": name, "n_devices": n, "instances": instances,
                   "slots": slots, "decisions_per_s": per_s, "device_decisions_per_s": per_s * n,
                   "slowdown_vs_local": floor / per_s if floor else None}
            rows.append(row)
            log(f"  {label:28s} N={n:4d}: {per_s:10.1f} decisions/s, "
                f"{per_s * n:.3g} device-decisions/s")
            if out_dir:  # after every row: a run stopped at a time limit keeps what it measured
                write_table(rows, instances, slots, repeats, out_dir)
    return rows


def write_table(rows, instances: int, slots: int, repeats: int, out_dir) -> None:
    table = []
    for r in rows:
        slow = f"{r['slowdown_vs_local']:.1f}" if r["slowdown_vs_local"] else "-"
        table.append(f"| {r['method']} | {r['n_devices']} | {r['decisions_per_s']:.1f} | "
                     f"{r['device_decisions_per_s']:.3g} | {slow} |")
    write_benchmark(
        out_dir, "scheduler_throughput", rows,
        "Written by `mecjax bench schedulers`. A decision = one slot of one instance (all "
        "devices' actions, prices, shares), environment step included; learned methods run "
        f"the shipped checkpoints. {instances} instances x {slots} slots per jitted rollout, "
        f"best of {repeats} after a warm-up run. The last column is how many times slower "
        "than all-local (the environment alone) a scheduler is.",
        ["# Scheduler throughput",
         "| method | N | decisions/s | device-decisions/s | x all-local time |",
         "|---|---|---|---|---|"], table)
