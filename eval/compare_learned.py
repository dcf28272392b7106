"""Learned schedulers (shipped checkpoints) against the references, on fresh
evaluation instances. Writes ``results/learned_vs_references.md`` and ``.json``
(strict JSON, each file atomically), holding the output directory's lock for the
whole job; the flags are checked before anything runs."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import jax

from mecjax.cli import ArgumentParser, int_list, run_program
from mecjax.outputs import (UserError, check_output_dir, lock_output_dir, write_json_atomic,
                            write_text_atomic)
from mecjax.config import Scenario
from mecjax.rollout import rollout
from mecjax.schedulers import available, make
from mecjax.stats import summarize
from eval.plan import learned_checkpoint
from train.recipes import LEARNED_METHODS, SHIPPED_ROOT

REFERENCES = ("random", "nearest", "greedy", "best_response", "qio_mec")
SHOWN = ("mean_cost", "latency_ms", "energy_j", "fairness")


def validate(sizes, instances: int, slots: int, seed: int, ckpt_root: str) -> None:
    """Raise :class:`UserError` naming the first argument out of range."""
    for name, value in (("instances", instances), ("slots", slots)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"--{name} {value} must be an integer >= 1")
    if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
        raise UserError(f"--sizes {sizes} must be positive device counts")
    if not 0 <= seed < 2 ** 32:
        raise UserError(f"seed {seed} must be in [0, 2**32)")
    if not Path(ckpt_root).is_dir():
        raise UserError(f"--root {ckpt_root} is not a directory of checkpoints")
    for n in sizes:
        try:
            Scenario(n_devices=n, horizon=slots)
        except ValueError as err:
            raise UserError(f"--sizes {n}: {err}") from None


def run(sizes=(50, 150), instances: int = 32, slots: int = 20, seed: int = 1234,
        ckpt_root: str = SHIPPED_ROOT, out_dir: str | None = "results", log=print) -> dict:
    """Every learned method and reference at each N; with ``out_dir``, the report is
    written there under the directory's lock (held from before the first rollout)."""
    validate(sizes, instances, slots, seed, ckpt_root)
    with (lock_output_dir(out_dir, "mecjax compare-learned", "--out") if out_dir
          else contextlib.nullcontext()):
        return _run(sizes, instances, slots, seed, ckpt_root, out_dir, log)


def _run(sizes, instances, slots, seed, ckpt_root, out_dir, log) -> dict:
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
        write_json_atomic(out / "learned_vs_references.json", result)
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
    cl = ArgumentParser(prog="mecjax compare-learned",
                                 description="shipped learned schedulers vs the references")
    cl.add_argument("--sizes", help="device counts (default 50,150)")
    cl.add_argument("--instances", type=int, default=32)
    cl.add_argument("--slots", type=int, default=20)
    cl.add_argument("--root", default=SHIPPED_ROOT)
    cl.add_argument("--out", default="results")
    return cl


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sizes = int_list(args.sizes) if args.sizes is not None else (50, 150)
    except argparse.ArgumentTypeError as err:
        raise UserError(f"--sizes: {err}") from None
    check_output_dir(args.out, "--out")
    run(sizes=sizes, instances=args.instances, slots=args.slots, ckpt_root=args.root,
        out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program("compare-learned", main))
