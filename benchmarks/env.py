"""Throughput benchmarks: the JAX environment against the NumPy model, same run.

Timing discipline: every JAX function is compiled and run once before it is
timed; every timed call ends in ``block_until_ready``; the best of ``repeats``
timed runs is reported (the minimum is the least noisy estimate of the cost).
NumPy runs the same model, vectorized over instances, in float32 (the JAX
precision) from its own ``Generator`` draws. With the optional ``bench`` extra,
hand-fused parallel Numba kernels (:mod:`benchmarks.numba_kernels`) run the same
evaluation and step too, after their outputs were checked against mecjax's in the
same run (``numba_max_rel_diff``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mecjax import env
from mecjax.config import Scenario
from mecjax.env.env import step_noise, transition
from mecjax.env import numpy_model as nm
from benchmarks.common import (best_time, machine_description, machine_line, markdown_table,
                               write_record)


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
def jax_rollout(keys, states, s: Scenario, slots: int):
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
def jax_reset_batch(keys, s: Scenario):
    """``(observations, states)`` of ``env.reset`` on each key [B]: one compiled program
    for every benchmark that needs either."""
    return jax.vmap(env.reset, (0, None))(keys, s)


def jax_reset(keys, s: Scenario):
    """The reset states of ``keys`` [B]."""
    return jax_reset_batch(keys, s)[1]


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


def _numba():
    """The Numba kernels module, or None when the optional bench extra is not installed."""
    try:
        from benchmarks import numba_kernels
    except ImportError:
        return None
    return numba_kernels


def _as_numpy_state(states) -> dict:
    """A batched :class:`~mecjax.env.EnvState` as the NumPy model's dict of arrays."""
    return {k: np.asarray(v) for k, v in vars(states).items()}


def numba_agreement(nk, states, offsets, s: Scenario) -> float:
    """Largest relative difference (scaled by each field's largest magnitude, so values
    crossing zero are not amplified) between the Numba kernels and mecjax on the same
    input: ``evaluate`` of the decision ``offsets`` and one ``step`` given mecjax's own
    uniforms of that slot. The executed offloads must be equal, else ``AssertionError``."""
    c = nk.constants(s)
    batch = offsets.shape[0]
    prices = jnp.full((batch, s.n_servers), s.price_init, jnp.float32)
    dec = env.Decision(jnp.asarray(offsets, jnp.int32), prices)
    ours = jax.vmap(env.evaluate, (0, 0, None))(states, dec, s)
    state_np = nk.as_float32_state(_as_numpy_state(states))
    theirs = nk.evaluate(state_np, np.asarray(offsets), np.asarray(prices), c)
    assert np.array_equal(np.asarray(ours.offload), theirs["offload"]), "executed offloads differ"

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))

    worst = max(rel(getattr(ours, k), theirs[k]) for k in ("latency", "energy", "payment",
                                                           "cost", "rate"))
    keys = jax.random.split(jax.random.key(1), batch)
    noise = jax.vmap(step_noise, (0, None))(keys, s)
    _, nxt, _, _, info = jax.vmap(transition, (0, 0, 0, None))(states, dec, noise, s)
    cost = nk.step_given_noise(state_np, np.asarray(offsets), np.asarray(prices),
                               {k: np.asarray(v) for k, v in noise.items()}, c)
    worst = max(worst, rel(info["cost"], cost))
    for field in ("task_bits", "task_cycles", "fading_re", "fading_im", "gain",
                  "gain_observed", "battery", "backlog", "burst", "task_deadline"):
        worst = max(worst, rel(getattr(nxt, field), state_np[field]))
    assert np.array_equal(np.asarray(nxt.t), state_np["t"]), "slot indices differ"
    return worst


def evaluate_rate(n: int, batch: int, repeats: int = 3, eval_repeats: int = 8,
                  states=None) -> float:
    """Device-evaluations/s of ``jit(vmap(mecjax.env.evaluate))`` at N = ``n`` on ``batch``
    reset instances (the evaluate column of :func:`bench_env_row`): ``states`` [B], or
    the resets of ``key(0)``'s ``batch`` keys."""
    s = Scenario(n_devices=n)
    if states is None:
        states = jax_reset(jax.random.split(jax.random.key(0), batch), s)
    return _timed_evaluate(states, _random_offsets(n, batch, s), s, repeats, eval_repeats)


