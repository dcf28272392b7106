"""Schedulers: one module per method, one protocol (see :mod:`.base`)."""

from mecjax.schedulers import (best_response, drl_fgso, dt_mec,  # noqa: F401  (registration)
                               exact, gat_mec, greedy, qio_mec, references, ts_hybrid_sb,
                               tsg_marl, unified)
from mecjax.schedulers.base import Scheduler, Transition, available, make, register

__all__ = ["Scheduler", "Transition", "available", "make", "register"]
