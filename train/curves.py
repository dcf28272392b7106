"""Learning curves: ``metrics.csv`` of a run (one row per update) and its plot."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mecjax.outputs import save_figure_atomic


def read_metrics(path) -> dict[str, np.ndarray]:
    """``{column: [updates]}`` of a run's ``metrics.csv``."""
    with open(path) as f:
        rows = list(csv.reader(f))
    head = rows[0]
    body = np.asarray(rows[1:], np.float64).reshape(len(rows) - 1, len(head))
    return {k: body[:, i] for i, k in enumerate(head)}


def seed_column(metric: str, k: int) -> str:
    """The ``metrics.csv`` column of seed index ``k``'s ``metric`` in a K-seed run."""
    return f"{metric}_s{k}"


def write_learning_curve(run_dir, title: str, metric: str = "mean_cost", seeds: int = 1) -> Path:
    """Plot ``metric`` of ``run_dir/metrics.csv`` to ``run_dir/learning_curve.png``,
    written atomically: per update and its running mean for one seed; for a K-seed run
    each seed's running mean (thin, column :func:`seed_column`) and the running mean of
    the mean over seeds (thick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    m = read_metrics(run_dir / "metrics.csv")
    x, y = m["update"], m[metric]
    window = max(1, len(y) // 50)
    smooth = lambda v: np.convolve(v, np.ones(window) / window, mode="valid")  # noqa: E731
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if len(y):  # a repaired, empty metrics.csv plots empty axes
        if seeds == 1:
            ax.plot(x, y, alpha=0.3, label="per update")
            ax.plot(x[window - 1:], smooth(y), label=f"running mean ({window})")
        else:
            for k in range(seeds):
                ax.plot(x[window - 1:], smooth(m[seed_column(metric, k)]), lw=0.8, alpha=0.6,
                        label=f"seed {k}")
            ax.plot(x[window - 1:], smooth(y), color="black", lw=2,
                    label=f"mean of {seeds} seeds")
    ax.set_xlabel("update (one slot on every training instance)")
    ax.set_ylabel("mean weighted cost (eq. 3)" if metric == "mean_cost" else metric)
    ax.set_title(title if seeds == 1 else f"{title} (running means over {window} updates)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    if len(y):
        ax.legend(fontsize=None if seeds == 1 else 7)
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
    try:
        save_figure_atomic(fig, out, dpi=110)
    finally:
        plt.close(fig)
    return out
