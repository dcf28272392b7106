"""The training harness with a toy learner: chunks, checkpoints, resume, refusal."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import checkpoint as ckpt
from mecjax import env
from mecjax.learners.base import Learner, get_learner, register_learner
from mecjax.learners.store import load_run
from train.curves import read_metrics
from train.run import train

from conftest import QUICK_COMPILE


@register_learner
@dataclasses.dataclass(frozen=True)
class ToyLearner(Learner):
    """One shared preference vector over the M+1 options, learned by REINFORCE
    from the mean device cost on B training instances."""

    name = "toy_test_learner"
    scheduler_name = ""
    batch: int = 4
    lr: float = 0.5

    def init(self, key, params):
        k_env, k = jax.random.split(key)
        obs, states = jax.vmap(env.reset, (0, None))(jax.random.split(k_env, self.batch), params)
        return {"theta": jnp.zeros(params.n_servers + 1), "states": states, "key": k,
                "step": jnp.int32(0)}

    def update(self, ts, params):
        key, k_act, k_env = jax.random.split(ts["key"], 3)
        p = mecjax.as_params(params)
        logits = jnp.broadcast_to(ts["theta"], (self.batch, p.n_devices, p.n_options))
        actions = jax.random.categorical(k_act, logits)
        dec = env.Decision(actions.astype(jnp.int32), jnp.full((self.batch, p.n_servers), p.price_init))
        _, states, reward, done, info = jax.vmap(env.step, (0, 0, 0, None))(
            jax.random.split(k_env, self.batch), ts["states"], dec, params)
        adv = -info["cost"] + jnp.mean(info["cost"])
        grad = jnp.mean(adv[..., None] * (jax.nn.one_hot(actions, p.n_options) - jax.nn.softmax(ts["theta"])),
                        axis=(0, 1)) / 0.1
        new = {"theta": ts["theta"] + self.lr * grad, "states": states, "key": key,
               "step": ts["step"] + 1}
        return new, {"mean_cost": jnp.mean(info["cost"]), "entropy": -jnp.sum(
            jax.nn.softmax(ts["theta"]) * jax.nn.log_softmax(ts["theta"]))}

    def policy(self, ts):
        return ts["theta"]


S = mecjax.Scenario(n_devices=5, n_servers=2, horizon=1000)


def _leaves(tree):
    return [np.asarray(jax.random.key_data(x)) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
            else np.asarray(x) for x in jax.tree.leaves(tree)]


def test_compiler_options_reach_every_chunk_program_and_only_the_rounding_differs(tmp_path):
    # 7 updates in chunks of 5: preflight's program, then a 2-update chunk compiled apart
    learner = get_learner("toy_test_learner")
    plain = train(learner, S, tmp_path / "plain", total_updates=7, chunk=5, log=lambda *_: None)
    quick = train(learner, S, tmp_path / "quick", total_updates=7, chunk=5, log=lambda *_: None,
                  compiler_options=QUICK_COMPILE)
    assert int(quick["step"]) == 7
    for a, b in zip(_leaves(plain), _leaves(quick)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(Exception, match="no_such_xla_option"):   # the options are used
        train(learner, S, tmp_path / "bad", total_updates=2, chunk=5, log=lambda *_: None,
              check_memory=False, compiler_options={"no_such_xla_option": 1})


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    learner = get_learner("toy_test_learner")
    full = train(learner, S, tmp_path / "full", total_updates=15, chunk=5, log=lambda *_: None)
    part = train(learner, S, tmp_path / "part", total_updates=15, chunk=5, stop_after=2,
                 log=lambda *_: None)
    assert int(part["step"]) == 10
    logs = []
    resumed = train(learner, S, tmp_path / "part", total_updates=15, chunk=5, resume=True,
                    log=logs.append)
    assert any("resumed from update 10" in line for line in logs)
    for a, b in zip(_leaves(full), _leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    m_full = read_metrics(tmp_path / "full" / "metrics.csv")
    m_part = read_metrics(tmp_path / "part" / "metrics.csv")
    np.testing.assert_array_equal(m_full["update"], np.arange(1, 16))
    np.testing.assert_array_equal(m_full["mean_cost"], m_part["mean_cost"])
    assert (tmp_path / "full" / "learning_curve.png").stat().st_size > 1000


def test_existing_run_is_never_overwritten_and_mismatch_is_refused(tmp_path):
    learner = get_learner("toy_test_learner")
    train(learner, S, tmp_path, total_updates=5, chunk=5, log=lambda *_: None)
    before = {p: p.read_bytes() for p in (tmp_path / "ckpt").rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="resume"):
        train(learner, S, tmp_path, total_updates=10, chunk=5, log=lambda *_: None)
    with pytest.raises(ckpt.CheckpointMismatchError, match="n_devices|scenario"):
        train(learner, S.replace(n_devices=6), tmp_path, total_updates=10, chunk=5, resume=True,
              log=lambda *_: None)
    with pytest.raises(ckpt.CheckpointMismatchError, match="lr|hyper"):
        train(get_learner("toy_test_learner", lr=0.1), S, tmp_path, total_updates=10, chunk=5,
              resume=True, log=lambda *_: None)
    after = {p: p.read_bytes() for p in (tmp_path / "ckpt").rglob("*") if p.is_file()}
    assert before == after


def test_run_rebuilds_from_its_directory_alone(tmp_path):
    learner = get_learner("toy_test_learner")
    state = train(learner, S, tmp_path, total_updates=10, chunk=5, log=lambda *_: None)
    learner2, scenario, state2, config = load_run(tmp_path)
    assert learner2 == learner and scenario == S and config["method"] == "toy_test_learner"
    np.testing.assert_array_equal(np.asarray(state2["theta"]), np.asarray(state["theta"]))


def test_training_moves_the_policy_and_rejects_bad_sizes(tmp_path):
    learner = get_learner("toy_test_learner")
    state = train(learner, S, tmp_path, total_updates=10, chunk=5, log=lambda *_: None)
    assert float(jnp.abs(state["theta"]).max()) > 0
    with pytest.raises(ValueError, match="total_updates"):
        train(learner, S, tmp_path / "x", total_updates=0, chunk=2, log=lambda *_: None)
    with pytest.raises(ValueError, match="no hyper-parameter"):
        get_learner("toy_test_learner", lr_typo=1)
    with pytest.raises(ValueError, match="unknown learner"):
        get_learner("nope")
