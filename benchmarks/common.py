"""What every benchmark shares: the best-of-N timer, the machine description, the
Markdown table and the (atomic) writing of ``OUT/<stem>.md`` and ``.json``."""

from __future__ import annotations

import datetime
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

from mecjax.outputs import write_json_atomic, write_text_atomic


def best_time(fn, repeats: int, time_limit_s: float = float("inf")) -> float:
    """Best wall time of ``repeats`` runs of ``fn`` (which must block until its result is
    ready); stops early once ``time_limit_s`` has been spent (at least one run)."""
    best, spent = float("inf"), 0.0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent >= time_limit_s:
            break
    return best


def machine_description() -> dict:
    """Platform, cores, versions, JAX backend and device, and the date (UTC)."""
    dev = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "jax_backend": jax.default_backend(),
        "jax_device": getattr(dev, "device_kind", str(dev)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def machine_line(machine: dict) -> str:
    """One Markdown sentence naming the machine of a benchmark record."""
    return (f"Machine: {machine['platform']}, {machine['cpu_count']} cores, jax "
            f"{machine['jax']} ({machine['jax_backend']}: {machine['jax_device']}), numpy "
            f"{machine['numpy']}, {machine['date']}.")


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    """A Markdown table from column titles and rows of already formatted cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_record(out_dir, stem: str, record: dict, markdown: str) -> None:
    """Write ``OUT/stem.json`` (the record, with the machine; strict JSON: a value that
    could not be measured is null) and ``OUT/stem.md``, each atomically."""
    out = Path(out_dir)
    write_json_atomic(out / f"{stem}.json", record)
    write_text_atomic(out / f"{stem}.md", markdown.rstrip() + "\n")


def write_benchmark(out_dir, stem: str, rows: list[dict], intro: str, head: list[str],
                    table: list[str]) -> None:
    """Write ``OUT/stem.json`` (machine and rows) and ``OUT/stem.md`` (title line
    ``head[0]``, ``intro``, the machine, then the table: ``head[1:]`` and ``table``)."""
    machine = machine_description()
    lines = [head[0], "", intro, "", machine_line(machine), ""]
    write_record(out_dir, stem, {"machine": machine, "rows": rows},
                 "\n".join(lines + head[1:] + table))
