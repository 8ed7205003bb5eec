"""Evaluate an IsaacLab rsl_rl policy checkpoint over N episodes; log success_rate and mean_episode_reward.

Runs inside the IsaacLab container through `isaaclab.sh -p`. An episode counts as a success when it ends
by time-out (the robot lasted the whole episode) rather than by a termination condition (e.g. a fall).
Metrics go to MLflow (AML sets MLFLOW_TRACKING_URI in jobs) and to outputs/metrics.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", required=True)
    parser.add_argument("--checkpoint", required=True, help="a model file, or a folder holding model_*.pt")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--num_envs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--headless", action="store_true")
    return parser.parse_args(argv)


@dataclass
class EpisodeTally:
    """Per-environment running returns, folded into finished episodes."""

    num_envs: int
    returns: list[float] = field(default_factory=list)
    finished_returns: list[float] = field(default_factory=list)
    successes: int = 0

    def __post_init__(self) -> None:
        self.returns = [0.0] * self.num_envs

    @property
    def episodes(self) -> int:
        return len(self.finished_returns)

    def step(self, rewards: list[float], dones: list[bool], time_outs: list[bool]) -> None:
        for env, (reward, done, time_out) in enumerate(zip(rewards, dones, time_outs, strict=True)):
            self.returns[env] += reward
            if done:
                self.finished_returns.append(self.returns[env])
                self.successes += bool(time_out)
                self.returns[env] = 0.0

    def summary(self) -> dict[str, float]:
        if not self.finished_returns:
            return {"episodes": 0.0, "success_rate": 0.0, "mean_episode_reward": 0.0}
        return {
            "episodes": float(self.episodes),
            "success_rate": self.successes / self.episodes,
            "mean_episode_reward": sum(self.finished_returns) / self.episodes,
        }


def find_checkpoint(path: str) -> str:
    """The newest rsl_rl model file under `path` (or `path` itself when it is a file)."""
    root = Path(path)
    if root.is_file():
        return path
    candidates = sorted(root.rglob("model_*.pt"))
    if not candidates:
        raise SystemExit(f"no rsl_rl checkpoint (model_*.pt) under {path}")
    return str(max(candidates, key=lambda p: (p.stat().st_mtime, _iteration(p))))


def _iteration(path: Path) -> int:
    digits = path.stem.removeprefix("model_")
    return int(digits) if digits.isdigit() else -1


def log_metrics(metrics: dict[str, float]) -> None:
    outputs = Path("outputs")
    outputs.mkdir(exist_ok=True)
    (outputs / "metrics.json").write_text(json.dumps(metrics))
    try:
        import mlflow
    except ImportError:
        print(f"amlwire: mlflow not installed; metrics: {json.dumps(metrics)}")
        return
    mlflow.log_metrics(metrics)


def main() -> None:  # pragma: no cover - needs Isaac Sim and a GPU
    args = parse_args()
    from isaaclab.app import AppLauncher

    app = AppLauncher(headless=True).app
    import gymnasium as gym
    import isaaclab_tasks  # noqa: F401  # registers the tasks
    from isaaclab_rl.rsl_rl import RslRlVecEnvWrapper
    from isaaclab_tasks.utils import parse_env_cfg
    from isaaclab_tasks.utils.parse_cfg import load_cfg_from_registry
    from rsl_rl.runners import OnPolicyRunner

    env_cfg = parse_env_cfg(args.task, num_envs=args.num_envs)
    env_cfg.seed = args.seed
    agent_cfg = load_cfg_from_registry(args.task, "rsl_rl_cfg_entry_point")
    env = RslRlVecEnvWrapper(gym.make(args.task, cfg=env_cfg))
    runner = OnPolicyRunner(env, agent_cfg.to_dict(), log_dir=None, device=agent_cfg.device)
    runner.load(find_checkpoint(args.checkpoint))
    policy = runner.get_inference_policy(device=env.unwrapped.device)
    tally = EpisodeTally(env.num_envs)
    observations, _ = env.get_observations()
    while tally.episodes < args.episodes and app.is_running():
        actions = policy(observations)
        observations, rewards, dones, extras = env.step(actions)
        time_outs = extras.get("time_outs", dones * 0)
        tally.step(rewards.tolist(), dones.bool().tolist(), time_outs.bool().tolist())
    metrics = tally.summary()
    print(f"amlwire: evaluation of {args.checkpoint}: {json.dumps(metrics)}")
    log_metrics(metrics)
    env.close()
    app.close()


if __name__ == "__main__":
    main()
