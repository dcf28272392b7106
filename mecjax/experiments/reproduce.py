"""``mecjax reproduce``: the paper's Tables 2-5 and Figures 4-6, measured.

Every method of the tables, plus the references, runs on the same instances
(common random numbers) at N = 50, 100, 150 with M = 3, and the unified
scheduler's ablations (Table 5) at N = 100. Each value is the mean over
instances of the per-instance average over slots, with its 95% t-interval
over instances, and the paper's value beside it. The digital twin's
forecaster is scored against the persistence forecast on held-out traces.
Learned methods run the checkpoints shipped under ``results/checkpoints``;
a method whose checkpoint is missing is listed as not measured, never filled in.

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
from mecjax.learners.recipes import RECIPES, SHIPPED_ROOT, shipped_dir, shipped_twin_dir
from mecjax.rollout import mean_ci, rollout, summarize
from mecjax.schedulers import available, make


@dataclasses.dataclass(frozen=True)
class Settings:
    instances: int = 32
    slots: int = 25
    seed: int = 0
    sizes: tuple[int, ...] = paper.SIZES
    n_servers: int = 3
    methods: tuple[str, ...] | None = None  # scheduler names to run (default: all)
    ablation_size: int | None = 100         # N of Table 5 (None: skip the ablation)

    @classmethod
    def full(cls) -> "Settings":
        """Paper scale: for a GPU."""
        return cls(instances=256, slots=100)

    def cell_config(self, method: str, n: int) -> dict:
        return {"method": method, "n_devices": n, "n_servers": self.n_servers,
                "instances": self.instances, "slots": self.slots, "seed": self.seed,
                "mecjax": __version__, "cell_format": 2}


def methods_in_order() -> list[tuple[str, str]]:
    """(label, scheduler name) for the paper's methods, then the references."""
    return list(paper.PAPER_METHODS.items()) + list(paper.REFERENCES.items())


# Table 5 variants: flags of the unified scheduler (Without QIO has no paper row).
# The first variant of each family is the method itself (Table 2's cell at that N).
ABLATION_VARIANTS = {
    "Full model": {},
    "Without DT": {"use_dt": False},
    "Without GAT": {"use_gat": False},
    "Without MARL": {"use_marl": False},
    "Without DRL": {"use_drl": False},
    "Without QIO": {"use_qio": False},
}
# What DT-MEC's twin and look-ahead contribute (no paper counterpart).
DT_VARIANTS = {
    "DT-MEC (twin, H=3)": {},
    "persistence forecast instead of the twin": {"forecast": "persistence"},
    "no look-ahead (H=1)": {"horizon": 1},
}
VARIANTS = {"unified": ABLATION_VARIANTS, "dt_mec": DT_VARIANTS}


def _checkpoint_identity(path: str) -> dict | None:
    from mecjax import checkpoint as ckpt

    step = ckpt.latest_step(Path(path) / "ckpt") if (Path(path) / "ckpt").exists() else None
    if step is None:
        return None
    return {"checkpoint": path, "step": step,
            "config": digest(ckpt.load_config(Path(path) / "ckpt"))}


def method_checkpoints(method: str, n: int, root: str) -> dict[str, str]:
    """The scheduler options naming the shipped checkpoints ``method`` needs at N = n."""
    if method in RECIPES:
        return {"checkpoint": shipped_dir(method, n, root)}
    if method == "dt_mec":
        return {"checkpoint": shipped_twin_dir(root)}
    if method == "unified":
        return {"drl_gat_checkpoint": shipped_dir("drl_gat", n, root),
                "drl_checkpoint": shipped_dir("drl_fgso", n, root),
                "gat_checkpoint": shipped_dir("gat_mec", n, root),
                "marl_checkpoint": shipped_dir("tsg_marl", n, root),
                "twin_checkpoint": shipped_twin_dir(root)}
    return {}


def learned_checkpoint(method: str, n: int, root: str) -> tuple[dict, dict] | None:
    """(scheduler options, identity) of the shipped checkpoints of ``method`` at
    N = n; ``({}, {})`` for a method without any; None when one is missing."""
    options = method_checkpoints(method, n, root)
    identity = {}
    for key, path in options.items():
        found = _checkpoint_identity(path)
        if found is None:
            return None
        identity[key] = found
    return options, identity


def run_cell(method: str, n: int, settings: Settings, config: dict,
             options: dict | None = None) -> dict:
    s = Scenario(n_devices=n, n_servers=settings.n_servers, horizon=settings.slots)
    t0 = time.perf_counter()
    sched = make(method, **(options or {}))
    per_slot = rollout(sched, s, jax.random.key(settings.seed), settings.instances, settings.slots)
    jax.block_until_ready(per_slot)
    # Per-instance slot averages: variants are compared paired, instance by instance.
    per_instance = {k: np.asarray(v, np.float64).mean(axis=1).tolist() for k, v in per_slot.items()}
    return {"config": config, "summary": summarize(per_slot), "per_instance": per_instance,
            "wall_s": time.perf_counter() - t0}


