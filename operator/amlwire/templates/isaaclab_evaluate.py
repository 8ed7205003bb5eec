"""Evaluate an IsaacLab rsl_rl policy checkpoint over N episodes; log success_rate and mean_episode_reward.

Runs inside the IsaacLab container through `./isaaclab.sh -p` (Isaac Sim's python), the way IsaacLab's own
scripts/reinforcement_learning/rsl_rl/play.py does: AppLauncher and Hydra arguments, the environment wrapped
with the agent's clip_actions, policy and env.step under torch.inference_mode(), and observations from either
wrapper generation (IsaacLab <= 2.2 returns (obs, extras); 2.3 returns one TensorDict).

An episode is a success when it ends by time-out (the robot lasted the whole episode; right for locomotion)
or, with --success_term, when that termination term fired (right for manipulation). Metrics go to
$AMLWIRE_OUTPUTS/metrics.json (the job's own outputs/, which AML uploads) and to MLflow; not being able to log
to MLflow fails the job, so a gate never fails for a reason nobody sees.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOSE_GRACE_SECONDS = 60.0  # Isaac Sim can hang in app.close() (seen on vGPU nodes): exit regardless after this


def parse_args(
    argv: Sequence[str] | None = None, add_launcher_args: Callable[[argparse.ArgumentParser], None] | None = None
) -> tuple[argparse.Namespace, list[str]]:
    """Our arguments and AppLauncher's; what is left over (Hydra overrides such as env.x=y) is returned."""
    parser = argparse.ArgumentParser(description="Evaluate an IsaacLab rsl_rl checkpoint.")
    parser.add_argument("--task", required=True)
    parser.add_argument("--checkpoint", required=True, help="a model file, or a folder of runs holding model_*.pt")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--num_envs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--success_term", default=None, help="a termination term that means success")
    parser.add_argument("--outputs", default=os.environ.get("AMLWIRE_OUTPUTS", "outputs"))
    if add_launcher_args is None:
        parser.add_argument("--headless", action="store_true")
    else:
        add_launcher_args(parser)  # AppLauncher.add_app_launcher_args: --headless, --device, --enable_cameras...
    args, rest = parser.parse_known_args(argv)
    return args, rest


def observations_of(returned: Any) -> Any:
    """get_observations(): a (obs, extras) tuple on IsaacLab <= 2.2, one TensorDict on 2.3 (never unpack that)."""
    return returned[0] if isinstance(returned, tuple) else returned


