"""Statistical checks of the counter-based uniform stream (mecjax.env.rng)."""

import jax
import numpy as np
import pytest
from scipy import stats

from mecjax.env import rng

N = 200_000


def _u(key=0, stream=0, n=N):
    return np.asarray(rng.uniform(rng.seed_words(jax.random.key(key)), stream, (n,)), np.float64)


def test_open_unit_interval_and_moments():
    u = _u()
    assert u.min() > 0 and u.max() < 1
    assert u.mean() == pytest.approx(0.5, abs=3e-3)
    assert u.var() == pytest.approx(1 / 12, abs=1e-3)


def test_kolmogorov_smirnov_uniform():
    assert stats.kstest(_u(), "uniform").pvalue > 1e-3


def test_chi_square_on_pairs_of_consecutive_draws():
    u = _u(key=1)
    cells = (np.floor(u[0::2] * 16) * 16 + np.floor(u[1::2] * 16)).astype(int)
    counts = np.bincount(cells, minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("lag", [1, 2, 7, 64])
def test_no_serial_correlation(lag):
    u = _u(key=2) - 0.5
    corr = (u[lag:] * u[:-lag]).mean() / u.var()
    assert abs(corr) < 0.01


def test_streams_and_keys_are_independent():
    a, b, c = _u(3, 0), _u(3, 1), _u(4, 0)
    for x, y in ((a, b), (a, c)):
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.01
        assert not np.array_equal(x, y)


def test_same_key_same_words_and_shape_layout():
    seed = rng.seed_words(jax.random.key(5))
    flat = np.asarray(rng.uniform(seed, 2, (12,)))
    np.testing.assert_array_equal(flat, np.asarray(rng.uniform(seed, 2, (12,))))
    np.testing.assert_array_equal(flat.reshape(3, 4), np.asarray(rng.uniform(seed, 2, (3, 4))))


def test_lowbias32_is_a_bijection_on_a_sample():
    x = np.arange(1 << 16, dtype=np.uint32)
    h = np.asarray(rng.lowbias32(jax.numpy.asarray(x)))
    assert len(np.unique(h)) == len(x)
