"""Evaluate an IsaacLab rsl_rl policy checkpoint; a verdict is only ever made of this script's evidence.

Runs inside the IsaacLab container through `./isaaclab.sh -p` (Isaac Sim's python), as IsaacLab's own
scripts/reinforcement_learning/rsl_rl/play.py does: AppLauncher arguments, Hydra overrides applied through
`hydra_task_config` (so a policy trained with `env.x=y` is evaluated on the env it was trained on), deprecated
rsl-rl configs converted (IsaacLab >= 2.3), the runner class the agent config names, recurrent policies reset
where episodes end, `--device` honoured, policy and env.step under torch.inference_mode(), observations from
either wrapper generation (IsaacLab <= 2.2 returns (obs, extras); 2.3 one TensorDict).

Statistics without the early-finisher bias: all environments reset together, so the first N episodes to finish
are mostly failures (falls end episodes early). The evaluator counts the first `k` episodes of *every*
environment (k = ceil(episodes / num_envs)) and waits until each has them, so the sample does not depend on how
the episodes ended; it reports the Wilson 95% interval beside the rate.

Success: with --success_term, that termination term fired (manipulation); it must be one of the task's active
termination terms, and a task without a termination manager (DirectRLEnv) cannot use it. Without it, the
episode lasted to its time-out (locomotion); a task that reports no time-outs needs a success term.

Evidence: $AMLWIRE_OUTPUTS/amlwire-result.json and MLflow (metrics, and the task, checkpoint and its SHA-256,
seed and environment count as params). The process ends through jobkit: traceback, result, flush,
`os._exit(status)`; never `app.close()`, whose fast shutdown exits 0. A watchdog kills it if it hangs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from jobkit import HANG_GRACE_SECONDS, StepFailed, Watchdog, run_step  # in the job, beside this script
except ImportError:  # imported from the amlwire package (its tests)
    from amlwire.templates.jobkit import HANG_GRACE_SECONDS, StepFailed, Watchdog, run_step

FAILURE_TAG = "amlwire.failure"  # why the evaluation failed, on its MLflow run (the operator reads it)
METRICS = ("success_rate", "success_rate_ci_low", "success_rate_ci_high", "mean_episode_reward", "episodes")
RESULT_FILE = "amlwire-result.json"
Z95 = 1.959963984540054


def parse_args(
    argv: Sequence[str] | None = None, add_launcher_args: Callable[[argparse.ArgumentParser], None] | None = None
) -> tuple[argparse.Namespace, list[str]]:
    """Our arguments and AppLauncher's; what is left over (Hydra overrides such as env.x=y) is returned."""
    parser = argparse.ArgumentParser(description="Evaluate an IsaacLab rsl_rl checkpoint.")
    parser.add_argument("--task", required=True)
    parser.add_argument("--agent", default="rsl_rl_cfg_entry_point", help="the agent configuration entry point")
    parser.add_argument("--checkpoint", required=True, help="a model file, or a folder of runs holding model_*.pt")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--num_envs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--success_term", default=None, help="a termination term that means success")
    parser.add_argument(
        "--play_variant",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="evaluate on the task's -Play variant where IsaacLab registers one (no curriculum, pushes or noise)",
    )
    parser.add_argument("--hang_grace", type=float, default=HANG_GRACE_SECONDS)
    parser.add_argument("--outputs", default=os.environ.get("AMLWIRE_OUTPUTS", "outputs"))
    if add_launcher_args is None:
        parser.add_argument("--headless", action="store_true")
        parser.add_argument("--device", default=None)
    else:
        add_launcher_args(parser)  # AppLauncher.add_app_launcher_args: --headless, --device, --enable_cameras...
    args, rest = parser.parse_known_args(argv)
    if args.episodes < 1 or args.num_envs < 1:
        raise StepFailed("--episodes and --num_envs must be at least 1")
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
        raise StepFailed(
            "the task reports no time-outs (extras['time_outs']), so an episode's success cannot be told from its "
            "length: set spec.isaacLab.successTerm to the termination term that means success"
        )
    return [bool(done and mark) for done, mark in zip(dones, marks, strict=True)]


