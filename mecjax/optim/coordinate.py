"""Cooperative coordinate descent on a discrete decision: the strong reference search.

Every coordinate (one device's option, or one device's option in one slot of
a plan) in turn takes the value that lowers the *system's* objective most,
the others held; sweeps repeat until a whole sweep changes nothing (a local
optimum with respect to single changes) or ``max_sweeps`` is reached. It is
the cooperative counterpart of :func:`mecjax.optim.game.best_response`,
which lowers each device's *own* cost and stops at a Nash equilibrium.

The result is never worse than the start: a coordinate moves only when the
objective drops by more than ``IMPROVE_TOL`` (relative), which also makes
the descent terminate.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mecjax.optim.indexing import at, set_at

IMPROVE_TOL = 1e-7  # relative drop of the objective a move needs


def coordinate_descent(objective: Callable, x0, n_options: int, max_sweeps: int = 20):
    """Minimise ``objective(x)`` over integer arrays ``x`` of ``x0``'s shape, values in
    ``0 .. n_options - 1``, one coordinate at a time.

    ``objective``: int array of ``x0``'s shape (``[N]`` or ``[H, N]``) -> scalar.
    Returns ``(x, value, sweeps, converged)``: the final array, its objective, the
    number of sweeps run, and whether the last sweep changed nothing.
    """
    shape = x0.shape
    flat0 = jnp.asarray(x0, jnp.int32).reshape(-1)
    options = jnp.arange(n_options, dtype=jnp.int32)
    value_of = lambda flat: objective(flat.reshape(shape))  # noqa: E731

    def move(carry, k):
        flat, value, changed = carry
        values = jax.vmap(lambda o: value_of(set_at(flat, o, k)))(options)   # [n_options]
        best = jnp.argmin(values).astype(jnp.int32)
        lowest = at(values, best)
        better = lowest < value - IMPROVE_TOL * jnp.abs(value)
        flat = jnp.where(better, set_at(flat, best, k), flat)
        return (flat, jnp.where(better, lowest, value), changed | better), None

    def sweep(state):
        flat, value, _, sweeps = state
        (flat, value, changed), _ = jax.lax.scan(move, (flat, value, False),
                                                 jnp.arange(flat.shape[0]))
        return flat, value, changed, sweeps + 1

    def keep_going(state):
        return state[2] & (state[3] < max_sweeps)

    flat, value, changed, sweeps = jax.lax.while_loop(
        keep_going, sweep, (flat0, value_of(flat0), jnp.bool_(True), jnp.int32(0)))
    return flat.reshape(shape), value, sweeps, ~changed
