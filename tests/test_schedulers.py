"""Schedulers: registry, pytrees (trained weights are data), jit/vmap rollouts
at the paper's sizes, the exact yardstick, common random numbers across
schedulers and TS-Hybrid-SB's online bandit."""

import dataclasses
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import checkpoint as ckpt
from mecjax import env, rollout
from mecjax.checkpoint import CheckpointMismatchError
from mecjax.learners.base import get_learner
from mecjax.learners.store import load_policy_checkpoint, run_config
from mecjax.optim import game
from mecjax.schedulers import available, make

from conftest import QUICK_COMPILE, quick_rollout

ROOT = Path(__file__).resolve().parent.parent

PAPER_SCHEDULERS = ("local", "random", "nearest", "greedy", "best_response", "exact", "qio_mec",
                    "pso", "ts_hybrid_sb")


def test_registry_lists_the_paper_schedulers_and_rejects_unknown_names_and_options():
    names = available()
    assert set(PAPER_SCHEDULERS) <= set(names)
    assert names == sorted(names)
    with pytest.raises(ValueError, match=r"unknown scheduler 'no_such'.*qio_mec"):
        make("no_such")
    with pytest.raises(ValueError, match=r"'qio_mec' has no option\(s\) \['bogus'\]"):
        make("qio_mec", bogus=1)
    with pytest.raises(ValueError, match="colour"):
        make("local", colour="red")
    sched = make("qio_mec", iterations=10)
    assert sched.iterations == 10 and sched.population == 30
    assert make("ts_hybrid_sb").iterations == 100 and make("pso").iterations == 100
    # A pytree without leaves: its hyper-parameters are the (hashable) treedef.
    assert jax.tree.leaves(sched) == [] and hash(sched)
    assert jax.tree.structure(sched) != jax.tree.structure(make("qio_mec", iterations=11))
    assert jax.tree.unflatten(jax.tree.structure(sched), []) == sched


