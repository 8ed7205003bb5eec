"""gymnasium's registry, register, spec and make, as far as IsaacLab uses them."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


class error:  # gymnasium.error is a module upstream
    class NameNotFound(Exception):
        pass


@dataclass
class EnvSpec:
    id: str
    entry_point: str
    kwargs: dict[str, Any] = field(default_factory=dict)


registry: dict[str, EnvSpec] = {}


def register(id: str, entry_point: str, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    registry[id] = EnvSpec(id, entry_point, dict(kwargs or {}))


def spec(env_id: str) -> EnvSpec:
    if env_id not in registry:
        raise error.NameNotFound(f"Environment `{env_id}` doesn't exist.")
    return registry[env_id]


def make(env_id: str, cfg: Any = None, render_mode: str | None = None, **_: Any) -> Any:
    found = spec(env_id)
    module, _, name = found.entry_point.partition(":")
    import _sandbox_sim as sim

    return getattr(importlib.import_module(module), name)(sim.TASKS[found.kwargs["env_cfg_entry_point"]], cfg)
