"""What ``mecjax reproduce`` runs: its settings, the methods and variants, and the
shipped checkpoints each needs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mecjax import __version__
from mecjax import checkpoint as ckpt
from mecjax.cli import settings_profile
from mecjax.schedulers import available
from eval import paper
from eval.cells import digest
from train.recipes import LEARNED_METHODS, shipped_dir, shipped_twin_dir

CONFIG = Path(__file__).resolve().parent / "configs" / "reproduce.toml"


@dataclasses.dataclass(frozen=True)
class Settings:
    instances: int = 16
    slots: int = 10
    seed: int = 0
    sizes: tuple[int, ...] = paper.SIZES
    n_servers: int = 3
    methods: tuple[str, ...] | None = None  # scheduler names to run (default: all)
    ablation_size: int | None = 100         # N of Table 5 (None: skip the ablation)
    variant_methods: bool = False           # also the paper methods' variants (paper.VARIANT_METHODS)

    @classmethod
    def from_config(cls, profile: str = "default", path: Path = CONFIG) -> "Settings":
        """The ``[profile]`` section of ``eval/configs/reproduce.toml`` ("default" or "full")."""
        return cls(**settings_profile(cls, path, profile))

    @classmethod
    def full(cls) -> "Settings":
        """Paper scale: for a GPU."""
        return cls.from_config("full")

    def cell_config(self, method: str, n: int) -> dict:
        return {"method": method, "n_devices": n, "n_servers": self.n_servers,
                "instances": self.instances, "slots": self.slots, "seed": self.seed,
                "mecjax": __version__, "cell_format": 3}


def methods_in_order() -> list[tuple[str, str]]:
    """(label, scheduler name) for the paper's methods, their variants, then the references."""
    return (list(paper.PAPER_METHODS.items()) + list(paper.VARIANT_METHODS.items())
            + list(paper.REFERENCES.items()))


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
    "selfish look-ahead (hold plan, best response)": {"lookahead": "selfish"},
}
VARIANTS = {"unified": ABLATION_VARIANTS, "dt_mec": DT_VARIANTS}


def checkpoint_identity(path: str) -> dict | None:
    """Step and config digest of the latest checkpoint under ``path/ckpt`` (None if none)."""
    step = ckpt.latest_step(Path(path) / "ckpt") if (Path(path) / "ckpt").exists() else None
    if step is None:
        return None
    return {"checkpoint": path, "step": step,
            "config": digest(ckpt.load_config(Path(path) / "ckpt"))}


def method_checkpoints(method: str, n: int, root: str) -> dict[str, str]:
    """The scheduler options naming the shipped checkpoints ``method`` needs at N = n."""
    if method in LEARNED_METHODS:
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
        found = checkpoint_identity(path)
        if found is None:
            return None
        identity[key] = found
    return options, identity


def plan_cells(settings: Settings, ckpt_root: str):
    """``(todo, missing)``: todo holds (key, label, scheduler, N, options, flags, identity)."""
    todo, missing = [], []
    variants = set(paper.VARIANT_METHODS.values())
    for label, name in methods_in_order():
        if settings.methods is not None and name not in settings.methods:
            continue
        if name in variants and settings.methods is None and not settings.variant_methods:
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


