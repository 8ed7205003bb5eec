"""Registers the sandbox's tasks with gymnasium, as importing isaaclab_tasks registers IsaacLab's."""

import _sandbox_sim as sim
import gymnasium as gym

for _name in sim.TASKS:
    gym.register(
        id=_name,
        entry_point="_sandbox_sim:Env",
        kwargs={"env_cfg_entry_point": _name, "rsl_rl_cfg_entry_point": _name},
    )
