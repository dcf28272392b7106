"""``mecjax bench train``: environment steps per second during training.

For each learner, one chunk of updates (the jitted ``lax.scan`` that
``mecjax train`` runs) is timed after a warm-up chunk, with
``block_until_ready``. Device-steps/s = updates/s x training instances x N.
Writes ``results/benchmarks/train_throughput.{md,json}``.
"""

from __future__ import annotations

import jax

from benchmarks.common import best_time, write_benchmark
from mecjax.config import Scenario
from mecjax.learners.base import get_learner, train_chunk
from train.recipes import LEARNED_METHODS, load_recipe


def _instances(learner) -> int:
    for field in ("batch", "n_envs", "instances", "n_instances", "num_envs"):
        if hasattr(learner, field):
            return int(getattr(learner, field))
    return 1


def bench_train(methods=LEARNED_METHODS, ns=(50, 150), updates: int = 50, repeats: int = 2,
                out_dir: str | None = "results/benchmarks", log=print) -> list[dict]:
    rows = []
    for method in methods:
        learner = get_learner(method, **load_recipe(method).hyper)
        for n in ns:
            s = Scenario(n_devices=n)
            state = learner.init(jax.random.key(0), s)
            state, _ = jax.block_until_ready(train_chunk(learner, state, s, updates))  # warm-up
            t = best_time(lambda: jax.block_until_ready(train_chunk(learner, state, s, updates)),
                           repeats)
            b = _instances(learner)
            row = {"method": method, "n_devices": n, "instances": b, "updates": updates,
                   "updates_per_s": updates / t, "env_device_steps_per_s": updates * b * n / t}
            rows.append(row)
            log(f"  {method:10s} N={n:4d} B={b:3d}: {row['updates_per_s']:8.1f} updates/s, "
                f"{row['env_device_steps_per_s']:.3g} env device-steps/s")
    if out_dir:
        write_benchmark(
            out_dir, "train_throughput", rows,
            "Written by `mecjax bench train`. One update = one slot on every training "
            "instance plus the learner's gradient step(s), inside the jitted `lax.scan` "
            f"chunk that `mecjax train` runs; best of {repeats} timed chunks of {updates} "
            "updates after a warm-up chunk.",
            ["# Training throughput",
             "| method | N | training instances | updates/s | env device-steps/s |",
             "|---|---|---|---|---|"],
            [f"| {r['method']} | {r['n_devices']} | {r['instances']} | "
             f"{r['updates_per_s']:.1f} | {r['env_device_steps_per_s']:.3g} |" for r in rows])
    return rows
