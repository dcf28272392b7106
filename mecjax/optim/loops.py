"""Loops that ``vmap`` batches once.

Under ``vmap`` a ``while_loop`` or ``scan`` is batched until its carry's batching
settles: a carry that starts unbatched (a constant: a False flag, a zero count, an
empty state) and comes out of the body batched (it depends on the instance) makes
``vmap`` batch the whole body again, and every loop inside it with it, so nested
loops multiply the passes (best response's per-device round was batched six times
in a rollout, DT-MEC's move six times). :func:`batched_like` starts such a carry
batched wherever the loop's data are, with the same values, so the body is
batched once. Outside ``vmap`` it adds operations on constants that XLA folds away.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def batched_like(carry, ref):
    """``carry`` (a pytree of arrays and Python scalars) with the same values, batched under
    ``vmap`` wherever ``ref`` (an array the loop's data depend on, e.g. its start point)
    is: each leaf is combined with a False (or zero) derived from ``ref``."""
    first = jnp.ravel(jnp.asarray(ref))[0]
    false = (first == first) & False               # False, batched like ref (NaN: False too)

    def tie(x):
        x = jnp.asarray(x)
        if x.dtype == jnp.bool_:
            return x | false
        return x + false.astype(x.dtype)           # + 0: the same value

    return jax.tree.map(tie, carry)


__all__ = ["batched_like"]
