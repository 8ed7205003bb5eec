"""load_cfg_from_registry: a task's env or agent configuration by its gymnasium entry point."""

from __future__ import annotations

from typing import Any

import _sandbox_sim as sim
import gymnasium as gym


def load_cfg_from_registry(task_name: str, entry_point_key: str) -> Any:
    spec = gym.spec(task_name.split(":")[-1])
    if entry_point_key not in spec.kwargs:
        raise ValueError(
            f"Could not find configuration for the environment: '{task_name}'. Please check that the gym registry "
            f"has the entry point: '{entry_point_key}'."
        )
    task = sim.TASKS[spec.kwargs[entry_point_key]]
    return sim.env_cfg(task) if entry_point_key == "env_cfg_entry_point" else sim.agent_cfg(task)
