"""``mecjax sweep`` refuses bad input, a busy directory and a job too large for memory
before it writes anything, writes strict JSON, and never loses the previous outputs
(atomic, all-or-none writes; a full disk is injected)."""

import errno
import json
import shutil

import pytest

from eval import sweep
from mecjax import outputs, preflight
from mecjax.cli import main
from conftest import snapshot

FILES = ("sweep.csv", "sweep.json", "sweep.png")
BASE = ["sweep", "--schedulers", "local", "--grid", "n_devices=4,5", "--instances", "2",
        "--slots", "1", "--no-shard"]


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A finished sweep's directory (made once, copied by each test)."""
    d = tmp_path_factory.mktemp("previous") / "out"
    assert main(BASE + ["--out", str(d)]) == 0
    assert all((d / f).stat().st_size > 0 for f in FILES)
    return d


@pytest.fixture
def out(previous, tmp_path):
    d = tmp_path / "out"
    shutil.copytree(previous, d)
    return d


def strict_json(path):
    def refuse(const):
        raise ValueError(f"non-standard JSON constant {const}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("args, message", [
    (["--instances", "0"], "--instances 0 must be an integer >= 1"),
    (["--slots", "0"], "--slots 0 must be an integer >= 1"),
    (["--grid", "n_devices=4", "--grid", "n_devices=6"], "--grid repeats the axis n_devices"),
    (["--grid", "n_devices=abc"], "grid field 'n_devices' takes int values, got 'abc'"),
    (["--grid", "n_devices=4,4"], "repeats the value(s) 4"),
    (["--schedulers", ","], "--schedulers names no scheduler"),
    (["--schedulers", "local,local"], "--schedulers repeats local"),
    # each value is valid alone; the cell min=3e9, max=2e9 is not
    (["--grid", "device_cpu_min_hz=1e9,3e9", "--grid", "device_cpu_max_hz=2e9,4e9"],
     "grid cell n_devices=4 device_cpu_min_hz=3000000000.0 device_cpu_max_hz=2000000000.0: "
     "Scenario.device_cpu_min_hz=3000000000.0 is invalid"),
])
def test_bad_input_refused_before_anything_runs_or_is_written(out, args, message, capsys,
                                                              monkeypatch):
    before = snapshot(out)

    def must_not_run(*_):
        raise AssertionError("a cell ran before the input was validated")

    monkeypatch.setattr(sweep, "run_cell", must_not_run)
    assert main(BASE + args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mecjax sweep: ") and err.count("\n") == 1, err
    assert message in err, err
    assert snapshot(out) == before


def test_json_is_strict_and_says_what_null_means(tmp_path):
    # One instance: no confidence interval (ci95 = inf), which plain json.dumps writes
    # as the invalid token Infinity.
    d = tmp_path / "one"
    assert main(BASE[:-5] + ["--instances", "1", "--slots", "1", "--no-shard",
                             "--out", str(d)]) == 0
    record = strict_json(d / "sweep.json")
    assert "one instance" in record["null_means"]
    assert all(c["summary"]["mean_cost"]["ci95"] is None for c in record["cells"])
    assert all(c["summary"]["mean_cost"]["mean"] is not None for c in record["cells"])


def test_busy_directory_refused_naming_the_holder(out, capsys):
    before = snapshot(out)
    lock = outputs.DirectoryLock(out, "test holder").acquire()
    try:
        assert main(BASE + ["--seed", "1", "--out", str(out)]) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert err.startswith(f"mecjax sweep: {out} is in use by pid ") and "test holder" in err, err
    assert err.count("\n") == 1
    after = snapshot(out)
    after.pop(outputs.LOCK_NAME), before.pop(outputs.LOCK_NAME)
    assert after == before


@pytest.mark.parametrize("failing", FILES)
def test_full_disk_leaves_previous_outputs_intact(out, failing, capsys, monkeypatch):
    before = {f: (out / f).read_bytes() for f in FILES}
    real_open = open

    class HalfWriter:
        """A file on a disk that fills up halfway through the write."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_disk_open(path, *a, **kw):
        f = real_open(path, *a, **kw)
        return HalfWriter(f) if failing in str(path) else f

    monkeypatch.setattr(outputs, "open", full_disk_open, raising=False)
    # another seed: every output of this run differs from the previous one
    assert main(BASE + ["--seed", "7", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mecjax sweep: cannot write") and "No space left" in err, err
    assert {f: (out / f).read_bytes() for f in FILES} == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".sweep")]
    # once there is room again the same command completes
    monkeypatch.undo()
    assert main(BASE + ["--seed", "7", "--out", str(out)]) == 0
    assert (out / "sweep.json").read_bytes() != before["sweep.json"]
    assert strict_json(out / "sweep.json")["spec"]["seed"] == 7


def test_memory_preflight_refuses_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preflight, "memory_limit", lambda: 1000)
    monkeypatch.setattr(sweep, "run_cell", lambda *_: pytest.fail("a cell ran"))
    d = tmp_path / "new"
    assert main(BASE + ["--out", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mecjax sweep: the sweep's largest cell needs about "), err
    assert "--instances or the grid's n_devices" in err and err.count("\n") == 1
    assert not d.exists()


def test_only_process_zero_writes(out, monkeypatch):
    # Another process of a multi-host run computes its shard but neither takes the lock
    # (process 0 holds it) nor writes.
    before = snapshot(out)
    monkeypatch.setattr(sweep, "_is_writer", lambda: False)
    lock = outputs.DirectoryLock(out, "process 0").acquire()
    try:
        spec = sweep.SweepSpec(schedulers=("local",), grid=(("n_devices", (4,)),), instances=2,
                               slots=1, seed=3)
        cells = sweep.run_sweep(spec, out, shard=False, log=lambda *_: None)
    finally:
        lock.release()
    assert len(cells) == 1
    after = snapshot(out)
    after.pop(outputs.LOCK_NAME), before.pop(outputs.LOCK_NAME)
    assert after == before


def test_distributed_flags():
    parse = sweep.build_parser().parse_args
    assert sweep.distributed_args(parse([])) is None
    assert sweep.distributed_args(parse(["--distributed"])) == {}
    assert sweep.distributed_args(parse(["--coordinator", "localhost:1234", "--num-processes",
                                         "2", "--process-id", "1"])) == {
        "coordinator": "localhost:1234", "num_processes": 2, "process_id": 1}
    with pytest.raises(outputs.UserError, match="go together"):
        sweep.distributed_args(parse(["--coordinator", "localhost:1234"]))
    with pytest.raises(outputs.UserError, match=r"--process-id 2 must be in \[0, 2\)"):
        sweep.distributed_args(parse(["--coordinator", "h:1", "--num-processes", "2",
                                      "--process-id", "2"]))


def test_two_processes_on_loopback_write_once_and_equal_one_process(tmp_path):
    # A real multi-host launch on this machine: two processes with two CPU devices each,
    # joined through --coordinator on loopback, one shared --out. Only process 0 writes,
    # and the result equals a single process's.
    from conftest import run_two_processes

    args = ["sweep", "--schedulers", "local,greedy", "--grid", "n_devices=4", "--instances", "4",
            "--slots", "2"]
    multi = tmp_path / "multi"
    run_two_processes([*args, "--out", str(multi)])
    assert main(args + ["--out", str(tmp_path / "single"), "--no-shard"]) == 0
    assert (multi / "sweep.csv").read_bytes() == (tmp_path / "single" / "sweep.csv").read_bytes()
    assert sorted(p.name for p in (multi / "cells").iterdir()) == \
        sorted(p.name for p in (tmp_path / "single" / "cells").iterdir())
    assert not list(multi.rglob("*.tmp"))
