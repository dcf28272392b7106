"""The ``mecjax`` command: a thin launcher of the programs in the checkout.

The library (``mecjax/``) writes nothing under ``results/``; the programs
that do live beside it in the repository (JaxMARL keeps ``baselines/`` apart
from its library the same way):

====================  ===============================
``mecjax train``      ``train/run.py``
``mecjax train-shipped``  ``train/shipped.py``
``mecjax reproduce``  ``eval/reproduce.py``
``mecjax compare-learned``  ``eval/compare_learned.py``
``mecjax optgap``     ``eval/optimality_gap.py``
``mecjax sweep``      ``eval/sweep.py``
``mecjax tasks``      ``eval/tasks.py``
``mecjax leaderboard``  ``eval/leaderboard.py``
``mecjax rollout-gif``  ``eval/rollout_gif.py``
``mecjax ppo``        ``train/ppo.py``
``mecjax ippo``       ``train/ippo.py``
``mecjax bench WHAT`` ``benchmarks/`` (env, optim, scale, schedulers, train)
====================  ===============================

Each program is also runnable as ``python -m eval.reproduce`` etc. from the
checkout's root. The launcher finds the checkout from the installed package
(an editable install) or from ``MECJAX_ROOT``; an installed wheel outside a
checkout has the library only, and the launcher says so.

This module also holds the few helpers every program shares (argument
parsing, the compilation cache, profiling, one-line errors: a program raises
:class:`mecjax.outputs.UserError` and :func:`run_program` prints it as
``mecjax COMMAND: message`` with exit status 2; ``--debug`` keeps the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from pathlib import Path

from mecjax.outputs import UserError

COMMANDS = {
    "train": ("train.run", "train a learned scheduler, with checkpoints and resume"),
    "train-shipped": ("train.shipped", "train the checkpoints shipped in results/checkpoints"),
    "reproduce": ("eval.reproduce", "regenerate the paper's tables and figures"),
    "compare-learned": ("eval.compare_learned", "shipped learned schedulers vs the references"),
    "optgap": ("eval.optimality_gap", "optimality gap of the heuristics to the exact optimum"),
    "sweep": ("eval.sweep", "grid over scenario parameters and schedulers, sharded"),
    "tasks": ("eval.tasks", "evidence that each named task is what it claims (results/tasks.md)"),
    "leaderboard": ("eval.leaderboard", "every method on every task, intervals over training "
                                        "seeds and instances (results/leaderboard.*)"),
    "rollout-gif": ("eval.rollout_gif", "animate one rollout of a scheduler (GIF, PNG still)"),
    "ppo": ("train.ppo", "PPO (PureJaxRL style) on mecjax.make_gymnax; results/rl/ppo.*"),
    "ippo": ("train.ippo", "IPPO (JaxMARL-baselines style) on mecjax.make_jaxmarl; "
                           "results/rl/ippo.*"),
    "bench": ("benchmarks.cli", "throughput benchmarks against NumPy "
                                "(env, optim, scale, schedulers, train)"),
}
PROGRAM_DIRS = ("train", "eval", "benchmarks")


# ----------------------------------------------------------------- shared helpers


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are :class:`UserError` (one line, ``mecjax CMD: message``,
    exit status 2, from :func:`run_program`) instead of a usage block; ``--help`` is
    unchanged."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: '50,100' -> (50, 100), positive ints only."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_sets(items) -> dict:
    """['hidden=64', 'lr=0.001'] -> {'hidden': 64, 'lr': 0.001} (ints, floats, tuples, strings)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set takes NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        parts = [p.strip() for p in v.split(",")]

        def num(t):
            for cast in (int, float):
                try:
                    return cast(t)
                except ValueError:
                    pass
            return t

        out[k.strip()] = tuple(num(p) for p in parts) if len(parts) > 1 else num(parts[0])
    return out


