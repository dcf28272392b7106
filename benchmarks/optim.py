"""Optimizer throughput: JAX QIO and PSO against the NumPy QIO, same run.

One *decision* is one instance's full search (``population`` x ``iterations``
fitness evaluations, each the mean weighted cost of a candidate offloading
vector under the optimal allocation) on one slot's observation, at fixed
prices (``scenario.price_init``). Throughput is decisions per second.

Timing discipline as in :mod:`mecjax.bench`: every JAX function is compiled
(ahead of time) and run once before it is timed, every timed call ends in
``block_until_ready``, and the best of ``repeats`` timed runs is kept. To keep
the default grid within minutes on a small CPU, two exceptions: calls of more
than ``warmup_limit`` device evaluations (tens of seconds each, where
first-run effects are negligible) skip the untimed warm-up run, and the
repeats stop once ``time_limit_s`` of timed runs have been spent.

The NumPy QIO (:mod:`mecjax.optim.numpy_qio`) runs the same algorithm,
vectorized over instances and population, in float32. At large N x B its
full 100 generations would take minutes, so it is timed over
``numpy_iterations`` generations (about ``numpy_budget`` device evaluations
per timed run) and scaled to ``iterations`` linearly: after the one-off
tiling of the state, which is timed separately and counted once, every
generation costs the same.
"""

from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (best_time, machine_description, machine_line, markdown_table,
                               write_record)
from benchmarks.env import evaluate_rate, jax_reset_batch
from mecjax.config import Scenario
from mecjax.optim import numpy_qio, objective, pso, qio


@partial(jax.jit, static_argnums=(3, 4, 5))
def _jax_search(keys, obs, prices, s: Scenario, config, chunk: int | None = None):
    """``qio.search`` or ``pso.search`` (chosen by the type of ``config``) of every
    instance: ``(best_x [B, N], best_fitness [B])``.

    ``chunk=None``: one ``vmap`` over the B instances. ``chunk=C``: ``lax.map`` over
    blocks of C instances, each block one ``vmap`` (``jax.lax.map(..., batch_size=C)``):
    the same searches on the same keys, a block's working set (a population's
    [C, P, N] fitness terms, PSO's [C, P, M+1, N] confidences) small enough to stay in
    a CPU's caches across a generation, where B = 1024 instances at once stream
    through memory every generation.
    """
    search = qio.search if isinstance(config, qio.QIOConfig) else pso.search

    def one(key, view):
        return search(key, objective.population_cost_fn(view, prices, s), s.n_devices,
                      s.n_options, config)
    if chunk is None or chunk >= keys.shape[0]:
        return jax.vmap(one)(keys, obs)
    return jax.lax.map(lambda args: one(*args), (keys, obs), batch_size=chunk)


def default_chunk() -> int | None:
    """Instances per vmapped block of a batched search: 64 on a CPU (any block of 32-256
    instances made 1.2x (QIO) and 1.35-1.45x (PSO) the decisions/s of one vmap over 1024
    at N = 150 on a 2-core machine with 2 MiB of L2 per core), the whole batch on an
    accelerator."""
    return 64 if jax.default_backend() == "cpu" else None


def _time_jax(jitted, dynamic, static, repeats: int, warmup: bool, time_limit_s: float):
    """Compile ahead of time, warm up (one untimed run) if asked, then time.

    Returns ``(best seconds, output of the last run)``.
    """
    compiled = jitted.lower(*dynamic, *static).compile()
    out = []

    def run():
        out[:] = [jax.block_until_ready(compiled(*dynamic))]

    if warmup:
        run()
    return best_time(run, repeats, time_limit_s), out[0]


