"""Multi-host ``mecjax reproduce``: every process runs the same cells, sharded over all
their devices; only process 0 locks, reads and writes; the tables equal a single
process's."""

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from mecjax import cli, outputs, sharding
from conftest import run_two_processes, snapshot
from eval import reproduce as rep
from eval.plan import Settings

ROOT = Path(__file__).resolve().parent.parent
# 3 instances over 2 processes x 2 devices: a count the device count does not divide.
ARGS = ["reproduce", "--instances", "3", "--slots", "2", "--sizes", "5",
        "--methods", "local,greedy"]
TABLES = ("paper_tables.md", "paper_tables.csv")


@pytest.fixture(autouse=True)
def _same_compilation_cache(monkeypatch):
    # cli.main enables the persistent cache from MECJAX_CACHE_DIR: keep the suite's.
    monkeypatch.setenv("MECJAX_CACHE_DIR", jax.config.jax_compilation_cache_dir)


def test_two_processes_on_loopback_resume_write_once_and_equal_one_process(tmp_path):
    # A real multi-host launch on this machine: two processes with two CPU devices each,
    # joined through --coordinator on loopback (Gloo), one shared --out that already holds
    # one of the two cells (a resumed run). Process 0 alone decides what is done, so both
    # skip that cell and run the other, sharded; the tables equal a single process's.
    single = tmp_path / "single"
    assert cli.main(ARGS + ["--workers", "1", "--out", str(single)]) == 0
    multi = tmp_path / "multi"
    (multi / "reproduce_cells").mkdir(parents=True)
    for cell in (single / "reproduce_cells").glob("greedy_*.json"):
        shutil.copy(cell, multi / "reproduce_cells")
    logs = run_two_processes([*ARGS, "--out", str(multi)])
    for log in logs:
        assert "2 process(es), 4 devices" in log, log
        assert "greedy N=5: done before, reused" in log and "running 1 cells" in log, log
        assert "all-local N=5: latency" in log, log
    assert "wrote" in logs[0] and "wrote" not in logs[1], logs
    for name in TABLES:
        assert (multi / name).read_bytes() == (single / name).read_bytes(), name
    # the summary names where it was written
    assert (multi / "summary.md").read_text().replace(str(multi), "OUT") == \
        (single / "summary.md").read_text().replace(str(single), "OUT")
    assert sorted(p.name for p in (multi / "reproduce_cells").iterdir()) == \
        sorted(p.name for p in (single / "reproduce_cells").iterdir())
    assert not list(multi.rglob("*.tmp"))


def test_only_process_zero_locks_reads_and_writes(tmp_path, monkeypatch):
    # Another process of a multi-host run computes its shard of every cell that process 0
    # says is not done, but neither takes the lock (process 0 holds it) nor writes.
    out = tmp_path / "out"
    out.mkdir()
    (out / "paper_tables.md").write_text("an earlier report\n")
    before = snapshot(out)
    monkeypatch.setattr(sharding, "is_writer", lambda: False)
    ran = []

    def run_cell(method, n, settings, config, options, shard):
        ran.append((method, n, shard))
        summary = {m: {"mean": 1.0, "ci95": 0.1} for m in ("latency_ms", "energy_j", "fairness")}
        return {"config": config, "summary": summary, "per_instance": {}, "wall_s": 0.0}

    monkeypatch.setattr(rep, "run_cell", run_cell)
    settings = Settings(instances=2, slots=2, sizes=(5, 6), methods=("local",), ablation_size=None)
    with outputs.DirectoryLock(out, "process 0"):
        assert rep.reproduce(settings, out_dir=out, log=lambda *_: None, distributed=True,
                             check_mem=False) is None
    assert ran == [("local", 5, True), ("local", 6, True)]
    after = snapshot(out)
    after.pop(outputs.LOCK_NAME), before.pop(outputs.LOCK_NAME, None)
    assert after == before


def test_processes_that_plan_different_cells_stop_before_running_any(tmp_path, monkeypatch):
    # E.g. a host missing a checkpoint: its cells would differ, and a process waiting in
    # a collective for a cell the others never run would hang.
    monkeypatch.setattr(sharding, "same_on_every_process", lambda text: False)
    monkeypatch.setattr(rep, "run_cell", lambda *_: pytest.fail("a cell ran"))
    settings = Settings(instances=2, slots=2, sizes=(5,), methods=("local",), ablation_size=None)
    with pytest.raises(outputs.UserError, match="the processes plan different cells"):
        rep.reproduce(settings, out_dir=tmp_path / "out", log=lambda *_: None, distributed=True)
    assert not list((tmp_path / "out").rglob("*.json"))


@pytest.mark.parametrize("flags, message", [
    (["--distributed", "--workers", "2"], "--workers 2 cannot be used with --distributed"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0",
      "--workers", "3"], "--workers 3 cannot be used with --distributed"),
    (["--coordinator", "127.0.0.1:1"], "--coordinator, --num-processes and --process-id go "
                                       "together"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id 2 must be in [0, 2)"),
])
def test_bad_multi_host_flags_are_one_line_errors_before_joining(tmp_path, capsys, monkeypatch,
                                                                 flags, message):
    monkeypatch.setattr(sharding, "initialize_distributed",
                        lambda **_: pytest.fail("joined a multi-host run"))
    assert cli.main(ARGS + flags + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mecjax reproduce: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_a_multi_host_run_runs_one_cell_at_a_time_in_process(monkeypatch):
    # --workers defaults to 1 with --distributed (worker processes would not be part of it).
    monkeypatch.setattr(sharding, "initialize_distributed", lambda **_: None)
    args = rep.build_parser().parse_args(ARGS[1:] + ["--distributed"])
    assert rep.settings_from_args(args)[1] == 1
    assert rep.settings_from_args(rep.build_parser().parse_args(ARGS[1:]))[1] == 2


def test_replicated_copies_array_leaves_to_every_device_of_the_mesh():
    # A learned scheduler's weights are loaded on one device; the sharded rollout needs
    # them on every device of the mesh (else jit refuses the mix of devices).
    mesh = sharding.instance_mesh()
    tree = {"w": jax.device_put(np.arange(3.0), jax.devices()[0]), "n": 2}
    out = sharding.replicated(tree, mesh)
    assert out["n"] == 2
    assert out["w"].sharding == jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    np.testing.assert_array_equal(np.asarray(out["w"]), np.arange(3.0))
