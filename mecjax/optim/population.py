"""Bookkeeping shared by the population searches (QIO, PSO)."""

from __future__ import annotations

import jax.numpy as jnp


def update_bests(personal_x, personal_f, best_x, best_f, x, fitness):
    """Personal bests ``[P, N]``, ``[P]`` and the global best ``[N]``, ``[]`` after
    evaluating the population ``x`` [P, N] with ``fitness`` [P] (lower is better).

    The global best is never worse than any personal best, so it can only
    improve through this generation's best individual.
    """
    improved = fitness < personal_f
    personal_x = jnp.where(improved[:, None], x, personal_x)
    personal_f = jnp.where(improved, fitness, personal_f)
    k = jnp.argmin(fitness)
    better = fitness[k] < best_f
    return (personal_x, personal_f, jnp.where(better, x[k], best_x),
            jnp.where(better, fitness[k], best_f))
