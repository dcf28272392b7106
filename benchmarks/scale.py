"""``mecjax bench scale``: how the cost of the environment step and of QIO grows
with the number of devices N and the number of instances B.

For each size the compiled program is timed (warm-up, ``block_until_ready``,
best of ``repeats``) and its memory is read from XLA's compiled memory
analysis (arguments + outputs + temporaries: the device memory the program
needs). The growth exponent is the least-squares slope of log(time) against
log(size) over the sizes at and above ``fit_from``. Writes
``results/benchmarks/scale.{md,json,png}``.
"""

from __future__ import annotations

import json
import os
import resource
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np

from mecjax import env
from mecjax.outputs import write_text_atomic
from mecjax.preflight import compiled_bytes
from benchmarks.common import best_time, machine_description
from benchmarks.env import jax_reset, jax_rollout
from mecjax.config import Scenario
from mecjax.optim import objective, qio
from mecjax.schedulers.base import fixed_prices


def _time_compiled(compiled, args, repeats: int) -> float:
    jax.block_until_ready(compiled(*args))  # warm-up
    return best_time(lambda: jax.block_until_ready(compiled(*args)), repeats)


def env_point(n: int, batch: int, slots: int, repeats: int) -> dict:
    s = Scenario(n_devices=n)
    keys = jax.random.split(jax.random.key(0), batch)
    states = jax_reset(keys, s)
    compiled = jax_rollout.lower(keys, states, s, slots).compile()
    t = _time_compiled(compiled, (keys, states), repeats)
    return {"kind": "env", "n_devices": n, "batch": batch, "slots": slots,
            "seconds_per_slot": t / slots, "device_steps_per_s": n * batch * slots / t,
            "memory_bytes": compiled_bytes(compiled)}


@partial(jax.jit, static_argnums=(1, 2))
def _qio_batch(obs, s: Scenario, config: qio.QIOConfig):
    def one(o, key):
        fit = objective.population_cost_fn(o, fixed_prices(s), s)
        return qio.search(key, fit, s.n_devices, s.n_options, config)[1]

    keys = jax.random.split(jax.random.key(1), obs.t.shape[0])
    return jax.vmap(one)(obs, keys)


def qio_point(n: int, batch: int, iterations: int, repeats: int) -> dict:
    s = Scenario(n_devices=n)
    obs = jax.vmap(lambda k: env.reset(k, s)[0])(jax.random.split(jax.random.key(0), batch))
    cfg = qio.QIOConfig(iterations=iterations)
    compiled = _qio_batch.lower(obs, s, cfg).compile()
    t = _time_compiled(compiled, (obs,), repeats)
    return {"kind": "qio", "n_devices": n, "batch": batch, "iterations": iterations,
            "seconds_per_decision_batch": t, "decisions_per_s": batch / t,
            "memory_bytes": compiled_bytes(compiled)}


def growth_exponent(sizes, seconds, fit_from: int) -> float:
    x = np.log([v for v in sizes if v >= fit_from])
    y = np.log([t for v, t in zip(sizes, seconds) if v >= fit_from])
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else float("nan")


