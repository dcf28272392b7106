"""The benchmark command writes its table and record (no timing is asserted)."""

import json

import pytest

from benchmarks import env as bench
from mecjax.cli import main
from mecjax.outputs import UserError


def test_bench_env_writes_markdown_and_json(tmp_path):
    rows = bench.bench_env(ns=(5,), batches=(2,), out_dir=tmp_path, budget=200, repeats=1,
                           numba=False, log=lambda *_: None)
    assert len(rows) == 1
    row = rows[0]
    for key in ("jax_step_dev_per_s", "numpy_step_dev_per_s", "jax_eval_dev_per_s",
                "numpy_eval_dev_per_s"):
        assert row[key] > 0
    assert row["step_speedup"] == row["jax_step_dev_per_s"] / row["numpy_step_dev_per_s"]
    assert row["numba_step_dev_per_s"] is None   # not asked for: no Numba columns
    record = json.loads((tmp_path / "env_throughput.json").read_text())
    assert record["rows"][0]["n_devices"] == 5 and "jax" in record["machine"]
    table = (tmp_path / "env_throughput.md").read_text()
    assert "| 5 | 2 |" in table and "mecjax bench env" in table and "Numba evaluate" in table
    assert "not run: Numba not installed, or not asked for" in table
    # The noise generators are timed on the same rollout: ours against JAX's own.
    noise = record["noise_generators"]
    assert [(r["noise_rng"], r["key_impl"]) for r in noise] == [
        ("hash", "threefry2x32"), ("jax", "threefry2x32"), ("jax", "rbg"), ("jax", "unsafe_rbg")]
    assert noise[0]["vs_hash"] == 1.0 and all(r["dev_steps_per_s"] > 0 for r in noise)
    assert "## Which generator draws the noise" in table and "| jax | unsafe_rbg | 5 | 2 |" in table


def test_numba_kernels_agree_with_mecjax_and_are_timed():
    """The bench extra's kernels (where numba is installed) ran the same evaluation and
    step after agreeing with mecjax's outcome and next state (float32)."""
    pytest.importorskip("numba")
    row = bench.bench_env_row(5, 2, budget=200, repeats=1, numpy_max_devices=1e3,
                              log=lambda *_: None)
    assert row["numba_step_dev_per_s"] > 0 and row["numba_eval_dev_per_s"] > 0
    assert row["eval_vs_numba"] == row["jax_eval_dev_per_s"] / row["numba_eval_dev_per_s"]
    assert 0 <= row["numba_max_rel_diff"] < 1e-5


def test_numba_kernels_name_the_scenario_field_they_do_not_model():
    pytest.importorskip("numba")
    from benchmarks import numba_kernels
    from mecjax.config import Scenario

    numba_kernels.check_supported(Scenario())
    for field, value in (("battery_hard", True), ("device_queue", True), ("mobility", True),
                         ("wan_delay_s", (0.0, 0.0, 0.05))):
        with pytest.raises(ValueError, match=f"Scenario.{field}="):
            numba_kernels.check_supported(Scenario(**{field: value}))


def test_cli_bench_env_runs(tmp_path, capsys):
    # The sizes of the test above: the same compiled programs.
    assert main(["bench", "env", "--ns", "5", "--batches", "2", "--budget", "200",
                 "--repeats", "1", "--out", str(tmp_path)]) == 0
    assert "N=    5 B=    2" in capsys.readouterr().out
    assert (tmp_path / "env_throughput.md").exists()


def test_bench_scale_writes_table_figure_and_exponents(tmp_path):
    from benchmarks.scale import bench_scale, growth_exponent

    assert abs(growth_exponent([10, 100, 1000], [1.0, 10.0, 100.0], 10) - 1.0) < 1e-9
    assert abs(growth_exponent([150, 300], [1.0, 4.0], 150) - 2.0) < 1e-9
    # Each (N, B) point is a compiled program: the B series' one point is a point of the N
    # series (served by the persistent compilation cache), so 2 + 2 programs in all, and
    # the env point N = 5, B = 2 (20 slots on this budget) is the rollout
    # test_bench_env_writes_markdown_and_json compiled: 1 + 2 new ones.
    res = bench_scale(ns=(5, 16), env_batch=2, batches=(2,), batch_n=5, qio_ns=(5, 16),
                      qio_batch=1, qio_batches=(1,), qio_iterations=2, repeats=1, budget=200,
                      out_dir=tmp_path, log=lambda *_: None)
    assert set(res["exponents"]) == {"env_vs_n", "env_vs_batch", "qio_vs_n", "qio_vs_batch"}
    assert len(res["rows"]["env_n"]) == 2 and res["rows"]["env_n"][0]["memory_bytes"] > 0
    assert [(r["n_devices"], r["batch"]) for r in res["rows"]["env_b"] + res["rows"]["qio_b"]] \
        == [(5, 2), (5, 1)]
    assert "fitted exponent" in (tmp_path / "scale.md").read_text()
    assert (tmp_path / "scale.png").stat().st_size > 1000


def test_bench_schedulers_table_and_missing_checkpoints(tmp_path):
    from benchmarks.schedulers import bench_schedulers

    logs = []
    # A few methods (each is a compiled rollout; every scheduler's rollout is tested in
    # test_schedulers): two searches, a heuristic and three learned ones without checkpoints.
    rows = bench_schedulers(ns=(6,), instances=2, slots=1, repeats=1, ckpt_root=str(tmp_path),
                            out_dir=str(tmp_path / "out"), log=logs.append,
                            methods=("qio_mec", "greedy", "dt_mec", "drl_fgso", "unified"))
    names = [r["scheduler"] for r in rows]
    assert names[0] == "local" and rows[0]["slowdown_vs_local"] == 1.0
    # Learned methods need their checkpoints; without them they are skipped, not faked.
    assert "drl_fgso" not in names and "unified" not in names
    assert any("DT-MEC N=6: no checkpoint" in line for line in logs)
    assert set(names) == {"local", "qio_mec", "greedy"}
    assert all(r["decisions_per_s"] > 0 for r in rows)
    md = (tmp_path / "out" / "scheduler_throughput.md").read_text()
    assert "| QIO-MEC | 6 |" in md
    with pytest.raises(UserError, match="--methods: unknown no_such"):
        bench_schedulers(ns=(6,), methods=("no_such",), out_dir=None, log=logs.append)
