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


def test_the_two_halves_of_a_word_are_uniform_and_uncorrelated():
    # PSO's r1 and r2 (mecjax.optim.pso.tell): the high and the low 16 bits of one word.
    hi, lo = (np.asarray(u, np.float64)
              for u in rng.uniform_pair(rng.seed_words(jax.random.key(5)), 12, (N,)))
    for u in (hi, lo):
        assert u.min() > 0 and u.max() < 1
        assert stats.kstest(u, "uniform").pvalue > 1e-3
    # jointly uniform on a 16 x 16 grid (a pair of equal or tied halves would fail here)
    counts = np.bincount((np.floor(hi * 16) * 16 + np.floor(lo * 16)).astype(int), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-3
    assert abs(np.corrcoef(hi, lo)[0, 1]) < 0.01


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


def test_many_streams_drawn_at_once_equal_each_stream_drawn_alone():
    seed = rng.seed_words(jax.random.key(11))
    shapes = {"a": (5,), "b": (4, 3), "empty": (0,), "c": (2, 2, 2)}
    together = rng.uniforms(seed, 100, shapes)
    assert list(together) == list(shapes)
    for i, (name, shape) in enumerate(shapes.items()):
        alone = rng.uniform(seed, 100 + i, shape)
        assert together[name].shape == shape
        np.testing.assert_array_equal(np.asarray(together[name]), np.asarray(alone))
    assert rng.uniforms(seed, 0, {}) == {}


def test_lowbias32_is_a_bijection_on_a_sample():
    x = np.arange(1 << 16, dtype=np.uint32)
    h = np.asarray(rng.lowbias32(jax.numpy.asarray(x)))
    assert len(np.unique(h)) == len(x)


# --------------------------------------------------------------------------
# Streams of one key: no counter-shift relation, no cross-correlation.
# --------------------------------------------------------------------------

_HI = np.arange(1 << 16, dtype=np.uint32) << 16
_LO = np.arange(1 << 16, dtype=np.uint32)


def _xor_shifts(word_a, word_b, n_check=4096):
    """{d: fraction of random counters c with word_b(c ^ d) == word_a(c)} over every
    candidate offset d.

    Every 32-bit d is ``hi ^ lo`` for exactly one hi in _HI (high half) and lo in
    _LO (low half). If stream b were stream a with its counter XOR-ed by d, then
    word_a(hi) == word_b(lo) at that pair, so checking every collision between
    word_a(_HI) and word_b(_LO) finds d (with about one chance collision besides).
    """
    wa, wb = np.asarray(word_a(_HI)), np.asarray(word_b(_LO))
    c = np.random.default_rng(0).integers(0, 1 << 32, n_check, dtype=np.uint32)
    out = {}
    for v in np.intersect1d(wa, wb):
        for i in np.flatnonzero(wa == v):
            for j in np.flatnonzero(wb == v):
                d = _HI[i] ^ _LO[j]
                out[int(d)] = float(np.mean(np.asarray(word_a(c)) == np.asarray(word_b(c ^ d))))
    return out


def _old_words(seed, stream):
    """The former construction: the stream XOR-ed into one seed word, which is
    XOR-ed into the counter. Kept here to show that the check above catches it."""
    s0 = rng.lowbias32(seed[0] ^ np.uint32((stream * 0x9E3779B9) & 0xFFFFFFFF))
    return lambda c: rng.lowbias32(rng.lowbias32(jax.numpy.asarray(c) ^ s0) + seed[1])


def test_the_shift_check_catches_the_old_xor_offset_streams():
    seed = rng.seed_words(jax.random.key(6))
    shifts = _xor_shifts(_old_words(seed, 0), _old_words(seed, 1))
    assert max(shifts.values()) == 1.0  # stream 1 is stream 0 read at counter c ^ d


@pytest.mark.parametrize("a, b", [(0, 1), (100, 101), (0, 100), (7, 12)])
def test_streams_of_one_key_are_not_counter_shifted_copies(a, b):
    seed = rng.seed_words(jax.random.key(6))
    shifts = _xor_shifts(lambda c: rng.bits(seed, a, jax.numpy.asarray(c)),
                         lambda c: rng.bits(seed, b, jax.numpy.asarray(c)))
    assert all(frac < 0.01 for frac in shifts.values()), shifts


def test_stream_seeds_differ_in_both_words():
    seed = rng.seed_words(jax.random.key(7))
    k = np.stack([np.asarray(rng.stream_seed(seed, s)) for s in range(256)])
    assert len(np.unique(k[:, 0])) == 256 and len(np.unique(k[:, 1])) == 256
    # Neighbouring streams differ in about half of the 64 key bits, not in a few.
    flips = np.unpackbits((k[1:] ^ k[:-1]).view(np.uint8)).reshape(255, 64).sum(1)
    assert 24 < flips.mean() < 40 and flips.min() > 8


@pytest.mark.parametrize("noise_rng", ["hash", "jax"])
@pytest.mark.parametrize("which", ["reset", "step"])
def test_env_noise_streams_are_uncorrelated(noise_rng, which):
    from mecjax import env
    from mecjax.config import Scenario

    s = Scenario(n_devices=200_000, n_servers=2, mobility=True, noise_rng=noise_rng)
    draw = env.reset_noise if which == "reset" else env.step_noise
    noise = {k: np.asarray(v, np.float64).ravel()[:200_000]
             for k, v in jax.jit(draw, static_argnums=1)(jax.random.key(8), s).items()}
    names = sorted(noise)
    for i, x in enumerate(names):
        u = noise[x]
        assert 0 < u.min() and u.max() < 1, x
        assert stats.kstest(u, "uniform").pvalue > 1e-4, x
        for y in names[i + 1:]:
            # 1 / sqrt(200k) = 0.0022: 0.012 is over 5 standard errors.
            assert abs(np.corrcoef(u, noise[y])[0, 1]) < 0.012, (x, y)


# --------------------------------------------------------------------------
# Scenario.noise_rng: the key's own generator.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_jax_noise_rng_with_every_key_impl(impl):
    from mecjax import env
    from mecjax.config import Scenario

    s = Scenario(n_devices=6, noise_rng="jax")
    key = jax.random.key(9, impl=impl)
    a = env.step_noise(key, s)
    b = env.step_noise(key, s)
    h = env.step_noise(key, s.replace(noise_rng="hash"))
    assert a.keys() == h.keys()
    for name in a:
        assert a[name].shape == h[name].shape and a[name].dtype == np.float32
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))
        assert not np.array_equal(np.asarray(a[name]), np.asarray(h[name]))
        assert 0 < float(a[name].min()) and float(a[name].max()) < 1
    # Reset and step words of one key are unrelated, and batched rollouts run.
    r = env.reset_noise(key, s)
    assert not np.array_equal(np.asarray(r["bits"]), np.asarray(a["bits"]))
    keys = jax.random.split(key, 4)

    @jax.jit
    def roll(keys):
        _, st = jax.vmap(env.reset, (0, None))(keys, s)
        dec = env.Decision(np.zeros((4, 6), np.int32), np.full((4, 3), 0.5, np.float32))
        _, st, reward, _, _ = jax.vmap(env.step, (0, 0, 0, None))(keys, st, dec, s)
        return st, reward

    st, reward = roll(keys)
    assert np.all(np.isfinite(np.asarray(reward)))
    assert len(np.unique(np.asarray(st.task_bits[:, 0]))) == 4  # instances differ