def forecast_cell(settings: Settings, ckpt_root: str, cells_dir: Path, log=print) -> dict | None:
    """The shipped twin against persistence on held-out traces (cached like a cell)."""
    from mecjax.learners import twin

    path = shipped_twin_dir(ckpt_root)
    identity = _checkpoint_identity(path)
    if identity is None:
        return None
    # Held out: training draws its instances from keys split from key(seed) of the
    # run; these traces come from a key no training run uses.
    config = {"what": "twin_forecast", "twin": identity, "instances": settings.instances,
              "slots": 48, "warmup": 8, "key": 1_000_003 + settings.seed, "mecjax": __version__}
    file = cell_path(cells_dir, "twin_forecast", config)
    cell = load_cell(file, config)
    if cell is None:
        s = Scenario(n_devices=settings.sizes[0], n_servers=settings.n_servers)
        skill = twin.forecast_skill(twin.load_twin(path, s), s, jax.random.key(config["key"]),
                                    n_instances=settings.instances, n_slots=48, warmup=8)
        cell = {"config": config, "skill": {k: float(v) for k, v in skill.items()}}
        save_cell(file, cell)
    sk = cell["skill"]
    log(f"  twin forecaster vs persistence (held out): task MSE -{100 * sk['task_margin']:.1f}%, "
        f"channel MSE -{100 * sk['channel_margin']:.1f}%")
    return cell


def plan_cells(settings: Settings, ckpt_root: str):
    """``(todo, missing)``: todo holds (key, label, scheduler, N, options, flags, identity)."""
    todo, missing = [], []
    for label, name in methods_in_order():
        if settings.methods is not None and name not in settings.methods:
            continue
        if name not in available():
            missing.append(label)
            continue
        for n in settings.sizes:
            found = learned_checkpoint(name, n, ckpt_root)
            if found is None:
                missing.append(f"{label} N={n} (no checkpoint under {ckpt_root})")
                continue
            todo.append(((name, n), label, name, n, found[0], {}, found[1]))
    n_abl = settings.ablation_size
    labels = {name: label for label, name in methods_in_order()}
    for method, variants in VARIANTS.items():
        if n_abl is None or (settings.methods is not None and method not in settings.methods):
            continue
        found = learned_checkpoint(method, n_abl, ckpt_root)
        if found is None:
            missing.append(f"{labels[method]} variants N={n_abl} (no checkpoints under "
                           f"{ckpt_root})")
            continue
        for variant, flags in variants.items():
            if not flags and n_abl in settings.sizes:
                continue            # the method itself: its Table 2 cell
            todo.append(((f"{method}:{variant}", n_abl), f"{labels[method]}, {variant}", method,
                         n_abl, {**found[0], **flags}, flags, found[1]))
    return todo, missing


