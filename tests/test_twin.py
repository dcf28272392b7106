"""The digital twin's forecaster (paper section 3.4, eq. 21): shapes, the closed
loop, skill against persistence, checkpoint loading and checks, and the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import checkpoint as ckpt
from mecjax.checkpoint import CheckpointMismatchError
from mecjax.cli import main
from mecjax.env import env as E
from mecjax.env.types import Decision
from mecjax.learners.base import get_learner, train_chunk
from mecjax.learners.store import load_run, run_config
from mecjax.learners.twin import (Slots, TwinLearner, TwinPolicy, estimated_path_gain,
                                  forecast_skill, init_carry, load_twin, persistence_slots,
                                  predict_slots)
from mecjax.rollout import rollout
from mecjax.schedulers import make
from train.curves import read_metrics

from conftest import quick_rollout

S = mecjax.Scenario(n_devices=8, n_servers=2)
LEARNER = TwinLearner(lstm_hidden=16, n_envs=4, window=24)
UPDATES = 200  # margins after 200 updates: tasks ~0.33, channel ~0.17 (5 seeds)

_reset = jax.jit(E.reset)
_predict = jax.jit(predict_slots, static_argnums=(3, 4))


def _obs(scenario=S, seed=0):
    return _reset(jax.random.key(seed), scenario)[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run directory, per-update metrics) of UPDATES updates, saved as ``mecjax train`` does."""
    d = tmp_path_factory.mktemp("twin") / "run"
    state = LEARNER.init(jax.random.key(0), S)
    chunks = []
    for _ in range(UPDATES // 100):
        state, metrics = train_chunk(LEARNER, state, S, 100)
        chunks.append(jax.device_get(metrics))
    ckpt.save(d / "ckpt", UPDATES, state, run_config(LEARNER, S, 0, 100))
    return d, {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


@pytest.fixture(scope="module")
def run_dir(run):
    return run[0]


@pytest.fixture(scope="module")
def trained(run_dir):
    return load_twin(run_dir, S)


def test_predict_slots_shapes_and_the_untrained_twin_is_persistence():
    obs = _obs()
    policy = LEARNER.init_policy(jax.random.key(1), S)
    assert isinstance(policy, TwinPolicy)
    carry = init_carry(policy, S.n_devices)
    assert all(leaf.shape == (S.n_devices, LEARNER.lstm_hidden) for leaf in jax.tree.leaves(carry))
    for horizon in (1, 3):
        new_carry, slots = _predict(policy, carry, obs, horizon, S)
        assert isinstance(slots, Slots)
        assert slots.task_bits.shape == slots.task_cycles.shape == (horizon, S.n_devices)
        assert slots.gain.shape == (horizon, S.n_devices, S.n_servers)
        np.testing.assert_array_equal(slots.task_bits[0], obs.task_bits)
        np.testing.assert_array_equal(slots.task_cycles[0], obs.task_cycles)
        # zero head: the forecast is persistence (up to the dB round trip)
        pers = persistence_slots(obs, horizon)
        for a, b in zip(jax.tree.leaves(slots), jax.tree.leaves(pers)):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-4)
        assert jax.tree.structure(new_carry) == jax.tree.structure(carry)
    path = estimated_path_gain(obs, S)
    _, state = _reset(jax.random.key(0), S)
    np.testing.assert_allclose(path, state.path_gain, rtol=1e-6)


def test_the_closed_loop_carry_depends_only_on_observations(trained):
    _, state = _reset(jax.random.key(3), S)
    step = jax.jit(lambda k, s: E.step(k, s, Decision(
        jnp.zeros(S.n_devices, jnp.int32), jnp.full(S.n_servers, S.price_init)), S)[1])
    carries = {}
    for horizon in (1, 4):
        c, s = init_carry(trained, S.n_devices), state
        for t in range(3):
            c, slots = _predict(trained, c, E.observe(s), horizon, S)
            s = step(jax.random.key(t), s)
        carries[horizon] = c
        assert np.all(np.isfinite(slots.gain)) and np.all(slots.gain > 0)
        assert np.all(slots.task_bits >= S.task_bits_min) and np.all(slots.task_bits <= S.task_bits_max)
    for a, b in zip(jax.tree.leaves(carries[1]), jax.tree.leaves(carries[4])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert float(jnp.abs(carries[1][1]).max()) > 0


def test_short_training_beats_persistence_on_held_out_traces(run, trained):
    skill = forecast_skill(trained, S, jax.random.key(12345), n_instances=16, n_slots=40)
    assert skill["task_mse"] < skill["task_mse_persistence"]
    assert skill["channel_mse"] < skill["channel_mse_persistence"]
    assert skill["task_margin"] > 0.05 and skill["channel_margin"] > 0.05, skill
    assert skill["n_instances"] == 16 and skill["n_slots"] == 40
    _, m = run
    assert len(m["loss"]) == UPDATES
    assert np.mean(m["loss"][-50:]) < np.mean(m["loss_persistence"][-50:])


def test_load_twin_checks_the_scenario_but_not_the_device_count(run_dir, trained):
    _, _, state, _ = load_run(run_dir)
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(LEARNER.policy(state))):
        np.testing.assert_array_equal(a, b)
    # the forecaster is per device: any N
    bigger = S.replace(n_devices=20)
    policy = load_twin(run_dir, bigger.params())
    _, slots = _predict(policy, init_carry(policy, 20), _obs(bigger), 2, bigger)
    assert slots.gain.shape == (2, 20, 2)
    with pytest.raises(CheckpointMismatchError, match="n_servers=2.*n_servers=3"):
        load_twin(run_dir, S.replace(n_servers=3))
    with pytest.raises(CheckpointMismatchError, match="fading_rho=0.9.*fading_rho=0.8"):
        load_twin(run_dir, S.replace(fading_rho=0.8))
    with pytest.raises(CheckpointMismatchError, match="load_period_slots"):
        load_twin(run_dir, S.replace(load_period_slots=12.0).params())
    with pytest.raises(CheckpointMismatchError, match="method='twin'.*'gat_mec'"):
        make("gat_mec", checkpoint=str(run_dir))


def test_dt_mec_reads_its_twin_once_and_checks_it_in_init(run_dir, trained):
    sched = make("dt_mec", checkpoint=str(run_dir), horizon=2, max_rounds=2)
    for a, b in zip(jax.tree.leaves(sched), jax.tree.leaves(trained)):
        np.testing.assert_array_equal(a, b)
    bigger = S.replace(n_devices=12, horizon=4)           # any N: the forecaster is per device
    # The rollout (jit of vmap) compiled with QUICK_COMPILE: it runs for milliseconds.
    out = quick_rollout(sched, bigger, jax.random.key(0), 2, 3)
    assert np.isfinite(np.asarray(out["mean_cost"])).all()
    # Checked at init, also under jit: a Scenario's fields are static there.
    with pytest.raises(CheckpointMismatchError, match="fading_rho=0.9.*fading_rho=0.8"):
        rollout(sched, bigger.replace(fading_rho=0.8), jax.random.key(0), 2, 3)
    with pytest.raises(CheckpointMismatchError, match="n_servers=2.*n_servers=3"):
        rollout(sched, bigger.replace(n_servers=3), jax.random.key(0), 2, 3)
    # EnvParams fields are traced under jit and cannot be compared there; eagerly they are.
    with pytest.raises(CheckpointMismatchError, match="burst_rho"):
        sched.init(jax.random.key(0), S.replace(burst_rho=0.5).params())


def test_cli_trains_and_resumes_bit_identically(tmp_path, run):
    # The module run's learner, scenario and chunk (S, LEARNER, chunks of 100 updates): the
    # CLI's compiled chunk and init are that run's, served by the persistent compilation
    # cache (the subprocess gets its directory) instead of compiled again.
    assert (S.n_devices, S.n_servers) == (8, 2) and S == mecjax.Scenario(n_devices=8, n_servers=2)
    args = ["train", "twin", "--n-devices", "8", "--n-servers", "2", "--chunk", "100", "--set",
            f"lstm_hidden={LEARNER.lstm_hidden}", "--set", f"n_envs={LEARNER.n_envs}", "--set",
            f"window={LEARNER.window}"]
    part, full = tmp_path / "part", tmp_path / "full"
    env = {**os.environ, "MECJAX_CACHE_DIR": os.environ.get(
        "MECJAX_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".jax_cache"))}
    proc = subprocess.run([sys.executable, "-m", "mecjax.cli", *args, "--updates", "100",
                           "--run-dir", str(part)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loss" in proc.stdout and (part / "ckpt" / "100").exists()
    assert main([*args, "--updates", "200", "--run-dir", str(part), "--resume"]) == 0
    assert main([*args, "--updates", "200", "--run-dir", str(full)]) == 0
    learner, scenario, s_part, _ = load_run(part)
    _, _, s_full, _ = load_run(full)
    assert learner == get_learner("twin", lstm_hidden=16, n_envs=4, window=24) == LEARNER
    assert scenario.n_devices == 8 and int(s_part.step) == 200
    leaves = lambda t: [np.asarray(jax.random.key_data(x)) if jnp.issubdtype(  # noqa: E731
        x.dtype, jax.dtypes.prng_key) else np.asarray(x) for x in jax.tree.leaves(t)]
    for a, b in zip(leaves(s_part), leaves(s_full)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(read_metrics(part / "metrics.csv")["loss"],
                                  read_metrics(full / "metrics.csv")["loss"])
