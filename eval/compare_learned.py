"""Learned schedulers (shipped checkpoints) against the references, on fresh
evaluation instances. Writes ``results/learned_vs_references.md`` and ``.json``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

from mecjax.cli import int_list, run_program
from mecjax.outputs import UserError, write_text_atomic
from mecjax.config import Scenario
from mecjax.rollout import rollout
from mecjax.schedulers import available, make
from mecjax.stats import summarize
from eval.plan import learned_checkpoint
from train.recipes import LEARNED_METHODS, SHIPPED_ROOT

REFERENCES = ("random", "nearest", "greedy", "best_response", "qio_mec")
SHOWN = ("mean_cost", "latency_ms", "energy_j", "fairness")


def run(sizes=(50, 150), instances: int = 32, slots: int = 20, seed: int = 1234,
        ckpt_root: str = SHIPPED_ROOT, out_dir: str | None = "results", log=print) -> dict:
    t0 = time.perf_counter()
    table: dict[int, dict[str, dict | None]] = {}
    for n in sizes:
        s = Scenario(n_devices=n, horizon=slots)
        table[n] = {}
        for name in list(LEARNED_METHODS) + list(REFERENCES):
            if name not in available():
                table[n][name] = None
                continue
            found = learned_checkpoint(name, n, ckpt_root)
            if found is None:
                log(f"  N={n} {name}: no checkpoint under {ckpt_root}")
                table[n][name] = None
                continue
            sched = make(name, **found[0])
            summ = summarize(rollout(sched, s, jax.random.key(seed), instances, slots))
            table[n][name] = {k: summ[k] for k in SHOWN}
            log(f"  N={n} {name:14s} mean cost {summ['mean_cost']['mean']:.5f} ± "
                f"{summ['mean_cost']['ci95']:.5f}")
    result = {"sizes": list(sizes), "instances": instances, "slots": slots, "seed": seed,
              "table": {str(n): v for n, v in table.items()}, "wall_s": time.perf_counter() - t0}
    if out_dir:
        out = Path(out_dir)
        write_text_atomic(out / "learned_vs_references.json", json.dumps(result, indent=2))
        write_text_atomic(out / "learned_vs_references.md", format_markdown(result))
    return result


def format_markdown(result: dict) -> str:
    lines = ["# Learned schedulers against the references", "",
             f"Written by `mecjax compare-learned`: {result['instances']} fresh evaluation instances "
             f"(seed {result['seed']}, unseen in training) x {result['slots']} slots, M = 3, the "
             "learned schedulers run the shipped checkpoints under `results/checkpoints/`. Mean "
             "± 95% CI over instances.", ""]
    for n in result["sizes"]:
        rows = result["table"][str(n)]
        lines += [f"## N = {n}", "", "| method | " + " | ".join(SHOWN) + " |",
                  "|---|" + "---|" * len(SHOWN)]
        for name, r in rows.items():
            if r is None:
                lines.append(f"| {name} | " + " | ".join(["not available"] * len(SHOWN)) + " |")
            else:
                lines.append(f"| {name} | " + " | ".join(
                    f"{r[k]['mean']:.4g} ± {r[k]['ci95']:.2g}" for k in SHOWN) + " |")
        for name in LEARNED_METHODS:
            r = rows.get(name)
            if r is None:
                continue
            verdicts = []
            for ref in ("random", "nearest"):
                if rows.get(ref):
                    better = r["mean_cost"]["high"] < rows[ref]["mean_cost"]["low"]
                    verdicts.append(f"{'beats' if better else 'does not clearly beat'} {ref}")
            lines.append(f"\n{name}: " + ", ".join(verdicts) + " (mean cost, non-overlapping 95% CIs).")
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    cl = argparse.ArgumentParser(prog="mecjax compare-learned",
                                 description="shipped learned schedulers vs the references")
    cl.add_argument("--sizes", type=int_list, help="device counts (default 50,150)")
    cl.add_argument("--instances", type=int, default=32)
    cl.add_argument("--slots", type=int, default=20)
    cl.add_argument("--root", default=SHIPPED_ROOT)
    cl.add_argument("--out", default="results")
    return cl


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("instances", "slots"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)} must be >= 1")
    run(sizes=args.sizes or (50, 150), instances=args.instances, slots=args.slots,
        ckpt_root=args.root, out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("compare-learned", main))
