"""mecjax leaderboard (eval/leaderboard.py): resume, outputs, headroom, refusals, and the
compile sharing of one method's seeds (mecjax.schedulers.learned.in_memory)."""

import csv
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from mecjax import checkpoint as ckpt
from mecjax.checkpoint import CheckpointMismatchError
from mecjax import tasks
from mecjax.learners.base import get_learner
from mecjax.learners.store import policy_shapes, run_config
from mecjax.outputs import UserError
from mecjax.rollout import _rollout, rollout
from mecjax.schedulers import available, make
from mecjax.schedulers.learned import in_memory
from eval import leaderboard as lb

TASK, N = "paper-v0", 4
SEEDS = (0, 1)


def write_policy(out_dir, method: str, scenario, seed: int) -> None:
    """A random policy of ``method`` for ``scenario`` as an exported policy directory (what
    ``export_policy`` writes; no training: its program would cost the suite a compile)."""
    learner = get_learner(method)
    rng = np.random.default_rng(seed)
    policy = jax.tree.map(
        lambda x: np.asarray(rng.standard_normal(x.shape) if x.shape
                             else np.abs(0.05 * rng.standard_normal(x.shape))).astype(x.dtype),
        policy_shapes(learner, scenario))
    ckpt.save(Path(out_dir) / "ckpt", 1, policy,
              {**run_config(learner, scenario, seed, 1), "kind": "policy"})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    scenario = tasks.make(TASK, n_devices=N)
    for seed in SEEDS:
        write_policy(lb.task_shipped_dir(TASK, "drl_fgso", seed, str(root)), "drl_fgso",
                     scenario, seed)
    return str(root)


def settings(**kw):
    base = dict(instances=2, slots=2, seed=0, train_seeds=SEEDS, horizons=(3,), reps=200,
                workers=1, tasks=(TASK,), methods=("drl_fgso",), n_devices=N)
    return lb.Settings(**{**base, **kw})


@pytest.fixture(scope="module")
def first(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("lb")
    log = []
    record = lb.leaderboard(settings(), out_dir=str(out), root=root, log=log.append)
    return out, record, log


def test_every_builtin_scheduler_is_on_the_leaderboard_or_excluded_with_a_reason():
    assert set(available()) == set(lb.METHODS) | set(lb.EXCLUDED)
    assert not set(lb.METHODS) & set(lb.EXCLUDED)
    assert set(lb.COUPLED_TASKS) <= set(tasks.names())


def test_outputs_agree_and_headroom_is_one_for_the_reference_and_zero_for_all_local(first):
    out, record, log = first
    assert any("[4/4]" in line for line in log)          # local, cooperative, 2 seeds
    rows = {(r["method"], r["variant"]): r for r in record["rows"]}
    assert set(rows) == {("local", ""), ("cooperative", ""), ("drl_fgso", "")}
    assert rows[("drl_fgso", "")]["train_seeds"] == list(SEEDS)
    for method, want in (("cooperative", 1.0), ("local", 0.0)):
        hs = rows[(method, "")]["headroom_share"]
        assert [hs[k] for k in ("mean", "low", "high")] == pytest.approx([want] * 3, abs=1e-9)
    # The same numbers in the JSON, the CSV and the Markdown.
    saved = json.loads((out / "leaderboard.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(record["rows"]))
    table = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert len(table) == len(saved["rows"])
    md = (out / "leaderboard.md").read_text()
    for r, c in zip(saved["rows"], table):
        assert (c["task"], c["method"], c["variant"]) == (r["task"], r["method"], r["variant"])
        for metric in ("mean_cost", "latency_ms", "headroom_share"):
            for k in ("mean", "low", "high"):
                assert float(c[f"{metric}_{k}"]) == pytest.approx(r[metric][k], rel=1e-5,
                                                                   abs=1e-12)
        assert lb._fmt(r["headroom_share"], 2) in md
    drl = rows[("drl_fgso", "")]
    assert f"| DRL-FGSO | {lb._fmt(drl['headroom_share'], 2)} |" in md
    # The mean over the seeds' cells, and an interval around it.
    cells = [json.loads(p.read_text()) for p in (out / "leaderboard_cells").glob("*drl_fgso*")]
    assert len(cells) == 2
    mean = np.mean([c["per_instance"]["mean_cost"] for c in cells])
    assert drl["mean_cost"]["mean"] == pytest.approx(mean)
    assert drl["mean_cost"]["low"] <= mean <= drl["mean_cost"]["high"]
    assert [a["method"] for a in record["aggregate"]] == ["local", "cooperative", "drl_fgso"]
    assert (out / "figures" / lb.HEATMAP).read_bytes()[:4] == b"\x89PNG"


def test_a_rerun_reuses_every_cell_and_a_changed_setting_recomputes(first, root):
    out, record, _ = first
    log = []
    again = lb.leaderboard(settings(), out_dir=str(out), root=root, log=log.append)
    assert "4 done before, reused" in log[0] and not any("[1/" in line for line in log)
    assert again["rows"] == record["rows"]
    # Another evaluation key: the same programs, other instances, every cell recomputed.
    log = []
    other = lb.leaderboard(settings(seed=1), out_dir=str(out), root=root, log=log.append)
    assert "0 done before" in log[0] and any("[4/4]" in line for line in log)
    assert other["rows"][0]["mean_cost"] != record["rows"][0]["mean_cost"]


def test_in_memory_schedulers_of_two_seeds_share_one_compiled_program(first, root):
    dirs = [lb.task_shipped_dir(TASK, "drl_fgso", s, root) for s in SEEDS]
    a, b = (make("drl_fgso", checkpoint=d) for d in dirs)
    assert jax.tree.structure(a) != jax.tree.structure(b)      # the path is static
    ma, mb = in_memory(a), in_memory(b)
    assert jax.tree.structure(ma) == jax.tree.structure(mb)
    assert ma.checkpoint == "" and ma.trained.checkpoint == ""
    # The weights are kept, each seed's own.
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(ma)))
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(ma), jax.tree.leaves(mb)))
    # A scheduler without checkpoints is returned as it is.
    local = make("local")
    assert in_memory(local) is local
    # The unified scheduler: every module's path cleared, weights kept.
    ua, ub = (in_memory(make("unified", use_dt=False, use_gat=False, use_marl=False,
                             drl_checkpoint=d)) for d in dirs)
    assert jax.tree.structure(ua) == jax.tree.structure(ub)
    assert ua.drl_checkpoint == "" and ua.modules["drl"].checkpoint == ""
    # One compile for both (the leaderboard's shapes: compiled already or now, once).
    s = tasks.make(TASK, n_devices=N)
    from mecjax.config import as_params
    p = as_params(s)
    ra = rollout(ma, p, jax.random.key(0), 2, 2)
    size = _rollout._cache_size()
    rb = rollout(mb, p, jax.random.key(0), 2, 2)
    assert _rollout._cache_size() == size
    assert not np.array_equal(ra["offload_fraction"], rb["offload_fraction"]) or \
        not np.array_equal(ra["mean_cost"], rb["mean_cost"])