def _random_offsets(n: int, batch: int, s: Scenario):
    """[B, N] the fixed random decisions every evaluate timing uses."""
    return jnp.asarray(np.random.default_rng(0).integers(0, s.n_servers + 1, (batch, n)))


def _timed_evaluate(states, offsets, s: Scenario, repeats: int, eval_repeats: int) -> float:
    """Device-evaluations/s of ``eval_repeats`` jitted, vmapped evaluations of ``offsets``
    on ``states`` (after an untimed compile and warm-up run; best of ``repeats``)."""
    run = lambda: jax.block_until_ready(_jax_evaluate_many(states, offsets, s, eval_repeats))  # noqa: E731
    run()
    return offsets.size * eval_repeats / best_time(run, repeats)


def _slots_for(n: int, batch: int, budget: float, min_slots: int = 3, max_slots: int = 200) -> int:
    return int(np.clip(budget // (n * batch), min_slots, max_slots))


def bench_env_row(n: int, batch: int, budget: float = 4e6, repeats: int = 3,
                  numpy_max_devices: float = 5e7, eval_repeats: int = 8, numba: bool = True,
                  log=print) -> dict:
    """One (N, B) cell: step and evaluate throughput for JAX and NumPy, and for the Numba
    kernels when ``numba`` and the bench extra is installed (their columns None
    otherwise)."""
    s = Scenario(n_devices=n)
    slots = _slots_for(n, batch, budget)
    keys = jax.random.split(jax.random.key(0), batch)
    states = jax_reset(keys, s)
    jax.block_until_ready(jax_rollout(keys, states, s, slots))  # compile + warm-up
    t_jax = best_time(lambda: jax.block_until_ready(jax_rollout(keys, states, s, slots)), repeats)

    offsets = _random_offsets(n, batch, s)
    row = {
        "n_devices": n, "batch": batch, "slots": slots,
        "jax_step_dev_per_s": n * batch * slots / t_jax,
        "jax_eval_dev_per_s": _timed_evaluate(states, offsets, s, repeats, eval_repeats),
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
    t_np = best_time(numpy_rollout, repeats)
    off_np = np.asarray(offsets)
    prices_np = np.full((batch, s.n_servers), s.price_init, np.float32)

    np_eval_repeats = int(np.clip(numpy_max_devices // (n * batch), 1, eval_repeats))

    def numpy_eval():
        for r in range(np_eval_repeats):
            nm.evaluate(np_state, (off_np + r) % (s.n_servers + 1), prices_np, s)

    numpy_eval()
    t_np_eval = best_time(numpy_eval, repeats)
    row["numpy_slots"], row["numpy_eval_repeats"] = np_slots, np_eval_repeats
    row["numpy_step_dev_per_s"] = n * batch * np_slots / t_np
    row["numpy_eval_dev_per_s"] = n * batch * np_eval_repeats / t_np_eval
    row["step_speedup"] = row["jax_step_dev_per_s"] / row["numpy_step_dev_per_s"]
    row["eval_speedup"] = row["jax_eval_dev_per_s"] / row["numpy_eval_dev_per_s"]
    line = (f"  N={n:5d} B={batch:5d}  step: jax {row['jax_step_dev_per_s']:.3g}/s numpy "
            f"{row['numpy_step_dev_per_s']:.3g}/s (x{row['step_speedup']:.1f})   evaluate: jax "
            f"{row['jax_eval_dev_per_s']:.3g}/s numpy {row['numpy_eval_dev_per_s']:.3g}/s "
            f"(x{row['eval_speedup']:.1f})")
    nk = _numba() if numba else None
    for key in ("numba_step_dev_per_s", "numba_eval_dev_per_s", "step_vs_numba",
                "eval_vs_numba", "numba_max_rel_diff"):
        row[key] = None
    if nk is not None:
        # The same decisions and slots as the JAX runs, from a float32 copy of the JAX
        # states (the kernels change a state in place: each timed run starts afresh).
        row["numba_max_rel_diff"] = numba_agreement(nk, states, offsets, s)
        base = nk.as_float32_state(_as_numpy_state(states))
        c = nk.constants(s)
        prices = np.full((batch, s.n_servers), s.price_init, np.float32)

        def numba_eval():
            for r in range(eval_repeats):
                nk.evaluate(base, (off_np + r) % (s.n_servers + 1), prices, c)

        numba_eval()
        t_nb_eval = best_time(numba_eval, repeats)
        fresh = [nk.as_float32_state(base) for _ in range(repeats + 1)]
        nk.rollout(fresh[0], s, slots)   # compile + warm-up
        t_nb = best_time(lambda: nk.rollout(fresh.pop(), s, slots), repeats)
        row["numba_step_dev_per_s"] = n * batch * slots / t_nb
        row["numba_eval_dev_per_s"] = n * batch * eval_repeats / t_nb_eval
        row["step_vs_numba"] = row["jax_step_dev_per_s"] / row["numba_step_dev_per_s"]
        row["eval_vs_numba"] = row["jax_eval_dev_per_s"] / row["numba_eval_dev_per_s"]
        line += (f"   numba: step {row['numba_step_dev_per_s']:.3g}/s (jax x"
                 f"{row['step_vs_numba']:.2f}), evaluate {row['numba_eval_dev_per_s']:.3g}/s "
                 f"(jax x{row['eval_vs_numba']:.2f}), max rel diff "
                 f"{row['numba_max_rel_diff']:.1e}")
    log(line)
    return row


# -- which generator draws the simulator's noise: a measured choice.
# (Scenario.noise_rng, key impl) pairs; the first is the reference of the ratios. "hash"
# draws 64 seed bits from the key and expands them with mecjax.env.rng's counter hash;
# "jax" draws every word from the key's own generator (Threefry-2x32, or XLA's
# RngBitGenerator for rbg / unsafe_rbg keys).
NOISE_INTRO = (
    "\n## Which generator draws the noise\n\n"
    "The same rollout at N = {n}, B = {b} with `Scenario.noise_rng = \"hash\"` (the default: "
    "64 seed bits drawn from the key, expanded by the counter hash of `mecjax/env/rng.py`) "
    "and with `\"jax\"` (every word drawn by the key's own generator: Threefry, or XLA's "
    "RngBitGenerator for `rbg` and `unsafe_rbg` keys). The default stands on this "
    "measurement.\n\n")
GENERATORS = (("hash", "threefry2x32"), ("jax", "threefry2x32"), ("jax", "rbg"),
              ("jax", "unsafe_rbg"))


def bench_noise_generators(n_devices: int = 150, batch: int = 1024, slots: int = 20,
                           repeats: int = 3, generators=GENERATORS, log=print) -> list[dict]:
    """Device-steps/s of the same jitted, vmapped ``lax.scan`` rollout as the main table
    (threshold policy) for each (noise_rng, key impl) in ``generators``; ``vs_hash`` is
    each speed over the first generator's."""
    rows = []
    for noise_rng, impl in generators:
        s = Scenario(n_devices=n_devices, noise_rng=noise_rng)
        keys = jax.random.split(jax.random.key(0, impl=impl), batch)
        states = jax.block_until_ready(jax_reset(keys, s))
        jax.block_until_ready(jax_rollout(keys, states, s, slots))  # compile + warm-up
        seconds = best_time(lambda: jax.block_until_ready(jax_rollout(keys, states, s, slots)),
                            repeats)
        rows.append({"noise_rng": noise_rng, "key_impl": impl, "n_devices": n_devices,
                     "batch": batch, "slots": slots, "seconds": seconds,
                     "dev_steps_per_s": n_devices * batch * slots / seconds})
        log(f"  noise_rng={noise_rng:4s} key={impl:12s} N={n_devices} B={batch} "
            f"slots={slots}: {rows[-1]['dev_steps_per_s']:.3g} device-steps/s")
    for row in rows:
        row["vs_hash"] = row["dev_steps_per_s"] / rows[0]["dev_steps_per_s"]
    return rows


def format_noise_table(rows: list[dict]) -> str:
    """The rows of :func:`bench_noise_generators` as a Markdown table."""
    return markdown_table(
        ["noise_rng", "key impl", "N", "B", "slots", "device-steps/s", "vs hash"],
        [[r["noise_rng"], r["key_impl"], r["n_devices"], r["batch"], r["slots"],
          f"{r['dev_steps_per_s']:.3g}", f"{r['vs_hash']:.2f}x"] for r in rows])


def _or_dash(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[dict]) -> str:
    columns = ["N", "B", "slots", "JAX step (dev-steps/s)", "NumPy step", "vs NumPy",
               "Numba step", "vs Numba", "JAX evaluate (dev-evals/s)", "NumPy evaluate",
               "vs NumPy", "Numba evaluate", "vs Numba"]
    return markdown_table(columns, [
        [r["n_devices"], r["batch"], r["slots"], f"{r['jax_step_dev_per_s']:.3g}",
         f"{r['numpy_step_dev_per_s']:.3g}", f"{r['step_speedup']:.1f}x",
         _or_dash(r.get("numba_step_dev_per_s"), ".3g"),
         _or_dash(r.get("step_vs_numba"), ".2f") + ("x" if r.get("step_vs_numba") else ""),
         f"{r['jax_eval_dev_per_s']:.3g}", f"{r['numpy_eval_dev_per_s']:.3g}",
         f"{r['eval_speedup']:.1f}x", _or_dash(r.get("numba_eval_dev_per_s"), ".3g"),
         _or_dash(r.get("eval_vs_numba"), ".2f") + ("x" if r.get("eval_vs_numba") else "")]
        for r in rows])


def bench_env(ns=(50, 150, 1000), batches=(1, 64, 1024, 8192), out_dir="results/benchmarks",
              budget: float = 4e6, repeats: int = 3, noise_generators: bool = True,
              numpy_budget: float = 5e7, numba: bool = True, log=print) -> list[dict]:
    """Run the grid, print the table, write ``env_throughput.md`` and ``.json``.

    The record is rewritten after every row, so a run stopped at a time limit keeps the rows
    it finished."""
    machine = machine_description()
    log(f"mecjax bench env on {machine['processor']} ({machine['cpu_count']} cores), "
        f"jax {machine['jax']} [{machine['jax_backend']}], numpy {machine['numpy']}")

    def write(rows, noise):
        if not out_dir:
            return
        record = {"machine": machine, "budget_device_steps": budget, "repeats": repeats,
                  "numpy_budget_device_steps": numpy_budget, "rows": rows, "noise_generators": noise}
        write_record(out_dir, "env_throughput", record,
            "# Environment throughput\n\n"
            "Written by `mecjax bench env`. Device-steps/s: one device for one slot of a "
            "whole `lax.scan` rollout (dynamics and random draws included) under a threshold "
            "policy; evaluate: one device's outcome of one decision, no time step. NumPy runs "
            "the same model (`mecjax/env/numpy_model.py`), vectorized over instances, in "
            f"float32, over fewer slots (and evaluations) where the JAX run's would exceed "
            f"{numpy_budget:.3g} device-steps: a rate, its counts in the JSON. Numba: "
            "hand-fused parallel kernels of the same evaluation and step "
            "(`benchmarks/numba_kernels.py`, the `bench` extra; its own per-thread generator "
            "draws the step's uniforms), the same decisions and slots, float32; before "
            "timing, their outcome and next state were checked against mecjax's on the "
            "same input (largest relative difference"
            + (f" over all rows: {max(diffs):.1e}" if (diffs := [
                r["numba_max_rel_diff"] for r in rows if r.get("numba_max_rel_diff")
                is not None]) else ": not run: Numba not installed, or not asked for") + "). \"vs\" "
            "columns: mecjax's rate over the other's. Best of "
            f"{repeats} timed runs after a warm-up.\n\n" + machine_line(machine) + "\n\n"
            + format_table(rows) + "\n"
            + (NOISE_INTRO.format(n=noise[0]["n_devices"], b=noise[0]["batch"])
               + format_noise_table(noise) + "\n" if noise else ""))

    rows = []
    for n in ns:
        for b in batches:
            rows.append(bench_env_row(n, b, budget=budget, repeats=repeats,
                                      numpy_max_devices=numpy_budget, numba=numba, log=log))
            write(rows, [])
    log(format_table(rows))
    if noise_generators:
        noise_n, noise_b = max(ns), max(batches)
        noise = bench_noise_generators(noise_n, noise_b, slots=_slots_for(noise_n, noise_b, budget),
                                       repeats=repeats, log=log)
        log(format_noise_table(noise))
        write(rows, noise)
    return rows
