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

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable
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
    ``--set hidden=64`` a single int (one layer). ValueError for anything else
    (text, fractional or boolean widths)."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return (int(x),)
    if isinstance(x, (list, tuple)) and all(isinstance(v, numbers.Integral) and
                                            not isinstance(v, bool) for v in x):
        return tuple(int(v) for v in x)
    raise ValueError(f"{x!r} is not an int or a sequence of ints")


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: The range of each kind of hyper-parameter: (test, what the message says it must be).
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "counts": (_is_count, "an int >= 1"),
    "positive": (lambda v: v > 0, "> 0"),
    "non_negative": (lambda v: v >= 0, ">= 0"),
    "fractions": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "rates": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
}

#: What a field whose default has this type must hold (bool before int: a bool is an int).
_TYPES: tuple[tuple[type, Callable[[Any], bool], str], ...] = (
    (bool, lambda v: isinstance(v, bool), "a bool"),
    (int, lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
    (float, _is_number, "a finite number"),
    (str, lambda v: isinstance(v, str), "a string"),
)


def check_hyper(learner, counts: Iterable[str] = (), widths: Iterable[str] = (),
                positive: Iterable[str] = (), fractions: Iterable[str] = (),
                non_negative: Iterable[str] = (), rates: Iterable[str] = ()) -> None:
    """Validate the hyper-parameters of the frozen dataclass ``learner`` (call
    it from ``__post_init__``); a ``ValueError`` names the first bad one as
    ``NAME: field=value must be ...``.

    First every dataclass field is checked against the type of its default
    (an int field holds an int, a float field a finite number, a str field a
    string; ``None`` defaults are not checked), so that a value like
    ``learning_rate='abc'`` is named here instead of failing later in a
    comparison or inside ``jit``. Then the range table given by the keyword
    arguments (see :data:`RANGES`): ``counts`` ints >= 1, ``positive`` > 0,
    ``non_negative`` >= 0, ``fractions`` in [0, 1], ``rates`` in (0, 1]
    (soft-update and averaging rates). ``widths`` (layer sizes) are made tuples
    of ints (:func:`int_tuple`: a checkpoint's JSON config gives lists) and
    must be non-empty with every width >= 1.
    """
    def bad(name, why):
        raise ValueError(f"{learner.name}: {name}={getattr(learner, name)!r} must be {why}")

    widths = tuple(widths)
    if dataclasses.is_dataclass(learner):
        for f in dataclasses.fields(learner):
            default = f.default
            if f.name in widths or default is dataclasses.MISSING or default is None:
                continue
            for kind, test, what in _TYPES:
                if isinstance(default, kind):
                    if not test(getattr(learner, f.name)):
                        bad(f.name, what)
                    break
    for name in widths:
        try:
            object.__setattr__(learner, name, int_tuple(getattr(learner, name)))
        except ValueError:
            bad(name, "a non-empty tuple of ints >= 1")
        v = getattr(learner, name)
        if not (isinstance(v, tuple) and v and all(_is_count(w) for w in v)):
            bad(name, "a non-empty tuple of ints >= 1")
    table = {"counts": counts, "positive": positive, "non_negative": non_negative,
             "fractions": fractions, "rates": rates}
    for kind, names in table.items():
        test, what = RANGES[kind]
        for name in names:
            v = getattr(learner, name)
            if kind != "counts" and not _is_number(v):
                bad(name, f"a number {what}")
            if not test(v):
                bad(name, what)


__all__ = ["ReplayBuffer", "RANGES", "check_hyper", "clipped_adam", "epsilon_greedy", "int_tuple",
           "reset_envs", "step_envs"]
