"""mecjax.optim.indexing and mecjax.optim.loops: the descents' in-range indexing equals
numpy indexing; a carry started batched keeps its values and batches a loop once."""

import jax
import jax.numpy as jnp
import numpy as np

from mecjax.optim.indexing import at, set_at


def test_at_and_set_at_equal_indexing_for_indices_in_range_traced_and_batched():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    pairs = [(k, i) for k in range(2) for i in range(3)]
    ks, is_ = (jnp.array(v, jnp.int32) for v in zip(*pairs))
    got = jax.jit(jax.vmap(lambda k, i: at(x, k, i)))(ks, is_)               # [6, 4]
    np.testing.assert_array_equal(np.asarray(got), np.stack([x[k, i] for k, i in pairs]))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda k: at(x, k))(1)), x[1])
    assert float(at(x, 1, 2, 3)) == x[1, 2, 3]
    row = -np.ones(4, np.float32)
    put = jax.jit(jax.vmap(lambda k, i: set_at(jnp.asarray(x), row, k, i)))(ks, is_)
    for j, (k, i) in enumerate(pairs):
        want = x.copy()
        want[k, i] = row
        np.testing.assert_array_equal(np.asarray(put[j]), want)
    # a scalar into an int array (the plans' and assignments' updates)
    a = jnp.zeros((5,), jnp.int32)
    np.testing.assert_array_equal(np.asarray(jax.jit(set_at)(a, 3, 2)), [0, 0, 3, 0, 0])


def test_batched_like_keeps_values_and_batches_a_loop_body_once():
    from jax._src.interpreters import batching     # to count how often vmap batches a body
    from mecjax.optim.loops import batched_like

    def count_down(x, tie):
        init = (jnp.int32(0), False, jnp.zeros(()))       # constants that the body makes batched
        init = batched_like(init, x) if tie else init

        def body(c):
            i, _, acc = c
            return i + 1, acc > 3.0, acc + x[i]

        return jax.lax.while_loop(lambda c: (c[0] < 4) & ~c[1], body, init)

    xs = jnp.arange(12.0).reshape(3, 4)
    calls = []
    real = batching.batch_jaxpr
    try:
        batching.batch_jaxpr = lambda *a, **k: calls.append(1) or real(*a, **k)
        plain = jax.vmap(lambda x: count_down(x, False))(xs)
        n_plain = len(calls)
        tied = jax.vmap(lambda x: count_down(x, True))(xs)
    finally:
        batching.batch_jaxpr = real
    assert 0 < len(calls) - n_plain < n_plain     # the tied loop is batched in fewer passes
    for a, b in zip(plain, tied):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # outside vmap the values are the carry's own
    i, flag, acc = batched_like((jnp.int32(-1), True, jnp.float32(2.5)), xs[0])
    assert int(i) == -1 and bool(flag) and float(acc) == 2.5
