"""The server-level descents: DT-MEC's eq. 22 descent (mecjax.optim.plan_descent) and the
counted best response (mecjax.optim.game), each against the path that evaluates whole
assignments."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import mecjax
from mecjax.config import as_params
from mecjax.learners import twin
from mecjax.optim import coordinate, game, lookahead, plan_descent
from mecjax.schedulers.base import fixed_prices

from conftest import QUICK_COMPILE

H = 3
# Small batteries: devices are forced to offload in some slots and moves flip that, so the
# descent's guarded moves (simulated, then the state rebuilt) are exercised.
LOW = mecjax.Scenario(n_devices=16, n_servers=3, battery_capacity_j=0.3, battery_init_min=0.0,
                      wan_delay_s=(0.0, 0.05, 0.0))
P = as_params(LOW)
PRICES = fixed_prices(P)
N_INSTANCES = 6


def _instance(key):
    """An observation, coupled predicted slots (the cycles vary between slots), their
    plan terms, the eq. 22 simulation and a start plan (the myopic best response held)."""
    obs, _ = mecjax.env.reset(key, P)
    slots = twin.persistence_slots(obs, H)
    slots = slots.replace(task_cycles=slots.task_cycles * jnp.array([1.0, 1.7, 0.6])[:, None])
    terms = lookahead.horizon_terms(obs, slots, P, "equal")
    t = plan_descent.plan_terms(obs, slots, terms, PRICES, P)

    def simulate(plan):
        return lookahead.plan_mean_cost(obs, slots, plan, PRICES, P, "equal", terms)

    myopic, _, _ = game.best_response(obs, PRICES, P, max_rounds=5)
    return t, simulate, lookahead.as_plan(myopic, H)


# QUICK_COMPILE: a large program that runs for milliseconds; its values are compared with
# tolerances or with each other (both descents in the same program)
@partial(jax.jit, compiler_options=QUICK_COMPILE)
@jax.vmap
def _checks(key):
    t, simulate, start = _instance(key)
    # 1. every (slot, device) pair's option values from the aggregates vs the simulation
    plan = jax.random.randint(jax.random.fold_in(key, 1), (H, P.n_devices), 0, P.n_servers + 1)
    state = plan_descent.plan_state(t, plan, P)
    value = plan_descent.state_value(t, state, P)
    options = jnp.arange(P.n_servers + 1)

    def pair(flat):
        k, i = flat // P.n_devices, flat % P.n_devices
        fast, unsafe, _ = plan_descent.option_values(t, state, k, i, value, P)
        simulated = jax.vmap(lambda o: simulate(plan.at[k, i].set(o)))(options)
        return fast, unsafe, simulated

    fast, unsafe, simulated = jax.vmap(pair)(jnp.arange(H * P.n_devices))
    # 2. a safe move's incremental state vs the state rebuilt from the moved plan
    k, i = 1, 3
    fast_ki, unsafe_ki, moves = plan_descent.option_values(t, state, k, i, value, P)
    o = jnp.argmax(jnp.where(unsafe_ki, -jnp.inf, jnp.arange(P.n_servers + 1) != plan[k, i]))
    moved_plan = plan.at[k, i].set(o)
    applied = plan_descent.apply_move(t, state, moved_plan, k, i, moves, o, P)
    rebuilt = plan_descent.plan_state(t, moved_plan, P)
    # 3. the descent vs the one that simulates the horizon for every option
    fast_plan, _, fast_conv = plan_descent.descend(t, start, P, jax.vmap(simulate), 10)
    slow_plan, slow_value, _, slow_conv = coordinate.coordinate_descent(
        simulate, start, P.n_servers + 1, 10)
    forced = (plan_descent.forced(t, applied), plan_descent.forced(t, rebuilt))
    return (value, simulate(plan), fast, unsafe, simulated, unsafe_ki[o], applied, rebuilt,
            forced, moved_plan, fast_plan, fast_conv, slow_plan, slow_conv, simulate(start),
            simulate(fast_plan), slow_value)


def test_plan_descent_prices_moves_like_the_simulation_and_matches_its_descent():
    (value, simulated_value, fast, unsafe, simulated, chosen_unsafe, applied, rebuilt,
     (applied_forced, rebuilt_forced), moved_plan, fast_plan, fast_conv, slow_plan, slow_conv, start_value, fast_value,
     slow_value) = jax.tree.map(np.asarray, _checks(jax.random.split(jax.random.key(3),
                                                                      N_INSTANCES)))
    np.testing.assert_allclose(value, simulated_value, rtol=2e-6)
    # the aggregates price every safe option as the simulation does
    safe = ~unsafe
    assert safe.mean() > 0.8
    np.testing.assert_allclose(fast[safe], simulated[safe], rtol=2e-6)
    # the guard is needed: some guarded options' aggregate values are wrong
    wrong = np.abs(fast - simulated) > 1e-5 * np.abs(simulated)
    assert wrong.any() and not (wrong & safe).any()
    # an incremental move leaves the state a rebuild from the plan gives
    assert not chosen_unsafe.any()
    np.testing.assert_array_equal(applied.run, rebuilt.run)
    local = moved_plan == 0
    np.testing.assert_array_equal(applied_forced[local], rebuilt_forced[local])
    for name in ("count", "unit", "edge", "work", "local", "energy", "battery"):
        np.testing.assert_allclose(getattr(applied, name), getattr(rebuilt, name),
                                   rtol=1e-5, atol=1e-7, err_msg=name)
    # the descent makes the same moves as the simulating one, and improves on its start
    np.testing.assert_array_equal(fast_plan, slow_plan)
    np.testing.assert_array_equal(fast_conv, slow_conv)
    np.testing.assert_allclose(fast_value, slow_value, rtol=1e-6)
    assert (fast_value <= start_value).all() and (fast_value < start_value).any()


def test_plan_descent_covers_the_model_it_prices():
    assert plan_descent.supported(LOW, "equal")
    assert not plan_descent.supported(LOW, "optimal")
    assert not plan_descent.supported(mecjax.Scenario(battery_hard=True), "equal")
    assert not plan_descent.supported(mecjax.Scenario(device_queue=True), "equal")


def test_counted_best_response_and_greedy_equal_the_general_path():
    """The counted dynamics (own costs from the server counts, O(M) per device) make the
    same choices as the path that evaluates the whole assignment for every option, with
    forced devices, hard batteries, device queues and WAN delays; a best response from
    greedy (greedy's pass as the first round of its loop) is greedy, then the rounds."""
    for s in (LOW, mecjax.Scenario(n_devices=14, n_servers=3, battery_hard=True,
                                   device_queue=True, battery_capacity_j=0.2,
                                   battery_init_min=0.0, wan_delay_s=(0.0, 0.1, 0.0))):
        p = as_params(s)
        prices = fixed_prices(p)

        @partial(jax.jit, compiler_options=QUICK_COMPILE)
        @jax.vmap
        def both(key):
            obs, _ = mecjax.env.reset(key, p)
            general = game.slot_costs_fn(obs, prices, p)
            backwards = jnp.arange(p.n_devices)[::-1]
            greedy = game.greedy(obs, prices, p)
            return (game.best_response(obs, prices, p), game.best_response(
                obs, prices, p, costs_fn=general), greedy,
                game.greedy(obs, prices, p, costs_fn=general),
                game.best_response(obs, prices, p, init=greedy),
                game.greedy(obs, prices, p, order=backwards),
                game.greedy(obs, prices, p, order=backwards, costs_fn=general),
                jnp.sum(obs.battery < p.kappa * obs.cpu_freq**2 * obs.task_cycles))

        (counted, general, greedy_counted, greedy_general, from_greedy, backwards_counted,
         backwards_general, forced) = jax.tree.map(
            np.asarray, both(jax.random.split(jax.random.key(11), 6)))
        assert forced.sum() > 0
        for a, b, c in zip(counted, general, from_greedy):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(greedy_counted, greedy_general)
        np.testing.assert_array_equal(backwards_counted, backwards_general)
        assert (backwards_counted != greedy_counted).any()   # the order matters here
        assert (counted[0] > 0).any()
