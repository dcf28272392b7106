"""mecjax: a JAX-accelerated, vectorized benchmark for adaptive task offloading in MEC."""

import importlib

from mecjax.config import EnvParams, Scenario, as_params

__version__ = "0.1.0"

# Loaded on first use: the RL interfaces need the optional extra ``mecjax[rl]``, and
# the viewer needs matplotlib; ``import mecjax`` loads neither.
_LAZY = {
    "make_gymnax": "mecjax.interfaces",
    "make_jaxmarl": "mecjax.interfaces",
    "make_gymnasium": "mecjax.interfaces",
    "make_pettingzoo": "mecjax.interfaces",
    "render": "mecjax.viewer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EnvParams", "Scenario", "as_params", "__version__", *_LAZY]
