"""Build registered dataclasses by name, checking their option names."""

from __future__ import annotations

import dataclasses


def build(registry: dict[str, type], kind: str, name: str, options: dict, what: str = "option"):
    """``registry[name](**options)``, with errors that name the unknown name or options."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; available: {', '.join(sorted(registry))}")
    cls = registry[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(options) - fields
    if unknown:
        raise ValueError(f"{kind} {name!r} has no {what}(s) {sorted(unknown)}; its {what}s are "
                         f"{sorted(fields)}")
    return cls(**options)
