"""A benchmark-sized check at the paper's largest size (N = 150): do the methods beat the
trivial reference, and does the cooperative reference beat the selfish one?

A few instances and slots, not a timed test. A method that fails here is reported in the
README (known failures are marked ``xfail(strict=True)``: the mark itself fails the suite
once the method passes, so the README cannot go stale)."""

import jax
import numpy as np
import pytest

from mecjax.config import Scenario
from mecjax.schedulers import make
from eval.plan import learned_checkpoint
from train.recipes import SHIPPED_ROOT

from conftest import quick_rollout

N, INSTANCES, SLOTS = 150, 4, 3
SCENARIO = Scenario(n_devices=N, horizon=SLOTS)
# Measured failures at N = 150 (results/paper_tables.md, headroom share < 0), in the README.
KNOWN_WORSE_THAN_LOCAL = {
    "ts_hybrid_sb": "its bandit prices raise the payments eq. 16 counts as cost",
    "drl_fgso": "the retrained DQN offloads too much at N = 150",
}


def mean_cost(name: str) -> np.ndarray:
    found = learned_checkpoint(name, N, SHIPPED_ROOT)
    assert found is not None, f"no shipped checkpoint of {name} at N={N}"
    out = quick_rollout(make(name, **found[0]), SCENARIO, jax.random.key(0), INSTANCES, SLOTS)
    return np.asarray(out["mean_cost"], np.float64).mean(axis=1)   # [instances]


@pytest.fixture(scope="module")
def local():
    return mean_cost("local")


PAPER_METHODS = ["qio_mec", "ts_hybrid_sb", "drl_fgso", "gat_mec", "tsg_marl", "dt_mec",
                 "unified"]


@pytest.mark.parametrize("name", [
    pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=KNOWN_WORSE_THAN_LOCAL[m]))
    if m in KNOWN_WORSE_THAN_LOCAL else m for m in PAPER_METHODS])
def test_paper_method_beats_all_local_at_n150(name, local):
    cost = mean_cost(name)
    assert cost.mean() < local.mean(), (name, cost, local)


def test_cooperative_beats_best_response_by_a_clear_margin_at_n150(local):
    coop, nash = mean_cost("cooperative"), mean_cost("best_response")
    assert np.all(coop < nash), (coop, nash)
    # the saving over all-local is at least 1.5 times the selfish equilibrium's
    assert (local - coop).mean() > 1.5 * (local - nash).mean(), (local, coop, nash)
