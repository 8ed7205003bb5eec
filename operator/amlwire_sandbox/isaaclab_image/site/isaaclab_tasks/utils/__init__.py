"""isaaclab_tasks.utils: get_checkpoint_path and parse_env_cfg, as upstream."""

from __future__ import annotations

import os
import re
from typing import Any

from isaaclab_tasks.utils.parse_cfg import load_cfg_from_registry


def get_checkpoint_path(
    log_path: str,
    run_dir: str = ".*",
    checkpoint: str = ".*",
    other_dirs: list[str] | None = None,
    sort_alpha: bool = True,
) -> str:
    """The last run folder (by name) matching run_dir, then its last checkpoint by zero-padded name."""
    try:
        runs = sorted(e.name for e in os.scandir(log_path) if e.is_dir() and re.match(run_dir, e.name))
        run_path = os.path.join(log_path, runs[-1])
        if other_dirs is not None:
            run_path = os.path.join(run_path, *other_dirs)
    except (IndexError, FileNotFoundError):
        raise ValueError(f"No runs present in the directory: '{log_path}' match: '{run_dir}'.") from None
    checkpoints = [f for f in os.listdir(run_path) if re.match(checkpoint, f)]
    if not checkpoints:
        raise ValueError(f"No checkpoints in the directory: '{run_path}' match '{checkpoint}'.")
    checkpoints.sort(key=lambda m: f"{m:0>15}")
    return os.path.join(run_path, checkpoints[-1])


def parse_env_cfg(task_name: str, device: str = "cuda:0", num_envs: int | None = None, **_: Any) -> Any:
    cfg = load_cfg_from_registry(task_name.split(":")[-1], "env_cfg_entry_point")
    cfg.sim.device = device
    if num_envs is not None:
        cfg.scene.num_envs = num_envs
    return cfg