def wilson(successes_: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a success rate (sound at 0, 1 and small samples, unlike the normal one)."""
    if trials == 0:
        return 0.0, 1.0
    rate = successes_ / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    spread = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


@dataclass
class EpisodeTally:
    """The first `per_env` episodes of every environment, whatever order they finish in."""

    num_envs: int
    per_env: int
    returns: list[float] = field(default_factory=list)
    counted: list[int] = field(default_factory=list)
    finished_returns: list[float] = field(default_factory=list)
    successes: int = 0

    def __post_init__(self) -> None:
        self.returns = [0.0] * self.num_envs
        self.counted = [0] * self.num_envs

    @classmethod
    def for_episodes(cls, episodes: int, num_envs: int) -> EpisodeTally:
        return cls(num_envs, max(1, math.ceil(episodes / num_envs)))

    @property
    def episodes(self) -> int:
        return len(self.finished_returns)

    @property
    def complete(self) -> bool:
        return all(count >= self.per_env for count in self.counted)

    def step(self, rewards: Sequence[float], dones: Sequence[bool], succeeded: Sequence[bool]) -> None:
        for env, (reward, done, success) in enumerate(zip(rewards, dones, succeeded, strict=True)):
            self.returns[env] += float(reward)
            if not done:
                continue
            if self.counted[env] < self.per_env:
                self.counted[env] += 1
                self.finished_returns.append(self.returns[env])
                self.successes += bool(success)
            self.returns[env] = 0.0

    def summary(self) -> dict[str, float]:
        if not self.finished_returns:
            raise StepFailed("no episode finished: nothing to measure")
        low, high = wilson(self.successes, self.episodes)
        return {
            "episodes": float(self.episodes),
            "success_rate": self.successes / self.episodes,
            "success_rate_ci_low": low,
            "success_rate_ci_high": high,
            "mean_episode_reward": sum(self.finished_returns) / self.episodes,
        }


def rollout(
    env: Any,
    policy: Callable[[Any], Any],
    episodes: int,
    no_grad: Callable[[], Any],
    success_term: Callable[[], Any] | None = None,
    reset: Callable[[Any], Any] | None = None,
    beat: Callable[[str], None] = lambda _: None,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Step the wrapped env with the policy until every environment finished its share of the episodes."""
    tally = EpisodeTally.for_episodes(episodes, env.num_envs)
    observations = observations_of(env.get_observations())
    steps = 0
    while not tally.complete:
        with no_grad():
            actions = policy(observations)
            observations, rewards, dones, extras = env.step(actions)
            if reset is not None:
                reset(dones)  # recurrent policies forget the episodes that ended (play.py: policy_nn.reset)
        steps += 1
        done = [bool(d) for d in as_list(dones)]
        time_outs = extras.get("time_outs")
        term = as_list(success_term()) if success_term is not None else None
        tally.step(as_list(rewards), done, successes(done, as_list(time_outs) if time_outs is not None else None, term))
        beat(f"evaluating: step {steps}, {tally.episodes} episodes")
        if max_steps is not None and steps >= max_steps:
            raise StepFailed(f"{steps} steps and not every environment finished an episode: is the task endless?")
    return tally.summary()


_ITERATION = re.compile(r"^model_(\d+)\.pt$")


def find_checkpoint(path: str, experiment: str | None = None) -> str:
    """rsl_rl's choice (isaaclab_tasks.utils.get_checkpoint_path): within the agent's experiment folder when the
    model holds several, the last run folder by name, then its highest iteration. Never by file time: copies (AML
    outputs, downloads) reset modification times."""
    root = Path(path)
    if root.is_file():
        return path
    if experiment and (root / experiment).is_dir():
        root = root / experiment
    candidates = [p for p in root.rglob("model_*.pt") if _ITERATION.match(p.name)] if root.is_dir() else []
    if not candidates:
        raise StepFailed(f"no rsl_rl checkpoint (model_<iteration>.pt) under {path}")
    return str(max(candidates, key=lambda p: (p.parent.relative_to(root).as_posix(), _iteration(p))))


def _iteration(path: Path) -> int:
    found = _ITERATION.match(path.name)
    return int(found.group(1)) if found else -1


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def play_variant(task: str, registered: Iterable[str]) -> str:
    """The task's -Play variant where one is registered (Isaac-X-v0 -> Isaac-X-Play-v0), else the task."""
    if "-Play" in task:
        return task
    match = re.match(r"^(?P<stem>.*?)(?P<version>-v\d+)?$", task)
    assert match is not None  # the pattern matches every string
    candidate = f"{match['stem']}-Play{match['version'] or ''}"
    return candidate if candidate in set(registered) else task


def check_success_term(unwrapped: Any, name: str | None, task: str) -> Callable[[], Any] | None:
    """The success term as a callable over the env, after checking the task really has it."""
    if name is None:
        return None
    terms = getattr(unwrapped, "termination_manager", None)
    if terms is None:
        raise StepFailed(
            f"spec.isaacLab.successTerm {name!r}: task {task} has no termination manager (a DirectRLEnv), so no "
            f"termination term can mean success; remove successTerm (success is then lasting to the time-out) or "
            f"validate with template Command and your own evaluation"
        )
    active = list(getattr(terms, "active_terms", []))
    if name not in active:
        raise StepFailed(
            f"spec.isaacLab.successTerm {name!r} is not a termination term of task {task}; its terms are: "
            f"{', '.join(active) or 'none'}"
        )
    return lambda: terms.get_term(name)


def log_evidence(metrics: dict[str, float], params: dict[str, str]) -> None:
    """Metrics and what they were measured on, to MLflow (what the operator reads); no MLflow fails the job."""
    try:
        import mlflow

        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
    except Exception as error:  # ImportError, an unknown azureml:// scheme, an unreachable tracking server
        raise StepFailed(
            f"could not log the evaluation to MLflow ({type(error).__name__}: {error}); the verdict needs it. "
            f"Install mlflow-skinny and azureml-mlflow into Isaac Sim's python (the template does unless "
            f"spec.isaacLab.imageHasMlflow) — metrics were {json.dumps(metrics)}"
        ) from error


def main() -> None:  # pragma: no cover - the fake IsaacLab image in the sandbox runs it end to end
    from isaaclab.app import AppLauncher

    args, hydra_args = parse_args(add_launcher_args=AppLauncher.add_app_launcher_args)
    result_file = str(Path(args.outputs) / RESULT_FILE)

    def body(watchdog: Watchdog) -> dict[str, Any]:
        watchdog.beat("starting Isaac Sim")
        AppLauncher(args)  # its app is never closed: see jobkit
        watchdog.beat("Isaac Sim started")
        evidence = evaluate(args, hydra_args, watchdog)
        log_evidence(evidence["metrics"], {f"amlwire.{k}": str(v) for k, v in evidence.items() if k != "metrics"})
        print(f"amlwire: evaluation: {json.dumps(evidence)}")
        return evidence

    run_step("evaluation", body, result_file, grace=args.hang_grace, on_failure=tag_failure)


def tag_failure(reason: str) -> None:
    """The reason on the job's MLflow run, where the operator finds it whatever AML's error says."""
    import mlflow

    mlflow.set_tag(FAILURE_TAG, reason[:5000])


def evaluate(args: argparse.Namespace, hydra_args: list[str], watchdog: Watchdog) -> dict[str, Any]:  # pragma: no cover
    import gymnasium as gym
    import isaaclab_tasks  # noqa: F401  # registers the tasks
    from isaaclab_tasks.utils.hydra import hydra_task_config

    task = play_variant(args.task, gym.registry.keys()) if args.play_variant else args.task
    found: dict[str, Any] = {}

    @hydra_task_config(task, args.agent)
    def with_configs(env_cfg: Any, agent_cfg: Any) -> None:
        found.update(_evaluate(args, task, env_cfg, agent_cfg, watchdog))

    sys.argv = [sys.argv[0], *hydra_args]  # Hydra reads its overrides from argv, as in play.py
    with_configs()
    if not found:
        raise StepFailed("the evaluation returned nothing")
    return found


def _evaluate(  # pragma: no cover - runs against the fake IsaacLab image in the sandbox's e2e tests
    args: argparse.Namespace, task: str, env_cfg: Any, agent_cfg: Any, watchdog: Watchdog
) -> dict[str, Any]:
    import gymnasium as gym
    import torch
    from isaaclab_rl.rsl_rl import RslRlVecEnvWrapper

    agent_cfg = _converted(agent_cfg)
    env_cfg.scene.num_envs = args.num_envs
    env_cfg.seed = args.seed
    agent_cfg.seed = args.seed
    device = getattr(args, "device", None) or env_cfg.sim.device
    env_cfg.sim.device = device
    agent_cfg.device = device
    checkpoint = find_checkpoint(args.checkpoint, getattr(agent_cfg, "experiment_name", None))
    watchdog.beat(f"making {task}")
    env = RslRlVecEnvWrapper(gym.make(task, cfg=env_cfg), clip_actions=agent_cfg.clip_actions)
    success_term = check_success_term(env.unwrapped, args.success_term, task)
    runner = _runner_class(agent_cfg)(env, agent_cfg.to_dict(), log_dir=None, device=device)
    watchdog.beat(f"loading {checkpoint}")
    runner.load(checkpoint)
    policy = runner.get_inference_policy(device=env.unwrapped.device)
    network = getattr(runner.alg, "policy", None) or getattr(runner.alg, "actor_critic", None)
    reset = getattr(network, "reset", None) if getattr(network, "is_recurrent", False) else None
    metrics = rollout(env, policy, args.episodes, torch.inference_mode, success_term, reset, watchdog.beat)
    # env.close() is not called: it can hang in Kit's teardown, and the process leaves with os._exit anyway
    return {
        "metrics": metrics,
        "task": task,
        "checkpoint": checkpoint,
        "checkpoint_sha256": sha256(checkpoint),
        "seed": args.seed,
        "num_envs": args.num_envs,
        "episodes_per_env": math.ceil(args.episodes / args.num_envs),
    }


def _converted(agent_cfg: Any) -> Any:  # pragma: no cover
    """IsaacLab >= 2.3 converts rsl-rl configs written for older rsl-rl-lib; older IsaacLab has no converter."""
    try:
        from importlib.metadata import version

        from isaaclab_rl.rsl_rl import handle_deprecated_rsl_rl_cfg
    except ImportError:
        return agent_cfg
    return handle_deprecated_rsl_rl_cfg(agent_cfg, version("rsl-rl-lib"))


def _runner_class(agent_cfg: Any) -> Any:  # pragma: no cover
    """The runner the agent config names (distillation checkpoints need DistillationRunner), as play.py."""
    import rsl_rl.runners as runners

    name = getattr(agent_cfg, "class_name", None) or "OnPolicyRunner"
    runner = getattr(runners, name, None)
    if runner is None:
        raise StepFailed(f"the agent config names runner {name!r}, which rsl_rl.runners does not have")
    return runner


if __name__ == "__main__":
    main()
