"""Indexing with traced indices that are known to be in range.

``x[k]`` with a traced ``k`` wraps negative indices first (a comparison, an add
and a select per index) and then takes a dynamic slice. The descents index a dozen
arrays per move with indices they compute themselves (always in range), and that
wrapping, repeated for every index in every move and batched again under ``vmap``,
made their programs noticeably larger to trace and to compile. :func:`at` and
:func:`set_at` are the one dynamic slice or update, and the same values as
``x[index]`` and ``x.at[index].set(value)`` for indices in range (out of range,
they clamp, as a dynamic slice does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def at(x, *index):
    """``x[index]``: the leading ``len(index)`` axes indexed away, e.g. ``at(x, k, i)``
    of ``x`` [H, N, M] is [M]."""
    x = jnp.asarray(x)
    lead = len(index)
    start = tuple(index) + (0,) * (x.ndim - lead)
    sliced = jax.lax.dynamic_slice(x, start, (1,) * lead + x.shape[lead:],
                                   allow_negative_indices=False)
    return sliced.reshape(x.shape[lead:])


def set_at(x, value, *index):
    """``x.at[index].set(value)`` (``value`` of shape ``x.shape[len(index):]``)."""
    lead = len(index)
    start = tuple(index) + (0,) * (x.ndim - lead)
    value = jnp.asarray(value, x.dtype).reshape((1,) * lead + x.shape[lead:])
    return jax.lax.dynamic_update_slice(x, value, start, allow_negative_indices=False)


__all__ = ["at", "set_at"]
