"""Scenario: Table 1 defaults, validation, immutability, pytree/jit/vmap behaviour
(mecjax.config; docs/model.md)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mecjax.config import STATIC_FIELDS, EnvParams, Scenario, as_params
from mecjax.env import Decision, evaluate, reset, step

# --------------------------------------------------------------------------
# Table 1 defaults
# --------------------------------------------------------------------------


def test_default_is_paper_table_1():
    s = Scenario.default()
    assert s == Scenario()
    assert s.n_devices == 50
    assert s.n_servers == 3
    assert s.n_options == 4
    assert (s.task_bits_min, s.task_bits_max) == (1e4, 1e6)
    assert (s.task_cycles_min, s.task_cycles_max) == (1e6, 1e8)
    assert s.bandwidth_hz == 10e6
    assert s.noise_w == 1e-13
    assert s.server_cpu_hz == 10e9
    assert (s.device_cpu_min_hz, s.device_cpu_max_hz) == (1e9, 2e9)
    # docs/model.md, the other documented defaults.
    assert s.slot_s == 1.0
    assert s.area_m == 500.0
    assert (s.pathloss_db_at_1km, s.pathloss_slope_db) == (128.1, 37.6)
    assert (s.tx_power_min_w, s.tx_power_max_w) == (0.1, 0.5)
    assert s.kappa == 1e-27
    assert s.mobility is False
    assert s.noise_rng == "hash"


# --------------------------------------------------------------------------
# Validation: every validated field, message names the field and the range.
# --------------------------------------------------------------------------

POSITIVE = ("slot_s", "area_m", "min_distance_m", "task_bits_min", "task_cycles_min",
            "load_period_slots", "bandwidth_hz", "noise_w", "tx_power_min_w",
            "server_cpu_hz", "device_cpu_min_hz", "kappa", "battery_capacity_j",
            "deadline_min_s")
NON_NEGATIVE = ("server_radius_m", "mobility_step_m", "load_amplitude", "burst_std",
                "task_noise", "server_kappa", "harvest_max_j", "price_min",
                "alpha", "beta", "gamma", "leader_lambda", "leader_mu", "failure_cost")
MIN_MAX = (("task_bits_min", "task_bits_max"), ("task_cycles_min", "task_cycles_max"),
           ("tx_power_min_w", "tx_power_max_w"), ("device_cpu_min_hz", "device_cpu_max_hz"),
           ("price_min", "price_max"), ("deadline_min_s", "deadline_max_s"))

# (changes, field named in the message, text of the allowed range in the message)
INVALID: list[tuple[dict, str, str]] = [
    (dict(n_devices=0), "n_devices", ">= 1"),
    (dict(n_devices=-3), "n_devices", ">= 1"),
    (dict(n_devices=2.5), "n_devices", "an int"),
    (dict(n_devices=True), "n_devices", "an int"),
    (dict(n_devices="50"), "n_devices", "an int"),
    (dict(n_servers=0), "n_servers", ">= 1"),
    (dict(n_servers=False), "n_servers", "an int"),
    (dict(horizon=0), "horizon", ">= 1"),
    (dict(horizon=10.0), "horizon", "an int"),
    (dict(knn=-1), "knn", ">= 0"),
    (dict(knn=True), "knn", "an int"),
    (dict(mobility="yes"), "mobility", "a bool"),
    (dict(mobility=1), "mobility", "a bool"),
    (dict(noise_rng="numpy"), "noise_rng", "one of 'hash', 'jax'"),
    (dict(noise_rng="threefry"), "noise_rng", "one of 'hash', 'jax'"),
    (dict(noise_rng=None), "noise_rng", "one of 'hash', 'jax'"),
    (dict(noise_rng=["hash"]), "noise_rng", "one of 'hash', 'jax'"),
    (dict(battery_hard=1), "battery_hard", "a bool"),
    (dict(device_queue="no"), "device_queue", "a bool"),
    # per-server fields: a float or one finite value per server
    (dict(server_cpu_hz=(1e10, 2e10)), "server_cpu_hz", "a tuple of n_servers = 3 floats"),
    (dict(bandwidth_hz=[1e7, 1e7, 1e7, 1e7]), "bandwidth_hz", "a tuple of n_servers = 3"),
    (dict(server_cpu_hz=(1e10, float("nan"), 1e10)), "server_cpu_hz", "finite numbers"),
    (dict(bandwidth_hz=(1e7, "1e7", 1e7)), "bandwidth_hz", "finite numbers"),
    (dict(server_cpu_hz=(1e10, 0.0, 1e10)), "server_cpu_hz", "> 0 (every server)"),
    (dict(wan_delay_s=-0.1), "wan_delay_s", ">= 0"),
    (dict(wan_delay_s=(0.0, -0.1, 0.0)), "wan_delay_s", ">= 0 (every server)"),
    (dict(wan_delay_s=float("inf")), "wan_delay_s", "a finite number"),
    (dict(wan_delay_s=0.05), "wan_delay_s", "0 for at least one server"),
    (dict(wan_delay_s=(0.05, 0.05, 0.05)), "wan_delay_s", "0 for at least one server"),
    # fixed positions: one (x, y) pair per server / device, inside the area
    (dict(server_xy=((0.0, 0.0), (1.0, 1.0))), "server_xy", "n_servers = 3 (x, y) pairs"),
    (dict(server_xy=((0.0, 0.0), (1.0, 1.0), (2.0,))), "server_xy", "(x, y) pairs"),
    (dict(server_xy=((0.0, 0.0), (1.0, 1.0), (2.0, 501.0))), "server_xy", "inside the area"),
    (dict(server_xy=((0.0, 0.0), (1.0, -1.0), (2.0, 2.0))), "server_xy", "inside the area"),
    (dict(device_xy=((1.0, 1.0),) * 49), "device_xy", "n_devices = 50 (x, y) pairs"),
    (dict(device_xy=((1.0, 1.0),) * 49 + ((float("nan"), 1.0),)), "device_xy", "finite"),
    (dict(device_xy=((1.0, 1.0),) * 49 + ((600.0, 1.0),)), "device_xy", "inside the area"),
    (dict(device_xy="centre"), "device_xy", "(x, y) pairs"),
]
for _f in POSITIVE:
    INVALID.append(({_f: 0.0}, _f, "> 0"))
    INVALID.append(({_f: -1.0}, _f, "> 0"))
for _f in NON_NEGATIVE:
    INVALID.append(({_f: -0.5}, _f, ">= 0"))
INVALID += [
    (dict(bandwidth_hz=float("nan")), "bandwidth_hz", "a finite number"),
    (dict(bandwidth_hz=float("inf")), "bandwidth_hz", "a finite number"),
    (dict(noise_w=float("-inf")), "noise_w", "a finite number"),
    (dict(alpha=float("nan")), "alpha", "a finite number"),
    (dict(pathloss_db_at_1km=float("nan")), "pathloss_db_at_1km", "a finite number"),
    (dict(pathloss_slope_db=float("inf")), "pathloss_slope_db", "a finite number"),
    (dict(slot_s=True), "slot_s", "a finite number"),
    (dict(slot_s="1.0"), "slot_s", "a finite number"),
    (dict(kappa=None), "kappa", "a finite number"),
]
# min > max: raising min above max, or lowering max below min, must name the min field.
_D = Scenario()
for _lo, _hi in MIN_MAX:
    INVALID.append(({_lo: 2.0 * getattr(_D, _hi) + 1.0}, _lo, f"<= {_hi}"))
    if _lo == "price_min":  # price_min defaults to 0: lower price_max below a positive min
        INVALID.append(({"price_min": 0.4, "price_init": 0.4, "price_max": 0.3}, _lo,
                        f"<= {_hi}"))
    else:
        INVALID.append(({_hi: getattr(_D, _lo) / 2.0}, _lo, f"<= {_hi}"))
INVALID += [
    (dict(price_init=2.5), "price_init", "in [price_min, price_max]"),
    (dict(price_init=-0.1), "price_init", "in [price_min, price_max]"),
    (dict(price_min=0.6, price_init=0.5), "price_init", "in [price_min, price_max]"),
    (dict(price_max=0.4, price_init=0.5), "price_init", "in [price_min, price_max]"),
    (dict(load_mean=1.5), "load_mean", "in [0, 1]"),
    (dict(load_mean=-0.1), "load_mean", "in [0, 1]"),
    (dict(battery_init_min=1.01), "battery_init_min", "in [0, 1]"),
    (dict(battery_init_min=-0.01), "battery_init_min", "in [0, 1]"),
    (dict(burst_rho=1.0), "burst_rho", "in [0, 1)"),
    (dict(burst_rho=-0.2), "burst_rho", "in [0, 1)"),
    (dict(fading_rho=-0.1), "fading_rho", "in [0, 1)"),
    (dict(fading_rho=1.0), "fading_rho", "in [0, 1)"),
    (dict(server_radius_m=251.0), "server_radius_m", "area_m / 2"),
    (dict(area_m=200.0), "server_radius_m", "area_m / 2"),
    (dict(alpha=0.0, beta=0.0, gamma=0.0), "alpha", "alpha + beta + gamma > 0"),
]


def _id(case):
    return "-".join(f"{k}={v!r}" for k, v in case[0].items())


@pytest.mark.parametrize("changes, field, allowed", INVALID, ids=[_id(c) for c in INVALID])
def test_invalid_field_raises_naming_field_and_range(changes, field, allowed):
    with pytest.raises(ValueError) as ei:
        Scenario(**changes)
    msg = str(ei.value)
    assert f"Scenario.{field}=" in msg, msg
    assert allowed in msg, msg
    assert "must be" in msg, msg


@pytest.mark.parametrize("changes, field, allowed", INVALID, ids=[_id(c) for c in INVALID])
def test_replace_validates(changes, field, allowed):
    base = Scenario(n_devices=6)
    with pytest.raises(ValueError, match=f"Scenario\\.{field}="):
        base.replace(**changes)


def test_every_validated_float_field_is_covered():
    """The parametrisation above touches every non-static field of Scenario."""
    covered = {f for changes, f, _ in INVALID} | {k for changes, _, _ in INVALID for k in changes}
    floats = {f.name for f in dataclasses.fields(Scenario)} - set(STATIC_FIELDS)
    missing = floats - covered - {"task_bits_max", "task_cycles_max", "tx_power_max_w",
                                  "device_cpu_max_hz"}
    assert not missing, missing
    # And a non-finite value is rejected for every float field.
    for name in sorted(floats):
        with pytest.raises(ValueError, match=f"Scenario\\.{name}=nan"):
            Scenario(**{name: float("nan")})


@pytest.mark.parametrize("changes", [
    dict(knn=0),
    dict(n_devices=1, n_servers=1, horizon=1),
    dict(load_mean=0.0), dict(load_mean=1.0),
    dict(battery_init_min=0.0), dict(battery_init_min=1.0),
    dict(burst_rho=0.0), dict(fading_rho=0.0), dict(fading_rho=0.999),
    dict(server_radius_m=250.0), dict(server_radius_m=0.0),
    dict(alpha=0.0, beta=0.0, gamma=0.1),
    dict(price_min=0.0, price_max=0.0, price_init=0.0),
    dict(price_init=2.0), dict(price_init=0.0),
    dict(task_bits_min=1e5, task_bits_max=1e5),
    dict(server_kappa=0.0, harvest_max_j=0.0, mobility_step_m=0.0, task_noise=0.0),
    dict(mobility=True),
    dict(noise_rng="jax"), dict(noise_rng=np.str_("jax")),
    dict(bandwidth_hz=20_000_000),  # an int for a float field is fine
    dict(pathloss_db_at_1km=-5.0),  # only required to be finite
    dict(deadline_min_s=0.1, deadline_max_s=0.1), dict(failure_cost=0.0),
    dict(battery_hard=True, device_queue=True),
    dict(server_cpu_hz=(1e10, 2e10, 4e10), bandwidth_hz=(1e7, 2e7, 5e6)),
    dict(wan_delay_s=(0.0, 0.0, 0.05)), dict(wan_delay_s=0.0),
    dict(server_xy=((0.0, 0.0), (500.0, 500.0), (250.0, 0.0))),
    dict(device_xy=tuple((float(i), 500.0 - i) for i in range(50))),
])
def test_boundary_values_are_accepted(changes):
    s = Scenario(**changes)
    for k, v in changes.items():
        assert getattr(s, k) == v


# --------------------------------------------------------------------------
# Frozen, hashable, replace, params, as_params
# --------------------------------------------------------------------------


def test_frozen():
    s = Scenario(n_devices=6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_devices = 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.bandwidth_hz = 1.0
    assert s.n_devices == 6 and s.bandwidth_hz == 10e6


def test_hashable_and_value_equality():
    a, b = Scenario(n_devices=6), Scenario(n_devices=6)
    c = Scenario(n_devices=6, bandwidth_hz=5e6)
    assert a == b and hash(a) == hash(b)
    assert a != c
    d = {a: 1, c: 2}
    assert d[b] == 1 and len(d) == 2
    assert len({a, b, c}) == 2


def test_replace_returns_new_validated_scenario():
    s = Scenario(n_devices=6)
    r = s.replace(bandwidth_hz=20e6, n_servers=2)
    assert isinstance(r, Scenario)
    assert (r.bandwidth_hz, r.n_servers, r.n_devices) == (20e6, 2, 6)
    assert (s.bandwidth_hz, s.n_servers) == (10e6, 3)  # the original is untouched
    with pytest.raises(ValueError, match="Scenario.n_devices"):
        s.replace(n_devices=0)


def test_params_float32_leaves_and_static_sizes():
    s = Scenario(n_devices=6, n_servers=2, horizon=7, knn=2, bandwidth_hz=3e6, kappa=2e-27)
    p = s.params()
    assert isinstance(p, EnvParams)
    assert (p.n_devices, p.n_servers, p.horizon, p.knn, p.mobility) == (6, 2, 7, 2, False)
    assert p.n_options == 3
    leaves = jax.tree.leaves(p)
    n_float_fields = len(dataclasses.fields(Scenario)) - len(STATIC_FIELDS)
    assert len(leaves) == n_float_fields
    for leaf in leaves:
        assert isinstance(leaf, jax.Array)
        assert leaf.dtype == jnp.float32
        assert leaf.shape == ()
    # Values are the scenario's, rounded to float32.
    for f in dataclasses.fields(Scenario):
        if f.name not in STATIC_FIELDS:
            assert float(getattr(p, f.name)) == float(np.float32(getattr(s, f.name))), f.name
    # Sizes are static: they live in the treedef, not in the leaves.
    other = Scenario(n_devices=7, n_servers=2, horizon=7, knn=2).params()
    assert jax.tree.structure(p) != jax.tree.structure(other)
    same_sizes = Scenario(n_devices=6, n_servers=2, horizon=7, knn=2, bandwidth_hz=9e6).params()
    assert jax.tree.structure(p) == jax.tree.structure(same_sizes)


def test_env_params_has_exactly_the_scenario_fields():
    """One field list: EnvParams takes Scenario's fields, in order, static ones as metadata."""
    names = [f.name for f in dataclasses.fields(Scenario)]
    assert [f.name for f in dataclasses.fields(EnvParams)] == names
    for f in dataclasses.fields(EnvParams):
        assert f.metadata["pytree_node"] is (f.name not in STATIC_FIELDS), f.name
    p = Scenario(n_devices=6, noise_rng="jax").params()
    assert p.noise_rng == "jax" and isinstance(p.noise_rng, str)
    # Leaves come in Scenario order; the generator is static, in the treedef.
    leaf_names = [n for n in names if n not in STATIC_FIELDS]
    for name, leaf in zip(leaf_names, jax.tree.leaves(p)):
        assert float(leaf) == float(np.float32(getattr(Scenario(), name))), name
    assert jax.tree.structure(p) != jax.tree.structure(Scenario(n_devices=6).params())
    assert p.replace(noise_rng="hash").noise_rng == "hash"


