"""``mecjax reproduce``: the paper's Tables 2-4 and Figures 4-6, measured.

Every method of the tables that mecjax implements, plus the references, runs
on the same instances (common random numbers) at N = 50, 100, 150 with M = 3.
Each value is the mean over instances of the per-instance average over slots,
with its 95% t-interval over instances, and the paper's value beside it.
Methods not implemented yet are listed as such, never filled in.

Each (method, N) cell is saved as it finishes; an interrupted run resumes
without redoing finished cells (a cell is reused only if it was made with the
same settings).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from mecjax import __version__
from mecjax.config import Scenario
from mecjax.experiments import paper
from mecjax.experiments.cells import cell_path, digest, load_cell, save_cell
from mecjax.learners.recipes import RECIPES, SHIPPED_ROOT, shipped_dir
from mecjax.rollout import rollout, summarize
from mecjax.schedulers import available, make


@dataclasses.dataclass(frozen=True)
class Settings:
    instances: int = 32
    slots: int = 25
    seed: int = 0
    sizes: tuple[int, ...] = paper.SIZES
    n_servers: int = 3
    methods: tuple[str, ...] | None = None  # scheduler names to run (default: all)

    @classmethod
    def full(cls) -> "Settings":
        """Paper scale: for a GPU."""
        return cls(instances=256, slots=100)

    def cell_config(self, method: str, n: int) -> dict:
        return {"method": method, "n_devices": n, "n_servers": self.n_servers,
                "instances": self.instances, "slots": self.slots, "seed": self.seed,
                "mecjax": __version__}


def methods_in_order() -> list[tuple[str, str]]:
    """(label, scheduler name) for the paper's methods, then the references."""
    return list(paper.PAPER_METHODS.items()) + list(paper.REFERENCES.items())


def learned_checkpoint(method: str, n: int, root: str) -> tuple[str, dict] | None:
    """(run dir, identity) of the shipped checkpoint of a learned method, or None."""
    from mecjax import checkpoint as ckpt

    path = shipped_dir(method, n, root)
    step = ckpt.latest_step(Path(path) / "ckpt") if (Path(path) / "ckpt").exists() else None
    if step is None:
        return None
    return path, {"checkpoint": path, "step": step,
                  "config": digest(ckpt.load_config(Path(path) / "ckpt"))}


def run_cell(method: str, n: int, settings: Settings, config: dict,
             checkpoint: str | None = None) -> dict:
    s = Scenario(n_devices=n, n_servers=settings.n_servers, horizon=settings.slots)
    t0 = time.perf_counter()
    sched = make(method, checkpoint=checkpoint) if checkpoint else make(method)
    per_slot = rollout(sched, s, jax.random.key(settings.seed), settings.instances, settings.slots)
    jax.block_until_ready(per_slot)
    return {"config": config, "summary": summarize(per_slot), "wall_s": time.perf_counter() - t0}


def reproduce(settings: Settings = Settings(), out_dir: str = "results",
              cache_dir: str | None = None, ckpt_root: str = SHIPPED_ROOT, log=print) -> dict:
    from mecjax import learners  # noqa: F401  (registers the learners)

    out = Path(out_dir)
    cells_dir = Path(cache_dir) if cache_dir else out / "reproduce_cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    todo, missing = [], []
    for label, name in methods_in_order():
        if settings.methods is not None and name not in settings.methods:
            continue
        if name not in available():
            missing.append(label)
            continue
        for n in settings.sizes:
            found = learned_checkpoint(name, n, ckpt_root) if name in RECIPES else None
            if name in RECIPES and found is None:
                missing.append(f"{label} N={n} (no checkpoint under {ckpt_root})")
                continue
            todo.append((label, name, n, found))
    log(f"mecjax reproduce: {len(todo)} cells ({settings.instances} instances x "
        f"{settings.slots} slots each); not implemented yet: {', '.join(missing) or 'none'}")
    cells = {}
    t_start = time.perf_counter()
    for k, (label, name, n, found) in enumerate(todo, 1):
        config = settings.cell_config(name, n)
        if found is not None:
            config["checkpoint"] = found[1]
        path = cell_path(cells_dir, f"{name}_N{n}", config)
        cell = load_cell(path, config)
        if cell is not None:
            log(f"  [{k}/{len(todo)}] {label} N={n}: done before, reused")
        else:
            t0 = time.perf_counter()
            cell = run_cell(name, n, settings, config, found[0] if found else None)
            save_cell(path, cell)
            m = cell["summary"]
            log(f"  [{k}/{len(todo)}] {label} N={n}: latency {m['latency_ms']['mean']:.1f} ms, "
                f"energy {m['energy_j']['mean']:.3f} J, fairness {m['fairness']['mean']:.3f} "
                f"({time.perf_counter() - t0:.1f} s)")
        cells[(name, n)] = cell
    result = {"settings": dataclasses.asdict(settings), "missing": missing,
              "cells": {f"{m}@{n}": c for (m, n), c in cells.items()},
              "wall_s": time.perf_counter() - t_start}
    write_outputs(result, cells, settings, out)
    log(f"wrote {out / 'paper_tables.md'} and figures under {out / 'figures'}")
    return result


