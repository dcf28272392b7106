"""An animation of one rollout: ``mecjax rollout-gif SCHEDULER --out PATH.gif``.

Runs one instance of a task with a scheduler (learned ones from their shipped
checkpoints) for ``--slots`` slots in one jitted program, then draws every slot
with :func:`mecjax.render` and writes a GIF (matplotlib's ``PillowWriter``: no
external binaries) and/or a PNG still (``--png``). Every flag is checked before
anything runs; the files are written atomically, both or neither.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from functools import partial
from pathlib import Path

import jax
import numpy as np

from mecjax.cli import ArgumentParser, run_program
from mecjax.env import env
from mecjax.outputs import UserError, check_output_dir, write_files_atomic
from mecjax.rollout import rollout_instance

MAX_DEVICES = 1000   # beyond this the discs overlap into a blur: the picture says nothing
MAX_SLOTS = 500      # frames; each is drawn on the host
DEFAULT_SLOTS = 24


@partial(jax.jit, static_argnums=(3,))
def trajectory(scheduler, params, key, n_slots: int):
    """``(obs, decision, outcome, metrics)`` of the first ``n_slots`` slots of
    :func:`mecjax.rollout.rollout_instance` on the instance of ``key``, each with a
    leading [T] axis: the observation each slot starts from, the decision as executed
    (repaired by :func:`mecjax.env.sanitize_decision`), the per-device
    :class:`~mecjax.env.Outcome` and the rollout's per-slot metrics.

    The outcome is the environment's own, not an estimate from the delayed channel: a
    slot's true channel is what the next slot observes (``gain_observed`` of slot t+1
    is ``gain`` of slot t), so one more slot is simulated and its observation supplies
    the last slot's channel.
    """
    def probe(obs, decision, params):
        return {"obs": obs, "decision": env.sanitize_decision(decision, params)[0]}

    per_slot = rollout_instance(scheduler, params, key, n_slots + 1, probe=probe)
    obs, decision = per_slot.pop("obs"), per_slot.pop("decision")
    gain = obs.gain_observed[1:]
    obs, decision, metrics = jax.tree.map(lambda x: x[:n_slots], (obs, decision, per_slot))

    def outcome(o, g, d):
        return env.evaluate_arrays(o.task_bits, o.task_cycles, o.cpu_freq, o.tx_power, g,
                                   o.gain_observed, o.battery, o.backlog, d, params,
                                   device_backlog=o.device_backlog)

    return obs, decision, jax.vmap(outcome)(obs, gain, decision), metrics


# ----------------------------------------------------------------- inputs


def _scenario(task: str, n_devices: int | None):
    from mecjax import tasks

    try:
        tasks.spec(task)
    except ValueError as err:
        raise UserError(f"--task: {err}") from None
    try:   # through the task, so a task with fixed positions picks N of its own users
        return tasks.make(task) if n_devices is None else tasks.make(task, n_devices=n_devices)
    except ValueError as err:
        raise UserError(f"--n-devices {n_devices}: {err}") from None


def _output(path: str | None, flag: str, suffix: str) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() != suffix:
        raise UserError(f"{flag} {path} must end in {suffix}")
    if out.is_dir():
        raise UserError(f"{flag} {path} is a directory, not a {suffix} file")
    check_output_dir(out.parent, flag)
    return out


def validate(args) -> dict:
    """The checked settings of ``args`` (a :class:`UserError` naming the first bad flag;
    nothing is run or written before this passes)."""
    from mecjax.schedulers import available

    if args.scheduler not in available():
        raise UserError(f"unknown scheduler {args.scheduler!r}; available: "
                        f"{', '.join(available())}")
    if args.n_devices is not None and not 1 <= args.n_devices <= MAX_DEVICES:
        raise UserError(f"--n-devices {args.n_devices} must be in [1, {MAX_DEVICES}] "
                        f"(more devices are not readable in one picture)")
    scenario = _scenario(args.task, args.n_devices)
    if not 1 <= args.slots <= min(MAX_SLOTS, scenario.horizon):
        raise UserError(f"--slots {args.slots} must be in [1, {min(MAX_SLOTS, scenario.horizon)}]"
                        f" (at most {MAX_SLOTS} frames and the task's horizon, "
                        f"{scenario.horizon} slots)")
    if not 0 <= args.seed < 2 ** 32:
        raise UserError(f"--seed {args.seed} must be in [0, 2**32)")
    if not (np.isfinite(args.fps) and 0 < args.fps <= 50):
        raise UserError(f"--fps {args.fps} must be in (0, 50] (GIF viewers slow faster ones down)")
    if not (np.isfinite(args.dpi) and 20 <= args.dpi <= 300):
        raise UserError(f"--dpi {args.dpi} must be in [20, 300]")
    still = args.slots - 1 if args.still_slot is None else args.still_slot
    if not 0 <= still < args.slots:
        raise UserError(f"--still-slot {args.still_slot} must be in [0, {args.slots - 1}]")
    gif, png = _output(args.out, "--out", ".gif"), _output(args.png, "--png", ".png")
    if gif is None and png is None:
        raise UserError("nothing to write: give --out PATH.gif and/or --png PATH.png")
    options = _checkpoint_options(args.scheduler, scenario.n_devices, args.root)
    return {"scheduler": args.scheduler, "options": options, "scenario": scenario,
            "slots": args.slots, "seed": args.seed, "fps": args.fps, "dpi": args.dpi,
            "still": still, "gif": gif, "png": png}


def _checkpoint_options(name: str, n_devices: int, root: str) -> dict:
    """The scheduler options naming the shipped checkpoints ``name`` needs at this N."""
    from eval.plan import learned_checkpoint, method_checkpoints

    found = learned_checkpoint(name, n_devices, root)
    if found is None:
        need = ", ".join(method_checkpoints(name, n_devices, root).values())
        raise UserError(f"{name} needs a trained checkpoint for N={n_devices} and there is "
                        f"none at {need} (shipped sizes: see {root}/; train one with "
                        f"`mecjax train` or pick --n-devices of a shipped one)")
    return found[0]


# ----------------------------------------------------------------- drawing


def frames(obs, decision, outcome):
    """The per-slot ``(obs, decision, outcome)`` of :func:`trajectory`'s host arrays."""
    n_slots = int(np.shape(obs.t)[0])
    for k in range(n_slots):
        yield jax.tree.map(lambda x: x[k], (obs, decision, outcome))


