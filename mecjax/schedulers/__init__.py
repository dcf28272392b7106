"""Schedulers: one module per method, one protocol (see :mod:`.base`).

``make(name, **options)`` imports the module of a built-in scheduler when it
is first asked for; nothing is imported here for registration's sake.
"""

from mecjax.schedulers.base import (Scheduler, Transition, available, leaf_field, make, register,
                                    scheduler_class)

__all__ = ["Scheduler", "Transition", "available", "leaf_field", "make", "register",
           "scheduler_class"]
