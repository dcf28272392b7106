"""The per-view candidate terms (mecjax.optim.objective) evaluate a candidate as the
environment does: the allocation's decision passed through ``evaluate``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import env
from mecjax.optim import allocation, objective


# The default model, and every extension the terms must carry (hard battery: failures;
# device queues; a remote server's WAN delay); both allocation rules in one program each.
@pytest.mark.parametrize("options", [
    {},
    {"battery_hard": True, "battery_capacity_j": 0.05, "battery_init_min": 0.0,
     "device_queue": True, "wan_delay_s": (0.0, 0.0, 0.04)},
])
def test_candidates_from_terms_equal_the_environment_evaluating_their_decision(options):
    s = mecjax.Scenario(n_devices=12, n_servers=3, **options)
    obs, state = env.reset(jax.random.key(3), s)
    # A non-trivial state: queued work at the servers and devices, some empty batteries.
    obs = obs.replace(backlog=jnp.array([0.0, 4e9, 1.5e10]),
                      device_backlog=jnp.linspace(0.0, 2e8, 12),
                      battery=obs.battery.at[:3].set(0.0))
    prices = jnp.array([0.2, 0.9, 1.7])
    cands = jax.random.randint(jax.random.key(4), (64, 12), 0, 4)

    @jax.jit
    def both(cands):
        out = {}
        for rule in objective.ALLOCATIONS:
            def slow(a):
                dec = (allocation.allocate(obs, a, prices, s) if rule == "optimal"
                       else env.Decision(a, prices))
                return env.evaluate(obs, dec, s)

            out[rule] = (objective.batch_outcomes(obs, cands, prices, s, rule),
                         jax.vmap(slow)(cands),
                         objective.population_cost_fn(obs, prices, s, rule)(cands))
        return out

    for rule, (fast, slow, fitness) in both(cands).items():
        np.testing.assert_array_equal(fast.offload, slow.offload)
        np.testing.assert_array_equal(fast.failed, slow.failed)
        for field in ("latency", "energy", "payment", "cost", "rate"):
            np.testing.assert_allclose(getattr(fast, field), getattr(slow, field), rtol=2e-6,
                                       atol=1e-12, err_msg=f"{rule} {field}")
        np.testing.assert_allclose(fitness, jnp.mean(slow.cost, -1), rtol=2e-6, err_msg=rule)
    if s.battery_hard:   # the comparison covered failures and forced offloads
        assert np.any(np.asarray(both(cands)["optimal"][1].failed))
