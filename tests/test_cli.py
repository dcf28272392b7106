"""The ``mecjax`` launcher: every command maps to a program in the checkout; outside a
checkout it says where the programs are instead of failing with an import error."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mecjax import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_loads_its_program_and_prints_help(command, capsys):
    program = cli.load_program(command)
    assert Path(program.__file__).resolve().is_relative_to(ROOT)
    assert not Path(program.__file__).resolve().is_relative_to(ROOT / "mecjax")
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert f"mecjax {command}" in capsys.readouterr().out


def test_readme_commands_are_all_known():
    # Commands the README shows: indented command lines and `mecjax X` code spans.
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"^ {4}mecjax ([a-z][a-z-]*)", readme, re.M))
    used |= set(re.findall(r"`mecjax ([a-z][a-z-]*)", readme))
    assert {"reproduce", "train", "sweep", "bench"} <= used
    assert used <= set(cli.COMMANDS), used - set(cli.COMMANDS)


def test_unknown_command_is_a_usage_error(capsys):
    assert cli.main(["nonsense"]) == 2
    assert "unknown command 'nonsense'" in capsys.readouterr().err


def test_installed_library_without_the_programs_says_so(tmp_path):
    # An installed wheel holds mecjax/ only: copy the package alone and run the launcher there.
    shutil.copytree(ROOT / "mecjax", tmp_path / "mecjax",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MECJAX_ROOT")}
    env["PYTHONPATH"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", "from mecjax.cli import main; main(['reproduce'])"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "eval/reproduce.py is not here" in last and "MECJAX_ROOT" in last
    assert "Traceback" not in out.stderr


def test_library_imports_no_program():
    # The library is importable and complete without train/, eval/ or benchmarks/.
    pattern = re.compile(r"^\s*(from|import)\s+(train|eval|benchmarks)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "mecjax").rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []


def _module_aliases(tree) -> dict:
    """Names a file binds to modules: ``import a.b as c``, ``from a import b`` (b a module)."""
    import ast
    import importlib.util

    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                try:
                    if importlib.util.find_spec(full) is not None:
                        out[a.asname or a.name] = full
                except (ImportError, ValueError):
                    pass
    return out


def test_no_module_uses_another_modules_private_names():
    import ast

    offenders = []
    for folder in ("mecjax", "train", "eval", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            aliases = _module_aliases(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    offenders += [f"{path.name}: from {node.module} import {a.name}"
                                  for a in node.names
                                  if a.name.startswith("_") and not a.name.startswith("__")]
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id in aliases and node.attr.startswith("_")
                        and not node.attr.startswith("__")):
                    offenders.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert offenders == []