def test_scenario_is_a_leafless_pytree():
    s = Scenario(n_devices=6)
    assert jax.tree.leaves(s) == []
    assert jax.tree.map(lambda x: x, s) == s
    assert jax.tree.structure(s) != jax.tree.structure(s.replace(bandwidth_hz=1e6))


def test_as_params_accepts_both_and_rejects_others():
    s = Scenario(n_devices=6)
    p = s.params()
    assert as_params(p) is p
    q = as_params(s)
    assert isinstance(q, EnvParams)
    assert jax.tree.structure(q) == jax.tree.structure(p)
    for a, b in zip(jax.tree.leaves(q), jax.tree.leaves(p)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    for bad in (None, {"n_devices": 6}, dataclasses.asdict(s), "scenario", 3, [s]):
        with pytest.raises(TypeError, match="Scenario or EnvParams"):
            as_params(bad)


# --------------------------------------------------------------------------
# jit with a Scenario passed directly
# --------------------------------------------------------------------------

_reset_jit = jax.jit(reset)


def _assert_trees_close(a, b, rtol=1e-6):
    """Leafwise close to ``rtol`` of each leaf's largest value: a Scenario folds its
    constants at compile time, EnvParams reads them at run time, so results differ
    by float32 rounding, which is large relative to entries near 0 of a cancelling
    sum (fading, rho g + sqrt(1 - rho^2) e)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale)


def test_jit_reset_with_scenario_matches_params():
    s = Scenario(n_devices=6)
    key = jax.random.key(3)
    obs_s, st_s = _reset_jit(key, s)
    obs_p, st_p = _reset_jit(key, s.params())
    _, st_eager = reset(key, s.params())
    assert st_s.positions.shape == (6, 2) and st_s.gain.shape == (6, 3)
    _assert_trees_close(st_s, st_p)
    _assert_trees_close(obs_s, obs_p)
    _assert_trees_close(st_s, st_eager)


def test_jit_reset_scenario_is_static_not_stale():
    """A changed Scenario field must retrace, not reuse the cached computation."""
    key = jax.random.key(3)
    _, a = _reset_jit(key, Scenario(n_devices=6))
    _, b = _reset_jit(key, Scenario(n_devices=6, area_m=1000.0))
    _, c = _reset_jit(key, Scenario(n_devices=7))
    np.testing.assert_allclose(np.asarray(b.positions), 2 * np.asarray(a.positions), rtol=1e-6)
    assert c.positions.shape == (7, 2)


# --------------------------------------------------------------------------
# vmap over EnvParams leaves: a bandwidth sweep
# --------------------------------------------------------------------------

BANDWIDTHS = [1e6, 5e6, 10e6, 40e6]


def _sweep_setup():
    s = Scenario(n_devices=6)
    _, state = reset(jax.random.key(1), s)
    decision = Decision(offload=jnp.array([0, 1, 2, 3, 1, 2], jnp.int32),
                        prices=jnp.array([0.5, 1.0, 1.5], jnp.float32))
    p = s.params()
    batched = p.replace(bandwidth_hz=jnp.array(BANDWIDTHS, jnp.float32))
    axes = jax.tree.map(lambda _: None, p).replace(bandwidth_hz=0)
    return s, state, decision, batched, axes


def test_vmap_bandwidth_sweep_matches_separate_runs():
    s, state, decision, batched, axes = _sweep_setup()
    out = jax.vmap(lambda p: evaluate(state, decision, p), in_axes=(axes,))(batched)
    assert out.latency.shape == (len(BANDWIDTHS), 6)
    for i, b in enumerate(BANDWIDTHS):
        ref = evaluate(state, decision, Scenario(n_devices=6, bandwidth_hz=b))
        for name in ("latency", "energy", "payment", "cost", "rate"):
            np.testing.assert_allclose(np.asarray(getattr(out, name)[i]),
                                       np.asarray(getattr(ref, name)), rtol=2e-5,
                                       err_msg=f"{name} at bandwidth {b}")
        np.testing.assert_array_equal(np.asarray(out.offload[i]), np.asarray(ref.offload))
    # The sweep is not degenerate: more bandwidth, strictly more rate for offloaders.
    rate = np.asarray(out.rate)[:, 1:]
    assert np.all(np.diff(rate, axis=0) > 0)
    assert np.all(np.asarray(out.rate)[:, 0] == 0)  # device 0 computes locally


def test_vmap_bandwidth_sweep_of_step_matches_separate_runs():
    s, state, decision, batched, axes = _sweep_setup()
    key = jax.random.key(2)
    sweep = jax.jit(jax.vmap(step, in_axes=(None, None, None, axes)))
    _, _, reward, _, info = sweep(key, state, decision, batched)
    # Unjitted vmap (the eager path, with batched params) gives the same.
    _, _, reward_eager, _, _ = jax.vmap(lambda p: step(key, state, decision, p),
                                        in_axes=(axes,))(batched)
    np.testing.assert_allclose(np.asarray(reward_eager), np.asarray(reward), rtol=2e-5)
    for i, b in enumerate(BANDWIDTHS):
        _, _, r, _, inf = step(key, state, decision, Scenario(n_devices=6, bandwidth_hz=b))
        np.testing.assert_allclose(float(reward[i]), float(r), rtol=2e-5)
        np.testing.assert_allclose(np.asarray(info["latency"][i]), np.asarray(inf["latency"]),
                                   rtol=2e-5)
    assert len(set(np.asarray(reward).tolist())) == len(BANDWIDTHS)


def test_vmap_price_max_sweep_eager_evaluate():
    s, state, decision, _, _ = _sweep_setup()
    p = s.params()
    batched = p.replace(price_max=jnp.array([2.0, 3.0], jnp.float32))
    axes = jax.tree.map(lambda _: None, p).replace(price_max=0)
    out = jax.vmap(lambda q: evaluate(state, decision, q), in_axes=(axes,))(batched)
    assert out.cost.shape == (2, 6)


def test_jit_over_params_with_closed_over_state_and_decision():
    s, state, decision, _, _ = _sweep_setup()
    key = jax.random.key(2)
    _, _, reward, _, _ = jax.jit(lambda p: step(key, state, decision, p))(s.params())
    _, _, ref, _, _ = step(key, state, decision, s)
    np.testing.assert_allclose(float(reward), float(ref), rtol=2e-5)


def test_sequences_become_hashable_tuples_and_survive_json():
    """Per-server fields and positions given as lists or arrays (JSON, TOML, NumPy) are
    stored as tuples: the scenario stays hashable, static under jit, and round-trips
    through the JSON a checkpoint or a cell saves."""
    import json
    s = Scenario(n_devices=2, n_servers=2, server_cpu_hz=np.array([1e10, 4e10]),
                 bandwidth_hz=[np.float32(1e7), 2e7], wan_delay_s=[0, 0.05],
                 server_xy=[[10, 20], [30, 40]], device_xy=np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert s.server_cpu_hz == (1e10, 4e10) and s.server_xy == ((10, 20), (30, 40))
    assert s.device_xy == ((1.0, 2.0), (3.0, 4.0)) and isinstance(s.bandwidth_hz[0], float)
    hash(s)
    again = Scenario(**json.loads(json.dumps(dataclasses.asdict(s))))
    assert again == s and hash(again) == hash(s)
    p = s.params()
    assert p.server_cpu_hz.shape == (2,) and p.server_cpu_hz.dtype == jnp.float32
    assert p.bandwidth_hz.shape == (2,) and p.slot_s.shape == ()
    assert p.wan_delay_s == (0, 0.05) and p.server_xy == s.server_xy   # static: in the treedef
    assert jax.tree.structure(p) != jax.tree.structure(s.replace(wan_delay_s=(0, 0.1)).params())
