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

# The digital twin's forecaster is per device, so one twin (trained at N = 50)
# serves every N with M = 3; ``train-shipped`` trains it as method "twin".
TWIN_RECIPE: dict = {"hyper": {}, "updates": 2000, "chunk": 250, "n_devices": 50}


def shipped_twin_dir(root: str = SHIPPED_ROOT) -> str:
    return shipped_dir("twin", TWIN_RECIPE["n_devices"], root)

# The unified scheduler's DRL agents on GAT embeddings (``drl_gat``): DRL-FGSO's
# recipe, on the frozen encoder of the GAT-MEC checkpoint shipped for the same N.
DRL_GAT_RECIPE: dict = {"hyper": {}, "updates": 10000, "chunk": 1000}


def drl_gat_hyper(n_devices: int, root: str = SHIPPED_ROOT) -> dict:
    return {**DRL_GAT_RECIPE["hyper"], "gat_checkpoint": shipped_dir("gat_mec", n_devices, root)}
