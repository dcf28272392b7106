"""Training over seeds (``mecjax train --seeds K``): K seeds in one vmapped chunk,
each the run its seed alone would be; resume; per-seed export; --task.

The harness is tested with a cheap toy learner (compiling a real learner's
update costs about 15 s a shape); the per-seed export with DRL-FGSO's tiny
stacked train states, executed by its scheduler."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import checkpoint as ckpt
from mecjax import env, tasks
from mecjax.cli import run_program
from mecjax.learners.base import Learner, get_learner, init_seeds, register_learner, seed_state
from mecjax.learners.store import (export_policy, load_policy_checkpoint, load_run,
                                   load_trained, run_config, seed_config)
from train import run as train_run
from train.curves import read_metrics
from train.recipes import TASK_SEEDS, task_gat_template, task_shipped_dir
from train.run import train

from conftest import quick_rollout



@jax.jit
def _toy_init(key, params):
    k_env, k_theta, k = jax.random.split(key, 3)
    _, states = jax.vmap(env.reset, (0, None))(jax.random.split(k_env, 2), params)
    theta = 0.1 * jax.random.normal(k_theta, (params.n_servers + 1,))
    return {"theta": theta, "states": states, "key": k, "step": jnp.int32(0)}


@register_learner
@dataclasses.dataclass(frozen=True)
class SeedsToyLearner(Learner):
    """A shared preference vector over the M+1 options, moved by REINFORCE from
    the device costs of two training instances (cheap to compile)."""

    name = "toy_seeds_learner"
    lr: float = 0.5

    def init(self, key, params):
        return _toy_init(key, params)

    def update(self, ts, params):
        key, k_act, k_env = jax.random.split(ts["key"], 3)
        p = mecjax.as_params(params)
        actions = jax.random.categorical(k_act, ts["theta"], shape=(2, p.n_devices))
        dec = env.Decision(actions.astype(jnp.int32), jnp.full((2, p.n_servers), p.price_init))
        _, states, _, _, info = jax.vmap(env.step, (0, 0, 0, None))(
            jax.random.split(k_env, 2), ts["states"], dec, params)
        adv = jnp.mean(info["cost"]) - info["cost"]
        grad = jnp.mean(adv[..., None] * (jax.nn.one_hot(actions, p.n_options)
                                          - jax.nn.softmax(ts["theta"])), (0, 1))
        new = {"theta": ts["theta"] + self.lr * grad / 0.1, "states": states, "key": key,
               "step": ts["step"] + 1}
        return new, {"mean_cost": jnp.mean(info["cost"]),
                     "theta_norm": jnp.linalg.norm(new["theta"])}

    def policy(self, ts):
        return {"theta": ts["theta"]}


S = tasks.make("congested", n_devices=4)
LEARNER = get_learner("toy_seeds_learner")
DRL = get_learner("drl_fgso", n_envs=2, buffer_size=16, batch_size=4, hidden=(8,))
SEED, K, UPDATES, CHUNK = 5, 2, 6, 3
quiet = lambda *_: None  # noqa: E731


def _leaves(tree):
    return [np.asarray(jax.random.key_data(x)) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
            else np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A K-seed run, the same run interrupted after one chunk and resumed, and the
    single run of seed SEED + 1 (all from one compiled chunk per shape)."""
    root = tmp_path_factory.mktemp("seeds")
    full = train(LEARNER, S, root / "full", total_updates=UPDATES, chunk=CHUNK, seed=SEED,
                 seeds=K, log=quiet)
    train(LEARNER, S, root / "part", total_updates=UPDATES, chunk=CHUNK, seed=SEED, seeds=K,
          stop_after=1, log=quiet)
    logs = []
    resumed = train(LEARNER, S, root / "part", total_updates=UPDATES, chunk=CHUNK, seed=SEED,
                    seeds=K, resume=True, log=logs.append)
    single = train(LEARNER, S, root / "single", total_updates=UPDATES, chunk=CHUNK,
                   seed=SEED + 1, log=quiet)
    return root, full, resumed, single, logs


def test_states_are_stacked_and_the_config_records_the_seeds(runs):
    root, full, _, single, _ = runs
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(single)):
        assert a.shape == (K,) + b.shape and a.dtype == b.dtype
    config = ckpt.load_config(root / "full" / "ckpt")
    assert config["seeds"] == K and config["seed"] == SEED
    assert "seeds" not in ckpt.load_config(root / "single" / "ckpt")  # K = 1: as ever
    _, scenario, restored, _ = load_run(root / "full")
    assert scenario == S
    for a, b in zip(_leaves(full), _leaves(restored)):
        np.testing.assert_array_equal(a, b)


