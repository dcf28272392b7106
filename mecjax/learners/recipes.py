"""How the shipped checkpoints under ``results/checkpoints/`` are trained.

``mecjax train-shipped`` runs exactly these recipes for N = 50, 100, 150
(M = 3); each entry gives the learner's hyper-parameters (defaults where
empty), the number of updates and the chunk (= checkpoint period).
"""

from __future__ import annotations

SHIPPED_SIZES = (50, 100, 150)
SHIPPED_ROOT = "results/checkpoints"

RECIPES: dict[str, dict] = {
    "drl_fgso": {"hyper": {}, "updates": 10000, "chunk": 1000},
    "gat_mec": {"hyper": {}, "updates": 10000, "chunk": 1000},
    "tsg_marl": {"hyper": {}, "updates": 6000, "chunk": 500},
}


def shipped_dir(method: str, n_devices: int, root: str = SHIPPED_ROOT) -> str:
    return f"{root}/{method}_N{n_devices}"
