"""The report of ``mecjax reproduce``: tables (Markdown, CSV, JSON), the summary
shown in the README, notes against the paper's claims, and the figures. Reads
finished cells; runs nothing."""

from __future__ import annotations

import csv
import dataclasses
import io
import platform
from pathlib import Path

import jax
import numpy as np

from mecjax import __version__
from mecjax.outputs import UserError, dumps_strict, write_files_atomic
from mecjax.config import Scenario
from mecjax.schedulers import available
from mecjax.stats import mean_ci, paired_diff_ci
from eval import paper
from eval.plan import VARIANTS, Settings, methods_in_order


def _rows(cells) -> list[tuple[str, str]]:
    """(label, name) of the table rows: every method, but a paper method's variant only
    where it was run (they run with ``variant_methods``, e.g. in ``--full``)."""
    variants = set(paper.VARIANT_METHODS.values())
    return [(label, name) for label, name in methods_in_order()
            if name not in variants or any(key[0] == name for key in cells)]


def _fmt(metric: str, value: float) -> str:
    return f"{value:.1f}" if metric == "latency_ms" else f"{value:.3f}"


def _table(metric: str, cells, settings: Settings) -> list[str]:
    number, title = paper.TABLE_TITLES[metric]
    head = "| method | " + " | ".join(f"N={n} measured (95% CI) | paper" for n in settings.sizes) + " |"
    lines = [f"### {number}: {title}", "", head, "|---|" + "---|---|" * len(settings.sizes)]
    for label, name in _rows(cells):
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
    keys = ("throughput_mbps", "utility", "mean_cost", "revenue", "offload_fraction",
            "deadline_miss")
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


# ---------------------------------------------------------------------------- headroom

FLOOR, BEST_KNOWN = "local", "cooperative"


def headroom_share(cells, name: str, n: int) -> dict | None:
    """Mean and 95% CI over instances of (all-local - method) / (all-local - best known)
    mean cost: the share of the cooperative reference's saving a method captures (1: all
    of it, 0: none, < 0: worse than all-local). None when a cell is missing."""
    got = [cells.get((m, n)) for m in (FLOOR, BEST_KNOWN, name)]
    if any(c is None or "mean_cost" not in c.get("per_instance", {}) for c in got):
        return None
    floor, best, mine = (np.asarray(c["per_instance"]["mean_cost"], np.float64) for c in got)
    return mean_ci((floor - mine) / (floor - best))


def headroom_table(cells, settings: Settings, bounds: dict) -> list[str]:
    """Per method and N: headroom share; then how far the best known may be from optimal."""
    if not any((BEST_KNOWN, n) in cells for n in settings.sizes):
        return []
    lines = ["### Headroom: the share of the cooperative reference's saving each method captures",
             "",
             "Per instance, (all-local - method) / (all-local - cooperative) mean cost (eq. 16's "
             "weighted cost, payments included), then mean ± 95% CI over instances. 1 means "
             "the method saves as much as the cooperative coordinate descent (the best known "
             "here), 0 nothing, a negative value that it costs more than all-local.", "",
             "| method | " + " | ".join(f"N={n}" for n in settings.sizes) + " |",
             "|---|" + "---|" * len(settings.sizes)]
    for label, name in methods_in_order():
        if name == FLOOR:
            continue
        vals = [headroom_share(cells, name, n) for n in settings.sizes]
        if all(v is None for v in vals):
            continue
        lines.append(f"| {label} | " + " | ".join(
            "-" if v is None else f"{v['mean']:.2f} ± {v['ci95']:.2f}" for v in vals) + " |")
    lines.append("")
    gaps = [(n, bounds[n]) for n in settings.sizes if n in bounds]
    if gaps:
        lines += ["How far the best known may be from optimal: along the cooperative reference's "
                  "own trajectory, each slot's planned cost against a lower bound on that slot's "
                  "optimum (Frank-Wolfe on the convex relaxation of the assignment, "
                  "`mecjax.optim.separable.relaxation_bound`; same objective, observed channel). "
                  "Relative gap (planned - bound) / bound, mean ± 95% CI over instances: "
                  + "; ".join(f"N={n}: {100 * g['mean']:.2f}% ± {100 * g['ci95']:.2f}%"
                              for n, g in gaps)
                  + ". The optimum lies between the two, so the cooperative reference is at most "
                  "that far from each slot's optimum.", ""]
    return lines


