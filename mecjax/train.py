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

import csv
import dataclasses
import time
from functools import lru_cache, partial
from pathlib import Path

import jax
import numpy as np

from mecjax import checkpoint as ckpt
from mecjax.config import Scenario
from mecjax.learners.base import Learner, get_learner


def run_config(learner: Learner, scenario: Scenario, seed: int, chunk: int) -> dict:
    """What a checkpoint must match to be resumed or used."""
    return {"method": learner.name, "scenario": dataclasses.asdict(scenario),
            "hyper": learner.hyper(), "seed": seed, "chunk": chunk}


@partial(jax.jit, static_argnums=(0, 2, 3))
def _train_chunk(learner: Learner, state, scenario: Scenario, n: int):
    def body(s, _):
        return learner.update(s, scenario)

    return jax.lax.scan(body, state, None, length=n)


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
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(keep)


def read_metrics(path) -> dict[str, np.ndarray]:
    with open(path) as f:
        rows = list(csv.reader(f))
    head, body = rows[0], np.asarray(rows[1:], np.float64)
    return {k: body[:, i] for i, k in enumerate(head)}


def write_learning_curve(run_dir: Path, title: str, metric: str = "mean_cost") -> None:
    """Plot ``metric`` of ``metrics.csv`` (per update and running mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = read_metrics(run_dir / "metrics.csv")
    x, y = m["update"], m[metric]
    window = max(1, len(y) // 50)
    smooth = np.convolve(y, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, y, alpha=0.3, label="per update")
    ax.plot(x[window - 1:], smooth, label=f"running mean ({window})")
    ax.set_xlabel("update (one slot on every training instance)")
    ax.set_ylabel("mean weighted cost (eq. 3)" if metric == "mean_cost" else metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "learning_curve.png", dpi=110)
    plt.close(fig)


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
        state, metrics = _train_chunk(learner, state, scenario, n)
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


def load_run(run_dir, expect: dict | None = None):
    """Rebuild ``(learner, scenario, train_state, config)`` from a run directory alone."""
    ckpt_dir = Path(run_dir) / "ckpt"
    config = ckpt.load_config(ckpt_dir)
    learner = get_learner(config["method"], **config["hyper"])
    scenario = Scenario(**config["scenario"])
    target = jax.eval_shape(lambda: learner.init(jax.random.key(0), scenario))
    state, config, _ = ckpt.restore(ckpt_dir, target, expect=expect)
    return learner, scenario, state, config


def _policy_target(learner: Learner, scenario: Scenario):
    return jax.eval_shape(lambda: learner.policy(learner.init(jax.random.key(0), scenario)))


def export_policy(run_dir, out_dir, keep: int = 1) -> Path:
    """Save only the trained policy of ``run_dir`` (no replay buffers, optimizer
    states or training instances) as a small checkpoint under ``out_dir/ckpt``:
    what ``results/checkpoints/`` ships."""
    learner, scenario, state, config = load_run(run_dir)
    step = ckpt.latest_step(Path(run_dir) / "ckpt")
    out = Path(out_dir) / "ckpt"
    if ckpt.latest_step(out) == step:
        return out
    ckpt.save(out, step, learner.policy(state), {**config, "kind": "policy"}, keep=keep)
    return out


def load_policy_checkpoint(directory, expect: dict | None = None):
    """``(learner, scenario, policy, config)`` from a run directory (full train
    state) or an exported policy directory."""
    ckpt_dir = Path(directory) / "ckpt"
    config = ckpt.load_config(ckpt_dir)
    learner = get_learner(config["method"], **config["hyper"])
    scenario = Scenario(**config["scenario"])
    if config.get("kind") == "policy":
        policy, config, _ = ckpt.restore(ckpt_dir, _policy_target(learner, scenario), expect=expect)
        return learner, scenario, policy, config
    target = jax.eval_shape(lambda: learner.init(jax.random.key(0), scenario))
    state, config, _ = ckpt.restore(ckpt_dir, target, expect=expect)
    return learner, scenario, learner.policy(state), config


@lru_cache(maxsize=32)
def _cached_policy(run_dir: str, method: str, n_devices: int, n_servers: int, stamp: float):
    _, scenario, policy, _ = load_policy_checkpoint(run_dir, expect={"method": method})
    if (scenario.n_devices, scenario.n_servers) != (n_devices, n_servers):
        raise ckpt.CheckpointMismatchError(
            f"checkpoint {run_dir} was trained for n_devices={scenario.n_devices}, "
            f"n_servers={scenario.n_servers} but the scenario has n_devices={n_devices}, "
            f"n_servers={n_servers}")
    return policy


def checkpoint_stamp(run_dir) -> str:
    """Identity of the latest checkpoint in ``run_dir`` (step and modification time)."""
    ckpt_dir = Path(run_dir) / "ckpt"
    step = ckpt.latest_step(ckpt_dir)
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {ckpt_dir}")
    return f"{step}@{(ckpt_dir / str(step)).stat().st_mtime_ns}"


def load_policy(run_dir: str, method: str, n_devices: int, n_servers: int):
    """The trained policy of ``run_dir``, checked against the method and sizes.

    Cached per run directory and modification time of its latest checkpoint.
    """
    # Schedulers load their policy inside the rollout's trace; restoring there would
    # turn the arrays into tracers, which the cache would then leak. Restore eagerly.
    with jax.ensure_compile_time_eval():
        return _cached_policy(str(run_dir), method, n_devices, n_servers,
                              checkpoint_stamp(run_dir))
