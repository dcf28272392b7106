"""``mecjax tasks``: measured evidence that each task is what it claims -> ``results/tasks.md``.

For every task of :mod:`mecjax.tasks`, all-local and the cooperative reference
(coordinate descent on the slot's system cost) run on the same instances. Per
slot, on the trajectory each policy produces, it records:

* the fraction of slots in which some server starts with a non-zero backlog,
  and in which some device has queued local work (coupling across slots);
* the fraction of tasks forced to offload (the battery cannot pay for local
  computing) and of tasks that failed (``battery_hard``: the battery cannot pay
  for any option);
* the fraction of devices whose battery cannot pay for a local task;
* the deadline-miss rate;
* the share of the all-local cost the policy saves (``utility``), and whether
  the cooperative reference uses more than one kind of server (servers that
  differ in CPU, bandwidth or WAN delay).

All numbers are means over instances of per-instance averages over slots.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mecjax import tasks as task_registry
from mecjax.cli import ArgumentParser, enable_compilation_cache, run_program
from mecjax.config import as_params, per_server
from mecjax.env import physics
from mecjax.outputs import UserError, dumps_strict, lock_output_dir, write_files_atomic
from mecjax.rollout import rollout_instances
from mecjax.schedulers import make
from mecjax.stats import mean_ci

POLICIES = (("all-local", "local"), ("cooperative", "cooperative"))


def slot_probe(obs, decision, params) -> dict[str, jax.Array]:
    """Per-slot coupling and energy quantities of one instance (scalars)."""
    p = as_params(params)
    local_energy = physics.local_energy(obs.task_cycles, obs.cpu_freq, p.kappa)
    cannot_local = obs.battery < local_energy
    offload = decision.offload
    kinds = jnp.zeros((p.n_servers + 1,), jnp.float32).at[offload].add(1.0)   # [M + 1]
    return {
        "server_backlog": jnp.any(obs.backlog > 0).astype(jnp.float32),
        "device_queue": jnp.any(obs.device_backlog > 0).astype(jnp.float32),
        "forced": jnp.mean((cannot_local & (offload == 0)).astype(jnp.float32)),
        "battery_low": jnp.mean(cannot_local.astype(jnp.float32)),
        "per_server": kinds[1:] / p.n_devices,
    }


@partial(jax.jit, static_argnums=(3, 4))
def _evidence(scheduler, params, key, n_instances: int, n_slots: int):
    return rollout_instances(scheduler, params, jax.random.split(key, n_instances), n_slots,
                             slot_probe)


def server_kinds(scenario) -> list[int]:
    """The kind of each server: servers with equal (CPU, bandwidth, WAN delay) share one."""
    m = scenario.n_servers
    triples = list(zip(per_server(scenario.server_cpu_hz, m), per_server(scenario.bandwidth_hz, m),
                       per_server(scenario.wan_delay_s, m)))
    seen: dict = {}
    return [seen.setdefault(t, len(seen)) for t in triples]


def measure(task: str, instances: int, slots: int, seed: int, log=print,
            n_devices: int | None = None) -> dict:
    """Evidence rows for one task: {policy: {quantity: mean_ci dict}} (``n_devices``: the
    task at another N)."""
    scenario = (task_registry.make(task) if n_devices is None
                else task_registry.make(task, n_devices=n_devices))
    kinds = server_kinds(scenario)
    rows = {}
    for label, name in POLICIES:
        t0 = time.perf_counter()
        out = jax.device_get(_evidence(make(name), scenario, jax.random.key(seed), instances,
                                       slots))
        per_instance = {k: np.asarray(v, np.float64).mean(axis=1) for k, v in out.items()}
        row = {k: mean_ci(per_instance[k]) for k in
               ("server_backlog", "device_queue", "forced", "failed", "battery_low",
                "deadline_miss", "utility", "latency_ms", "energy_j")}
        share = per_instance["per_server"].mean(axis=0)                  # [M]
        by_kind = np.zeros(max(kinds) + 1)
        np.add.at(by_kind, kinds, share)
        row["kinds_used"] = int(np.sum(by_kind > 0.01))
        row["offload_by_kind"] = by_kind.tolist()
        rows[label] = row
        log(f"  {task} {label}: {time.perf_counter() - t0:.1f} s")
    return {"task": spec_id(task), "n_devices": scenario.n_devices,
            "n_servers": scenario.n_servers, "n_kinds": max(kinds) + 1, "rows": rows}


def spec_id(task: str) -> str:
    return task_registry.spec(task).id


def _cell(ci: dict) -> str:
    return f"{ci['mean']:.3f} ± {ci['ci95']:.3f}"


def markdown(results: list[dict], instances: int, slots: int, seed: int) -> str:
    lines = [
        "# The tasks, measured",
        "",
        f"Written by `mecjax tasks` ({instances} instances x {slots} slots per task and policy, "
        f"seed {seed}). Each value: mean over instances of the per-instance average over slots "
        "± the half-width of its 95% t-interval over instances. Both policies face the same "
        "instances. *backlog*: share of slots in which some server starts with queued work; "
        "*device queue*: share of slots in which some device has queued local work; *forced*: "
        "share of tasks forced to offload (the battery cannot pay for local computing); "
        "*failed*: share of tasks that failed (no option the battery can pay for); *battery "
        "low*: share of devices whose battery cannot pay for a local task; *saving*: share of "
        "the all-local cost saved; *kinds used*: server kinds (CPU, bandwidth, WAN delay) that "
        "receive more than 1% of the devices.",
        "",
        "| task | policy | backlog | device queue | forced | failed | battery low | "
        "deadline miss | saving | latency (ms) | energy (J) | kinds used |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for label, row in res["rows"].items():
            lines.append(
                f"| {res['task']} | {label} | {_cell(row['server_backlog'])} | "
                f"{_cell(row['device_queue'])} | {_cell(row['forced'])} | {_cell(row['failed'])} | "
                f"{_cell(row['battery_low'])} | {_cell(row['deadline_miss'])} | "
                f"{_cell(row['utility'])} | {row['latency_ms']['mean']:.1f} | "
                f"{row['energy_j']['mean']:.3f} | "
                f"{row['kinds_used']} of {res['n_kinds']} |")
    lines += ["", "Task definitions, purposes and sources: `docs/tasks.md` "
              "(`mecjax.tasks.spec(name)`).", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="mecjax tasks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", help="comma-separated task names (default: every task)")
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--slots", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-devices", type=int, help="run the tasks at this N (default: theirs)")
    ap.add_argument("--out", default="results", help="directory of tasks.md and tasks.json")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = args.tasks.split(",") if args.tasks else task_registry.names()
    for name in names:
        try:
            task_registry.spec(name)
        except ValueError as err:
            raise UserError(f"--tasks: {err}") from None
    if args.instances < 2:
        raise UserError(f"--instances {args.instances} must be >= 2 (intervals need two)")
    if args.slots < 1:
        raise UserError(f"--slots {args.slots} must be >= 1")
    if args.n_devices is not None and args.n_devices < 1:
        raise UserError(f"--n-devices {args.n_devices} must be >= 1")
    enable_compilation_cache()
    out = Path(args.out)
    with lock_output_dir(out, "mecjax tasks", "--out"):
        results = [measure(name, args.instances, args.slots, args.seed,
                           n_devices=args.n_devices) for name in names]
        write_files_atomic({
            out / "tasks.md": markdown(results, args.instances, args.slots, args.seed).encode(),
            out / "tasks.json": dumps_strict({"instances": args.instances, "slots": args.slots,
                                              "seed": args.seed, "tasks": results}).encode(),
        })
    print(f"wrote {out / 'tasks.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("tasks", main))
