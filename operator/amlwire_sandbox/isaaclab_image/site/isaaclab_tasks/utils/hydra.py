"""hydra_task_config: the task's configs with the Hydra overrides on the command line applied, as upstream.

Overrides are `env.<path>=<value>` and `agent.<path>=<value>` in sys.argv; a key the config lacks is Hydra's
"not in struct" error.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import yaml_like

from isaaclab_tasks.utils.parse_cfg import load_cfg_from_registry


class ConfigCompositionException(Exception):
    pass


def _apply(cfgs: dict[str, Any], override: str) -> None:
    path, sep, raw = override.partition("=")
    if not sep:
        raise ConfigCompositionException(f"Error parsing override '{override}': expected key=value")
    parts = path.split(".")
    if parts[0] not in cfgs:
        raise ConfigCompositionException(f"Could not override '{path}'. Key '{parts[0]}' is not in struct")
    node = cfgs[parts[0]]
    for part in parts[1:-1]:
        if not hasattr(node, part):
            raise ConfigCompositionException(f"Could not override '{path}'. Key '{part}' is not in struct")
        node = getattr(node, part)
    if not hasattr(node, parts[-1]):
        raise ConfigCompositionException(f"Could not override '{path}'. Key '{parts[-1]}' is not in struct")
    setattr(node, parts[-1], yaml_like.value(raw))


def hydra_task_config(task_name: str, agent_cfg_entry_point: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = task_name.split(":")[-1]
            cfgs = {
                "env": load_cfg_from_registry(name, "env_cfg_entry_point"),
                "agent": load_cfg_from_registry(name, agent_cfg_entry_point),
            }
            for override in sys.argv[1:]:
                _apply(cfgs, override)
            return func(cfgs["env"], cfgs["agent"], *args, **kwargs)

        return wrapper

    return decorator
