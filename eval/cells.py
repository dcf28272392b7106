"""Resumable grids of cells: each finished cell is saved atomically as JSON,
keyed by a digest of its configuration, and reused only when the
configuration is identical. Used by ``reproduce`` and ``sweep``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mecjax.outputs import write_json_atomic


def digest(config: dict) -> str:
    """Short stable hash of a JSON-serialisable configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def cell_path(directory: Path, stem: str, config: dict) -> Path:
    return Path(directory) / f"{stem}_{digest(config)}.json"


def load_cell(path: Path, config: dict) -> dict | None:
    """A finished cell made with ``config``, or None (missing, corrupt or other settings)."""
    try:
        cell = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return cell if isinstance(cell, dict) and cell.get("config") == config else None


def save_cell(path: Path, cell: dict) -> None:
    """Write atomically, as strict JSON (a non-finite value is ``null``): an interrupted
    write never leaves a half cell."""
    write_json_atomic(path, cell)