def welfare_table(cells, settings: Settings) -> list[str]:
    """Welfare cost (payments excluded) and server revenue per method and N."""
    lines = ["### Welfare cost and server revenue", "",
             "Welfare cost: the mean of alpha L + beta E over devices, payments excluded (a "
             "payment moves money from a device to a server; it costs the system nothing). "
             "Revenue: the servers' total per slot (price units). Mean ± 95% CI over instances.",
             "", "| method | " + " | ".join(f"N={n} welfare cost | N={n} revenue"
                                           for n in settings.sizes) + " |",
             "|---|" + "---|---|" * len(settings.sizes)]
    for label, name in methods_in_order():
        row, seen = [label], False
        for n in settings.sizes:
            cell = cells.get((name, n))
            for metric in ("welfare_cost", "revenue"):
                m = cell["summary"].get(metric) if cell else None
                seen |= m is not None
                row.append("-" if m is None else f"{m['mean']:.4g} ± {m['ci95']:.2g}")
        if seen:
            lines.append("| " + " | ".join(row) + " |")
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
    """Write the tables (Markdown, CSV, strict JSON), the README summary and the figures
    under ``out``, all or none (:func:`write_files_atomic`); a failed write is a one-line
    :class:`UserError` saying the previous report is intact."""
    files = render_outputs(result, cells, settings, Path(out))
    try:
        write_files_atomic(files)
    except OSError as err:
        raise UserError(f"could not write the report under {out} ({err.strerror or err}); "
                        f"the previous tables and figures are unchanged") from err


def render_outputs(result: dict, cells, settings: Settings, out: Path) -> dict:
    """``{path: bytes}`` of every file of the report under ``out`` (nothing written)."""
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
    lines += headroom_table(cells, settings, result.get("bounds") or {})
    lines += welfare_table(cells, settings)
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
    files = {out / "paper_tables.md": "\n".join(lines).encode()}

    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["method", "n_devices", "metric", "mean", "ci95", "paper"])
    for (name, n), cell in sorted(cells.items()):
        for metric, m in cell["summary"].items():
            ref = paper.TABLES.get(metric, {}).get(name)
            ref_v = ref[paper.SIZES.index(n)] if ref and n in paper.SIZES else ""
            w.writerow([name, n, metric, f"{m['mean']:.6g}", f"{m['ci95']:.6g}", ref_v])
    files[out / "paper_tables.csv"] = buf.getvalue().encode()

    meta = dict(result)
    meta["versions"] = {"mecjax": __version__, "jax": jax.__version__, "numpy": np.__version__,
                        "python": platform.python_version(), "backend": jax.default_backend()}
    meta["scenario_defaults"] = dataclasses.asdict(Scenario())
    # Strict JSON: a metric that could not be measured (NaN) is null.
    files[out / "paper_tables.json"] = dumps_strict(meta, indent=2).encode()
    files[out / "summary.md"] = \
        ("\n".join(summary_table(cells, settings, out / "summary.md")) + "\n").encode()
    files.update(render_figures(cells, settings, out / "figures"))
    files.update(render_ablation_figure(cells, settings, out / "figures"))
    return files


def _png(fig, dpi: int = 120) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def render_figures(cells, settings: Settings, fig_dir: Path) -> dict:
    """``{path: PNG bytes}`` of Figures 4-6 under ``fig_dir`` (nothing written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
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
        files[fig_dir / fname] = _png(fig)
        plt.close(fig)
    return files


def summary_table(cells, settings: Settings, path="results/summary.md") -> list[str]:
    """A compact table of Tables 2-4 at one N (the ablation's), for the README."""
    n = settings.ablation_size if settings.ablation_size in settings.sizes else settings.sizes[-1]
    cols = ("latency_ms", "energy_j", "fairness")
    lines = [f"Tables 2-4 at N = {n}, M = 3 ({settings.instances} instances x {settings.slots} "
             f"slots; mean ± 95% CI; paper in brackets; headroom share: of the cooperative "
             f"reference's saving over all-local; written by `mecjax reproduce` to "
             f"`{Path(path).as_posix()}`):", "",
             "| method | latency (ms) | energy (J) | Jain fairness | mean cost | deadline miss "
             "| headroom share |",
             "|---|---|---|---|---|---|---|"]
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
        m = cell["summary"]["deadline_miss"]
        row.append(f"{m['mean']:.3f} ± {m['ci95']:.3f}")
        h = headroom_share(cells, name, n) if name != FLOOR else None
        row.append("-" if h is None else f"{h['mean']:.2f} ± {h['ci95']:.2f}")
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
    return paired_diff_ci(a, b)


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


def render_ablation_figure(cells, settings: Settings, fig_dir: Path) -> dict:
    """``{path: PNG bytes}`` of the Table 5 figure (empty without ablation cells)."""
    rows = [(v, c) for v, c in _ablation_rows(cells, settings) if c is not None]
    if not rows:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    png = _png(fig)
    plt.close(fig)
    return {fig_dir / "fig_ablation.png": png}
