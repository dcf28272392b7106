"""`mecjax tasks`: the per-slot probe on hand-made slots, and the program end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from eval.tasks import server_kinds, slot_probe
from mecjax import env, tasks
from mecjax.cli import main


def test_probe_counts_backlogs_queues_forced_devices_and_servers_used():
    s = tasks.make("congested", n_devices=4)
    obs, _ = env.reset(jax.random.key(0), s)
    obs = obs.replace(battery=jnp.array([0.0, 0.0, 5.0, 5.0]),
                      backlog=jnp.array([0.0, 1e8, 0.0]),
                      device_backlog=jnp.array([0.0, 0.0, 3e7, 0.0]))
    decision = env.Decision(offload=jnp.array([0, 2, 0, 2]), prices=jnp.full(3, 0.5))
    out = slot_probe(obs, decision, s)
    assert float(out["server_backlog"]) == 1.0 and float(out["device_queue"]) == 1.0
    assert float(out["battery_low"]) == 0.5          # devices 0 and 1 cannot pay locally
    assert float(out["forced"]) == 0.25              # ... of which device 0 chose local
    np.testing.assert_allclose(out["per_server"], [0.0, 0.5, 0.0])
    empty = slot_probe(obs.replace(backlog=jnp.zeros(3), device_backlog=jnp.zeros(4)),
                       decision, s)
    assert float(empty["server_backlog"]) == 0.0 and float(empty["device_queue"]) == 0.0


def test_server_kinds_group_equal_servers():
    assert server_kinds(tasks.make("paper")) == [0, 0, 0]
    assert server_kinds(tasks.make("heterogeneous-cloud")) == [0, 1, 2, 3]


def test_the_program_writes_the_table_and_refuses_bad_input_before_writing(tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["tasks", "--tasks", "paper,atlantis", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--tasks: unknown task 'atlantis'" in err[0]
    assert not out.exists()
    assert main(["tasks", "--tasks", "congested", "--instances", "2", "--slots", "3",
                 "--n-devices", "6", "--out", str(out)]) == 0
    table = (out / "tasks.md").read_text()
    assert "| congested-v0 | all-local |" in table and "| congested-v0 | cooperative |" in table
    record = json.loads((out / "tasks.json").read_text())
    rows = record["tasks"][0]["rows"]
    for row in rows.values():
        for key in ("server_backlog", "device_queue", "forced", "failed", "battery_low",
                    "deadline_miss"):
            assert 0.0 <= row[key]["mean"] <= 1.0
    # all-local sends nothing to the servers by choice: at most the battery-forced tasks
    assert rows["all-local"]["kinds_used"] <= 1
