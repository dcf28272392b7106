"""Safe outputs: atomic files, strict JSON, directory locks, one-line errors, memory
preflight (mecjax.outputs, mecjax.preflight, mecjax.cli.run_program)."""

import errno
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mecjax import outputs, preflight
from mecjax.cli import run_program


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "table.md"
    outputs.write_text_atomic(path, "old\n")

    def full_disk(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        outputs.write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_json_is_strict_nan_and_infinities_become_null(tmp_path):
    obj = {"a": float("nan"), "b": [1.0, float("inf"), np.float32("nan")], "c": np.int64(3),
           "d": (np.float64(2.5), -math.inf)}
    outputs.write_json_atomic(tmp_path / "x.json", obj)
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None, None], "c": 3, "d": [2.5, None]}


def test_a_figure_is_rendered_before_the_old_image_is_replaced(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tmp_path / "fig.png"
    outputs.save_figure_atomic(fig, path, dpi=50)
    before = path.read_bytes()
    assert before[:8] == b"\x89PNG\r\n\x1a\n"

    def broken(*_a, **_k):
        raise RuntimeError("render failed")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError):
        outputs.save_figure_atomic(fig, path, dpi=50)
    assert path.read_bytes() == before
    plt.close(fig)


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    d = tmp_path / "out"
    first = outputs.DirectoryLock(d, "mecjax sweep").acquire()
    # flock locks belong to open file descriptions: a second open in the same process
    # conflicts like another process would.
    with pytest.raises(outputs.DirectoryLockedError, match=rf"pid {os.getpid()} .*mecjax sweep"):
        outputs.DirectoryLock(d, "mecjax sweep").acquire()
    first.release()
    with outputs.DirectoryLock(d, "mecjax reproduce") as again:
        assert json.loads(again.path.read_text())["command"] == "mecjax reproduce"
    # A lock file whose holder died is not held: the kernel released it with the process.
    (d / outputs.LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "gone",
                                                   "command": "mecjax train", "since": "x"}))
    with outputs.DirectoryLock(d, "mecjax train"):
        pass


def test_a_lock_on_a_file_says_it_is_not_a_directory(tmp_path):
    f = tmp_path / "plain"
    f.write_text("x")
    with pytest.raises(outputs.UserError, match="not a directory"):
        outputs.DirectoryLock(f).acquire()


def test_user_errors_are_one_line_with_status_2_and_debug_keeps_the_traceback(capsys):
    def program(argv):
        raise outputs.UserError("--instances 0 must be\n >= 1")

    assert run_program("sweep", program, ["--x"]) == 2
    assert capsys.readouterr().err == "mecjax sweep: --instances 0 must be >= 1\n"
    with pytest.raises(outputs.UserError):
        run_program("sweep", program, ["--debug"])

    def bug(argv):
        raise KeyError("a bug, not the user's")

    with pytest.raises(KeyError):  # programming errors keep their traceback
        run_program("sweep", bug, [])


def test_preflight_estimates_from_the_compiled_program_and_refuses_what_does_not_fit():
    compiled = jax.jit(lambda x: jnp.outer(x, x).sum(0)).lower(jnp.ones(1000)).compile()
    peak = preflight.compiled_bytes(compiled)
    if peak is None:
        pytest.skip("this backend reports no memory analysis")
    assert peak >= 1000 * 4 * 2      # at least the argument and the output
    preflight.check_compiled(compiled, "x", "--n", limit=100 * peak)
    with pytest.raises(preflight.InsufficientMemoryError,
                       match=r"the job needs about .* allows .*; lower --instances"):
        preflight.check_compiled(compiled, "the job", "--instances", limit=peak)
    assert preflight.memory_limit() > 0


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--instances", "abc"], "argument --instances: invalid int value: 'abc'"),
    (["reproduce", "--sizes", "5,x"], "--sizes"),
    (["bench", "nope"], "argument what: invalid choice: 'nope'"),
])
def test_a_malformed_flag_is_one_line_too(argv, message, capsys):
    from mecjax.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mecjax {argv[0]}: ") and message in err and err.count("\n") == 1, err
