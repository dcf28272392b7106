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


def write_learning_curve(run_dir, title: str, metric: str = "mean_cost") -> Path:
    """Plot ``metric`` of ``run_dir/metrics.csv`` (per update and running mean) to
    ``run_dir/learning_curve.png``, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    m = read_metrics(run_dir / "metrics.csv")
    x, y = m["update"], m[metric]
    window = max(1, len(y) // 50)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if len(y):  # a repaired, empty metrics.csv plots empty axes
        smooth = np.convolve(y, np.ones(window) / window, mode="valid")
        ax.plot(x, y, alpha=0.3, label="per update")
        ax.plot(x[window - 1:], smooth, label=f"running mean ({window})")
    ax.set_xlabel("update (one slot on every training instance)")
    ax.set_ylabel("mean weighted cost (eq. 3)" if metric == "mean_cost" else metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if len(y):
        ax.legend()
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
    try:
        save_figure_atomic(fig, out, dpi=110)
    finally:
        plt.close(fig)
    return out
