"""The NumPy QIO against the JAX QIO, and the optimizer benchmark's output (no timing asserted)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import env
from mecjax.cli import main
from mecjax.env import rng as jrng
from mecjax.optim import allocation, numpy_qio, objective, qio

B, P, ITERS = 4, 30, 20


@pytest.fixture(scope="module")
def case():
    s = mecjax.Scenario(n_devices=6, n_servers=3)
    obs = jax.vmap(env.reset, (0, None))(jax.random.split(jax.random.key(0), B), s)[0]
    np_obs = {k: np.asarray(v) for k, v in vars(obs).items()}
    return s, obs, np_obs


def _jax_search(keys, obs, prices, s, config):
    def one(key, view):
        return qio.search(key, lambda x: objective.batch_mean_cost(view, x, prices, s),
                          s.n_devices, s.n_options, config)
    return jax.jit(jax.vmap(one))(keys, obs)


def _jax_uniforms(keys, s, config):
    """[iterations, B, P, N, q]: the uniforms ``qio.ask`` draws in ``qio.search``."""
    shape = (config.population, s.n_devices, qio.n_qubits(s.n_options))

    def per_instance(key):
        gens = jax.random.split(key, config.iterations)
        return jax.vmap(lambda k: jrng.uniform(jrng.seed_words(k), 7, shape))(gens)

    return np.moveaxis(np.asarray(jax.vmap(per_instance)(keys)), 0, 1)


def test_numpy_allocation_matches_jax(case):
    s, obs, np_obs = case
    off = np.random.default_rng(0).integers(0, s.n_options, (B, s.n_devices)).astype(np.int32)
    off[0] = 0            # all local: no shares
    off[1] = 2            # all on one server
    jb = jax.vmap(lambda v, o: allocation.optimal_bandwidth_shares(v, o, s))(obs, jnp.asarray(off))
    jc = jax.vmap(lambda v, o: allocation.optimal_cpu_shares(v, o, s))(obs, jnp.asarray(off))
    nb, nc = numpy_qio.allocate(np_obs, off, s)
    np.testing.assert_allclose(nb, np.asarray(jb), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(nc, np.asarray(jc), rtol=1e-5, atol=1e-7)
    prices = np.full((B, s.n_servers), s.price_init, np.float32)
    want = jax.vmap(lambda v, o: objective.mean_cost(v, o, prices[0], s))(obs, jnp.asarray(off))
    np.testing.assert_allclose(numpy_qio.mean_cost(np_obs, off, prices, s), np.asarray(want),
                               rtol=1e-5)


def test_numpy_qio_reproduces_jax_qio_with_the_same_uniforms(case):
    s, obs, np_obs = case
    config = qio.QIOConfig(population=P, iterations=ITERS)
    prices = jnp.full((s.n_servers,), s.price_init, jnp.float32)
    keys = jax.random.split(jax.random.key(1), B)
    jx, jf = _jax_search(keys, obs, prices, s, config)
    uniforms = _jax_uniforms(keys, s, config)
    nx, nf = numpy_qio.search(None, np_obs, np.asarray(prices), s, population=P,
                              iterations=ITERS, delta_theta=config.delta_theta,
                              theta_min=config.theta_min, uniforms=uniforms)
    np.testing.assert_allclose(nf, np.asarray(jf), rtol=1e-4)
    np.testing.assert_array_equal(nx, np.asarray(jx))
    # The callable source of uniforms is the same stream.
    cx, cf = numpy_qio.search(None, np_obs, np.asarray(prices), s, population=P,
                              iterations=ITERS, uniforms=lambda g: uniforms[g])
    np.testing.assert_array_equal(cx, nx)
    np.testing.assert_array_equal(cf, nf)


def test_numpy_qio_with_its_own_generator_searches(case):
    s, _, np_obs = case
    prices = np.full((s.n_servers,), s.price_init, np.float32)
    x, f = numpy_qio.search(np.random.default_rng(0), np_obs, prices, s, population=10,
                            iterations=15)
    assert x.shape == (B, s.n_devices) and f.shape == (B,)
    assert x.min() >= 0 and x.max() <= s.n_servers
    np.testing.assert_allclose(f, numpy_qio.mean_cost(np_obs, x, np.broadcast_to(
        prices, (B, s.n_servers)), s), rtol=1e-6)
    with pytest.raises(ValueError, match="uniforms has shape"):
        numpy_qio.search(None, np_obs, prices, s, population=10, iterations=15,
                         uniforms=np.zeros((3, B, 10, s.n_devices, 2)))


def test_bench_optim_command_writes_markdown_and_json(tmp_path, capsys):
    # Through the command, blocks of 2 instances over a batch of 4: the bench checks their
    # best costs equal one vmap's before it writes (the block path keys each instance as
    # the one vmap does).
    assert main(["bench", "optim", "--ns", "5", "--batches", "4", "--iterations", "6",
                 "--population", "4", "--numpy-budget", "160", "--repeats", "1",
                 "--chunk", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "optim_throughput.json").read_text())
    assert len(record["rows"]) == 1
    row = record["rows"][0]
    assert row["n_devices"] == 5 and row["batch"] == 4 and "jax" in record["machine"]
    assert row["numpy_iterations"] == 2  # 160 // (5 * 4 * 4)
    assert row["chunk"] == 2 and record["settings"]["chunk"] == 2
    for key in ("jax_qio_dec_per_s", "jax_pso_dec_per_s", "numpy_qio_dec_per_s",
                "jax_qio_one_vmap_dec_per_s", "jax_pso_one_vmap_dec_per_s",
                "evaluate_dev_per_s", "bound_dec_per_s"):
        assert row[key] > 0
    assert row["qio_speedup"] == row["jax_qio_dec_per_s"] / row["numpy_qio_dec_per_s"]
    assert row["bound_dec_per_s"] == row["evaluate_dev_per_s"] / (4 * 6 * 5)
    assert row["pso_of_bound"] == row["jax_pso_dec_per_s"] / row["bound_dec_per_s"]
    assert record["settings"]["iterations"] == 6 and "numpy_scaling" in record["settings"]
    table = (tmp_path / "optim_throughput.md").read_text()
    assert "| 5 | 4 | 2 |" in table and "mecjax bench optim" in table and "scaled linearly" in table
    assert "N=    5 B=    4" in capsys.readouterr().out
    # A negative block size is refused before anything runs.
    assert main(["bench", "optim", "--chunk", "-1", "--no-write"]) == 2
    assert "mecjax bench: --chunk -1 must be >= 0" in capsys.readouterr().err
