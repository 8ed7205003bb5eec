"""OnPolicyRunner and DistillationRunner: load, inference policy, learn (writing model_<it>.pt every save_interval)."""

from __future__ import annotations

import os
from typing import Any

import _sandbox_sim as sim


class _Policy:
    is_recurrent = False

    def __init__(self) -> None:
        self.resets = 0

    def reset(self, dones: Any = None) -> None:
        self.resets += 1


class _Algorithm:
    def __init__(self) -> None:
        self.policy = _Policy()


class OnPolicyRunner:
    def __init__(self, env: Any, train_cfg: dict[str, Any], log_dir: str | None = None, device: str = "cpu") -> None:
        self.env, self.cfg, self.log_dir, self.device = env, train_cfg, log_dir, device
        self.alg = _Algorithm()
        self.current_learning_iteration = 0
        self.quality = 0.0

    def load(self, path: str, load_optimizer: bool = True) -> dict[str, Any]:
        sim.misbehave("load")
        body = sim.load_checkpoint(path, self.env.unwrapped.obs_dim)
        self.current_learning_iteration = int(body["iteration"])
        self.quality = float(body["quality"])
        return {}

    def get_inference_policy(self, device: str | None = None) -> Any:
        def policy(observations: Any) -> sim.Actions:
            actions = sim.Actions([0.0] * self.env.num_envs)
            actions.quality = self.quality
            return actions

        return policy

    def learn(self, num_learning_iterations: int, init_at_random_ep_len: bool = False) -> None:
        assert self.log_dir is not None
        unwrapped = self.env.unwrapped
        start = self.current_learning_iteration
        interval = int(self.cfg.get("save_interval", 50))
        for iteration in range(start, start + num_learning_iterations):
            sim.misbehave("learn")
            sim.iteration_pause()
            if iteration % interval == 0:
                path = os.path.join(self.log_dir, f"model_{iteration}.pt")
                sim.checkpoint(path, unwrapped.cfg, unwrapped.task, iteration)
            print(f"Learning iteration {iteration}/{start + num_learning_iterations}", flush=True)
        final = start + num_learning_iterations
        sim.checkpoint(os.path.join(self.log_dir, f"model_{final}.pt"), unwrapped.cfg, unwrapped.task, final)
        self.current_learning_iteration = final


class DistillationRunner(OnPolicyRunner):
    pass
