"""Sweeps: sharded equals unsharded, resume, grid parsing, the CLI."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from eval import sweep
from mecjax.cli import main
from mecjax.rollout import METRICS

SHARDED_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    import mecjax
    from mecjax import rollout, schedulers, sharding
    assert jax.device_count() == 4, jax.devices()
    s = mecjax.Scenario(n_devices=12)
    out = {}
    # local: the environment alone; random: a scheduler drawing its own keys per instance
    # (and slot), cheap to compile (a search's program adds nothing to what is compared)
    for name, opts in (("local", {}), ("random", {})):
        sch = schedulers.make(name, **opts)
        sharded = sharding.sharded_rollout(sch, s, jax.random.key(3), 10, 3)  # 10 = not a multiple of 4
        plain = rollout.rollout(sch, s, jax.random.key(3), 10, 3)
        err = max(float(np.max(np.abs(sharded[k] - np.asarray(plain[k])) /
                               (np.abs(np.asarray(plain[k])) + 1e-6))) for k in sharded)
        out[name] = {"err": err, "shape": list(sharded["mean_cost"].shape)}
    # the program really runs on 4 devices (local's sharded program above: 10 instances
    # padded to 12, 3 slots)
    mesh = sharding.instance_mesh()
    kd = jax.random.key_data(jax.random.split(jax.random.key(0), 12))
    arr = jax.device_put(kd, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("instances")))
    res = sharding._rollout_from_key_data(schedulers.make("local"), s, arr, 3)
    out["devices_used"] = len(res["mean_cost"].sharding.device_set)
    print(json.dumps(out))
""")


def test_sharded_rollout_on_four_cpu_devices_equals_unsharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices_used"] == 4
    for name in ("local", "random"):
        assert out[name]["shape"] == [10, 3]
        assert out[name]["err"] < 1e-5, (name, out[name])


def test_parse_grid_item():
    assert sweep.parse_grid_item("n_devices=50,100") == ("n_devices", (50, 100))
    assert sweep.parse_grid_item("bandwidth_hz=5e6,1e7") == ("bandwidth_hz", (5e6, 1e7))
    assert sweep.parse_grid_item("mobility=true,false") == ("mobility", (True, False))
    with pytest.raises(ValueError, match="not a Scenario field"):
        sweep.parse_grid_item("bandwith=1")
    with pytest.raises(ValueError, match="FIELD=V1"):
        sweep.parse_grid_item("n_devices")


def test_sweep_writes_streams_and_resumes(tmp_path, monkeypatch):
    spec = sweep.SweepSpec(schedulers=("local", "nearest"), grid=(("n_devices", (4, 6)),),
                           instances=3, slots=2)
    logs = []
    calls = []
    real = sweep.run_cell

    def flaky(point, sched, spec_, shard):
        calls.append((sched, point["n_devices"]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the sweep during the third cell
        return real(point, sched, spec_, shard)

    monkeypatch.setattr(sweep, "run_cell", flaky)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(spec, tmp_path, shard=False, log=logs.append)
    monkeypatch.setattr(sweep, "run_cell", real)
    first = sweep.run_sweep(spec, tmp_path, shard=False, log=logs.append)
    reused = [line for line in logs if "reused" in line]
    assert len(reused) == 2, logs          # the two cells finished before the interruption
    assert len(first) == 4
    again = []
    second = sweep.run_sweep(spec, tmp_path, shard=False, log=again.append)
    assert sum("reused" in line for line in again) == 4
    assert [c["summary"] for c in first] == [c["summary"] for c in second]
    rows = (tmp_path / "sweep.csv").read_text().strip().splitlines()
    assert rows[0].startswith("scheduler,n_devices,metric")
    assert len(rows) == 1 + 4 * len(METRICS)   # one row per cell and metric
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert len(record["cells"]) == 4
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    # local's latency is C/f regardless of N; nearest offloads everything
    lat = {c["config"]["scheduler"]: c["summary"]["offload_fraction"]["mean"] for c in first}
    assert lat["local"] == 0.0 and lat["nearest"] == 1.0


def test_sweep_sharded_path_on_one_device_matches(tmp_path):
    spec = sweep.SweepSpec(schedulers=("greedy",), grid=(("n_devices", (5,)),), instances=3, slots=2)
    a = sweep.run_sweep(spec, tmp_path / "a", shard=True, log=lambda *_: None)
    b = sweep.run_sweep(spec, tmp_path / "b", shard=False, log=lambda *_: None)
    np.testing.assert_allclose(a[0]["per_instance"]["mean_cost"], b[0]["per_instance"]["mean_cost"],
                               rtol=1e-6)


def test_cli_sweep_rejects_bad_input(tmp_path, capsys):
    cases = [(["--schedulers", "local,nope"], "unknown scheduler"),
             (["--grid", "devices=5"], "not a Scenario field"),
             (["--schedulers", "local", "--grid", "n_devices=0"], "Scenario.n_devices")]
    for args, message in cases:
        assert main(["sweep", *args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mecjax sweep: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
