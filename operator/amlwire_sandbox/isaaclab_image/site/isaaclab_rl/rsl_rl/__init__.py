"""RslRlVecEnvWrapper (both observation generations) and, on IsaacLab 2.3, handle_deprecated_rsl_rl_cfg."""

from __future__ import annotations

import os
from typing import Any

import _sandbox_sim as sim

GENERATION = os.environ.get("AMLWIRE_SANDBOX_ISAACLAB_VERSION", "2.3")


class RslRlVecEnvWrapper:
    def __init__(self, env: Any, clip_actions: float | None = None) -> None:
        self.env = env
        self.unwrapped = env.unwrapped
        self.num_envs = env.num_envs
        self.device = env.device
        self.clip_actions = clip_actions

    def _observations(self, obs: Any) -> Any:
        return sim.TensorDict(policy=obs) if GENERATION >= "2.3" else obs

    def get_observations(self) -> Any:
        obs = self._observations(self.env.observations())
        return obs if GENERATION >= "2.3" else (obs, {"observations": {}})

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any]:
        obs, rewards, dones, extras = self.env.step(actions)
        return self._observations(obs), rewards, dones, extras

    def close(self) -> None:
        self.env.close()


if GENERATION >= "2.3":

    def handle_deprecated_rsl_rl_cfg(agent_cfg: Any, installed_version: str) -> Any:
        agent_cfg.converted_for = installed_version
        return agent_cfg
