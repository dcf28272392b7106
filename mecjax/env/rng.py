"""Cheap counter-based uniforms for the simulator's per-slot noise.

Random draws are a large part of the cost of a step: ``jax.random`` runs
Threefry-2x32 (20 rounds) per pair of words. The simulator's noise (fading
innovations, task jitter, harvest) needs statistical quality, not
cryptographic strength, so each word here is two rounds of Wellons'
``lowbias32`` integer hash over a counter, keyed by 64 bits drawn from the
JAX key. Keys still split and fold in the usual JAX way, so reproducibility
and independence across keys are unchanged; only the expansion of one key
into many words is cheaper: a whole vmapped rollout on a CPU runs about 2x
faster than with every word drawn from the key's own generator
(``mecjax bench env`` records both in ``results/benchmarks/env_throughput.md``;
``Scenario.noise_rng`` selects either).

One key feeds several quantities ("streams": fading, task jitter, harvest,
...). Each stream gets its own 64-bit key, both words hashed from the key's
seed and the stream number (:func:`stream_seed`), so two streams of one JAX
key are as unrelated as two JAX keys. (Mixing the stream into one seed word
only, which was XOR-ed into the counter, made every stream an exact
counter-shifted copy of every other: stream b at counter ``c ^ d`` equalled
stream a at ``c`` for a fixed ``d``.) ``tests/test_rng.py`` checks moments,
uniformity and correlation within a stream and the absence of that relation
between streams.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN = 0x9E3779B9


def lowbias32(x: jax.Array) -> jax.Array:
    """Wellons' lowbias32 integer hash (uint32 -> uint32), a bijection."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def seed_words(key: jax.Array) -> jax.Array:
    """[2] uint32 seed drawn from a JAX key (one call of the key's generator)."""
    return jax.random.bits(key, (2,), jnp.uint32)


def stream_seed(seed: jax.Array, stream: int) -> jax.Array:
    """[2] uint32 key of one stream: both words depend on both seed words and the stream.

    For a fixed seed the first word is a bijection of ``stream * golden`` (distinct
    streams get distinct words); the second is a hash of the first, so a change
    of stream changes both the counter whitening and the additive key of
    :func:`bits` by unrelated amounts.
    """
    t = jnp.uint32((stream * _GOLDEN) & 0xFFFFFFFF)
    k0 = lowbias32(lowbias32(t ^ seed[0]) + seed[1])
    k1 = lowbias32(k0 ^ seed[1]) + seed[0]
    return jnp.stack([k0, k1])


def bits(seed: jax.Array, stream: int, counter: jax.Array) -> jax.Array:
    """uint32 words of ``stream`` at the given uint32 ``counter`` values (any shape).

    seed: [2] uint32 from :func:`seed_words`.
    """
    k = stream_seed(seed, stream)
    return lowbias32(lowbias32(counter.astype(jnp.uint32) ^ k[0]) + k[1])


def to_unit(words: jax.Array) -> jax.Array:
    """float32 uniforms in the open interval (0, 1) from uint32 words.

    Keeps the 24 high bits (a float32 mantissa), centred in their bin: never
    exactly 0 or 1, so ``log(u)`` is finite.
    """
    return ((words >> 8).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-24)


def to_unit_pair(words: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two float32 uniforms in the open interval (0, 1) from each uint32 word: its high
    and its low 16 bits, each centred in its bin (2^16 levels). For draws where 16 bits
    of resolution serve (PSO's random coefficients): one hash instead of two."""
    scale = jnp.float32(2.0**-16)
    return (((words >> 16).astype(jnp.float32) + 0.5) * scale,
            ((words & jnp.uint32(0xFFFF)).astype(jnp.float32) + 0.5) * scale)


def uniforms(seed: jax.Array, first_stream: int,
             shapes: dict[str, tuple[int, ...]]) -> dict[str, jax.Array]:
    """``{name: uniform(seed, first_stream + i, shape)}`` for the i-th item of ``shapes``,
    bit for bit, drawn as one array.

    The streams' keys are hashed as one [S] vector and every word of every
    stream in one [sum of sizes] hash, instead of one small program per stream:
    the same numbers from a compiled program about half the size (the simulator
    draws 13 quantities at a reset and 8 in a step, in every rollout).

    A nested ``jit``: inlined into a compiled caller, and one program where the
    caller runs eagerly (a ``vmap`` of a reset outside ``jit``), not each operation
    compiled and dispatched on its own; the words are integer hashes and their
    conversion to floats is exact, so every way of compiling them gives the same bits.
    """
    items = tuple((name, tuple(int(d) for d in shape)) for name, shape in shapes.items())
    # (a dict leaves jit with its keys sorted: the draws come back in ``shapes``' order)
    return dict(zip(shapes, _uniforms_jit(seed, first_stream, items)))


def _uniforms(seed, first_stream, shapes):
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes.values()]
    if not sizes:
        return {}
    n_streams = len(sizes)
    streams = np.arange(first_stream, first_stream + n_streams, dtype=np.uint64)
    t = jnp.asarray((streams * _GOLDEN) & 0xFFFFFFFF, jnp.uint32)   # as in stream_seed
    k0 = lowbias32(lowbias32(t ^ seed[0]) + seed[1])                  # [S]
    k1 = lowbias32(k0 ^ seed[1]) + seed[0]                           # [S]
    # The streams of one size are hashed as one [streams, size] array, each row keyed by
    # its stream's words broadcast along it (no gather of keys per word: on a CPU a
    # gather costs more than the hash).
    out = {}
    for size in sorted(set(sizes)):
        rows = np.flatnonzero(np.asarray(sizes) == size)
        counter = jax.lax.iota(jnp.uint32, size)[None, :]
        words = lowbias32(lowbias32(counter ^ k0[rows][:, None]) + k1[rows][:, None])
        unit = to_unit(words)
        for r, i in enumerate(rows):
            name, shape = list(shapes.items())[i]
            out[name] = unit[r].reshape(shape)
    return {name: out[name] for name in shapes}


_uniforms_jit = jax.jit(
    lambda seed, first, items: tuple(_uniforms(seed, first, dict(items)).values()),
    static_argnums=(1, 2))


def uniform(seed: jax.Array, stream: int, shape: tuple[int, ...]) -> jax.Array:
    """Uniforms in the open interval (0, 1), float32, of ``shape``.

    seed: [2] uint32 from :func:`seed_words`. stream: a small int naming the
    quantity drawn; different streams of one seed are independent. Element
    ``i`` (row-major) is the word at counter ``i``.
    """
    return _uniform_jit(seed, stream, tuple(int(d) for d in shape))   # as uniforms


_uniform_jit = jax.jit(lambda seed, stream, shape: to_unit(stream_words(seed, stream, shape)),
                       static_argnums=(1, 2))


def uniform_pair(seed: jax.Array, stream: int,
                 shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Two arrays of uniforms of ``shape`` in (0, 1) with 16 bits of resolution, the
    halves of :func:`uniform`'s words (:func:`to_unit_pair`): one hash per pair."""
    return to_unit_pair(stream_words(seed, stream, shape))


def stream_words(seed: jax.Array, stream: int, shape: tuple[int, ...]) -> jax.Array:
    """uint32 words of ``stream`` of ``shape``: element ``i`` (row-major) at counter ``i``."""
    size = 1
    for d in shape:
        size *= d
    return bits(seed, stream, jax.lax.iota(jnp.uint32, size).reshape(shape))
