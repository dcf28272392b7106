"""The JAX environment against the independent NumPy model, fed the same uniforms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import env
from mecjax.env import numpy_model as nm

RTOL = 1e-5          # outcomes, metrics and well-conditioned state
RTOL_CHANNEL = 5e-5  # channel gains: d^-3.76 amplifies float32 rounding of positions near a server

B = 16


def _rel_err(a, b, floor=1e-6):
    """Max |a - b| / (|b| + floor * max|b|): relative, with a floor for values near 0."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    scale = np.abs(b) + floor * np.max(np.abs(b)) + 1e-300
    return float(np.max(np.abs(a - b) / scale))


def _assert_close(jax_tree, ref: dict, where: str):
    for key, want in ref.items():
        got = getattr(jax_tree, key) if hasattr(jax_tree, key) else jax_tree[key]
        if np.asarray(want).dtype.kind in "iub":
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=f"{where}.{key}")
            continue
        if key == "utility":  # 1 - (cost ratio): compare the ratio, not the cancelling difference
            got, want = 1.0 - np.asarray(got, np.float64), 1.0 - np.asarray(want)
        tol = RTOL_CHANNEL if key in ("gain", "gain_observed", "path_gain") else RTOL
        # Fading, burst, battery, backlog and leader utility are sums of terms that cancel near 0:
        # compare them on the scale of the largest value.
        cancels = key.startswith("fading") or key in ("leader_utility", "battery", "burst",
                                                      "backlog", "positions", "device_backlog")
        err = _rel_err(got, want, floor=1.0 if cancels else 1e-6)
        assert err <= tol, f"{where}.{key}: relative error {err:.2e} > {tol:.0e}"


def _np_noise(tree):
    return {k: np.asarray(v) for k, v in tree.items()}


# One program each per scenario (eagerly, each operation of the noise streams and of the
# reset would compile on its own, once per shape).
_reset_noise = jax.jit(jax.vmap(env.reset_noise, (0, None)), static_argnums=1)
_step_noise = jax.jit(jax.vmap(env.step_noise, (0, None)), static_argnums=1)
_reset_from_noise = jax.jit(jax.vmap(env.reset_from_noise, (0, None)), static_argnums=1)
_transition = jax.jit(jax.vmap(env.transition, (0, 0, 0, None)), static_argnums=3)


# Every extension on (docs/model.md, "Extensions"): hard battery with small batteries (tasks
# fail), device queues on a short slot (they carry), per-server CPU and bandwidth, a remote
# cloud, fixed server and initial device positions, mobility (the cloud's gain follows the
# strongest edge site as devices move).
EXTENDED = mecjax.Scenario(
    n_devices=6, n_servers=3, mobility=True, mobility_step_m=40.0, harvest_max_j=0.02,
    battery_capacity_j=0.2, slot_s=0.05, battery_hard=True, failure_cost=0.3, device_queue=True,
    server_cpu_hz=(10e9, 4e9, 60e9), bandwidth_hz=(10e6, 20e6, 5e6), wan_delay_s=(0.0, 0.0, 0.03),
    server_xy=((120.0, 100.0), (380.0, 400.0), (0.0, 0.0)),
    device_xy=((10.0, 20.0), (250.0, 250.0), (400.0, 380.0), (130.0, 90.0), (490.0, 5.0),
               (300.0, 120.0)))