# ---------------------------------------------------------------------------- outputs

def _fmt(metric: str, value: float) -> str:
    return f"{value:.1f}" if metric == "latency_ms" else f"{value:.3f}"


def _table(metric: str, cells, settings: Settings) -> list[str]:
    number, title = paper.TABLE_TITLES[metric]
    head = "| method | " + " | ".join(f"N={n} measured (95% CI) | paper" for n in settings.sizes) + " |"
    lines = [f"### {number}: {title}", "", head, "|---|" + "---|---|" * len(settings.sizes)]
    for label, name in methods_in_order():
        row = [label]
        for i, n in enumerate(settings.sizes):
            ref = paper.TABLES[metric].get(name)
            ref_txt = _fmt(metric, ref[paper.SIZES.index(n)]) if ref and n in paper.SIZES else "-"
            cell = cells.get((name, n))
            if cell is None:
                row += ["not measured" if name in available() else "not implemented yet", ref_txt]
            else:
                m = cell["summary"][metric]
                row += [f"{_fmt(metric, m['mean'])} ± {_fmt(metric, m['ci95'])}", ref_txt]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def _extra_table(cells, settings: Settings) -> list[str]:
    keys = ("throughput_mbps", "utility", "mean_cost", "revenue", "offload_fraction")
    lines = ["### Other metrics (no paper counterpart per method)", "",
             "| method | N | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for label, name in methods_in_order():
        for n in settings.sizes:
            cell = cells.get((name, n))
            if cell is None:
                continue
            vals = [f"{cell['summary'][k]['mean']:.4g} ± {cell['summary'][k]['ci95']:.2g}" for k in keys]
            lines.append(f"| {label} | {n} | " + " | ".join(vals) + " |")
    return lines + [""]


def comparison_notes(cells, settings: Settings) -> list[str]:
    """Plain statements of where the measurements agree with the paper's claims."""
    notes = []
    sizes = [n for n in settings.sizes if n in paper.SIZES]
    direction = {"latency_ms": "rises", "energy_j": "rises", "fairness": "falls"}
    for metric, verb in direction.items():
        for label, name in paper.PAPER_METHODS.items():
            if not all((name, n) in cells for n in sizes) or len(sizes) < 2:
                continue
            vals = [cells[(name, n)]["summary"][metric]["mean"] for n in sizes]
            monotone = all(b > a for a, b in zip(vals, vals[1:])) if verb == "rises" else \
                all(b < a for a, b in zip(vals, vals[1:]))
            notes.append(f"- {label}, {metric}: the paper's value {verb} with N; ours "
                         f"{'does too' if monotone else 'does not'} "
                         f"({', '.join(_fmt(metric, v) for v in vals)}).")
    have = [(label, name) for label, name in paper.PAPER_METHODS.items()
            if all((name, n) in cells for n in sizes)]
    for metric, better in (("latency_ms", min), ("energy_j", min), ("fairness", max)):
        for n in sizes:
            if len(have) < 2:
                break
            ours = sorted(have, key=lambda m: cells[(m[1], n)]["summary"][metric]["mean"],
                          reverse=better is max)
            theirs = sorted(have, key=lambda m: paper.TABLES[metric][m[1]][paper.SIZES.index(n)],
                            reverse=better is max)
            same = [a[0] for a in ours] == [a[0] for a in theirs]
            summ = [cells[(m[1], n)]["summary"][metric] for m in ours]
            overlap = any(a["low"] <= b["high"] and b["low"] <= a["high"]
                          for a, b in zip(summ, summ[1:]))
            notes.append(f"- {metric} at N={n}, order of the implemented paper methods (best "
                         f"first): ours {' > '.join(a[0] for a in ours)}; paper "
                         f"{' > '.join(a[0] for a in theirs)}: {'same' if same else 'different'}"
                         f"{' (neighbours in our order overlap at 95%: not a clear ranking)' if overlap else ''}.")
    return notes


def write_outputs(result: dict, cells, settings: Settings, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    s = Scenario()
    lines = [
        "# The paper's tables, measured by mecjax",
        "",
        "Written by `mecjax reproduce` "
        f"({settings.instances} instances x {settings.slots} slots per cell, seed "
        f"{settings.seed}, M = {settings.n_servers}, the default scenario of `docs/model.md` "
        "otherwise). Each value: mean over instances of the per-instance average over slots, "
        "± the half-width of its 95% t-interval over instances; the paper's value beside it. "
        "Energy is per device per task. All methods face the same instances.",
        "",
        "Methods not implemented yet are marked so; their rows will be filled by the issues "
        "that add them, never by hand. Learned methods run the checkpoints shipped under "
        "`results/checkpoints/` (trained by `mecjax train-shipped`); a size without a "
        "checkpoint is marked \"not measured\".",
        "",
    ]
    if result["missing"]:
        lines += ["Not measured in this run: " + "; ".join(result["missing"]) + ".", ""]
    for metric in ("latency_ms", "energy_j", "fairness"):
        lines += _table(metric, cells, settings)
    lines += ["### Table 5: ablation", "",
              "Not measured yet: the ablations are flags of the unified scheduler, which is not "
              "implemented yet.", ""]
    lines += _extra_table(cells, settings)
    lines += ["## Where our measurements agree with the paper, and where not", ""]
    lines += comparison_notes(cells, settings)
    lines += ["", "Absolute values differ from the paper's: its simulator and weights are not "
              "published, ours are documented in `docs/model.md` and were fixed before any "
              "method was run.", "",
              f"Scenario defaults: bandwidth {s.bandwidth_hz / 1e6:g} MHz per server, noise "
              f"{s.noise_w:g} W, server CPU {s.server_cpu_hz / 1e9:g} GHz, cost weights alpha "
              f"{s.alpha:g}, beta {s.beta:g}, gamma {s.gamma:g}.", ""]
    (out / "paper_tables.md").write_text("\n".join(lines))

    with open(out / "paper_tables.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "n_devices", "metric", "mean", "ci95", "paper"])
        for (name, n), cell in sorted(cells.items()):
            for metric, m in cell["summary"].items():
                ref = paper.TABLES.get(metric, {}).get(name)
                ref_v = ref[paper.SIZES.index(n)] if ref and n in paper.SIZES else ""
                w.writerow([name, n, metric, f"{m['mean']:.6g}", f"{m['ci95']:.6g}", ref_v])

    meta = dict(result)
    meta["versions"] = {"mecjax": __version__, "jax": jax.__version__, "numpy": np.__version__,
                        "python": platform.python_version(), "backend": jax.default_backend()}
    meta["scenario_defaults"] = dataclasses.asdict(Scenario())
    (out / "paper_tables.json").write_text(json.dumps(meta, indent=2))
    write_figures(cells, settings, out / "figures")


def write_figures(cells, settings: Settings, fig_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    specs = (("latency_ms", "fig4_latency.png", "Figure 4: latency (ms)"),
             ("energy_j", "fig5_energy.png", "Figure 5: energy per task (J)"),
             ("fairness", "fig6_fairness.png", "Figure 6: Jain fairness"))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for metric, fname, title in specs:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for k, (label, name) in enumerate(methods_in_order()):
            c = colors[k % len(colors)]
            ns = [n for n in settings.sizes if (name, n) in cells]
            if ns:
                mean = [cells[(name, n)]["summary"][metric]["mean"] for n in ns]
                ci = [cells[(name, n)]["summary"][metric]["ci95"] for n in ns]
                ax.errorbar(ns, mean, yerr=ci, marker="o", capsize=3, color=c, label=f"{label} (mecjax)")
            ref = paper.TABLES[metric].get(name)
            if ref:
                ax.plot(paper.SIZES, ref, linestyle=":", marker="x", color=c, alpha=0.6,
                        label=f"{label} (paper)")
        ax.set_xlabel("number of IoT devices N")
        ax.set_title(title + ": measured (solid, 95% CI) vs paper (dotted)")
        ax.set_xticks(list(settings.sizes))
        ax.legend(fontsize=6, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(fig_dir / fname, dpi=120)
        plt.close(fig)
