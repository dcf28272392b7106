"""The benchmark command writes its table and record (no timing is asserted)."""

import json

from mecjax import bench
from mecjax.cli import main


def test_bench_env_writes_markdown_and_json(tmp_path):
    rows = bench.bench_env(ns=(5,), batches=(2,), out_dir=tmp_path, budget=200, repeats=1,
                           log=lambda *_: None)
    assert len(rows) == 1
    row = rows[0]
    for key in ("jax_step_dev_per_s", "numpy_step_dev_per_s", "jax_eval_dev_per_s",
                "numpy_eval_dev_per_s"):
        assert row[key] > 0
    assert row["step_speedup"] == row["jax_step_dev_per_s"] / row["numpy_step_dev_per_s"]
    record = json.loads((tmp_path / "env_throughput.json").read_text())
    assert record["rows"][0]["n_devices"] == 5 and "jax" in record["machine"]
    table = (tmp_path / "env_throughput.md").read_text()
    assert "| 5 | 2 |" in table and "mecjax bench env" in table


def test_cli_bench_env_runs(tmp_path, capsys):
    assert main(["bench", "env", "--ns", "4", "--batches", "3", "--budget", "100",
                 "--repeats", "1", "--out", str(tmp_path)]) == 0
    assert "N=    4 B=    3" in capsys.readouterr().out
    assert (tmp_path / "env_throughput.md").exists()
