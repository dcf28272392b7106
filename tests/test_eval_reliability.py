"""reproduce, compare-learned and optgap as a hostile user meets them: a second writer,
bad flags, a full disk, too little memory, a kill -9 mid-run."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from mecjax import cli
from mecjax.outputs import LOCK_NAME, DirectoryLock
from conftest import snapshot
from eval.plan import Settings

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--instances", "2", "--slots", "1", "--sizes", "5", "--workers", "1",
        "--methods", "local"]


@pytest.fixture(autouse=True)
def _same_compilation_cache(monkeypatch):
    # cli.main enables the persistent cache from MECJAX_CACHE_DIR: keep the suite's.
    monkeypatch.setenv("MECJAX_CACHE_DIR", jax.config.jax_compilation_cache_dir)


def _snapshot(directory: Path) -> dict:
    return snapshot(directory, ignore=(LOCK_NAME,))


def _run(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(list(argv))
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("command, extra", [
    ("reproduce", TINY),
    ("compare-learned", ["--instances", "2", "--slots", "1", "--sizes", "5", "--root", "."]),
    ("optgap", ["--n-devices", "4", "--slots", "2"]),
])
def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys, command, extra):
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.md").write_text("an earlier result\n")
    before = _snapshot(out)
    with DirectoryLock(out, "mecjax test-holder"):
        rc, err = _run(capsys, command, *extra, "--out", str(out))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mecjax {command}: ")
    assert f"pid {os.getpid()}" in err and "mecjax test-holder" in err
    assert _snapshot(out) == before


def test_reproduce_locks_a_cells_directory_given_by_cache(tmp_path, capsys):
    cells = tmp_path / "shared_cells"
    with DirectoryLock(cells, "mecjax test-holder"):
        rc, err = _run(capsys, "reproduce", *TINY, "--out", str(tmp_path / "out"),
                       "--cache", str(cells))
    assert rc == 2 and "mecjax test-holder" in err and str(cells) in err
    assert not (tmp_path / "out" / "paper_tables.md").exists()


@pytest.mark.parametrize("command, argv, says", [
    ("reproduce", ["--instances", "0"], "--instances 0"),
    ("reproduce", ["--slots", "0"], "--slots 0"),
    ("reproduce", ["--workers", "0"], "--workers 0"),
    ("reproduce", ["--sizes", "0"], "--sizes"),
    ("reproduce", ["--sizes", "5,abc"], "--sizes"),
    ("reproduce", ["--seed", "-1"], "--seed -1"),
    ("reproduce", ["--seed", str(2 ** 32)], "--seed"),
    ("reproduce", ["--methods", "local,nope"], "nope"),
    ("reproduce", ["--methods", "nearest"], "nearest not among the tables' methods"),
    ("compare-learned", ["--instances", "0"], "--instances 0"),
    ("compare-learned", ["--sizes", "x"], "--sizes"),
    ("optgap", ["--slots", "0"], "--slots 0"),
    ("optgap", ["--seed", "-3"], "--seed -3"),
])
def test_bad_values_are_refused_in_one_line_before_anything_is_written(
        tmp_path, capsys, command, argv, says):
    out = tmp_path / "out"
    base = TINY if command == "reproduce" else []
    rc, err = _run(capsys, command, *base, *argv, "--out", str(out))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mecjax {command}: ") and says in err
    assert not out.exists()


@pytest.mark.parametrize("command, flag", [("reproduce", "--out"), ("reproduce", "--cache"),
                                           ("compare-learned", "--out"), ("optgap", "--out")])
def test_an_output_path_that_is_a_file_is_refused(tmp_path, capsys, command, flag):
    afile = tmp_path / "a_file"
    afile.write_text("keep me\n")
    argv = TINY if command == "reproduce" else []
    if flag == "--cache":
        argv = [*argv, "--out", str(tmp_path / "out")]
    rc, err = _run(capsys, command, *argv, flag, str(afile / "sub" if command == "optgap"
                                                   else afile))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "not a directory" in err and flag in err
    assert afile.read_text() == "keep me\n" and not (tmp_path / "out").exists()


def test_a_full_disk_leaves_the_previous_report_intact(tmp_path, capsys, monkeypatch):
    from eval.reproduce import reproduce

    quiet = dict(log=lambda *_: None, workers=1)
    settings = Settings(instances=2, slots=1, sizes=(5,), methods=("local",), ablation_size=None)
    out, other = tmp_path / "out", tmp_path / "other"
    reproduce(settings, out_dir=out, cache_dir=tmp_path / "cells0", **quiet)
    # The same cells for another seed, computed beforehand: the rerun below only writes.
    reproduce(Settings(**{**settings.__dict__, "seed": 1}), out_dir=other,
              cache_dir=tmp_path / "cells1", **quiet)
    before = _snapshot(out)
    assert {"paper_tables.md", "paper_tables.csv", "paper_tables.json", "summary.md",
            "figures/fig4_latency.png"} <= set(before)
    rerun = ["reproduce", *TINY, "--seed", "1", "--out", str(out), "--cache",
             str(tmp_path / "cells1")]

    def no_space(*args, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    fsyncs, real_fsync = [], os.fsync

    def fsync_fails_third(fd):
        fsyncs.append(fd)
        if len(fsyncs) == 3:      # the disk fills while the third file is written
            no_space()
        real_fsync(fd)

    for target, fake in (("replace", no_space), ("fsync", fsync_fails_third)):
        with monkeypatch.context() as m:
            m.setattr(os, target, fake)
            rc, err = _run(capsys, *rerun)
        assert rc == 2 and "No space left on device" in err and "unchanged" in err
        assert len(err.strip().splitlines()) == 1
        assert _snapshot(out) == before, target
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    # With room again, the rerun replaces the whole report with the seed-1 one.
    assert _run(capsys, *rerun)[0] == 0
    assert (out / "paper_tables.md").read_bytes() == (other / "paper_tables.md").read_bytes()
    assert (out / "paper_tables.md").read_bytes() != before["paper_tables.md"]


def test_reproduce_refuses_a_job_that_does_not_fit_before_running_it(tmp_path, capsys,
                                                                     monkeypatch):
    from mecjax import preflight

    monkeypatch.setattr(preflight, "memory_limit", lambda: 1000)
    out = tmp_path / "out"
    rc, err = _run(capsys, "reproduce", *TINY, "--out", str(out))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "needs about" in err and "largest reproduce cell" in err and "--instances" in err
    assert _snapshot(out) == {}        # no cell, no table: only the lock files


def test_the_memory_estimate_counts_every_worker(monkeypatch):
    from mecjax import preflight
    from eval.reproduce import check_memory, run_cell

    seen = []
    monkeypatch.setattr(preflight, "check_fits", lambda est, what, lower: seen.append(est))
    s = Settings(instances=2, slots=1, sizes=(5, 6), methods=("local", "greedy"),
                 ablation_size=None)
    pending = [((m, n), m, n, None, run_cell, m, n, s, {}, {})
               for m in ("local", "greedy") for n in (5, 6)]
    check_memory(pending, s, 1)
    check_memory(pending, s, 3)
    assert seen[0] > 0 and seen[1] == 3 * seen[0]


def test_reproduce_killed_mid_run_resumes_to_the_uninterrupted_tables(tmp_path, capsys):
    argv = ["--instances", "2", "--slots", "1", "--sizes", "5,6", "--workers", "1",
            "--methods", "local,greedy"]
    killed = tmp_path / "killed"
    env = {**os.environ, "MECJAX_CACHE_DIR": jax.config.jax_compilation_cache_dir}
    proc = subprocess.Popen([sys.executable, "-m", "mecjax.cli", "reproduce", *argv,
                             "--out", str(killed)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((killed / "reproduce_cells").glob("*.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "no cell was written"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = len(list((killed / "reproduce_cells").glob("*.json")))
    assert 1 <= finished < 4           # killed mid-run (each cell compiles for a while)
    assert cli.main(["reproduce", *argv, "--out", str(killed)]) == 0
    assert capsys.readouterr().out.count("done before, reused") == finished
    clean = tmp_path / "clean"
    assert _run(capsys, "reproduce", *argv, "--out", str(clean))[0] == 0
    for name in ("paper_tables.md", "paper_tables.csv"):
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name
    assert len(list((killed / "reproduce_cells").glob("*.json"))) == 4