def reproduce(settings: Settings = Settings(), out_dir: str = "results",
              cache_dir: str | None = None, ckpt_root: str = SHIPPED_ROOT, log=print) -> dict:
    from mecjax import learners  # noqa: F401  (registers the learners)

    out = Path(out_dir)
    cells_dir = Path(cache_dir) if cache_dir else out / "reproduce_cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    todo, missing = plan_cells(settings, ckpt_root)
    log(f"mecjax reproduce: {len(todo)} cells ({settings.instances} instances x "
        f"{settings.slots} slots each); not measured: {', '.join(missing) or 'none'}")
    cells = {}
    t_start = time.perf_counter()
    forecast = forecast_cell(settings, ckpt_root, cells_dir, log) \
        if settings.methods is None or {"dt_mec", "unified"} & set(settings.methods) else None
    for k, (key, label, name, n, options, flags, identity) in enumerate(todo, 1):
        config = settings.cell_config(name, n)
        if identity:
            config["checkpoint"] = identity
        if flags:
            config["flags"] = flags
        stem = f"{name}_N{n}" if not flags else f"{name}_{'_'.join(sorted(flags))}_N{n}"
        path = cell_path(cells_dir, stem, config)
        cell = load_cell(path, config)
        if cell is not None:
            log(f"  [{k}/{len(todo)}] {label} N={n}: done before, reused")
        else:
            t0 = time.perf_counter()
            cell = run_cell(name, n, settings, config, options)
            save_cell(path, cell)
            m = cell["summary"]
            log(f"  [{k}/{len(todo)}] {label} N={n}: latency {m['latency_ms']['mean']:.1f} ms, "
                f"energy {m['energy_j']['mean']:.3f} J, fairness {m['fairness']['mean']:.3f} "
                f"({time.perf_counter() - t0:.1f} s)")
        cells[key] = cell
    for method, variants in VARIANTS.items():
        if (method, settings.ablation_size) in cells:
            cells[(f"{method}:{next(iter(variants))}", settings.ablation_size)] = \
                cells[(method, settings.ablation_size)]
    result = {"settings": dataclasses.asdict(settings), "missing": missing,
              "cells": {f"{m}@{n}": c for (m, n), c in cells.items()},
              "twin_forecast": forecast["skill"] if forecast else None,
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
        "Learned methods (DRL-FGSO, GAT-MEC, TSG-MARL, the digital twin of DT-MEC and "
        "every module of Unified) run the checkpoints shipped under `results/checkpoints/` "
        "(trained by `mecjax train-shipped`); a size without a checkpoint is marked "
        "\"not measured\", never filled in.",
        "",
    ]
    if result["missing"]:
        lines += ["Not measured in this run: " + "; ".join(result["missing"]) + ".", ""]
    for metric in ("latency_ms", "energy_j", "fairness"):
        lines += _table(metric, cells, settings)
    lines += ablation_table(cells, settings)
    lines += dt_variant_table(cells, settings)
    lines += _extra_table(cells, settings)
    lines += ["## Where our measurements agree with the paper, and where not", ""]
    lines += forecast_notes(result.get("twin_forecast"))
    lines += comparison_notes(cells, settings)
    lines += variant_notes(cells, settings, "unified", paper.ABLATION_COLUMNS, "Table 5")
    lines += variant_notes(cells, settings, "dt_mec", DT_COLUMNS, "DT-MEC")
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
    (out / "summary.md").write_text("\n".join(summary_table(cells, settings)) + "\n")
    write_figures(cells, settings, out / "figures")
    write_ablation_figure(cells, settings, out / "figures")


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
        fig, ax = plt.subplots(figsize=(9.5, 4.8))
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
        ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(fig_dir / fname, dpi=120)
        plt.close(fig)


