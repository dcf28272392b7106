"""The cooperative reference, the separable objective, its lower bound, and QIO's encodings."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mecjax import env
from mecjax.config import Scenario
from mecjax.optim import exact, game, objective, qio, separable
from mecjax.optim.coordinate import coordinate_descent
from mecjax.schedulers import make
from mecjax.schedulers.base import fixed_prices
from mecjax.schedulers.cooperative import cooperative_offload
from mecjax.schedulers.qio_mec import strongest_servers

from conftest import QUICK_COMPILE


def _slot(n, seed, **fields):
    s = Scenario(n_devices=n, **fields)
    obs, _ = env.reset(jax.random.key(seed), s)
    return s, obs, fixed_prices(s)


# Each check below runs as one program (compiled with QUICK_COMPILE: they run for
# milliseconds): eagerly, each of their hundreds of operations would compile on its own.
_quick = partial(jax.jit, compiler_options=QUICK_COMPILE)


@partial(_quick, static_argnums=0)
def _separable_and_objective(n):
    s, obs, prices = _slot(n, 3)
    # empty a third of the batteries: those devices are forced to offload
    obs = obs.replace(battery=jnp.where(jnp.arange(n) % 3 == 0, 0.0, obs.battery))
    terms = separable.slot_terms(obs, prices, s)
    xs = jax.random.randint(jax.random.key(1), (32, n), 0, s.n_options)
    got = jax.vmap(lambda x: separable.separable_mean_cost(terms, x))(xs)
    want = objective.batch_mean_cost(obs, xs, prices, s)
    return got, want


@pytest.mark.parametrize("n", [8, 60])
def test_separable_cost_equals_the_objective_also_with_forced_devices(n):
    got, want = _separable_and_objective(n)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5)


@_quick
def _fast_and_slow_descents():
    s, obs, prices = _slot(24, 5)
    terms = separable.slot_terms(obs, prices, s)
    x0 = jax.random.randint(jax.random.key(2), (24,), 0, s.n_options)
    fast, sweeps, converged = separable.descend(terms, x0)
    slow, _, _, slow_converged = coordinate_descent(
        lambda a: objective.mean_cost(obs, a, prices, s), x0, s.n_options)
    return fast, sweeps, converged, slow, slow_converged


def test_fast_descent_equals_coordinate_descent_on_the_full_objective():
    fast, sweeps, converged, slow, slow_converged = _fast_and_slow_descents()
    assert bool(converged) and bool(slow_converged) and int(sweeps) >= 2
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(slow))


@_quick
def _descent_and_every_single_change():
    """The descent's end (x, value, converged) and the objective of every single change
    of it: [N, M+1], entry (i, o) with device i moved to option o."""
    s, obs, prices = _slot(12, 6)
    f = lambda a: objective.mean_cost(obs, a, prices, s)  # noqa: E731
    x, value, _, converged = coordinate_descent(f, jnp.zeros(12, jnp.int32), s.n_options)
    changed = jax.vmap(lambda i: jax.vmap(lambda o: f(x.at[i].set(o)))(
        jnp.arange(s.n_options)))(jnp.arange(12))
    return x, value, converged, changed


def test_coordinate_descent_ends_where_no_single_change_helps():
    _, value, converged, changed = _descent_and_every_single_change()
    assert bool(converged)
    assert changed.shape == (12, Scenario(n_devices=12).n_options)
    for i in range(12):
        for o in range(changed.shape[1]):
            assert float(changed[i, o]) >= float(value) * (1 - 1e-6)


_EXACT_SCENARIO = Scenario(n_devices=8)


@_quick
def _exact_cooperative_bound(key):
    """On the slot of ``key``: the exact optimum, the cooperative descent's value, the
    objective of its decision, and the relaxation bound."""
    s = _EXACT_SCENARIO
    prices = fixed_prices(s)
    obs, _ = env.reset(key, s)
    best = exact.exact_offload(obs, prices, s)[1]
    x, value = cooperative_offload(obs, prices, s)
    bound = separable.relaxation_bound(separable.slot_terms(obs, prices, s))
    return best, value, objective.mean_cost(obs, x, prices, s), bound


def test_cooperative_vs_the_exact_optimum_and_the_bound_below_it():
    # N = 8: every slot's optimum by enumeration; the bound must never exceed it, the
    # cooperative descent must never be below it and rarely far above it.
    gaps, bound_gaps = [], []
    for seed in range(6):
        best, value, cost, bound = (float(v) for v in
                                    _exact_cooperative_bound(jax.random.key(100 + seed)))
        assert cost == pytest.approx(value, rel=2e-5)
        assert bound <= best * (1 + 1e-5), (seed, bound, best)
        assert value >= best * (1 - 1e-5)
        gaps.append(value / best - 1)
        bound_gaps.append(1 - bound / best)
    assert np.median(gaps) < 0.01 and max(gaps) < 0.05, gaps
    assert max(bound_gaps) < 0.10, bound_gaps   # the bound is informative, not just valid


@partial(jax.jit, static_argnums=2, compiler_options=QUICK_COMPILE)
def _cooperative_local_nash(obs, prices, s):
    """The cooperative descent's objective value, all-local's and the selfish
    equilibrium's on the slot (one program: eagerly, each operation outside the
    loops would compile on its own)."""
    _, value = cooperative_offload(obs, prices, s)
    nash, _, _ = game.best_response(obs, prices, s)
    local = jnp.zeros(s.n_devices, jnp.int32)
    return (value, objective.mean_cost(obs, local, prices, s),
            objective.mean_cost(obs, nash, prices, s))


def test_cooperative_never_worse_than_all_local_or_best_response_on_the_slot():
    for n, seed in ((30, 0), (80, 1)):
        s, obs, prices = _slot(n, seed)
        value, local, nash = (float(v) for v in _cooperative_local_nash(obs, prices, s))
        for other in (local, nash):
            assert value <= other * (1 + 1e-6)
        assert value < nash * 0.995


_QIO_SCENARIO = Scenario(n_devices=20)
_QIO_BINARY = qio.QIOConfig(population=8, iterations=5, encoding="binary")


@_quick
def _binary_and_multi_asks():
    """(strongest servers, binary state, its ask, a multi-encoding ask) on one slot."""
    s, obs, _ = _slot(20, 7)
    servers = strongest_servers(obs)
    state = qio.init(20, s.n_options, _QIO_BINARY)
    x = qio.ask(jax.random.key(0), state, s.n_options, "binary", servers)
    multi = qio.ask(jax.random.key(0), qio.init(20, s.n_options), s.n_options)
    return servers, state, x, multi


def test_binary_qio_offloads_only_to_each_devices_strongest_server():
    s = _QIO_SCENARIO
    servers, state, x, multi = _binary_and_multi_asks()
    servers, x, multi = np.asarray(servers), np.asarray(x), np.asarray(multi)
    assert state.theta.shape == (8, 20, 1)
    assert bool(np.all((x == 0) | (x == servers[None])))
    # the uniform start offloads about half of the devices (multi: about 3/4)
    assert 0.3 < float(np.mean(x > 0)) < 0.7
    assert float(np.mean(multi > 0)) > 0.6
    with pytest.raises(ValueError, match="servers"):
        qio.ask(jax.random.key(0), state, s.n_options, "binary")


@_quick
def _qio_mec_act(sched):
    """(decision, state, its objective, all-local's objective) of ``sched`` on one slot."""
    s, obs, prices = _slot(30, 8)
    d, st = sched.act(jax.random.key(0), sched.init(jax.random.key(1), s), obs, s)
    return (d, st, objective.mean_cost(obs, d.offload, prices, s),
            objective.mean_cost(obs, jnp.zeros(30, jnp.int32), prices, s))


def test_qio_mec_variants_decide_and_warm_start_is_never_worse_than_all_local():
    s = Scenario(n_devices=30)
    for name in ("qio_mec", "qio_mec_multi", "qio_mec_warm"):
        d, st, cost, local = _qio_mec_act(make(name, iterations=10))
        env.check_decision(d, s)
        if name == "qio_mec_warm":
            assert float(cost) <= float(local) * (1 + 1e-6)
            np.testing.assert_array_equal(np.asarray(st), np.asarray(d.offload))
    with pytest.raises(ValueError, match="encoding"):
        make("qio_mec", encoding="ternary")
    with pytest.raises(ValueError, match="warm_start"):
        make("qio_mec", warm_start="yes")
