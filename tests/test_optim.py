"""Optimizers: convex allocation, exact optimum, game dynamics, pricing, QIO and PSO.

Every property is checked against an independent computation through the
public environment (``mecjax.env.evaluate``), never against the optimizer's
own objective only.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import env
from mecjax.optim import allocation, exact, game, objective, pricing, pso, qio
from mecjax.schedulers import make


def _reset_obs(s):
    return jax.jit(jax.vmap(lambda k: env.reset(k, s)[0]))


def _unbatch(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _server_sums(share, offload, m):
    return np.array([share[offload == j].sum() for j in range(1, m + 1)])


# --------------------------------------------------------------------------
# Allocation: closed-form optimal shares.
# --------------------------------------------------------------------------

def _dirichlet_shares(rng, offload, m):
    share = np.zeros(offload.shape, np.float64)
    for j in range(1, m + 1):
        on = offload == j
        if on.any():
            share[on] = rng.dirichlet(np.ones(on.sum()))
    return np.maximum(share, 1e-9 * (offload > 0))


def _jitter_shares(rng, base, offload, m, scale):
    share = np.where(offload > 0, base * np.exp(scale * rng.standard_normal(base.shape)), 0.0)
    for j in range(1, m + 1):
        on = offload == j
        if on.any():
            share[on] /= share[on].sum()
    return share


def test_optimal_allocation_is_feasible_and_no_perturbation_beats_it():
    s = mecjax.Scenario(n_devices=8, n_servers=3)
    m = s.n_servers
    obs_b = _reset_obs(s)(jax.random.split(jax.random.key(11), 50))
    rng = np.random.default_rng(0)
    alloc = jax.jit(allocation.allocate, static_argnums=3)

    @jax.jit
    def perturbed_costs(obs, off, prices, bws, cpus):
        return jax.vmap(lambda b, c: env.evaluate(obs, env.Decision(off, prices, b, c), s).cost.mean())(bws, cpus)

    @jax.jit
    def check_flags(off, prices, bws, cpus):
        return jax.vmap(lambda b, c: env.sanitize_decision(env.Decision(off, prices, b, c), s)[1]
                        ["invalid_decision"])(bws, cpus)

    n_worse_found = 0
    for trial in range(50):
        obs = _unbatch(obs_b, trial)
        offload = rng.integers(0, m + 1, s.n_devices)
        if trial % 5 == 0:
            offload[:5] = 1          # a crowded server: shares matter most there
        prices = jnp.asarray(rng.uniform(s.price_min, s.price_max, m), jnp.float32)
        dec = alloc(obs, jnp.asarray(offload, jnp.int32), prices, s)
        bw, cpu = np.asarray(dec.bandwidth_share, np.float64), np.asarray(dec.cpu_share, np.float64)
        used = np.array([(offload == j).any() for j in range(1, m + 1)])
        for share in (bw, cpu):
            np.testing.assert_allclose(_server_sums(share, offload, m)[used], 1.0, atol=1e-5)
            assert (share[offload == 0] == 0).all()
            assert (share[offload > 0] > 0).all()
        best = float(env.evaluate(obs, dec, s).cost.mean())
        candidates = []
        for _ in range(3):
            candidates.append((_dirichlet_shares(rng, offload, m), cpu))
            candidates.append((bw, _dirichlet_shares(rng, offload, m)))
            candidates.append((_dirichlet_shares(rng, offload, m), _dirichlet_shares(rng, offload, m)))
        for scale in (0.3, 0.05):
            candidates.append((_jitter_shares(rng, bw, offload, m, scale), cpu))
            candidates.append((bw, _jitter_shares(rng, cpu, offload, m, scale)))
            candidates.append((_jitter_shares(rng, bw, offload, m, scale),
                               _jitter_shares(rng, cpu, offload, m, scale)))
        bws = jnp.asarray(np.stack([b for b, _ in candidates]), jnp.float32)
        cpus = jnp.asarray(np.stack([c for _, c in candidates]), jnp.float32)
        off_j = jnp.asarray(offload, jnp.int32)
        # Every perturbation is a valid decision as given (nothing gets repaired) ...
        flags = check_flags(off_j, prices, bws, cpus)
        assert not np.asarray(flags).any()
        # ... and none of them is cheaper than the closed form.
        costs = np.asarray(perturbed_costs(obs, off_j, prices, bws, cpus))
        assert (costs >= best * (1 - 1e-6)).all(), (trial, costs.min(), best)
        n_worse_found += int((costs > best * (1 + 1e-4)).sum())
    # The perturbations are not vacuous: most of them are clearly worse.
    assert n_worse_found > 0.5 * 50 * 15


def test_allocation_is_optimal_for_the_executed_assignment_when_a_battery_is_empty():
    s = mecjax.Scenario(n_devices=6, n_servers=3)
    prices = jnp.full((3,), s.price_init)
    obs, _ = env.reset(jax.random.key(0), s)
    obs = obs.replace(battery=obs.battery.at[0].set(0.0))       # device 0 cannot compute locally
    best0 = int(jnp.argmax(obs.gain_observed[0])) + 1
    a = jnp.asarray([0, best0, best0, best0, 0, 0], jnp.int32)
    out = env.evaluate(obs, allocation.allocate(obs, a, prices, s), s)
    assert int(out.offload[0]) == best0                          # forced onto its best server
    executed = env.evaluate(obs, allocation.allocate(obs, out.offload, prices, s), s)
    assert float(out.cost.mean()) <= float(executed.cost.mean()) * (1 + 1e-6)


# --------------------------------------------------------------------------
# Exact: exhaustive optimum.
# --------------------------------------------------------------------------

def _brute_force(obs, prices, s, python_loop=False):
    """{vector: mean cost} over itertools.product, each through env.evaluate with optimal shares."""
    cands = list(itertools.product(range(s.n_servers + 1), repeat=s.n_devices))
    if python_loop:
        alloc = jax.jit(allocation.allocate, static_argnums=3)
        costs = [float(env.evaluate(obs, alloc(obs, jnp.asarray(a, jnp.int32), prices, s), s).cost.mean())
                 for a in cands]
    else:   # the same, batched: evaluate each candidate under vmap
        one = lambda a: env.evaluate(obs, allocation.allocate(obs, a, prices, s), s).cost.mean()  # noqa: E731
        costs = np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(cands, jnp.int32))).tolist()
    return dict(zip(cands, costs))


@pytest.mark.parametrize("n,m,chunk,key", [(3, 2, 10, 0), (4, 3, 4096, 1), (5, 2, 50, 2), (5, 3, 100, 3)])
def test_exact_matches_python_brute_force(n, m, chunk, key):
    s = mecjax.Scenario(n_devices=n, n_servers=m)
    k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
    obs, _ = env.reset(k1, s)
    # Some congestion and unequal prices, so the optimum is not trivial.
    obs = obs.replace(backlog=jax.random.uniform(k2, (m,), maxval=2e9))
    prices = jax.random.uniform(k3, (m,), minval=s.price_min, maxval=s.price_max)
    total = (m + 1) ** n
    assert exact.n_candidates(n, m) == total
    costs = _brute_force(obs, prices, s)
    assert len(costs) == total
    if total < 100:   # the batched brute force agrees with a plain eager loop
        loop = _brute_force(obs, prices, s, python_loop=True)
        np.testing.assert_allclose([loop[a] for a in costs], list(costs.values()), rtol=1e-6)
    brute_min = min(costs.values())
    best_x, best_cost = exact.exact_offload(obs, prices, s, chunk=chunk)
    assert float(best_cost) == pytest.approx(brute_min, rel=1e-5)
    assert costs[tuple(int(v) for v in np.asarray(best_x))] == pytest.approx(brute_min, rel=1e-5)
    # The optimum is not one of the trivial corners on every instance (sanity of the yardstick).
    assert brute_min <= costs[(0,) * n] + 1e-12


def test_exact_finds_the_last_candidate_when_total_is_not_a_multiple_of_chunk():
    """Make the last candidate (all devices on server M) the unique optimum."""
    s = mecjax.Scenario(n_devices=5, n_servers=2, task_cycles_min=9e7, task_cycles_max=1e8)
    obs, _ = env.reset(jax.random.key(3), s)
    gain = jnp.full_like(obs.gain_observed, 1e-14).at[:, -1].set(1e-6)  # only server M reachable
    obs = obs.replace(gain_observed=gain, cpu_freq=jnp.full_like(obs.cpu_freq, 1e8))
    prices = jnp.zeros((2,))
    total = 3 ** 5
    for chunk in (7, 100, 242, 4096):
        assert total % chunk != 0 or chunk >= total
        x, cost = exact.exact_offload(obs, prices, s, chunk=chunk)
        np.testing.assert_array_equal(np.asarray(x), np.full(5, 2))
        assert np.isfinite(float(cost))


def test_decode_round_trips_and_enumerates_every_vector():
    n, k = 5, 3
    idx = jnp.arange(k ** n, dtype=jnp.int32)
    digits = np.asarray(exact.decode(idx, n, k))
    assert digits.shape == (k ** n, n)
    assert digits.min() == 0 and digits.max() == k - 1
    np.testing.assert_array_equal(digits @ (k ** np.arange(n)), np.asarray(idx))
    assert {tuple(r) for r in digits} == set(itertools.product(range(k), repeat=n))
    np.testing.assert_array_equal(np.asarray(exact.decode(jnp.int32(1), n, k)), [1, 0, 0, 0, 0])


def test_exact_refuses_instances_too_large_naming_the_limit():
    with pytest.raises(ValueError, match=r"4\^12.*exceeds the limit of 4194304.*N <= 11"):
        exact.check_size(12, 3)
    with pytest.raises(ValueError, match=r"exceeds the limit of 4194304.*N <= 11"):
        make("exact").init(jax.random.key(0), mecjax.Scenario(n_devices=12, n_servers=3))
    exact.check_size(11, 3)     # exactly at the limit: allowed
    assert exact.max_devices(3) == 11 and exact.max_devices(1) == 22


# --------------------------------------------------------------------------
# Game: greedy and best response.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("n", [8, 20])
def test_best_response_reaches_a_nash_equilibrium(n):
    s = mecjax.Scenario(n_devices=n, n_servers=3)
    prices = jnp.full((3,), s.price_init)
    obs_b = _reset_obs(s)(jax.random.split(jax.random.key(100 + n), 5))

    @jax.jit
    def run(obs):
        a, conv, rounds = game.best_response(obs, prices, s)
        own = jax.vmap(lambda i: game.own_costs(obs, a, i, prices, s))(jnp.arange(n))  # [N, M+1]
        return a, conv, rounds, own

    a, conv, rounds, own = jax.vmap(run)(obs_b)
    a, conv, own = np.asarray(a), np.asarray(conv), np.asarray(own, np.float64)
    assert conv.sum() >= 4, f"converged on {conv.sum()}/5 instances"
    assert (np.asarray(rounds) >= 1).all()
    for b in np.flatnonzero(conv):
        current = own[b, np.arange(n), a[b]][:, None]
        assert (own[b] >= current * (1 - 1e-6)).all()
    # Someone offloads somewhere: the equilibrium is not the trivial all-local.
    assert (a > 0).any()

    if n == 8:   # independent check through the public evaluate, one instance
        b = int(np.flatnonzero(conv)[0])
        obs = _unbatch(obs_b, b)
        for i in range(n):
            mine = float(env.evaluate(obs, env.Decision(jnp.asarray(a[b]), prices), s).cost[i])
            for o in range(s.n_servers + 1):
                trial = jnp.asarray(a[b]).at[i].set(o)
                c = float(env.evaluate(obs, env.Decision(trial, prices), s).cost[i])
                assert c >= mine * (1 - 2e-6), (i, o, c, mine)
                assert c == pytest.approx(own[b, i, o], rel=1e-5)


def test_best_response_from_all_local_also_converges_and_improves_everyone_it_moves(small):
    prices = jnp.full((3,), small.price_init)
    obs, _ = env.reset(jax.random.key(5), small)
    a, conv, rounds = jax.jit(lambda o: game.best_response(o, prices, small,
                                                           init=jnp.zeros(8, jnp.int32)))(obs)
    assert bool(conv) and int(rounds) >= 2   # started from local, someone moved, then a quiet round
    local = env.evaluate(obs, env.Decision(jnp.zeros(8, jnp.int32), prices), small).cost
    assert float(env.evaluate(obs, env.Decision(a, prices), small).cost.mean()) < float(local.mean())


def test_greedy_first_device_picks_its_cheapest_option_alone(small):
    prices = jnp.full((3,), small.price_init)
    obs_b = _reset_obs(small)(jax.random.split(jax.random.key(7), 6))
    perm = np.random.default_rng(1).permutation(8)
    greedy = jax.jit(lambda o, order: game.greedy(o, prices, small, order=order))
    picked_server = 0
    for b in range(6):
        obs = _unbatch(obs_b, b)
        order = jnp.arange(8) if b % 2 == 0 else jnp.asarray(perm)
        first = int(order[0])
        alone = [float(env.evaluate(obs, env.Decision(jnp.zeros(8, jnp.int32).at[first].set(o), prices),
                                    small).cost[first]) for o in range(4)]
        a = np.asarray(greedy(obs, order))
        assert a[first] == int(np.argmin(alone)), (b, alone, a)
        picked_server += a[first] > 0
        assert ((a >= 0) & (a <= 3)).all()
    assert picked_server > 0     # the check covers offloading choices, not only "local"


# --------------------------------------------------------------------------
# Pricing: UCB bandit, Stackelberg search, leader utility.
# --------------------------------------------------------------------------

def test_ucb_tries_every_arm_once_then_finds_each_servers_best_arm():
    m, levels, rounds = 3, 5, 2000
    rng = np.random.default_rng(0)
    means = rng.uniform(0.1, 0.5, (m, levels))
    best = np.array([4, 0, 2])
    means[np.arange(m), best] = 0.8
    means_j = jnp.asarray(means, jnp.float32)

    def body(state, k):
        arms = pricing.ucb_select(state)
        noise = 0.1 * jax.random.normal(k, (m,))
        rewards = jnp.clip(means_j[jnp.arange(m), arms] + noise, 0.0, 1.0)
        return pricing.ucb_update(state, arms, rewards), arms

    state, arms = jax.jit(lambda k: jax.lax.scan(body, pricing.ucb_init(m, levels),
                                                 jax.random.split(k, rounds)))(jax.random.key(0))
    arms = np.asarray(arms)
    for j in range(m):                                  # every arm once first, in some order
        assert sorted(arms[:levels, j]) == list(range(levels))
    counts = np.asarray(state.counts)
    np.testing.assert_array_equal(counts.sum(1), rounds)
    assert float(state.t) == rounds
    np.testing.assert_array_equal(counts.argmax(1), best)
    assert (counts[np.arange(m), best] > 0.6 * rounds).all(), counts
    # The running means estimate the arm means.
    np.testing.assert_allclose(np.asarray(state.means)[np.arange(m), best], 0.8, atol=0.02)


def test_ucb_update_running_mean_is_exact():
    st = pricing.ucb_init(2, 3)
    for arms, r in [((0, 2), (0.2, 1.0)), ((0, 2), (0.6, 0.0)), ((1, 2), (0.5, 0.5))]:
        st = pricing.ucb_update(st, jnp.asarray(arms), jnp.asarray(r))
    np.testing.assert_allclose(np.asarray(st.counts), [[2, 1, 0], [0, 0, 3]])
    np.testing.assert_allclose(np.asarray(st.means), [[0.4, 0.5, 0], [0, 0, 0.5]], atol=1e-6)


def _leader_utilities_by_hand(obs, offload, prices, s):
    out = env.evaluate(obs, env.Decision(offload, prices), s)
    executed, lat = np.asarray(out.offload), np.asarray(out.latency, np.float64)
    cycles = np.asarray(obs.task_cycles, np.float64)
    util = []
    for j in range(s.n_servers):
        on = executed == j + 1
        g = cycles[on].sum() * 1e-9
        energy = s.server_kappa * s.server_cpu_hz ** 2 * g * 1e9
        delay = lat[on].mean() if on.any() else 0.0
        util.append(float(prices[j]) * g - s.leader_lambda * energy - s.leader_mu * delay)
    return np.array(util)


def test_leader_utilities_match_eq15_by_hand(small):
    obs, _ = env.reset(jax.random.key(4), small)
    prices = jnp.asarray([0.3, 1.7, 0.9])
    for offload in ([1, 1, 2, 0, 0, 1, 2, 0], [1, 1, 1, 0, 0, 1, 0, 0], [0] * 8):   # idle servers too
        offload = jnp.asarray(offload, jnp.int32)
        got = np.asarray(pricing.leader_utilities(obs, offload, prices, small))
        np.testing.assert_allclose(got, _leader_utilities_by_hand(obs, offload, prices, small),
                                   rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(pricing.follower_costs(obs, offload, prices, small)),
                               np.asarray(env.evaluate(obs, env.Decision(offload, prices), small).cost),
                               rtol=1e-6)


def test_price_levels_span_the_range(small):
    lv = np.asarray(pricing.price_levels(small, 4))
    np.testing.assert_allclose(lv, [0.5, 1.0, 1.5, 2.0])


def test_stackelberg_prices_are_on_the_grid_and_a_leader_best_response(small):
    levels = np.asarray(pricing.price_levels(small, 5))
    obs_b = _reset_obs(small)(jax.random.split(jax.random.key(21), 3))
    sb = jax.jit(lambda o, p0: pricing.stackelberg_prices(o, small, n_levels=5, rounds=2, init_prices=p0))
    greedy = jax.jit(lambda o, p: game.greedy(o, p, small))
    for b in range(3):
        obs = _unbatch(obs_b, b)
        prices, response = sb(obs, jnp.full((3,), 0.77))   # off-grid start
        prices = np.asarray(prices)
        assert all(np.isclose(levels, pj, rtol=0, atol=0).any() for pj in prices), prices
        np.testing.assert_array_equal(np.asarray(response), np.asarray(greedy(obs, jnp.asarray(prices))))
        # The last leader to move plays a best response on the grid to the others' final prices.
        j = small.n_servers - 1
        utils = []
        for level in levels:
            trial = jnp.asarray(prices).at[j].set(level)
            follow = greedy(obs, trial)
            utils.append(_leader_utilities_by_hand(obs, follow, trial, small)[j])
        utils = np.array(utils)
        chosen = int(np.flatnonzero(levels == prices[j])[0])
        assert utils[chosen] >= utils.max() - 1e-5 * max(1.0, abs(utils.max())), (utils, prices)


# --------------------------------------------------------------------------
# QIO and PSO.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("options,qubits", [(2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4)])
def test_qio_qubits_per_device(options, qubits):
    assert qio.n_qubits(options) == qubits


def test_qio_ask_repairs_invalid_codes_and_covers_every_action():
    n_options, n = 5, 40
    state = qio.init(n, n_options)
    assert state.theta.shape == (30, n, 3)
    x = np.asarray(jax.jit(lambda k: jax.vmap(lambda kk: qio.ask(kk, state, n_options))(
        jax.random.split(k, 20)))(jax.random.key(0)))
    assert x.min() >= 0 and x.max() < n_options
    assert set(np.unique(x)) == set(range(n_options))


def _separable(n, k, key):
    table = jax.random.uniform(key, (n, k))
    fitness = lambda X: jnp.sum(table[jnp.arange(n), X], axis=-1)  # noqa: E731
    return table, fitness


def test_qio_best_is_monotone_and_angles_stay_in_bounds():
    n, k = 12, 4
    _, fit = _separable(n, k, jax.random.key(1))
    cfg = qio.QIOConfig()

    def gen(state, key):
        x = qio.ask(key, state, k)
        state = qio.tell(state, x, fit(x), k, cfg)
        return state, (state.best_fitness, state.theta.min(), state.theta.max(), fit(state.best_x[None])[0])

    state, (best, lo, hi, refit) = jax.jit(lambda key: jax.lax.scan(
        gen, qio.init(n, k, cfg), jax.random.split(key, 100)))(jax.random.key(2))
    best = np.asarray(best)
    assert (np.diff(best) <= 0).all()
    assert best[-1] < best[0]                                   # it did improve
    np.testing.assert_allclose(np.asarray(refit), best, rtol=1e-6)  # best_fitness is best_x's fitness
    assert float(lo.min()) >= cfg.theta_min - 1e-6
    assert float(hi.max()) <= math.pi / 2 - cfg.theta_min + 1e-6
    # The rotation really moved angles to both bounds (the bounds are reached, not vacuous).
    assert float(lo.min()) < math.pi / 4 - 0.5 and float(hi.max()) > math.pi / 4 + 0.5
    assert int(state.generation) == 100


def test_qio_seed_is_initial_best_and_biases_measurement():
    n, k = 10, 4
    seed = jax.random.randint(jax.random.key(3), (n,), 0, k)
    cfg = qio.QIOConfig()
    with pytest.raises(ValueError, match="seed_fitness"):
        qio.init(n, k, cfg, seed_x=seed)
    st = qio.init(n, k, cfg, seed_x=seed, seed_fitness=1.0)
    assert float(st.best_fitness) == 1.0
    np.testing.assert_array_equal(np.asarray(st.best_x), np.asarray(seed))
    x = qio.ask(jax.random.key(4), st, k)
    q = qio.n_qubits(k)
    same = (np.asarray(qio._bits(x, q)) == np.asarray(qio._bits(seed, q))[None]).mean()
    assert same == pytest.approx(cfg.seed_bias, abs=0.06)
    assert (np.asarray(x) == np.asarray(seed)[None]).mean() > 0.5   # P(all q bits) = 0.64
    # search() keeps a seed that is already optimal.
    table, fit = _separable(n, k, jax.random.key(5))
    opt = jnp.argmin(table, axis=-1).astype(jnp.int32)
    x_best, f_best = qio.search(jax.random.key(6), fit, n, k, qio.QIOConfig(iterations=5), seed_x=opt)
    assert float(f_best) == pytest.approx(float(table.min(-1).sum()), rel=1e-6)
    np.testing.assert_array_equal(np.asarray(x_best), np.asarray(opt))


def test_qio_manual_loop_keeps_a_better_seed():
    n, k = 10, 4
    table, fit = _separable(n, k, jax.random.key(5))
    opt = jnp.argmin(table, axis=-1).astype(jnp.int32)
    st = qio.init(n, k, seed_x=opt, seed_fitness=fit(opt[None])[0])
    x = qio.ask(jax.random.key(0), st, k)
    x = jnp.where((x == opt[None]).all(-1, keepdims=True), (x + 1) % k, x)  # population without the seed
    st = qio.tell(st, x, fit(x), k)
    np.testing.assert_array_equal(np.asarray(st.best_x), np.asarray(opt))


def _separable_success(search_fn, n, k, trials):
    keys = jax.random.split(jax.random.key(42), trials)

    def one(key):
        k1, k2 = jax.random.split(key)
        table, fit = _separable(n, k, k1)
        _, f = search_fn(k2, fit)
        return f, table.min(-1).sum()

    f, opt = jax.jit(jax.vmap(one))(keys)
    return np.isclose(np.asarray(f), np.asarray(opt), rtol=1e-6)


def test_qio_finds_the_optimum_of_a_separable_objective():
    n, k = 10, 4
    ok = _separable_success(lambda key, fit: qio.search(key, fit, n, k), n, k, 10)
    assert ok.sum() >= 8, ok


def test_qio_near_exact_and_better_than_random_search():
    s = mecjax.Scenario(n_devices=8, n_servers=3)
    prices = jnp.full((3,), s.price_init)
    obs_b = _reset_obs(s)(jax.random.split(jax.random.key(77), 16))

    def one(obs, key):
        k1, k2 = jax.random.split(key)
        fit = lambda X: objective.batch_mean_cost(obs, X, prices, s)  # noqa: E731
        _, f_qio = qio.search(k1, fit, s.n_devices, s.n_options)
        _, f_exact = exact.exact_offload(obs, prices, s)
        rand = jax.random.randint(k2, (30 * 100, s.n_devices), 0, s.n_options)
        return f_qio, f_exact, fit(rand).min()

    f_qio, f_exact, f_rand = map(np.asarray, jax.jit(jax.vmap(one))(obs_b, jax.random.split(jax.random.key(8), 16)))
    gap = f_qio / f_exact - 1
    assert (gap >= -1e-5).all()                 # nothing beats the exhaustive optimum
    assert np.median(gap) <= 0.01, gap
    assert f_qio.mean() < f_rand.mean(), (f_qio.mean(), f_rand.mean())


def test_pso_best_is_monotone_and_confidences_stay_on_the_floored_simplex():
    n, k = 12, 4
    _, fit = _separable(n, k, jax.random.key(1))
    cfg = pso.PSOConfig()

    def it(state, key):
        k1, k2 = jax.random.split(key)
        x = pso.ask(k1, state)
        state = pso.tell(k2, state, x, fit(x), cfg)
        return state, (state.best_fitness, state.confidence.min(),
                       jnp.abs(state.confidence.sum(1) - 1).max(), x.min(), x.max())

    state, (best, cmin, sum_err, xmin, xmax) = jax.jit(lambda key: jax.lax.scan(
        it, pso.init(n, k, cfg), jax.random.split(key, 100)))(jax.random.key(2))
    best = np.asarray(best)
    assert (np.diff(best) <= 0).all() and best[-1] < best[0]
    assert float(sum_err.max()) < 1e-5
    # Each entry is clipped to >= floor, then divided by a sum of at most k entries <= 1.
    assert float(cmin.min()) >= cfg.floor / k * (1 - 1e-5)
    assert int(xmin.min()) >= 0 and int(xmax.max()) <= k - 1
    np.testing.assert_allclose(float(fit(state.best_x[None])[0]), best[-1], rtol=1e-6)
    # Personal bests are at least as good as the global best's history says.
    assert float(state.personal_f.min()) == pytest.approx(best[-1])


def test_pso_finds_the_optimum_of_a_separable_objective():
    n, k = 10, 4
    ok = _separable_success(lambda key, fit: pso.search(key, fit, n, k), n, k, 10)
    assert ok.sum() >= 8, ok


def test_qio_personal_attractor_migrates_the_global_best():
    """Han-Kim variant: individuals rotate towards their own bests, and every
    migration_period generations the global best replaces them."""
    n, k = 10, 4
    table, fit = _separable(n, k, jax.random.key(8))
    cfg = qio.QIOConfig(attractor="personal", migration_period=3)
    st = qio.init(n, k, cfg)
    for g in range(3):
        x = qio.ask(jax.random.key(g), st, k)
        st = qio.tell(st, x, fit(x), k, cfg)
        if g < 2:
            assert len({tuple(r) for r in np.asarray(st.personal_x).tolist()}) > 1
    np.testing.assert_array_equal(np.asarray(st.personal_x),
                                  np.broadcast_to(np.asarray(st.best_x), st.personal_x.shape))
    with pytest.raises(ValueError, match="attractor"):
        qio.tell(st, x, fit(x), k, qio.QIOConfig(attractor="nope"))
