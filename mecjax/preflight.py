"""Memory preflight: refuse a job that would not fit, before it runs.

A jitted program's peak memory is known once XLA has compiled it
(``compiled.memory_analysis()``: arguments + outputs + temporaries). Programs
compile that first and call :func:`check_fits` with the limit of the machine
they run on (:func:`memory_limit`); a job that does not fit is refused with one
line giving the estimate, the limit and the flag to lower, instead of growing
until the kernel kills it. Compiling a program reserves none of its buffers, so
the check itself is cheap.
"""

from __future__ import annotations

import os
import resource

from mecjax.outputs import UserError

# Leave this share of the limit to Python, JAX's runtime and the host copies of results.
HEADROOM = 0.8


class InsufficientMemoryError(UserError):
    """The job's estimated peak memory exceeds what this machine allows."""


def compiled_bytes(compiled) -> int | None:
    """Peak bytes of a compiled program (arguments + outputs + temporaries), or None
    where the backend does not report it."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


def memory_limit() -> int:
    """Bytes a job may use here: the accelerator's memory on a GPU/TPU, else the smaller
    of the available physical memory and the address-space limit (``ulimit -v``)."""
    import jax

    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    limits = []
    try:
        limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    return min(limits) if limits else 1 << 62


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def check_fits(estimate: int | None, what: str, lower: str, limit: int | None = None) -> None:
    """Raise :class:`InsufficientMemoryError` when ``estimate`` bytes exceed
    ``HEADROOM`` of ``limit`` (default :func:`memory_limit`); ``lower`` names the
    flag(s) that shrink the job. An unknown estimate (None) passes."""
    if estimate is None:
        return
    limit = memory_limit() if limit is None else limit
    if estimate > HEADROOM * limit:
        raise InsufficientMemoryError(
            f"{what} needs about {human(estimate)} but this machine allows "
            f"{human(HEADROOM * limit)} ({int(HEADROOM * 100)}% of {human(limit)} available); "
            f"lower {lower}")


def check_compiled(compiled, what: str, lower: str, limit: int | None = None) -> None:
    """:func:`check_fits` on a compiled program's :func:`compiled_bytes`."""
    check_fits(compiled_bytes(compiled), what, lower, limit)


__all__ = ["HEADROOM", "InsufficientMemoryError", "check_compiled", "check_fits",
           "compiled_bytes", "memory_limit"]