def _availablecompiled_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def bench_scale(ns=(50, 150, 500, 1500, 5000, 10000), env_batch: int = 16,
                batches=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536), batch_n: int = 150,
                qio_ns=(50, 150, 500, 1500, 5000, 10000), qio_batch: int = 4,
                qio_batches=(1, 4, 16, 64, 256), qio_iterations: int = 20, repeats: int = 3,
                budget: float = 4e6, memory_fraction: float = 0.5, time_limit_s: float = 30.0,
                out_dir: str | None = "results/benchmarks", log=print) -> dict:
    """Run the four scaling series; print tables; write md/json/png."""
    t_start = time.perf_counter()
    memory_cap = memory_fraction * _availablecompiled_bytes()
    rows = {"env_n": [], "env_b": [], "qio_n": [], "qio_b": []}

    def slots_for(n, b):
        return int(np.clip(budget // (n * b), 3, 100))

    for n in ns:
        rows["env_n"].append(env_point(n, env_batch, slots_for(n, env_batch), repeats))
        log(f"  env   N={n:6d} B={env_batch:6d}: {rows['env_n'][-1]['seconds_per_slot'] * 1e3:9.3f} ms/slot")
    per_instance = None
    for b in batches:
        if per_instance is not None and per_instance * b > memory_cap:
            log(f"  env   B={b}: skipped, needs about {per_instance * b / 2**30:.1f} GiB > "
                f"{memory_cap / 2**30:.1f} GiB ({memory_fraction:.0%} of available memory)")
            break
        r = env_point(batch_n, b, slots_for(batch_n, b), repeats)
        rows["env_b"].append(r)
        if r["memory_bytes"]:
            per_instance = r["memory_bytes"] / b
        log(f"  env   N={batch_n:6d} B={b:6d}: {r['seconds_per_slot'] * 1e3:9.3f} ms/slot, "
            f"{(r['memory_bytes'] or 0) / 2**20:8.1f} MiB")
        if r["seconds_per_slot"] * r["slots"] > time_limit_s:
            break
    for n in qio_ns:
        rows["qio_n"].append(qio_point(n, qio_batch, qio_iterations, repeats))
        log(f"  qio   N={n:6d} B={qio_batch:6d}: {rows['qio_n'][-1]['seconds_per_decision_batch']:8.3f} s")
    for b in qio_batches:
        r = qio_point(batch_n, b, qio_iterations, repeats)
        rows["qio_b"].append(r)
        log(f"  qio   N={batch_n:6d} B={b:6d}: {r['seconds_per_decision_batch']:8.3f} s, "
            f"{(r['memory_bytes'] or 0) / 2**20:8.1f} MiB")
        if r["seconds_per_decision_batch"] > time_limit_s:
            break
    exps = {
        "env_vs_n": growth_exponent([r["n_devices"] for r in rows["env_n"]],
                                    [r["seconds_per_slot"] for r in rows["env_n"]], 150),
        "env_vs_batch": growth_exponent([r["batch"] for r in rows["env_b"]],
                                        [r["seconds_per_slot"] for r in rows["env_b"]], 64),
        "qio_vs_n": growth_exponent([r["n_devices"] for r in rows["qio_n"]],
                                    [r["seconds_per_decision_batch"] for r in rows["qio_n"]], 150),
        "qio_vs_batch": growth_exponent([r["batch"] for r in rows["qio_b"]],
                                        [r["seconds_per_decision_batch"] for r in rows["qio_b"]], 16),
    }
    result = {"machine": machine_description(), "rows": rows, "exponents": exps,
              "settings": {"env_batch": env_batch, "batch_n": batch_n, "qio_batch": qio_batch,
                           "qio_iterations": qio_iterations, "repeats": repeats},
              "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "wall_s": time.perf_counter() - t_start}
    table = format_markdown(result)
    log(table)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "scale.json", json.dumps(result, indent=2))
        write_text_atomic(out / "scale.md", table)
        write_figure(result, out / "scale.png")
    return result


def _mib(v):
    return f"{v / 2**20:.1f}" if v else "n/a"


def format_markdown(result: dict) -> str:
    e, rows, m = result["exponents"], result["rows"], result["machine"]
    st = result["settings"]
    lines = ["# Scaling of the environment step and of QIO", "",
             "Written by `mecjax bench scale`. Time per compiled call (warm-up, "
             "`block_until_ready`, best of the repeats); memory is XLA's compiled memory analysis "
             "(arguments + outputs + temporaries). Growth exponent: least-squares slope of "
             "log(time) on log(size).", "",
             f"Machine: {m['platform']}, {m['cpu_count']} cores, jax {m['jax']} "
             f"({m['jax_backend']}), {m['date']}; whole run {result['wall_s']:.0f} s, peak process "
             f"RSS {result['max_rss_bytes'] / 2**30:.2f} GiB.", "",
             "| series | fitted exponent | over |", "|---|---|---|",
             f"| env step time vs N (B = {st['env_batch']}, M = 3) | {e['env_vs_n']:.3f} | N >= 150 |",
             f"| env step time vs B (N = {st['batch_n']}) | {e['env_vs_batch']:.3f} | B >= 64 |",
             f"| QIO time vs N (B = {st['qio_batch']}, {st['qio_iterations']} iterations, P = 30) "
             f"| {e['qio_vs_n']:.3f} | N >= 150 |",
             f"| QIO time vs B (N = {st['batch_n']}) | {e['qio_vs_batch']:.3f} | B >= 16 |", "",
             "## Environment step", "",
             "| N | B | slots | ms per slot | device-steps/s | memory (MiB) |", "|---|---|---|---|---|---|"]
    for r in rows["env_n"] + rows["env_b"]:
        lines.append(f"| {r['n_devices']} | {r['batch']} | {r['slots']} | "
                     f"{r['seconds_per_slot'] * 1e3:.3f} | {r['device_steps_per_s']:.3g} | "
                     f"{_mib(r['memory_bytes'])} |")
    lines += ["", f"## QIO ({st['qio_iterations']} iterations, population 30, per decision batch)",
              "", "| N | B | seconds | decisions/s | memory (MiB) |", "|---|---|---|---|---|"]
    for r in rows["qio_n"] + rows["qio_b"]:
        lines.append(f"| {r['n_devices']} | {r['batch']} | {r['seconds_per_decision_batch']:.4f} | "
                     f"{r['decisions_per_s']:.3g} | {_mib(r['memory_bytes'])} |")
    return "\n".join(lines) + "\n"


def write_figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, e = result["rows"], result["exponents"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    # Left: time against N; right: time against the number of instances B.
    for ax, x, rows_key, exp_key, label in ((axes[0], "n_devices", "n", "n", "devices N"),
                                            (axes[1], "batch", "b", "batch", "instances B")):
        env_rows, qio_rows = rows[f"env_{rows_key}"], rows[f"qio_{rows_key}"]
        ax.loglog([r[x] for r in env_rows], [r["seconds_per_slot"] for r in env_rows], "o-",
                  label=f"env step (slope {e['env_vs_' + exp_key]:.2f})")
        ax.loglog([r[x] for r in qio_rows], [r["seconds_per_decision_batch"] for r in qio_rows],
                  "s-", label=f"QIO search (slope {e['qio_vs_' + exp_key]:.2f})")
        ax.set_xlabel(label)
    for ax in axes:
        ax.set_ylabel("seconds per call")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("mecjax bench scale", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