def test_seed_k_is_the_single_run_of_seed_plus_k(runs):
    root, full, _, single, _ = runs
    m_k = read_metrics(root / "full" / "metrics.csv")
    m_1 = read_metrics(root / "single" / "metrics.csv")
    # vmap may reassociate floats; on CPU it has been bit-identical (asserted below as close).
    np.testing.assert_allclose(m_k["mean_cost_s1"], m_1["mean_cost"], rtol=1e-4)
    for a, b in zip(_leaves(seed_state(full, 1)), _leaves(single)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The mean columns average the seeds' metrics; seed 0 is another run.
    np.testing.assert_allclose(m_k["mean_cost"], (m_k["mean_cost_s0"] + m_k["mean_cost_s1"]) / 2,
                               rtol=1e-5)
    assert not np.allclose(m_k["mean_cost_s0"], m_k["mean_cost_s1"])
    assert list(m_k["update"]) == list(range(1, UPDATES + 1))
    assert (root / "full" / "learning_curve.png").stat().st_size > 1000


def test_resumed_k_seed_run_is_bit_identical(runs):
    root, full, resumed, _, logs = runs
    assert any(f"resumed from update {CHUNK}" in line for line in logs)
    for a, b in zip(_leaves(full), _leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    with open(root / "full" / "metrics.csv") as f, open(root / "part" / "metrics.csv") as g:
        assert f.read() == g.read()


def test_per_seed_export_is_an_ordinary_policy_a_scheduler_runs(runs, tmp_path):
    import mecjax.schedulers

    root, full, _, _, _ = runs
    with pytest.raises(ValueError, match="seed=k"):
        export_policy(root / "full", tmp_path / "nope")
    with pytest.raises(ValueError, match="out of range"):
        export_policy(root / "full", tmp_path / "nope", seed=K)
    with pytest.raises(ckpt.CheckpointMismatchError, match="seeds"):
        load_policy_checkpoint(root / "full")
    out = tmp_path / "toy_s1"
    export_policy(root / "full", out, seed=1)
    config = ckpt.load_config(out / "ckpt")
    # Exactly what the single run of that seed would export.
    assert config == {**ckpt.load_config(root / "single" / "ckpt"), "kind": "policy"}
    np.testing.assert_array_equal(load_policy_checkpoint(out)[2]["theta"],
                                  seed_state(full, 1)["theta"])
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())
    export_policy(root / "full", out, seed=1)           # already exported: nothing rewritten
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()) == before
    with pytest.raises(FileExistsError):
        export_policy(root / "full", out, seed=0)       # another seed's policy is there

    # A K-seed DRL-FGSO run (its stacked initial states: no update compiled) exports
    # seed 1 as a policy the drl_fgso scheduler loads and executes unchanged.
    run = tmp_path / "drl"
    ckpt.save(run / "ckpt", 1, init_seeds(DRL, S, SEED, K), run_config(DRL, S, SEED, 10, K))
    export_policy(run, tmp_path / "drl_s1", seed=1)
    config = ckpt.load_config(tmp_path / "drl_s1" / "ckpt")
    assert config["seed"] == SEED + 1 and "seeds" not in config and config["kind"] == "policy"
    trained = load_trained(tmp_path / "drl_s1", "drl_fgso")
    want = DRL.init(jax.random.key(SEED + 1), S)
    for a, b in zip(_leaves(trained.policy), _leaves(DRL.policy(want))):
        np.testing.assert_array_equal(a, b)
    sched = mecjax.schedulers.make("drl_fgso", checkpoint=str(tmp_path / "drl_s1"))
    metrics = quick_rollout(sched, S, jax.random.key(0), 1, 1)   # jit of vmap, QUICK_COMPILE
    assert np.isfinite(np.asarray(metrics["mean_cost"])).all()


def test_resuming_on_another_task_or_seed_count_is_refused(runs):
    root = runs[0]
    before = {p: p.read_bytes() for p in (root / "full" / "ckpt").rglob("*") if p.is_file()}
    with pytest.raises(ckpt.CheckpointMismatchError, match="slot_s"):
        train(LEARNER, tasks.make("paper", n_devices=4), root / "full", total_updates=9,
              chunk=CHUNK, seed=SEED, seeds=K, resume=True, log=quiet)
    with pytest.raises(ckpt.CheckpointMismatchError, match="seeds"):
        train(LEARNER, S, root / "full", total_updates=9, chunk=CHUNK, seed=SEED, seeds=3,
              resume=True, log=quiet)
    assert before == {p: p.read_bytes() for p in (root / "full" / "ckpt").rglob("*")
                      if p.is_file()}


def test_drl_gat_seed_k_reads_gat_mec_seed_k():
    assert TASK_SEEDS == 3
    assert task_shipped_dir("congested-v0", "twin", 2) == \
        "results/checkpoints/tasks/congested-v0/twin_s2"
    template = task_gat_template("congested-v0", "R")
    learner = get_learner("drl_gat", gat_checkpoint=template)
    assert learner.for_seed(1).gat_checkpoint == task_shipped_dir("congested-v0", "gat_mec", 1,
                                                                  "R")
    assert get_learner("drl_fgso").for_seed(1) == get_learner("drl_fgso")
    with pytest.raises(ValueError, match="for_seed"):
        learner.load_gat(S)     # the template itself names no checkpoint
    config = {"method": "drl_gat", "scenario": {}, "hyper": learner.hyper(), "seed": 0,
              "chunk": 10, "seeds": 3}
    one = seed_config(json.loads(json.dumps(config)), 2)
    assert one["seed"] == 2 and "seeds" not in one
    assert one["hyper"]["gat_checkpoint"] == "R/tasks/congested-v0/gat_mec_s2"


def test_bad_task_and_seeds_are_one_line_errors_before_writing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_program("train", train_run.main, ["toy_seeds_learner", "--seeds", "0",
                                                 "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--seeds 0" in err and len(err.splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "train.run", "drl_fgso", "--task", "nowhere",
                           "--run-dir", str(run_dir)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--task" in lines[0] and "congested-v0" in lines[0]
    assert not run_dir.exists()


def test_train_shipped_refuses_bad_tasks_and_seeds_before_training(tmp_path, capsys):
    from train import shipped

    for argv, words in ((["--tasks", "nowhere"], ("--tasks", "paper-v0")),
                        (["--seeds", "2"], ("--seeds", "--tasks")),
                        (["--tasks", "all", "--seeds", "0"], ("--seeds 0",)),
                        (["--tasks", "congested", "--sizes", "100"], ("--sizes",))):
        assert run_program("train-shipped", shipped.main,
                           argv + ["--root", str(tmp_path / "r"), "--runs",
                                   str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not any(tmp_path.iterdir())
