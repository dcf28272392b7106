"""``mecjax train`` under hostile use: busy, wrong or mistyped run directories, bad
hyper-parameters, mismatched, torn or corrupt run files, memory preflight. Each case is
a one-line error (exit status 2) that writes nothing, or a repair that resumes exactly."""

import logging
import types

import numpy as np
import pytest

import mecjax.preflight
from mecjax import checkpoint as ckpt
from mecjax.cli import main as cli
from mecjax.learners.base import get_learner
from mecjax.outputs import DirectoryLock
from test_train import S, ToyLearner, _leaves  # noqa: F401 - registers toy_test_learner
from train.curves import read_metrics
from train.run import train

QUIET = dict(log=lambda *_: None)
TOY = ["train", "toy_test_learner", "--n-devices", "5", "--n-servers", "2", "--updates", "4",
       "--chunk", "2"]


def _files(d):
    """Every file under ``d`` but the lock (which records its latest holder)."""
    return ({p: p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name != ".mecjax.lock"}
            if d.exists() else None)


def _one_line_error(capsys, argv):
    rc = cli(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("mecjax train: "), err
    return err


def test_second_writer_is_refused_and_the_run_dir_untouched(tmp_path, capsys):
    run = tmp_path / "run"
    with DirectoryLock(run, "someone else"):
        before = _files(run)
        err = _one_line_error(capsys, TOY + ["--run-dir", str(run)])
        assert "in use by pid" in err and "someone else" in err
        assert _files(run) == before


def test_bad_paths_are_one_line_errors(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert "is a file" in _one_line_error(capsys, TOY + ["--run-dir", str(f)])
    typo = tmp_path / "no_such_run"
    err = _one_line_error(capsys, TOY + ["--run-dir", str(typo), "--resume"])
    assert "nothing to resume" in err and str(typo) in err
    assert not typo.exists()


@pytest.mark.parametrize("setting, words", [
    ("learning_rate=abc", "learning_rate='abc' must be a finite number"),
    ("learning_rate=-1", "learning_rate=-1 must be > 0"),
    ("discount=5", "discount=5 must be in [0, 1]"),
    ("hidden=abc", "hidden='abc' must be a non-empty tuple"),
    ("n_envs=2.5", "n_envs=2.5 must be an int"),
    ("price_step=-1", "price_step=-1 must be >= 0"),
    ("nope=1", "its hyper-parameters are ['batch_size'"),
])
def test_hyper_parameters_are_validated_before_anything_is_written(tmp_path, capsys, setting,
                                                                    words):
    run = tmp_path / "run"
    err = _one_line_error(capsys, ["train", "drl_fgso", "--run-dir", str(run), "--set", setting])
    assert words in err
    assert not run.exists()


def test_rates_and_types_of_every_learner():
    for name, bad in [("tsg_marl", {"target_rate": 0.0}), ("gat_mec", {"polyak_rate": 1.5}),
                      ("twin", {"learning_rate": "x"}), ("drl_gat", {"gat_checkpoint": 3}),
                      ("tsg_marl", {"price_noise": -0.1})]:
        with pytest.raises(ValueError, match=f"{name}: {next(iter(bad))}="):
            get_learner(name, **bad)
    assert get_learner("drl_fgso", hidden=64).hidden == (64,)
    assert get_learner("gat_mec", polyak_rate=1.0).polyak_rate == 1.0


def test_mismatch_names_only_the_differing_fields(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(TOY + ["--run-dir", str(run)]) == 0
    capsys.readouterr()
    before = _files(run / "ckpt")
    argv = TOY + ["--run-dir", str(run), "--resume"]
    argv[argv.index("--n-devices") + 1] = "6"
    err = _one_line_error(capsys, argv)
    assert "n_devices: checkpoint 5, requested 6" in err and "area_m" not in err
    assert len(err) < 300
    assert _files(run / "ckpt") == before


@pytest.mark.parametrize("damage", ["empty", "torn", "garbage"])
def test_torn_metrics_are_repaired_on_resume(tmp_path, damage):
    learner = get_learner("toy_test_learner")
    full = train(learner, S, tmp_path / "full", total_updates=6, chunk=2, **QUIET)
    part = tmp_path / "part"
    train(learner, S, part, total_updates=6, chunk=2, stop_after=2, **QUIET)
    m = part / "metrics.csv"
    text = m.read_text()
    m.write_text({"empty": "", "torn": text + "5,0.1", "garbage": "\x00\xff junk\n"}[damage])
    logs = []
    resumed = train(learner, S, part, total_updates=6, chunk=2, resume=True, log=logs.append)
    for a, b in zip(_leaves(full), _leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    got, want = read_metrics(m), read_metrics(tmp_path / "full" / "metrics.csv")
    assert any("metrics.csv" in line for line in logs)
    if damage == "torn":
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    else:  # updates 1-4 are lost with the file; the rest is exact
        np.testing.assert_array_equal(got["update"], [5, 6])
        np.testing.assert_array_equal(got["mean_cost"], want["mean_cost"][4:])
    assert (part / "learning_curve.png").stat().st_size > 1000
    assert not list(part.glob("*.tmp"))


def _corrupt_step(ckpt_dir, step):
    files = sorted(p for p in (ckpt_dir / str(step) / "state").rglob("*")
                   if p.is_file() and p.suffix != ".txt" and "d" in p.parent.name)
    for p in files:
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_names_an_intact_step_and_from_step_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    learner = get_learner("toy_test_learner")
    scen = S.replace(horizon=100)
    full = train(learner, scen, tmp_path / "full", total_updates=6, chunk=2, **QUIET)
    train(learner, scen, run, total_updates=6, chunk=2, stop_after=2, **QUIET)
    _corrupt_step(run / "ckpt", 4)
    before = _files(run)
    argv = TOY[:TOY.index("--updates")] + ["--updates", "6", "--chunk", "2", "--run-dir", str(run),
                                           "--resume"]
    err = _one_line_error(capsys, argv)
    assert "is corrupt" in err and "update 2 is intact" in err and "--from-step 2" in err
    assert _files(run) == before
    assert cli(argv + ["--from-step", "2"]) == 0
    assert (run / "ckpt_set_aside" / "4").is_dir()
    resumed = ckpt.restore(run / "ckpt", learner.state_shapes(scen))[0]
    for a, b in zip(_leaves(full), _leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(read_metrics(run / "metrics.csv")["update"], np.arange(1, 7))


def test_memory_preflight_refuses_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mecjax.preflight, "memory_limit", lambda: 1000)
    run = tmp_path / "run"
    err = _one_line_error(capsys, TOY + ["--run-dir", str(run)])
    assert "needs about" in err and "--n-devices" in err and "buffer_size" in err
    assert not run.exists()


def test_closed_event_loop_noise_is_silenced_but_real_errors_pass(capsys):
    flt = ckpt._ClosedLoopFilter()

    def record(exc):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                                 "Task exception was never retrieved", None,
                                 (type(exc), exc, None))

    assert not flt.filter(record(RuntimeError("Event loop is closed")))
    assert flt.filter(record(OSError(28, "No space left on device")))
    assert any(isinstance(f, ckpt._ClosedLoopFilter) for f in logging.getLogger("asyncio").filters)
    seen = []
    previous = ckpt._previous_unraisablehook
    ckpt._previous_unraisablehook = seen.append
    try:
        ckpt._quiet_unraisable(types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed")))
        real = types.SimpleNamespace(exc_value=OSError(28, "No space left on device"))
        ckpt._quiet_unraisable(real)
    finally:
        ckpt._previous_unraisablehook = previous
    assert seen == [real]