def summary_table(cells, settings: Settings) -> list[str]:
    """A compact table of Tables 2-4 at one N (the ablation's), for the README."""
    n = settings.ablation_size if settings.ablation_size in settings.sizes else settings.sizes[-1]
    cols = ("latency_ms", "energy_j", "fairness")
    lines = [f"Tables 2-4 at N = {n}, M = 3 ({settings.instances} instances x {settings.slots} "
             f"slots; mean ± 95% CI; paper in brackets; written by `mecjax reproduce` to "
             f"`results/summary.md`):", "",
             "| method | latency (ms) | energy (J) | Jain fairness | mean cost |",
             "|---|---|---|---|---|"]
    for label, name in methods_in_order():
        cell = cells.get((name, n))
        if cell is None:
            continue
        row = [label]
        for metric in cols:
            m = cell["summary"][metric]
            ref = paper.TABLES[metric].get(name)
            ref_txt = f" [{_fmt(metric, ref[paper.SIZES.index(n)])}]" if ref and n in paper.SIZES \
                else ""
            row.append(f"{_fmt(metric, m['mean'])} ± {_fmt(metric, m['ci95'])}{ref_txt}")
        m = cell["summary"]["mean_cost"]
        row.append(f"{m['mean']:.4f} ± {m['ci95']:.4f}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


# ---------------------------------------------------------------------------- Table 5

def _variant_rows(cells, settings: Settings, method: str):
    n = settings.ablation_size
    return [(v, cells.get((f"{method}:{v}", n))) for v in VARIANTS[method]] if n else []


def _ablation_rows(cells, settings: Settings):
    return _variant_rows(cells, settings, "unified")


def ablation_table(cells, settings: Settings) -> list[str]:
    n = settings.ablation_size
    rows = _ablation_rows(cells, settings)
    if not rows or all(c is None for _, c in rows):
        return ["### Table 5: ablation", "", "Not measured in this run.", ""]
    cols = paper.ABLATION_COLUMNS
    head = "| variant (unified scheduler) | " + " | ".join(f"{c} measured | paper" for c in cols) + " |"
    lines = [f"### Table 5: ablation of the unified scheduler at N={n}", "",
             "Each variant removes one module by a flag of `unified` (see `docs/schedulers.md`); "
             "the paper has no row without QIO. Paired differences to the full model are in the "
             "notes below.", "", head, "|---|" + "---|---|" * len(cols)]
    for variant, cell in rows:
        ref = paper.ABLATION.get(variant)
        row = [variant]
        for i, metric in enumerate(cols):
            if cell is None:
                row.append("not measured")
            else:
                m = cell["summary"][metric]
                row.append(f"{m['mean']:.4g} ± {m['ci95']:.2g}")
            row.append(f"{ref[i]:g}" if ref else "-")
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


DT_COLUMNS = ("mean_cost", "latency_ms", "energy_j", "fairness", "utility")


def dt_variant_table(cells, settings: Settings) -> list[str]:
    rows = [(v, c) for v, c in _variant_rows(cells, settings, "dt_mec") if c is not None]
    if len(rows) < 2:
        return []
    lines = [f"### DT-MEC: what the twin and the look-ahead contribute (N={settings.ablation_size})",
             "", "No paper counterpart. Variants of `dt_mec` (see `docs/schedulers.md`).", "",
             "| variant | " + " | ".join(DT_COLUMNS) + " |", "|---|" + "---|" * len(DT_COLUMNS)]
    for variant, cell in rows:
        vals = [f"{cell['summary'][k]['mean']:.4g} ± {cell['summary'][k]['ci95']:.2g}"
                for k in DT_COLUMNS]
        lines.append(f"| {variant} | " + " | ".join(vals) + " |")
    return lines + [""]


HIGHER_IS_BETTER = {"throughput_mbps", "fairness", "utility", "revenue"}


def paired_difference(full: dict, other: dict, metric: str) -> dict | None:
    """Mean and 95% CI over instances of full - other (same instances: paired)."""
    a, b = full.get("per_instance", {}).get(metric), other.get("per_instance", {}).get(metric)
    if a is None or b is None or len(a) != len(b):
        return None
    return mean_ci(np.asarray(a) - np.asarray(b))


def variant_notes(cells, settings: Settings, method: str, metrics, title: str) -> list[str]:
    """For each variant: is the full method better, metric by metric, by the paired
    95% CI of the per-instance difference?"""
    rows = [(v, c) for v, c in _variant_rows(cells, settings, method) if c is not None]
    if len(rows) < 2:
        return []
    (full_name, full), notes = rows[0], []
    for variant, cell in rows[1:]:
        parts = []
        for metric in metrics:
            d = paired_difference(full, cell, metric)
            if d is None:
                continue
            sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
            if d["low"] > 0 or d["high"] < 0:
                verdict = "full better" if sign * d["mean"] > 0 else "full worse"
            else:
                verdict = "no clear difference"
            parts.append(f"{metric} {verdict} ({d['mean']:+.3g} ± {d['ci95']:.2g})")
        notes.append(f"- {title}, {full_name} minus {variant} (paired over instances, 95% CI): "
                     + "; ".join(parts) + ".")
    return notes


def forecast_notes(skill: dict | None) -> list[str]:
    if not skill:
        return ["- The digital twin's forecaster was not evaluated (no shipped twin checkpoint).", ""]
    return [f"- Digital twin (eq. 21): on {skill['n_instances']:g} held-out instances x "
            f"{skill['n_slots']:g} slots the LSTM forecaster's mean squared error is "
            f"{100 * skill['task_margin']:.1f}% below the persistence (last-value) forecast's "
            f"for the next slot's task (MSE {skill['task_mse']:.4g} vs "
            f"{skill['task_mse_persistence']:.4g}) and {100 * skill['channel_margin']:.1f}% "
            f"below it for the current slot's channel (MSE {900 * skill['channel_mse']:.3g} vs "
            f"{900 * skill['channel_mse_persistence']:.3g} dB^2); margin = 1 - MSE / "
            f"MSE(persistence). Tasks are scaled to [0, 1] by their ranges.", ""]


def write_ablation_figure(cells, settings: Settings, fig_dir: Path) -> None:
    rows = [(v, c) for v, c in _ablation_rows(cells, settings) if c is not None]
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    cols = paper.ABLATION_COLUMNS
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 4))
    x = np.arange(len(rows))
    for ax, (i, metric) in zip(axes, enumerate(cols)):
        mean = [c["summary"][metric]["mean"] for _, c in rows]
        ci = [c["summary"][metric]["ci95"] for _, c in rows]
        ax.bar(x, mean, yerr=ci, capsize=3, color="tab:blue", alpha=0.75, label="mecjax (95% CI)")
        ref = [paper.ABLATION.get(v, (np.nan,) * len(cols))[i] for v, _ in rows]
        ax.plot(x, ref, "x", color="tab:red", label="paper")
        ax.set_xticks(x, [v.replace("Without ", "no ") for v, _ in rows], rotation=45, ha="right",
                      fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Table 5 ablation of the unified scheduler, N={settings.ablation_size}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(fig_dir / "fig_ablation.png", dpi=120)
    plt.close(fig)