def gif_bytes(obs, decision, outcome, params, fps: float, dpi: float) -> bytes:
    """The animated GIF of every slot, drawn with :func:`mecjax.render`."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.figure import Figure

    from mecjax.viewer import FIGSIZE, render

    fig = Figure(figsize=FIGSIZE)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.91, bottom=0.14)
    ax = fig.add_subplot()
    slots = list(frames(obs, decision, outcome))

    def draw(k):
        ax.clear()
        render(*slots[k][:2], params, ax=ax, outcome=slots[k][2])
        return []

    anim = FuncAnimation(fig, draw, frames=len(slots), interval=1000 / fps, blit=False,
                         repeat=False)
    # PillowWriter writes to a named file: a private temporary one, read back so that
    # the target itself is replaced atomically (write_files_atomic).
    with tempfile.TemporaryDirectory(prefix="mecjax-gif-") as tmp:
        path = Path(tmp) / "rollout.gif"
        anim.save(path, writer=PillowWriter(fps=fps), dpi=dpi)
        return path.read_bytes()


def png_bytes(obs, decision, outcome, params, slot: int, dpi: float) -> bytes:
    """A PNG of slot ``slot`` drawn with :func:`mecjax.render`."""
    from mecjax.viewer import render

    o, d, out = jax.tree.map(lambda x: x[slot], (obs, decision, outcome))
    buf = io.BytesIO()
    render(o, d, params, outcome=out).savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ----------------------------------------------------------------- program


def run(cfg: dict, log=print) -> dict:
    """Roll out, draw and write what ``cfg`` (from :func:`validate`) asks for; returns
    the per-slot metrics (numpy) of the drawn rollout."""
    from mecjax.preflight import check_compiled
    from mecjax.schedulers import make

    scenario, slots = cfg["scenario"], cfg["slots"]
    scheduler = make(cfg["scheduler"], **cfg["options"])
    key = jax.random.key(cfg["seed"])
    # Compiled first (nothing allocated yet) for the memory preflight, then run as is.
    compiled = trajectory.trace(scheduler, scenario, key, slots).lower().compile()
    check_compiled(compiled, "the rollout", "--n-devices or --slots")
    obs, decision, outcome, metrics = jax.device_get(compiled(scheduler, scenario, key))
    files = {}
    if cfg["gif"] is not None:
        files[cfg["gif"]] = gif_bytes(obs, decision, outcome, scenario, cfg["fps"], cfg["dpi"])
    if cfg["png"] is not None:
        files[cfg["png"]] = png_bytes(obs, decision, outcome, scenario, cfg["still"], cfg["dpi"])
    write_files_atomic(files)
    for path, data in files.items():
        log(f"wrote {path} ({len(data) / 1024:.0f} KiB)")
    log(f"{cfg['scheduler']}: mean cost {np.mean(metrics['mean_cost']):.4f} over {slots} slots, "
        f"N={scenario.n_devices}, M={scenario.n_servers}, seed {cfg['seed']}")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    from train.recipes import SHIPPED_ROOT

    ap = ArgumentParser(prog="mecjax rollout-gif", description="animate one rollout of a "
                        "scheduler (GIF) or draw a still (PNG)")
    ap.add_argument("scheduler", help="a scheduler name (mecjax.schedulers.available())")
    ap.add_argument("--task", default="paper", help="task name (default: paper, Table 1)")
    ap.add_argument("--n-devices", type=int, help="devices N (default: the task's)")
    ap.add_argument("--slots", type=int, default=DEFAULT_SLOTS, help="slots (frames) to draw")
    ap.add_argument("--seed", type=int, default=0, help="instance seed")
    ap.add_argument("--fps", type=float, default=4.0, help="frames per second of the GIF")
    ap.add_argument("--dpi", type=float, default=72.0, help="dots per inch (72: 432x460 px)")
    ap.add_argument("--out", help="the GIF to write (PATH.gif)")
    ap.add_argument("--png", help="also (or only) a still of one slot (PATH.png)")
    ap.add_argument("--still-slot", type=int, help="the slot of the --png still (default: last)")
    ap.add_argument("--root", default=SHIPPED_ROOT,
                    help=f"checkpoints of learned schedulers (default {SHIPPED_ROOT})")
    return ap


def main(argv: list[str] | None = None) -> int:
    run(validate(build_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("rollout-gif", main))