def test_missing_checkpoints_and_bad_flags_are_one_line_before_anything_is_written(
        root, tmp_path, capsys):
    from mecjax.cli import run_program

    out = tmp_path / "out"
    with pytest.raises(UserError, match="checkpoint.*missing.*drl_fgso_s7.*train-shipped "
                                        "--tasks all.*--no-learned"):
        lb.leaderboard(settings(train_seeds=(0, 7)), out_dir=str(out), root=root)
    for argv in (["--instances", "1"], ["--methods", "exact"], ["--methods", "nope"],
                 ["--tasks", "nowhere"], ["--train-seeds", "0,0"], ["--slots", "x"],
                 ["--seed", str(2 ** 32)], ["--workers", "0"]):
        assert run_program("leaderboard", lb.main, argv + ["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mecjax leaderboard: ") and err.count("\n") == 1, err
    assert not out.exists()
    # A checkpoint trained for another N: refused from its config, before any cell runs.
    with pytest.raises(CheckpointMismatchError, match="drl_fgso_s0.*n_devices.*4.*5"):
        lb.leaderboard(settings(n_devices=5), out_dir=str(out), root=root)
    assert not out.exists()
    # --no-learned leaves them out instead (and says so).
    plan, missing = lb.plan(settings(learned=False, train_seeds=(0, 7)), root, tmp_path)
    assert not missing and {c.method for c in plan} == {"local", "cooperative"}


def test_dt_mec_variants_and_their_paired_differences_on_the_coupled_tasks(tmp_path):
    s = settings(tasks=("congested-v0", TASK), methods=("dt_mec",), horizons=(1, 3))
    cells, missing = lb.plan(s, str(tmp_path), tmp_path)
    assert len(missing) == 2 * len(SEEDS)                 # twin_s0, twin_s1 of each task
    got = {(c.task, c.variant, c.seed) for c in cells if c.method == "dt_mec"}
    assert got == {(t, "", k) for t in ("congested-v0", TASK) for k in SEEDS} | \
        {("congested-v0", "twin, H=1", k) for k in SEEDS} | \
        {("congested-v0", f"persistence, H={h}", None) for h in (1, 3)}
    # The report on made-up cells: twin 0.01 cheaper than persistence on every instance,
    # H=3 no different from H=1.
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.3, 6)
    cost = {"local": base + 0.1, "cooperative": base - 0.05}
    results = {}
    for c in cells:
        if c.method in cost:
            v = cost[c.method]
        elif c.options.get("forecast") == "persistence":
            v = base
        else:
            v = base - 0.01 + 1e-4 * (c.seed or 0)
        results[c.path] = {"per_instance": {m: list(v) for m, _, _ in lb.METRICS}}
    record = lb.build_record(dataclasses.replace(s, instances=6), cells, results, "root")
    diffs = {(d["task"], d["comparison"]): d for d in record["dt_differences"]}
    assert set(diffs) == {("congested-v0", "twin - persistence, H=1"),
                          ("congested-v0", "twin - persistence, H=3"),
                          ("congested-v0", "twin: H=3 - H=1"),
                          ("congested-v0", "persistence: H=3 - H=1")}
    tp = diffs[("congested-v0", "twin - persistence, H=3")]
    assert tp["mean_cost"]["mean"] == pytest.approx(-0.01 + 0.5e-4)
    assert tp["mean_cost"]["high"] < 0 and lb._verdict(tp["mean_cost"]) == "better"
    assert tp["headroom_share"]["mean"] == pytest.approx((0.01 - 0.5e-4) / 0.15)
    h = diffs[("congested-v0", "persistence: H=3 - H=1")]["mean_cost"]
    assert h["mean"] == 0.0 and lb._verdict(h) == "no clear difference"
    text = "\n".join(lb.findings(record))
    assert "does the twin's forecast help DT-MEC (twin - persistence, mean cost)? H=1: better" \
        in text
    assert "persistence, H=3 against H=1: no clear difference" in text
    md = lb.render_markdown(record)
    assert "| congested-v0 | persistence, H=1 | - |" in md
