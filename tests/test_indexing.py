"""mecjax.optim.indexing: the descents' in-range indexing equals numpy indexing."""

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
