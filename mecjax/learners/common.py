"""Training pieces shared by the learners (PureJaxRL style, all pure and jittable).

* :func:`clipped_adam`: Adam (Table 1's optimiser) after global-norm clipping.
* :func:`epsilon_greedy`: Table 1's exploration of discrete offloading actions.
* :class:`ReplayBuffer`: a uniform-sampling ring buffer over any pytree of
  transitions (``init``, ``add``, ``sample``).
* :func:`reset_envs` / :func:`step_envs`: the B parallel training instances;
  auto-reset of finished ones is :func:`mecjax.env.reset_where`.
* :func:`check_hyper` / :func:`int_tuple`: hyper-parameter validation.

Soft and periodic target updates are optax's ``incremental_update`` and
``periodic_update``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mecjax.env import env
from mecjax.optim.allocation import allocate


def clipped_adam(learning_rate: float, max_grad_norm: float) -> optax.GradientTransformation:
    """Adam with learning rate ``learning_rate`` on gradients whose global norm
    is clipped at ``max_grad_norm`` (so a rare huge TD error cannot blow up a step)."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))


def epsilon_greedy(key, greedy, n_actions: int, epsilon) -> jax.Array:
    """``greedy`` [...] int actions, each independently replaced with probability
    ``epsilon`` by a uniform random action in 0..n_actions-1 (int32, same shape)."""
    k_explore, k_random = jax.random.split(key)
    explore = jax.random.uniform(k_explore, greedy.shape) < epsilon
    random = jax.random.randint(k_random, greedy.shape, 0, n_actions, jnp.int32)
    return jnp.where(explore, random, greedy.astype(jnp.int32))


@struct.dataclass
class ReplayBuffer:
    """Ring buffer of C items sampled uniformly (Mnih et al. 2015's replay memory).

    ``data`` is any pytree whose leaves have a leading capacity axis [C, ...];
    one item is the same pytree without it. A learner that keeps one buffer
    per agent ``vmap`` s these methods over a leading agent axis.
    """

    data: Any               # pytree, leaves [C, ...]
    ptr: jax.Array          # [] int32 next write position
    size: jax.Array         # [] int32 filled entries (<= C)

    @staticmethod
    def init(item, capacity: int) -> "ReplayBuffer":
        """An empty buffer of ``capacity`` items shaped like ``item`` (a pytree of
        arrays or ``jax.ShapeDtypeStruct``)."""
        if capacity < 1:
            raise ValueError(f"replay capacity={capacity} must be >= 1")
        data = jax.tree.map(lambda x: jnp.zeros((capacity,) + tuple(x.shape), x.dtype), item)
        return ReplayBuffer(data=data, ptr=jnp.zeros((), jnp.int32),
                            size=jnp.zeros((), jnp.int32))

    @property
    def capacity(self) -> int:
        """C (static)."""
        return jax.tree.leaves(self.data)[0].shape[0]

    def add(self, items) -> "ReplayBuffer":
        """Write ``items`` (leaves [B, ...], B <= C) at ``ptr`` .. ``ptr + B - 1``
        modulo C, overwriting the oldest entries."""
        b, c = jax.tree.leaves(items)[0].shape[0], self.capacity
        if b > c:
            raise ValueError(f"cannot add {b} items to a replay buffer of capacity {c}")
        rows = (self.ptr + jnp.arange(b)) % c
        data = jax.tree.map(lambda store, new: store.at[rows].set(new.astype(store.dtype)),
                            self.data, items)
        return ReplayBuffer(data=data, ptr=((self.ptr + b) % c).astype(jnp.int32),
                            size=jnp.minimum(self.size + b, c).astype(jnp.int32))

    def sample(self, key, batch_size: int):
        """``batch_size`` items drawn uniformly, with replacement, from the filled
        entries: the item pytree with leaves [batch_size, ...]. (An empty buffer
        returns its zero entry 0.)"""
        rows = jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))
        return jax.tree.map(lambda x: x[rows], self.data)


def reset_envs(key, n_envs: int, params):
    """``(obs, env_state)`` of ``n_envs`` fresh training instances, leaves [B, ...]."""
    return jax.vmap(env.reset, (0, None))(jax.random.split(key, n_envs), params)


def step_envs(key, env_state, obs, offload, prices, params):
    """One slot on every training instance: the decisions of ``offload`` [B, N]
    at ``prices`` [B, M] with the convex optimal shares
    (:func:`mecjax.optim.allocation.allocate`), executed by :func:`mecjax.env.step`.

    Returns ``(decisions, next_obs, next_state, done, info)``, leaves [B, ...];
    no auto-reset (:func:`mecjax.env.reset_where` does it).
    """
    b = offload.shape[0]
    decisions = jax.vmap(allocate, (0, 0, 0, None))(obs, offload, prices, params)
    next_obs, next_state, _, done, info = jax.vmap(env.step, (0, 0, 0, None))(
        jax.random.split(key, b), env_state, decisions, params)
    return decisions, next_obs, next_state, done, info


def int_tuple(x) -> tuple[int, ...]:
    """Layer widths as a tuple of ints: a checkpoint's JSON config gives lists,
    ``--set hidden=64`` a single int (one layer)."""
    if isinstance(x, int) and not isinstance(x, bool):
        return (x,)
    return tuple(int(v) for v in x)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def check_hyper(learner, counts: Iterable[str] = (), widths: Iterable[str] = (),
                positive: Iterable[str] = (), fractions: Iterable[str] = ()) -> None:
    """Validate the hyper-parameters of the frozen dataclass ``learner`` (call
    it from ``__post_init__``): ``widths`` (layer sizes) are first made tuples
    of ints (:func:`int_tuple`: a checkpoint's JSON config gives lists), then
    a ``ValueError`` names the first bad one: ``counts`` must be ints >= 1,
    ``widths`` non-empty tuples of them, ``positive`` numbers > 0 and
    ``fractions`` numbers in [0, 1]."""
    def bad(name, why):
        raise ValueError(f"{learner.name}: {name}={getattr(learner, name)!r} must be {why}")

    for name in counts:
        if not _is_count(getattr(learner, name)):
            bad(name, "an int >= 1")
    for name in widths:
        object.__setattr__(learner, name, int_tuple(getattr(learner, name)))
        v = getattr(learner, name)
        if not (isinstance(v, tuple) and v and all(_is_count(w) for w in v)):
            bad(name, "a non-empty tuple of ints >= 1")
    for name in positive:
        if not getattr(learner, name) > 0:
            bad(name, "> 0")
    for name in fractions:
        if not 0.0 <= getattr(learner, name) <= 1.0:
            bad(name, "in [0, 1]")


__all__ = ["ReplayBuffer", "check_hyper", "clipped_adam", "epsilon_greedy", "int_tuple",
           "reset_envs", "step_envs"]