def read_toml(path, flag: str = "--config") -> dict:
    """The table of the TOML file ``path``; a missing or malformed file is a one-line
    :class:`UserError` naming ``flag``."""
    import tomllib

    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{flag} {path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{flag} {path}: not valid TOML ({err})") from None


def settings_profile(cls, path, profile: str) -> dict:
    """The ``[profile]`` section of the TOML settings file ``path`` as keyword arguments of
    the dataclass ``cls`` (lists become tuples: settings are frozen and hashable); a
    missing section or a field ``cls`` lacks is a ``ValueError`` naming the file."""
    import dataclasses
    import tomllib

    with open(path, "rb") as f:
        raw = tomllib.load(f)
    if profile not in raw:
        raise ValueError(f"{path} has no [{profile}] section")
    section = dict(raw[profile])
    unknown = set(section) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{path} [{profile}]: unknown field(s) {sorted(unknown)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def enable_compilation_cache(path: str | None = None) -> None:
    """Persist XLA compilations across runs (a warm cache cut a small test suite from 16 s to
    2.5 s on this project's 2-core machines)."""
    import jax

    path = path or os.environ.get("MECJAX_CACHE_DIR") or os.path.expanduser("~/.cache/mecjax/xla")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@contextlib.contextmanager
def profiled(trace_dir: str | None):
    """Write a jax.profiler trace of the enclosed work to ``trace_dir`` (if given).

    Open it with TensorBoard's profile plugin (``tensorboard --logdir DIR``) or load
    the ``*.trace.json.gz`` under DIR/plugins/profile/ into https://ui.perfetto.dev.
    """
    if not trace_dir:
        yield
        return
    import jax

    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        yield
    print(f"profile trace written under {trace_dir}")


# ----------------------------------------------------------------- the launcher


def checkout_root() -> Path | None:
    """The repository holding the programs: ``$MECJAX_ROOT``, else the parent of the
    installed package (an editable install); None when the program folders are absent."""
    candidates = [os.environ.get("MECJAX_ROOT"), Path(__file__).resolve().parent.parent]
    for c in candidates:
        if c and all((Path(c) / d / "__init__.py").is_file() for d in PROGRAM_DIRS):
            return Path(c).resolve()
    return None


def load_program(command: str):
    """Import the program module of ``command`` from the checkout (SystemExit if absent)."""
    module, _ = COMMANDS[command]
    root = checkout_root()
    if root is None:
        raise SystemExit(
            f"mecjax {command}: the program {module.replace('.', '/')}.py is not here. The "
            f"installed package is the library only; the programs (train/, eval/, benchmarks/) "
            f"live in the mecjax repository. Run from a checkout installed with "
            f"`pip install -e .`, or set MECJAX_ROOT to the checkout's path.")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(module)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return ("usage: mecjax COMMAND [options]   (mecjax COMMAND --help for its options)\n\n"
            "commands:\n" + "\n".join(lines))


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def is_user_error(err: BaseException) -> bool:
    """A :class:`UserError`, or a checkpoint that does not fit or is corrupt."""
    ckpt = sys.modules.get("mecjax.checkpoint")   # loaded if a checkpoint could be the cause
    kinds = (UserError,) + ((ckpt.CheckpointCorruptError, ckpt.CheckpointMismatchError)
                            if ckpt else ())
    return isinstance(err, kinds)


def run_program(command: str, program_main, argv: list[str] | None = None) -> int:
    """Run a program's ``main(argv)`` the way the launcher does: a user error (a bad
    flag value, a busy or wrong path, a checkpoint that does not fit or is corrupt)
    prints ``mecjax COMMAND: message`` on one line and returns 2; ``--debug`` (anywhere
    in ``argv``) keeps the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return int(program_main(argv) or 0)
    except Exception as err:
        if debug or not is_user_error(err):
            raise
        print(f"mecjax {command}: {_one_line(err)}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"mecjax: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    program = load_program(command)
    enable_compilation_cache()
    return run_program(command, program.main, rest)


if __name__ == "__main__":
    sys.exit(main())
