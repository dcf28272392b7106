import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import pytest

# A persistent compilation cache makes repeated runs of the suite much faster.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("MECJAX_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

import mecjax  # noqa: E402
from mecjax.rollout import rollout_instances  # noqa: E402

# XLA options for programs a test compiles itself (``jax.jit(f, compiler_options=...)``):
# the same optimised HLO, lowered to machine code with little LLVM optimisation, which
# halves the compile time (most of the suite's time) of a program that then runs for
# milliseconds (the IPPO smoke test passes the same options to its training chunk). Its
# floats may differ in the last bits from a default compile's (e.g. a fused multiply-add
# or not): compare them with those of a default program with a tolerance, not exactly.
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@partial(jax.jit, static_argnums=(3, 4, 5), compiler_options=QUICK_COMPILE)
def _quick_rollout(scheduler, params, key, n_instances, n_slots, probe):
    return rollout_instances(scheduler, params, jax.random.split(key, n_instances), n_slots, probe)


def quick_rollout(scheduler, params, key, n_instances: int, n_slots: int, probe=None) -> dict:
    """:func:`mecjax.rollout.rollout` of ``scheduler`` (the same instances: instance b runs
    on ``split(key, B)[b]``: :func:`mecjax.rollout.rollout_instances` under ``jit``) compiled
    with QUICK_COMPILE, for the tests of what a scheduler does rather than of ``rollout``
    itself (test_schedulers); ``probe`` as in :func:`mecjax.rollout.rollout_instance`."""
    return _quick_rollout(scheduler, params, key, n_instances, n_slots, probe)


def run_two_processes(argv: list[str], timeout: float = 300) -> list[str]:
    """Run ``python -m mecjax.cli ARGV`` as a two-process multi-host job on this machine
    (two CPU devices each, joined through ``--coordinator`` on loopback, Gloo collectives)
    and return both processes' output; each must exit 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo", "JAX_PLATFORMS": "cpu",
           "MECJAX_CACHE_DIR": jax.config.jax_compilation_cache_dir}
    procs = [subprocess.Popen([sys.executable, "-m", "mecjax.cli", *argv,
                               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                               "--process-id", str(i)], cwd=Path(__file__).resolve().parent.parent,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (0, 1)]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs
    return logs


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