def as_list(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def successes(
    dones: Sequence[bool], time_outs: Sequence[bool] | None, success_term: Sequence[bool] | None
) -> list[bool]:
    """Which finished episodes succeeded: by the success term when given, else by time-out."""
    marks = success_term if success_term is not None else time_outs
    if marks is None:
        return [False] * len(dones)
    return [bool(done and mark) for done, mark in zip(dones, marks, strict=True)]


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

    def step(self, rewards: Sequence[float], dones: Sequence[bool], succeeded: Sequence[bool]) -> None:
        for env, (reward, done, success) in enumerate(zip(rewards, dones, succeeded, strict=True)):
            self.returns[env] += float(reward)
            if done:
                self.finished_returns.append(self.returns[env])
                self.successes += bool(success)
                self.returns[env] = 0.0

    def summary(self) -> dict[str, float]:
        if not self.finished_returns:
            return {"episodes": 0.0, "success_rate": 0.0, "mean_episode_reward": 0.0}
        return {
            "episodes": float(self.episodes),
            "success_rate": self.successes / self.episodes,
            "mean_episode_reward": sum(self.finished_returns) / self.episodes,
        }


def rollout(
    env: Any,
    policy: Callable[[Any], Any],
    episodes: int,
    no_grad: Callable[[], Any],
    success_term: Callable[[], Any] | None = None,
) -> dict[str, float]:
    """Step the wrapped env with the policy until `episodes` have finished; what they scored."""
    tally = EpisodeTally(env.num_envs)
    observations = observations_of(env.get_observations())
    while tally.episodes < episodes:
        with no_grad():
            actions = policy(observations)
            observations, rewards, dones, extras = env.step(actions)
        done = [bool(d) for d in as_list(dones)]
        time_outs = extras.get("time_outs")
        term = as_list(success_term()) if success_term is not None else None
        tally.step(as_list(rewards), done, successes(done, as_list(time_outs) if time_outs is not None else None, term))
    return tally.summary()


_ITERATION = re.compile(r"^model_(\d+)\.pt$")


def find_checkpoint(path: str) -> str:
    """rsl_rl's choice (isaaclab_tasks.utils.get_checkpoint_path): the last run folder by name, then its
    highest iteration. Never by file time: copies (AML outputs, downloads) reset modification times."""
    root = Path(path)
    if root.is_file():
        return path
    candidates = [p for p in root.rglob("model_*.pt") if _ITERATION.match(p.name)]
    if not candidates:
        raise SystemExit(f"amlwire: no rsl_rl checkpoint (model_<iteration>.pt) under {path}")
    return str(max(candidates, key=lambda p: (p.parent.relative_to(root).as_posix(), _iteration(p))))


def _iteration(path: Path) -> int:
    found = _ITERATION.match(path.name)
    return int(found.group(1)) if found else -1


def log_metrics(metrics: dict[str, float], outputs: str) -> None:
    """metrics.json in the job's outputs, then MLflow; no MLflow is an error the job reports."""
    folder = Path(outputs)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    try:
        import mlflow

        mlflow.log_metrics(metrics)
    except Exception as error:  # ImportError, an unknown azureml:// scheme, an unreachable tracking server
        raise SystemExit(
            f"amlwire: could not log metrics to MLflow ({type(error).__name__}: {error}); the gate needs them. "
            f"Install mlflow and azureml-mlflow into Isaac Sim's python (the template does unless "
            f"spec.isaacLab.imageHasMlflow) — metrics were {json.dumps(metrics)}"
        ) from error


def exit_without_hanging(close: Callable[[], None], code: int, grace: float = CLOSE_GRACE_SECONDS) -> None:
    """Close the app, but leave the process after `grace` seconds whatever close() does."""
    watchdog = threading.Timer(grace, os._exit, args=(code,))
    watchdog.daemon = True
    watchdog.start()
    try:
        close()
    finally:
        sys.stdout.flush()
        os._exit(code)


def main() -> None:  # pragma: no cover - needs Isaac Sim and a GPU; the parts above are tested
    from isaaclab.app import AppLauncher

    args, hydra_args = parse_args(add_launcher_args=AppLauncher.add_app_launcher_args)
    sys.argv = [sys.argv[0], *hydra_args]
    app = AppLauncher(args).app
    code = 1
    try:
        metrics = evaluate(args)
        log_metrics(metrics, args.outputs)
        code = 0
    except SystemExit as stop:
        print(stop, file=sys.stderr)
    finally:
        exit_without_hanging(app.close, code)


def evaluate(args: argparse.Namespace) -> dict[str, float]:  # pragma: no cover - the IsaacLab-facing seam
    import gymnasium as gym
    import isaaclab_tasks  # noqa: F401  # registers the tasks
    import torch
    from isaaclab_rl.rsl_rl import RslRlVecEnvWrapper
    from isaaclab_tasks.utils import parse_env_cfg
    from isaaclab_tasks.utils.parse_cfg import load_cfg_from_registry
    from rsl_rl.runners import OnPolicyRunner

    env_cfg = parse_env_cfg(args.task, device=getattr(args, "device", None), num_envs=args.num_envs)
    env_cfg.seed = args.seed
    agent_cfg = load_cfg_from_registry(args.task, "rsl_rl_cfg_entry_point")
    env = RslRlVecEnvWrapper(gym.make(args.task, cfg=env_cfg), clip_actions=agent_cfg.clip_actions)
    runner = OnPolicyRunner(env, agent_cfg.to_dict(), log_dir=None, device=agent_cfg.device)
    checkpoint = find_checkpoint(args.checkpoint)
    runner.load(checkpoint)
    policy = runner.get_inference_policy(device=env.unwrapped.device)
    terms = env.unwrapped.termination_manager if args.success_term else None
    success_term = (lambda: terms.get_term(args.success_term)) if terms is not None else None
    metrics = rollout(env, policy, args.episodes, torch.inference_mode, success_term)
    print(f"amlwire: evaluation of {checkpoint}: {json.dumps(metrics)}")
    env.close()
    return metrics


if __name__ == "__main__":
    main()
