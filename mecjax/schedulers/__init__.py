"""Schedulers: one module per method, one protocol (see :mod:`.base`)."""

from mecjax.schedulers import (best_response, exact, greedy, qio_mec,  # noqa: F401  (registration)
                               references, ts_hybrid_sb)
from mecjax.schedulers.base import Scheduler, Transition, available, make, register

__all__ = ["Scheduler", "Transition", "available", "make", "register"]