def numpy_iterations_for(n: int, batch: int, population: int, iterations: int,
                         budget: float) -> int:
    """Generations the NumPy QIO is timed over: about ``budget`` device evaluations."""
    return int(np.clip(budget // (n * batch * population), 1, iterations))


def bench_optim_row(n: int, batch: int, population: int = 30, iterations: int = 100,
                    repeats: int = 3, numpy_budget: float = 1e7, warmup_limit: float = 5e7,
                    time_limit_s: float = 20.0, seed: int = 0, chunk: int | None = None,
                    log=print) -> dict:
    """One (N, B) cell: decisions/s of JAX QIO, JAX PSO and NumPy QIO.

    The JAX searches run in blocks of ``chunk`` instances (``_jax_search``); where
    ``chunk < batch`` they are timed as one vmap over the batch too, and both runs'
    best fitnesses are checked equal (the same searches on the same keys)."""
    s = Scenario(n_devices=n)
    obs, states = jax_reset_batch(jax.random.split(jax.random.key(seed), batch), s)
    prices = jnp.full((s.n_servers,), s.price_init, jnp.float32)
    keys = jax.random.split(jax.random.key(seed + 1), batch)

    # Calls of more than `warmup_limit` device evaluations (seconds each) are compiled
    # ahead of time and timed without a warm-up run: first-run effects are negligible there.
    warmup = n * batch * population * iterations <= warmup_limit
    qcfg = qio.QIOConfig(population=population, iterations=iterations)
    pcfg = pso.PSOConfig(particles=population, iterations=iterations)
    blocked = chunk is not None and chunk < batch
    times, fitness = {}, {}
    for name, cfg in (("qio", qcfg), ("pso", pcfg)):
        for c in ((chunk, None) if blocked else (None,)):
            times[name, c], (_, fitness[name, c]) = _time_jax(
                _jax_search, (keys, obs, prices), (s, cfg, c), repeats, warmup, time_limit_s)
        if blocked:
            # Blocks change how XLA vectorizes, not what is computed: the same best costs
            # (float rounding may differ in the last bits).
            np.testing.assert_allclose(np.asarray(fitness[name, chunk]),
                                       np.asarray(fitness[name, None]), rtol=1e-5,
                                       err_msg=f"{name}: blocks of {chunk} != one vmap")
    t_qio, qio_f = times["qio", chunk if blocked else None], fitness["qio", None]
    t_pso, pso_f = times["pso", chunk if blocked else None], fitness["pso", None]

    # NumPy: the same observations as float32 dicts, its own generator.
    np_obs = {k: np.asarray(v) for k, v in vars(obs).items()}
    np_prices = np.asarray(prices)
    np_iters = numpy_iterations_for(n, batch, population, iterations, numpy_budget)
    rng = np.random.default_rng(seed)

    def numpy_search(its):
        return numpy_qio.search(rng, np_obs, np_prices, s, population=population, iterations=its,
                                delta_theta=qcfg.delta_theta, theta_min=qcfg.theta_min)

    numpy_search(1)  # warm-up
    t_np_run = best_time(lambda: numpy_search(np_iters), repeats, time_limit_s)
    t_tile = best_time(lambda: numpy_qio.tile_state(np_obs, population), repeats)
    t_tile = min(t_tile, t_np_run)
    t_np = t_tile + (t_np_run - t_tile) * iterations / np_iters  # scaled to `iterations`

    row = {
        "n_devices": n, "batch": batch, "population": population, "iterations": iterations,
        "numpy_iterations": np_iters, "chunk": chunk if blocked else None,
        "jax_qio_dec_per_s": batch / t_qio,
        "jax_pso_dec_per_s": batch / t_pso,
        "jax_qio_one_vmap_dec_per_s": batch / times["qio", None] if blocked else None,
        "jax_pso_one_vmap_dec_per_s": batch / times["pso", None] if blocked else None,
        "numpy_qio_dec_per_s": batch / t_np,
        "jax_qio_mean_cost": float(np.mean(qio_f)),
        "jax_pso_mean_cost": float(np.mean(pso_f)),
    }
    row["qio_speedup"] = row["jax_qio_dec_per_s"] / row["numpy_qio_dec_per_s"]
    row["pso_over_numpy_qio"] = row["jax_pso_dec_per_s"] / row["numpy_qio_dec_per_s"]
    # The evaluate-bound: decisions/s if a search cost nothing but population x iterations
    # evaluations of `mecjax.env.evaluate` at its measured rate (same N, B and instances,
    # this run).
    row["evaluate_dev_per_s"] = evaluate_rate(n, batch, repeats=repeats, states=states)
    row["bound_dec_per_s"] = row["evaluate_dev_per_s"] / (population * iterations * n)
    row["qio_of_bound"] = row["jax_qio_dec_per_s"] / row["bound_dec_per_s"]
    row["pso_of_bound"] = row["jax_pso_dec_per_s"] / row["bound_dec_per_s"]
    log(f"  N={n:5d} B={batch:5d}  decisions/s: jax qio {row['jax_qio_dec_per_s']:.3g} "
        f"jax pso {row['jax_pso_dec_per_s']:.3g} numpy qio {row['numpy_qio_dec_per_s']:.3g} "
        f"(timed over {np_iters} generations)  jax/numpy qio x{row['qio_speedup']:.1f}  "
        f"evaluate-bound {row['bound_dec_per_s']:.3g} (qio {row['qio_of_bound']:.0%}, pso "
        f"{row['pso_of_bound']:.0%})"
        + (f"  one vmap: qio {row['jax_qio_one_vmap_dec_per_s']:.3g} pso "
           f"{row['jax_pso_one_vmap_dec_per_s']:.3g}" if blocked else ""))
    return row


def format_table(rows: list[dict]) -> str:
    columns = ["N", "B", "block", "JAX QIO (decisions/s)", "JAX PSO (decisions/s)",
               "evaluate-bound (decisions/s)", "QIO of bound", "PSO of bound",
               "one vmap: QIO / PSO (decisions/s)",
               "NumPy QIO (decisions/s)*", "JAX/NumPy QIO", "NumPy generations timed",
               "JAX QIO mean cost", "JAX PSO mean cost"]
    return markdown_table(columns, [
        [r["n_devices"], r["batch"], r["chunk"] or "-", f"{r['jax_qio_dec_per_s']:.3g}",
         f"{r['jax_pso_dec_per_s']:.3g}", f"{r['bound_dec_per_s']:.3g}",
         f"{r['qio_of_bound']:.0%}", f"{r['pso_of_bound']:.0%}",
         f"{r['jax_qio_one_vmap_dec_per_s']:.3g} / {r['jax_pso_one_vmap_dec_per_s']:.3g}"
         if r["chunk"] else "-",
         f"{r['numpy_qio_dec_per_s']:.3g}",
         f"{r['qio_speedup']:.1f}x", r["numpy_iterations"], f"{r['jax_qio_mean_cost']:.4g}",
         f"{r['jax_pso_mean_cost']:.4g}"] for r in rows])


def bench_optim(ns=(50, 150), batches=(1, 64, 1024), out_dir="results/benchmarks",
                repeats: int = 3, population: int = 30, iterations: int = 100,
                numpy_budget: float = 1e7, warmup_limit: float = 5e7, time_limit_s: float = 20.0,
                chunk: int | None = None, log=print) -> list[dict]:
    """Run the grid, print the table, write ``optim_throughput.md`` and ``.json``.

    ``chunk``: instances per vmapped block of the JAX searches (None:
    :func:`default_chunk`; 0: one vmap over each batch)."""
    if chunk is not None and chunk < 0:
        raise ValueError(f"chunk {chunk} must be >= 0 (0: one vmap over the batch)")
    chunk = default_chunk() if chunk is None else (chunk or None)
    machine = machine_description()
    log(f"mecjax bench optim on {machine['processor']} ({machine['cpu_count']} cores), "
        f"jax {machine['jax']} [{machine['jax_backend']}], numpy {machine['numpy']}")
    t0 = time.perf_counter()
    rows = [bench_optim_row(n, b, population=population, iterations=iterations, repeats=repeats,
                            numpy_budget=numpy_budget, warmup_limit=warmup_limit,
                            time_limit_s=time_limit_s, chunk=chunk, log=log)
            for n in ns for b in batches]
    runtime = time.perf_counter() - t0
    table = format_table(rows)
    log(table)
    footnote = (f"\\* NumPy QIO timed over the listed number of generations (about "
                f"{numpy_budget:.3g} device evaluations per timed run) and scaled linearly to "
                f"{iterations}: after the one-off tiling of the state (timed separately, counted "
                f"once) every generation costs the same.")
    log(footnote.replace("\\*", "*"))
    log(f"total runtime {runtime:.0f} s")
    if out_dir:
        qcfg = qio.QIOConfig(population=population, iterations=iterations)
        settings = {
            "population": population, "iterations": iterations, "repeats": repeats,
            "warmup_limit_device_evals": warmup_limit, "time_limit_s": time_limit_s,
            "numpy_budget_device_evals": numpy_budget, "chunk": chunk,
            "delta_theta": qcfg.delta_theta, "theta_min": qcfg.theta_min,
            "prices": "scenario.price_init", "allocation": "optimal",
            "channel": "observed (delayed)",
            "numpy_scaling": ("NumPy QIO timed over numpy_iterations generations; its time is "
                              "tiling + (measured - tiling) * iterations / numpy_iterations "
                              "(cost is linear in iterations)"),
            "runtime_s": runtime,
        }
        write_record(out_dir, "optim_throughput", {"machine": machine, "settings": settings, "rows": rows},
            "# Optimizer throughput\n\n"
            "Written by `mecjax bench optim`. One decision: one instance's full search "
            f"(population {population}, {iterations} iterations) for the offloading vector "
            "minimising the mean weighted device cost under the optimal closed-form allocation, "
            "on one slot's observation (delayed channel), prices fixed at `price_init`. JAX: "
            "`jit(vmap(search))` over the B instances (`mecjax.optim.qio`, `mecjax.optim.pso`)"
            + (f", in blocks of {chunk} instances where B is larger (`jax.lax.map(..., "
               f"batch_size={chunk})`, each block one vmap: a block's population terms stay "
               "in the CPU's caches across a generation; the one-vmap figures beside them, "
               "with the best costs of both checked equal); " if chunk else "; ") +
            "NumPy: the same QIO (`mecjax/optim/numpy_qio.py`) vectorized over instances and "
            f"population, float32. Best of up to {repeats} timed runs (fewer once "
            f"{time_limit_s:g} s of timed runs were spent), after ahead-of-time compilation "
            f"and an untimed warm-up run (skipped for JAX calls above {warmup_limit:.3g} device "
            "evaluations, which take seconds). Evaluate-bound: the decisions/s a search would "
            "make if it cost nothing but its population x iterations evaluations at the rate "
            "`mecjax bench env` measures for `mecjax.env.evaluate` (timed here, same N and B); "
            "a search evaluates its candidates from per-slot terms "
            "(`mecjax.optim.objective.population_cost_fn`), so its fitness alone may beat the "
            "bound. Mean cost: the mean best fitness found (lower is better).\n\n"
            + machine_line(machine) + f" Runtime of the whole grid: {runtime:.0f} s.\n\n"
            + table + "\n\n" + footnote + "\n")
    return rows


if __name__ == "__main__":  # pragma: no cover
    bench_optim()
