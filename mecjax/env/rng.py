"""Cheap counter-based uniforms for the simulator's per-slot noise.

Random draws dominated a first prototype of the step: ``jax.random.uniform``
runs Threefry-2x32 (20 rounds) per pair of words, about 5x the cost of the
arithmetic of the step itself on a CPU. The simulator's noise (fading
innovations, task jitter, harvest) needs statistical quality, not
cryptographic strength, so each word here is two rounds of Wellons'
``lowbias32`` integer hash over a counter, seeded by 64 bits drawn from the
JAX key with Threefry. Keys still split and fold in the usual JAX way, so
reproducibility and independence across keys are unchanged; only the
expansion of one key into many words is cheaper. ``tests/test_rng.py``
checks moments, uniformity and correlation of the stream.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_GOLDEN = 0x9E3779B9


def lowbias32(x: jax.Array) -> jax.Array:
    """Wellons' lowbias32 integer hash (uint32 -> uint32), a bijection."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def seed_words(key: jax.Array) -> jax.Array:
    """[2] uint32 seed drawn from a JAX key (one Threefry call)."""
    return jax.random.bits(key, (2,), jnp.uint32)


def uniform(seed: jax.Array, stream: int, shape: tuple[int, ...]) -> jax.Array:
    """Uniforms in the open interval (0, 1), float32, of ``shape``.

    seed: [2] uint32 from :func:`seed_words`. stream: a small int naming the
    quantity drawn, so that different quantities never share words.
    """
    size = 1
    for d in shape:
        size *= d
    counter = jax.lax.iota(jnp.uint32, size).reshape(shape)
    s0 = lowbias32(seed[0] ^ jnp.uint32((stream * _GOLDEN) & 0xFFFFFFFF))
    h = lowbias32(lowbias32(counter ^ s0) + seed[1])
    # 24 high bits, centred in their bin: never exactly 0 or 1, so log(u) is finite.
    return ((h >> 8).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-24)
