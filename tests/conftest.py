import os

import jax
import pytest

# A persistent compilation cache makes repeated runs of the suite much faster.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("MECJAX_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

import mecjax  # noqa: E402


def snapshot(directory, ignore=()) -> dict:
    """Every file under ``directory`` (relative path -> bytes), except names in ``ignore``:
    what a refused or failed job must leave unchanged."""
    from pathlib import Path

    directory = Path(directory)
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in ignore}


@pytest.fixture(scope="session")
def small():
    """A small scenario for fast tests."""
    return mecjax.Scenario(n_devices=8, n_servers=3)
