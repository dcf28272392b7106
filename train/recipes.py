"""The training recipes: one TOML file per learner under ``train/configs/``.

Each file gives the learner (``method``), its hyper-parameters (``[hyper]``,
empty = the learner's defaults), the number of ``updates``, the ``chunk``
(updates per jitted call = checkpoint period) and the device counts ``sizes``
whose checkpoints ship under ``results/checkpoints/<method>_N<n>/``. The same
recipes (updates, chunk, hyper-parameters) train the per-task checkpoints,
:data:`TASK_SEEDS` seeds of every method on every task of :mod:`mecjax.tasks`
at the task's N, under ``results/checkpoints/tasks/<task-id>/<method>_s<k>/``
(:func:`task_shipped_dir`). TOML is
read with the standard library (``tomllib``), so the recipes need no
dependency, and a recipe is data a user can copy and edit.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SHIPPED_ROOT = "results/checkpoints"
# Order matters for train-shipped: drl_gat needs the shipped GAT-MEC policies.
SHIPPED_ORDER = ("drl_fgso", "gat_mec", "tsg_marl", "drl_gat", "twin")
# Learners executed by a scheduler of the same name (the paper's learned methods).
LEARNED_METHODS = ("drl_fgso", "gat_mec", "tsg_marl")
# Training seeds 0 .. TASK_SEEDS-1 of every method shipped per task (trained at once, vmapped).
TASK_SEEDS = 3


@dataclass(frozen=True)
class Recipe:
    method: str
    updates: int
    chunk: int
    sizes: tuple[int, ...]
    hyper: dict = field(default_factory=dict)
    gat_checkpoint: str = ""   # drl_gat only: template with {root} and {n}

    def hyper_for(self, n_devices: int, root: str = SHIPPED_ROOT) -> dict:
        """The learner's hyper-parameters for the shipped run at N = n_devices."""
        if self.gat_checkpoint:
            return {**self.hyper,
                    "gat_checkpoint": self.gat_checkpoint.format(root=root, n=n_devices)}
        return dict(self.hyper)

    def hyper_for_task(self, task_id: str, root: str = SHIPPED_ROOT) -> dict:
        """The learner's hyper-parameters for the shipped seeds of task ``task_id``;
        drl_gat's ``gat_checkpoint`` is :func:`task_gat_template`, so seed k
        trains on the GAT-MEC policy of seed k of the same task."""
        if self.gat_checkpoint:
            return {**self.hyper, "gat_checkpoint": task_gat_template(task_id, root)}
        return dict(self.hyper)


def load_recipe(method: str, config_dir: Path = CONFIG_DIR) -> Recipe:
    """The recipe of ``method`` from ``config_dir/<method>.toml``; ValueError naming the field."""
    path = Path(config_dir) / f"{method}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in Path(config_dir).glob("*.toml")))
        raise ValueError(f"no training config {path}; known: {known}")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    for name, kind in (("method", str), ("updates", int), ("chunk", int), ("sizes", list)):
        if not isinstance(raw.get(name), kind):
            raise ValueError(f"{path}: field {name!r} must be a {kind.__name__}")
    if raw["method"] != method:
        raise ValueError(f"{path}: field 'method' is {raw['method']!r}, expected {method!r}")
    if raw["updates"] < 1 or raw["chunk"] < 1:
        raise ValueError(f"{path}: fields 'updates' and 'chunk' must be >= 1")
    if not raw["sizes"] or not all(isinstance(n, int) and n >= 1 for n in raw["sizes"]):
        raise ValueError(f"{path}: field 'sizes' must be a list of positive ints")
    unknown = set(raw) - {"method", "updates", "chunk", "sizes", "hyper", "gat_checkpoint"}
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}")
    return Recipe(method=method, updates=raw["updates"], chunk=raw["chunk"],
                  sizes=tuple(raw["sizes"]), hyper=dict(raw.get("hyper", {})),
                  gat_checkpoint=raw.get("gat_checkpoint", ""))


def shipped_dir(method: str, n_devices: int, root: str = SHIPPED_ROOT) -> str:
    """Where the policy of ``method`` at N = n_devices ships."""
    return f"{root}/{method}_N{n_devices}"


def shipped_twin_dir(root: str = SHIPPED_ROOT) -> str:
    """The one shipped twin (trained at the twin recipe's single size)."""
    return shipped_dir("twin", load_recipe("twin").sizes[0], root)


def task_shipped_dir(task_id: str, method: str, seed, root: str = SHIPPED_ROOT) -> str:
    """Where seed ``seed`` of ``method`` trained on task ``task_id`` (the versioned
    name, e.g. ``congested-v0``) ships, at the task's default N."""
    return f"{root}/tasks/{task_id}/{method}_s{seed}"


def task_gat_template(task_id: str, root: str = SHIPPED_ROOT) -> str:
    """drl_gat's ``gat_checkpoint`` for task ``task_id``: the shipped GAT-MEC policy
    of the seed being trained, ``{seed}`` standing for it
    (:meth:`mecjax.learners.drl_gat.DRLGAT.for_seed`): seed k reads
    ``task_shipped_dir(task_id, "gat_mec", k, root)``."""
    return task_shipped_dir(task_id, "gat_mec", "{seed}", root)