def test_every_name_builds_from_a_fresh_interpreter_whatever_was_imported():
    # Registries are tables of modules imported on demand, not import side effects.
    code = """
import sys
import mecjax.schedulers as S
from mecjax.learners.base import available_learners, get_learner
assert "mecjax.schedulers.unified" not in sys.modules
assert "mecjax.learners.twin" not in sys.modules
for name in available_learners():
    assert get_learner(name).name == name
for name in S.available():
    assert S.make(name).name == name
print(len(S.available()), len(available_learners()))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["17", "5"]


def test_the_library_reads_no_checkpoint_inside_a_trace():
    # Weights are loaded on the host and passed as data: no compile-time reads,
    # no caches of loaded arrays keyed by file times, no imports of the programs.
    for path in (ROOT / "mecjax").rglob("*.py"):
        text = path.read_text()
        for banned in ("ensure_compile_time_eval", "lru_cache", "checkpoint_id", "st_mtime",
                       "from mecjax.train", "import mecjax.train"):
            assert banned not in text, (path, banned)


# At N = 50 with their default budgets (the paper's N = 150 runs in test_paper_scale, and
# every size compiles its own program: one size here keeps the suite's compile time down).
CASES = [(name, 50) for name in PAPER_SCHEDULERS if name != "exact"]
# The schedulers whose public rollouts test_rollout_is_deterministic_... runs again (the
# same compiled programs); the others' rollouts (jit of the same rollout_instances)
# are compiled with QUICK_COMPILE: they run for milliseconds.
PUBLIC_ROLLOUT = ("local", "random", "greedy")


@pytest.mark.parametrize("name,n", CASES)
def test_every_scheduler_rolls_out_under_jit_and_vmap(name, n):
    s = mecjax.Scenario(n_devices=n, n_servers=3)
    sched = make(name)
    run = rollout.rollout if name in PUBLIC_ROLLOUT else quick_rollout
    out = run(sched, s, jax.random.key(0), n_instances=2, n_slots=2)
    assert set(out) == set(rollout.METRICS)
    for k, v in out.items():
        assert v.shape == (2, 2), k
        assert np.isfinite(np.asarray(v)).all(), k
    assert (np.asarray(out["invalid_decision"]) == 0).all()
    frac = np.asarray(out["offload_fraction"])
    if name == "local":
        assert (frac == 0).all()
    if name == "nearest":
        assert (frac == 1).all()
    if n == 50 and name in ("qio_mec", "pso", "ts_hybrid_sb"):
        # With their full budgets the searches save cost against all-local. (Not asserted for
        # greedy / best response: selfish choices on last slot's channel can cost more than
        # all-local on the true channel, a price of anarchy plus CSI delay.)
        assert np.asarray(out["utility"]).mean() > 0.02, out["utility"]


@pytest.mark.parametrize("n", [50, 150])
def test_exact_refuses_large_instances_clearly(n):
    s = mecjax.Scenario(n_devices=n, n_servers=3)
    with pytest.raises(ValueError, match=rf"exact: .*4\^{n}.*exceeds the limit.*N <= 11"):
        rollout.rollout(make("exact"), s, jax.random.key(0), n_instances=2, n_slots=2)


def test_exact_is_never_worse_than_the_heuristics_on_the_same_observation():
    s = mecjax.Scenario(n_devices=6, n_servers=3)
    out = quick_rollout(make("exact"), s, jax.random.key(1), n_instances=2, n_slots=2)
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())
    assert (np.asarray(out["invalid_decision"]) == 0).all()

    names = ("exact", "local", "nearest", "greedy", "qio_mec")
    scheds = {nm: make(nm) for nm in names}

    # every scheduler's decision on the observation, and its cost: one program
    @partial(jax.jit, compiler_options=QUICK_COMPILE)
    def costs(k, o):
        return {nm: env.evaluate(o, sc.act(k, sc.init(k, s), o, s)[0], s).cost.mean()
                for nm, sc in scheds.items()}

    keys = jax.random.split(jax.random.key(2), 6)
    obs_b = jax.jit(jax.vmap(lambda k: env.reset(k, s)[0]))(keys)
    strictly_better = 0
    for b in range(6):
        obs = jax.tree.map(lambda x: x[b], obs_b)
        cost = {nm: float(c) for nm, c in costs(keys[b], obs).items()}
        for nm in names[1:]:
            assert cost["exact"] <= cost[nm] * (1 + 1e-6), (b, cost)
        strictly_better += cost["exact"] < min(cost["local"], cost["nearest"]) * (1 - 1e-3)
    assert strictly_better >= 4


def _rollout_keys(key, b, n_instances):
    return jax.random.split(jax.random.split(key, n_instances)[b], 4)


def test_rollout_is_deterministic_and_schedulers_face_the_same_instances():
    # The sizes of test_every_scheduler_rolls_out_under_jit_and_vmap: its compiled rollouts.
    s = mecjax.Scenario(n_devices=50, n_servers=3)
    key, B = jax.random.key(3), 2
    run = lambda name: {k: np.asarray(v) for k, v in  # noqa: E731
                        rollout.rollout(make(name), s, key, n_instances=B, n_slots=2).items()}
    assert {"local", "random", "greedy"} <= set(PUBLIC_ROLLOUT)
    local = run("local")
    rand_a, greedy, rand_b = run("random"), run("greedy"), run("random")
    local_again = run("local")
    for k in rollout.METRICS:
        np.testing.assert_array_equal(rand_a[k], rand_b[k])
        np.testing.assert_array_equal(local[k], local_again[k])
    other = {k: np.asarray(v) for k, v in
             rollout.rollout(make("random"), s, jax.random.key(4), n_instances=B, n_slots=2).items()}
    assert not np.array_equal(other["mean_cost"], rand_a["mean_cost"])

    prices = jnp.full((3,), s.price_init)
    zeros = jnp.zeros((s.n_devices,), jnp.int32)
    for b in range(B):
        k_reset, _, k_env, _ = _rollout_keys(key, b, B)
        obs, state = env.reset(k_reset, s)
        all_local = float(env.evaluate(state, env.Decision(zeros, prices), s).cost.mean())
        assert local["mean_cost"][b, 0] == pytest.approx(all_local, rel=1e-6)
        assert local["latency_ms"][b, 0] == pytest.approx(
            1e3 * float(jnp.mean(state.task_cycles / state.cpu_freq)), rel=1e-6)
        # Slot 1 follows from the rollout's environment key.
        _, state1, *_ = env.step(jax.random.fold_in(k_env, 0), state, env.Decision(zeros, prices), s)
        local1 = float(env.evaluate(state1, env.Decision(zeros, prices), s).cost.mean())
        assert local["mean_cost"][b, 1] == pytest.approx(local1, rel=1e-6)
        # Greedy faced the same instance: its utility is relative to that instance's local cost.
        assert greedy["utility"][b, 0] == pytest.approx(1 - greedy["mean_cost"][b, 0] / all_local,
                                                        abs=1e-5)
        # ... and its slot-0 cost is the greedy decision on the true channel of that instance.
        g = game.greedy(obs, prices, s)
        assert greedy["mean_cost"][b, 0] == pytest.approx(
            float(env.evaluate(state, env.Decision(g, prices), s).cost.mean()), rel=1e-5)


def test_rollout_rejects_bad_sizes(small):
    with pytest.raises(ValueError, match="n_instances"):
        rollout.rollout(make("local"), small, jax.random.key(0), n_instances=0, n_slots=2)
    with pytest.raises(ValueError, match="n_slots"):
        rollout.rollout(make("local"), small, jax.random.key(0), n_instances=1, n_slots=0)


# --------------------------------------------------------------------------
# Learned schedulers: weights read once when built, passed to jit as data.
# --------------------------------------------------------------------------

TINY = mecjax.Scenario(n_devices=6, n_servers=2, horizon=8)
GAT = get_learner("gat_mec", n_envs=2)


_init = jax.jit(lambda learner, key, scenario: learner.init(key, scenario), static_argnums=(0, 2),
                compiler_options=QUICK_COMPILE)


def save_run(learner, scenario, directory, step, seed=0):
    """A run directory as ``mecjax train`` writes it, whose checkpoint ``step`` holds the
    initial train state of seed ``seed``: how a scheduler reads and runs a checkpoint does
    not depend on how its weights were trained (each learner's training is tested in its
    own file), and training would compile a chunk of updates."""
    state = _init(learner, jax.random.key(seed), scenario)
    ckpt.save(Path(directory) / "ckpt", step, state, run_config(learner, scenario, seed, step))
    return state


@pytest.fixture(scope="module")
def gat_run(tmp_path_factory):
    """A GAT-MEC run directory (checkpoint 2)."""
    run_dir = tmp_path_factory.mktemp("gat") / "run"
    save_run(GAT, TINY, run_dir, 2)
    return run_dir


def test_a_learned_scheduler_carries_its_checkpoint_as_pytree_leaves(gat_run):
    a = gat_run
    sched = make("gat_mec", checkpoint=str(a))
    _, _, policy, _ = load_policy_checkpoint(a)
    leaves = jax.tree.leaves(sched)
    assert len(leaves) == len(jax.tree.leaves(policy)) > 0
    for x, y in zip(leaves, jax.tree.leaves(policy)):
        np.testing.assert_array_equal(x, y)
    assert sched.trained.scenario == TINY and sched.trained.method == "gat_mec"
    # init runs the loaded weights (no file is read in the trace).
    st = jax.jit(lambda s, k: s.init(k, TINY))(sched, jax.random.key(0))
    for x, y in zip(jax.tree.leaves(st), jax.tree.leaves(policy)):
        np.testing.assert_array_equal(x, y)
    # Untrained: no leaves; its policy comes from the init key.
    assert jax.tree.leaves(make("gat_mec")) == []
    # replace keeps the weights it read; another checkpoint is read anew.
    assert dataclasses.replace(sched).trained is sched.trained
    assert dataclasses.replace(sched, checkpoint="").trained is None


def test_a_retrained_checkpoint_runs_its_new_weights_in_the_same_program(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    traces = []
    instances = rollout.rollout_instances

    def traced_instances(*args, **kw):    # the public rollout traces this once per program
        traces.append(1)
        return instances(*args, **kw)

    monkeypatch.setattr(rollout, "rollout_instances", traced_instances)
    key = jax.random.key(1)
    save_run(GAT, TINY, run_dir, 2)
    first = make("gat_mec", checkpoint=str(run_dir))
    out_a = rollout.rollout(first, TINY, key, 3, 4)
    save_run(GAT, TINY, run_dir, 4, seed=1)   # retrained: checkpoint 4 in the same directory
    second = make("gat_mec", checkpoint=str(run_dir))
    out_b = rollout.rollout(second, TINY, key, 3, 4)
    assert traces.count(1) == 1                   # one program, two sets of weights
    assert any(not np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(first), jax.tree.leaves(second)))

    # What a compiled program executes is the weights it is given, not the first ones.
    @jax.jit
    def policy(sched):
        traces.append(2)
        return sched.init(jax.random.key(0), TINY)

    for sched in (first, second, first):
        for x, y in zip(jax.tree.leaves(policy(sched)), jax.tree.leaves(sched)):
            np.testing.assert_array_equal(x, y)
    assert traces.count(2) == 1
    # ... and the rollouts ran them: the new weights decide differently.
    assert not np.array_equal(out_a["mean_cost"], out_b["mean_cost"])
    assert out_a["mean_cost"].shape == out_b["mean_cost"].shape == (3, 4)
    # The trace counter does see a new program (another scheduler; a cheap one to compile).
    local = rollout.rollout(make("local"), TINY, key, 3, 4)
    assert traces.count(1) == 2
    assert local["mean_cost"].shape == (3, 4)


def test_checkpoints_of_another_method_or_size_are_refused(gat_run):
    a = gat_run
    with pytest.raises(CheckpointMismatchError, match="method='gat_mec'.*'drl_fgso'"):
        make("drl_fgso", checkpoint=str(a))
    sched = make("gat_mec", checkpoint=str(a))
    other = TINY.replace(n_devices=7)
    with pytest.raises(CheckpointMismatchError, match="n_devices=6.*n_devices=7"):
        rollout.rollout(sched, other, jax.random.key(0), 2, 2)
    with pytest.raises(CheckpointMismatchError, match="n_servers=2.*n_servers=3"):
        sched.init(jax.random.key(0), TINY.replace(n_servers=3).params())
    with pytest.raises(FileNotFoundError):
        make("gat_mec", checkpoint=str(a.parent / "missing"))


# --------------------------------------------------------------------------
# TS-Hybrid-SB's online bandit.
# --------------------------------------------------------------------------

def test_ts_hybrid_sb_bandit_learns_online():
    s = mecjax.Scenario(n_devices=10, n_servers=3)
    sched = make("ts_hybrid_sb", iterations=20)
    slots, levels = 30, sched.n_levels
    act = jax.jit(lambda k, st, o: sched.act(k, st, o, s), compiler_options=QUICK_COMPILE)
    observe = jax.jit(lambda st, tr: sched.observe(st, tr, s), compiler_options=QUICK_COMPILE)
    step = jax.jit(lambda k, st, d: env.step(k, st, d, s), compiler_options=QUICK_COMPILE)
    grid = np.asarray(mecjax.optim.pricing.price_levels(s, levels))
    key = jax.random.key(5)
    obs, state = env.reset(key, s)
    st = sched.init(key, s)
    posted = []
    for t in range(slots):
        dec, st = act(jax.random.fold_in(key, t), st, obs)
        prices = np.asarray(dec.prices)
        np.testing.assert_array_equal(prices, grid[np.asarray(st.arms)])
        posted.append(np.asarray(st.arms))
        nxt, state, reward, _, info = step(jax.random.fold_in(key, 1000 + t), state, dec)
        assert not bool(info["invalid_decision"])
        st = observe(st, mecjax.schedulers.Transition(obs, dec, reward, nxt, info))
        obs = nxt
    posted = np.stack(posted)
    counts = np.asarray(st.bandit.counts)
    np.testing.assert_array_equal(counts.sum(-1), np.full(3, slots))
    assert float(st.bandit.t) == slots
    for j in range(3):
        assert sorted(posted[:levels, j]) == list(range(levels))        # each level once first
        np.testing.assert_array_equal(np.bincount(posted[:, j], minlength=levels), counts[j])
    means = np.asarray(st.bandit.means)
    assert np.isfinite(means).all() and (np.abs(means) <= 1 + 1e-6).all()   # normalised rewards
    assert (np.asarray(st.scale) > 1e-6).all()
    # The bandit exploits: after exploring, some level per server is played more than once.
    assert (counts.max(-1) > 1).all()
