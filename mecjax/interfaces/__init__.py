"""Standard RL interfaces to the MEC environment (optional extra ``mecjax[rl]``).

=======================  ==========================================  =================
``make_gymnax(task)``    gymnax ``Environment``: one device per step  single-agent JAX
``make_jaxmarl(task)``   JaxMARL ``MultiAgentEnv``: devices + servers  multi-agent JAX
``make_gymnasium(task)`` Gymnasium ``Env`` (numpy, CPU)               Stable-Baselines3
``make_pettingzoo(task)`` PettingZoo ``ParallelEnv`` (numpy, CPU)      RLlib, ...
=======================  ==========================================  =================

Each module imports its library (gymnax, jaxmarl, gymnasium, pettingzoo) when
first used, so ``import mecjax`` never needs them; without the extra, the
factory raises an ImportError that names it.

``task`` is what :func:`scenario_of` accepts: a task name of :mod:`mecjax.tasks` or a
:class:`mecjax.Scenario`.
"""

from __future__ import annotations

import importlib

from mecjax import tasks
from mecjax.config import Scenario

EXTRA = 'pip install -e ".[rl]"'


def scenario_of(task: str | Scenario | None = None) -> Scenario:
    """The :class:`Scenario` of ``task``: a Scenario as given; a task name of
    :mod:`mecjax.tasks` (``"paper"``, ``"congested-v0"``, ...) its scenario; ``None``
    the paper's Table 1."""
    if isinstance(task, Scenario):
        return task
    return tasks.make("paper" if task is None else task)


def require(module: str):
    """Import the optional library ``module`` or raise an ImportError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is not installed; it comes with the optional extra: "
                          f"{EXTRA}") from err


_FACTORIES = {
    "make_gymnax": "mecjax.interfaces.gymnax_env",
    "make_jaxmarl": "mecjax.interfaces.jaxmarl_env",
    "make_gymnasium": "mecjax.interfaces.gymnasium_env",
    "make_pettingzoo": "mecjax.interfaces.pettingzoo_env",
}


def __getattr__(name: str):
    # Lazy: the factory's module (and its library) load on first use only.
    if name in _FACTORIES:
        return getattr(importlib.import_module(_FACTORIES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EXTRA", "require", "scenario_of", *_FACTORIES]
