"""How Hydra reads an override's value: null, booleans, numbers, else a string."""

from __future__ import annotations

from typing import Any


def value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("null", "none", "~"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw
