"""Throughput benchmarks: the JAX environment against the NumPy model, same run.

Timing discipline: every JAX function is compiled and run once before it is
timed; every timed call ends in ``block_until_ready``; the best of ``repeats``
timed runs is reported (the minimum is the least noisy estimate of the cost).
NumPy runs the same model, vectorized over instances, in float32 (the JAX
precision) from its own ``Generator`` draws.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mecjax import env
from mecjax.config import Scenario
from mecjax.env import numpy_model as nm


# -- the policy both implementations run: deterministic and cheap, so the
#    benchmark measures the environment. Heavy tasks go to the best observed
#    server, light ones stay local.
def _threshold_policy_jax(obs, s: Scenario):
    heavy = obs.task_cycles > 0.5 * (s.task_cycles_min + s.task_cycles_max)
    best = jnp.argmax(obs.gain_observed, -1).astype(jnp.int32) + 1
    return env.Decision(jnp.where(heavy, best, 0), jnp.full((s.n_servers,), s.price_init))


def _threshold_policy_np(state, s: Scenario):
    heavy = state["task_cycles"] > 0.5 * (s.task_cycles_min + s.task_cycles_max)
    best = np.argmax(state["gain_observed"], -1) + 1
    prices = np.full(state["backlog"].shape, s.price_init, state["battery"].dtype)
    return np.where(heavy, best, 0), prices


@partial(jax.jit, static_argnums=(2, 3))
def _jax_rollout(keys, states, s: Scenario, slots: int):
    """Roll B instances ``slots`` slots under lax.scan; returns the final states and mean cost."""
    def one_slot(carry, t):
        states, acc = carry
        step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, t)
        obs = jax.vmap(env.observe)(states)
        dec = jax.vmap(_threshold_policy_jax, (0, None))(obs, s)
        _, states, reward, _, _ = jax.vmap(env.step, (0, 0, 0, None))(step_keys, states, dec, s)
        return (states, acc + reward), None

    (states, acc), _ = jax.lax.scan(one_slot, (states, jnp.zeros(keys.shape[0])), jnp.arange(slots))
    return states, acc / slots


@partial(jax.jit, static_argnums=(1,))
def _jax_reset(keys, s: Scenario):
    return jax.vmap(env.reset, (0, None))(keys, s)[1]


@partial(jax.jit, static_argnums=(2, 3))
def _jax_evaluate_many(states, offsets, s: Scenario, repeats: int):
    """Evaluate ``repeats`` different decisions on every state; returns the summed cost."""
    m1 = s.n_servers + 1

    def one(acc, r):
        dec = env.Decision(((offsets + r) % m1).astype(jnp.int32),
                           jnp.full(offsets.shape[:1] + (s.n_servers,), s.price_init))
        out = jax.vmap(env.evaluate, (0, 0, None))(states, dec, s)
        return acc + jnp.sum(out.cost), None

    acc, _ = jax.lax.scan(one, jnp.zeros(()), jnp.arange(repeats))
    return acc


def _best_time(fn, repeats: int, time_limit_s: float = float("inf")) -> float:
    """Best of ``repeats`` timed runs; stops early once ``time_limit_s`` has been spent
    (at least one run)."""
    best, spent = float("inf"), 0.0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent >= time_limit_s:
            break
    return best


def _slots_for(n: int, batch: int, budget: float, min_slots: int = 3, max_slots: int = 200) -> int:
    return int(np.clip(budget // (n * batch), min_slots, max_slots))


def write_benchmark(out_dir, stem: str, rows: list[dict], intro: str, head: list[str],
                    table: list[str]) -> None:
    """Write ``OUT/stem.json`` (machine and rows) and ``OUT/stem.md`` (title line
    ``head[0]``, ``intro``, the machine, then the table: ``head[1:]`` and ``table``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    (out / f"{stem}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    lines = [head[0], "", intro, "",
             f"Machine: {machine['platform']}, {machine['cpu_count']} cores, jax "
             f"{machine['jax']} ({machine['jax_backend']}), {machine['date']}.", ""]
    (out / f"{stem}.md").write_text("\n".join(lines + head[1:] + table) + "\n")


def machine_description() -> dict:
    dev = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "jax_backend": jax.default_backend(),
        "jax_device": getattr(dev, "device_kind", str(dev)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def bench_env_row(n: int, batch: int, budget: float = 4e6, repeats: int = 3,
                  numpy_max_devices: float = 5e7, eval_repeats: int = 8,
                  log=print) -> dict:
    """One (N, B) cell: step and evaluate throughput for JAX and NumPy."""
    s = Scenario(n_devices=n)
    slots = _slots_for(n, batch, budget)
    keys = jax.random.split(jax.random.key(0), batch)
    states = _jax_reset(keys, s)
    jax.block_until_ready(_jax_rollout(keys, states, s, slots))  # compile + warm-up
    t_jax = _best_time(lambda: jax.block_until_ready(_jax_rollout(keys, states, s, slots)), repeats)

    offsets = jnp.asarray(np.random.default_rng(0).integers(0, s.n_servers + 1, (batch, n)))
    jax.block_until_ready(_jax_evaluate_many(states, offsets, s, eval_repeats))
    t_jax_eval = _best_time(
        lambda: jax.block_until_ready(_jax_evaluate_many(states, offsets, s, eval_repeats)), repeats)

    row = {
        "n_devices": n, "batch": batch, "slots": slots,
        "jax_step_dev_per_s": n * batch * slots / t_jax,
        "jax_eval_dev_per_s": n * batch * eval_repeats / t_jax_eval,
    }

    # NumPy: the same slots, float32, its own generator; skipped where it would take minutes.
    np_slots = slots if n * batch * slots <= numpy_max_devices else max(1, int(numpy_max_devices // (n * batch)))
    rng = np.random.default_rng(0)
    np_state = nm.reset_from_noise(nm.draw_noise(rng, nm.RESET_NOISE, s, batch), s, np.float32)

    def numpy_rollout():
        st = np_state
        for _ in range(np_slots):
            off, prices = _threshold_policy_np(st, s)
            noise = nm.draw_noise(rng, nm.STEP_NOISE, s, batch)
            st, _, _ = nm.step_from_noise(st, off, prices, noise, s)
        return st

    numpy_rollout()
    t_np = _best_time(numpy_rollout, repeats)
    off_np = np.asarray(offsets)
    prices_np = np.full((batch, s.n_servers), s.price_init, np.float32)

    def numpy_eval():
        for r in range(eval_repeats):
            nm.evaluate(np_state, (off_np + r) % (s.n_servers + 1), prices_np, s)

    numpy_eval()
    t_np_eval = _best_time(numpy_eval, repeats)
    row["numpy_step_dev_per_s"] = n * batch * np_slots / t_np
    row["numpy_eval_dev_per_s"] = n * batch * eval_repeats / t_np_eval
    row["step_speedup"] = row["jax_step_dev_per_s"] / row["numpy_step_dev_per_s"]
    row["eval_speedup"] = row["jax_eval_dev_per_s"] / row["numpy_eval_dev_per_s"]
    log(f"  N={n:5d} B={batch:5d}  step: jax {row['jax_step_dev_per_s']:.3g}/s numpy "
        f"{row['numpy_step_dev_per_s']:.3g}/s (x{row['step_speedup']:.1f})   evaluate: jax "
        f"{row['jax_eval_dev_per_s']:.3g}/s numpy {row['numpy_eval_dev_per_s']:.3g}/s "
        f"(x{row['eval_speedup']:.1f})")
    return row


def format_table(rows: list[dict]) -> str:
    head = ("| N | B | slots | JAX step (dev-steps/s) | NumPy step | step ratio "
            "| JAX evaluate (dev-evals/s) | NumPy evaluate | evaluate ratio |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['n_devices']} | {r['batch']} | {r['slots']} | {r['jax_step_dev_per_s']:.3g} "
            f"| {r['numpy_step_dev_per_s']:.3g} | {r['step_speedup']:.1f}x "
            f"| {r['jax_eval_dev_per_s']:.3g} | {r['numpy_eval_dev_per_s']:.3g} "
            f"| {r['eval_speedup']:.1f}x |")
    return "\n".join(lines)


def bench_env(ns=(50, 150, 1000), batches=(1, 64, 1024, 8192), out_dir="results/benchmarks",
              budget: float = 4e6, repeats: int = 3, log=print) -> list[dict]:
    """Run the grid, print the table, write ``env_throughput.md`` and ``.json``."""
    machine = machine_description()
    log(f"mecjax bench env on {machine['processor']} ({machine['cpu_count']} cores), "
        f"jax {machine['jax']} [{machine['jax_backend']}], numpy {machine['numpy']}")
    rows = [bench_env_row(n, b, budget=budget, repeats=repeats, log=log)
            for n in ns for b in batches]
    table = format_table(rows)
    log(table)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "env_throughput.json").write_text(json.dumps(
            {"machine": machine, "budget_device_steps": budget, "repeats": repeats,
             "rows": rows}, indent=2))
        (out / "env_throughput.md").write_text(
            "# Environment throughput\n\n"
            "Written by `mecjax bench env`. Device-steps/s: one device for one slot of a "
            "whole `lax.scan` rollout (dynamics and random draws included) under a threshold "
            "policy; evaluate: one device's outcome of one decision, no time step. NumPy runs "
            "the same model (`mecjax/env/numpy_model.py`), vectorized over instances, in "
            "float32. Best of "
            f"{repeats} timed runs after a warm-up.\n\n"
            f"Machine: {machine['platform']}, {machine['cpu_count']} cores, jax {machine['jax']} "
            f"({machine['jax_backend']}: {machine['jax_device']}), numpy {machine['numpy']}, "
            f"{machine['date']}.\n\n" + table + "\n")
    return rows