@pytest.mark.parametrize("s, batch, slots", [
    (mecjax.Scenario(n_devices=12, n_servers=3, mobility=False, mobility_step_m=20.0,
                     harvest_max_j=0.05, battery_capacity_j=0.5), B, 12),
    (mecjax.Scenario(n_devices=12, n_servers=3, mobility=True, mobility_step_m=20.0,
                     harvest_max_j=0.05, battery_capacity_j=0.5), B, 12),
    (EXTENDED, 4, 6),
], ids=["static", "mobility", "extensions"])
def test_jax_matches_numpy_over_a_trajectory(s, batch, slots):
    keys = jax.random.split(jax.random.key(0), batch)
    rn = _reset_noise(keys, s)
    state = _reset_from_noise(rn, s)
    ref = nm.reset_from_noise(_np_noise(rn), s)
    _assert_close(state, ref, "reset")
    transition = _transition
    rng = np.random.default_rng(1)
    seen = {"failed": 0, "queued": 0}
    for t in range(slots):
        off = rng.integers(0, s.n_servers + 1, (batch, s.n_devices))
        prices = rng.uniform(s.price_min, s.price_max, (batch, s.n_servers))
        if t % 2:   # explicit valid shares every other slot
            raw = rng.uniform(0.05, 1.0, (batch, s.n_devices))
            on = off[..., None] == np.arange(1, s.n_servers + 1)
            tot = (on * raw[..., None]).sum(-2)
            bw = np.where(off > 0, raw / np.maximum((on * tot[:, None, :]).sum(-1), 1e-9), 0.0)
            cpu = np.where(off > 0, 1.0 / np.maximum((on * on.sum(-2)[:, None, :]).sum(-1), 1), 0.0)
        else:
            bw = cpu = None
        dec = env.Decision(jnp.asarray(off, jnp.int32), jnp.asarray(prices, jnp.float32),
                           None if bw is None else jnp.asarray(bw, jnp.float32),
                           None if cpu is None else jnp.asarray(cpu, jnp.float32))
        sn = _step_noise(jax.random.split(jax.random.key(100 + t), batch), s)
        # NumPy gets the float32-rounded decision the JAX side sees.
        bw32 = None if bw is None else np.asarray(dec.bandwidth_share)
        cpu32 = None if cpu is None else np.asarray(dec.cpu_share)
        # Each slot starts NumPy from the JAX state, so float32 rounding does not compound
        # through the fading recursion; the drift test below covers whole trajectories.
        ref = {k: np.asarray(v, np.float64 if np.asarray(v).dtype.kind == "f" else None)
               for k, v in vars(state).items()}
        ref, ref_out, ref_met = nm.step_from_noise(ref, off, np.asarray(dec.prices), _np_noise(sn),
                                                   s, bw32, cpu32)
        _, state, reward, done, info = transition(state, dec, sn, s)
        _assert_close(state, ref, f"slot {t} state")
        _assert_close(info, ref_out, f"slot {t} outcome")
        _assert_close(info, ref_met, f"slot {t} metrics")
        assert not bool(np.any(info["invalid_decision"]))
        seen["failed"] += int(np.sum(ref_out["task_failed"]))
        seen["queued"] += int(np.sum(ref["device_backlog"] > 0))
    # The trajectory exercised what it should: batteries ran low and forced offloading,
    # and with the extensions tasks failed and device queues carried work.
    assert np.any(np.asarray(info["forced_offload"])) or np.any(ref["battery"] < 0.1)
    if s.battery_hard:
        assert seen["failed"] > 0 and seen["queued"] > 0
        np.testing.assert_array_equal(np.asarray(state.server_positions[0]),
                                      np.asarray(s.server_xy, np.float32))


def test_evaluate_on_observation_uses_the_delayed_channel(small):
    obs, state = env.reset(jax.random.key(3), small)
    dec = env.Decision(jnp.ones(small.n_devices, jnp.int32), jnp.full(small.n_servers, 0.5))
    ref = {k: v[0] for k, v in nm.evaluate({k: np.asarray(v)[None] for k, v in state.__dict__.items()},
                                           np.ones((1, small.n_devices), int), np.full((1, 3), 0.5),
                                           small, true_channel=False).items()}
    out = env.evaluate(obs, dec, small)
    for key in ("latency", "energy", "cost", "rate"):
        assert _rel_err(getattr(out, key), ref[key]) <= RTOL
    truth = env.evaluate(state, dec, small)
    assert not np.allclose(truth.rate, out.rate)


def test_whole_trajectory_does_not_drift(small):
    """Float32 JAX and float64 NumPy over 30 slots from the same draws: no drift
    beyond float32 rounding amplified by deep fades (mean cost within 1e-4)."""
    keys = jax.random.split(jax.random.key(5), B)
    rn = _reset_noise(keys, small)
    state = _reset_from_noise(rn, small)
    ref = nm.reset_from_noise(_np_noise(rn), small)
    transition = _transition
    off = np.tile(np.arange(small.n_devices) % (small.n_servers + 1), (B, 1))
    prices = np.full((B, small.n_servers), 0.5, np.float32)
    dec = env.Decision(jnp.asarray(off, jnp.int32), jnp.asarray(prices))
    for t in range(30):
        sn = _step_noise(jax.random.split(jax.random.key(t), B), small)
        _, state, _, _, info = transition(state, dec, sn, small)
        ref, _, met = nm.step_from_noise(ref, off, prices, _np_noise(sn), small)
        np.testing.assert_allclose(info["mean_cost"], met["mean_cost"], rtol=1e-4)
    np.testing.assert_allclose(state.battery, ref["battery"], rtol=1e-4, atol=1e-5)
