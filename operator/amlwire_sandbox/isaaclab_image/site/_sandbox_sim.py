"""The sandbox's stand-in for Isaac Sim + IsaacLab's environments: tasks, configs, episodes, checkpoints.

Upstream behaviour it keeps (../../../../../../shared/reference/field-truth.md, "IsaacLab on AML"):
- every environment resets at once; a policy's failures (falls) end episodes early, successes last to the
  time-out (locomotion) or end when the success term fires (manipulation);
- -Play variants are the same task without curriculum, pushes and noise (a policy scores higher there);
- the observation size depends on the config (a height scan adds 187 values), and loading a checkpoint into an
  env of another size fails as torch's load_state_dict does;
- a camera task needs --enable_cameras; a DirectRLEnv has no termination manager.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

BEHAVIOUR: dict[str, Any] = json.loads(os.environ.get("AMLWIRE_SANDBOX_ISAACSIM") or "{}")
LAUNCHED: dict[str, Any] = {}  # what AppLauncher was started with (--enable_cameras, --device)


def misbehave(where: str) -> None:
    """A crash or a hang a job rule asked for, at `where` (make, load, step, learn)."""
    if BEHAVIOUR.get("crash") == where:
        raise RuntimeError(f"[Isaac Sim] PhysX error in {where}: simulated crash (sandbox job rule)")
    if BEHAVIOUR.get("hang") == where:
        # native code holding the GIL, as Kit's teardown deadlock does: no Python thread can run meanwhile
        # rule: isaac.gil-hang
        ctypes.PyDLL(None).sleep(100000)


class Cfg:
    """A configclass stand-in: attributes, nested; to_dict() as IsaacLab's configclass."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, Cfg) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Task:
    name: str
    experiment: str
    terms: tuple[str, ...] | None  # termination terms; None: a DirectRLEnv (no termination manager)
    success_term: str | None = None  # manipulation: the term that means success
    height_scan: bool = False
    camera: bool = False
    play: bool = False
    difficulty: float = 1.0  # training variants push and perturb: the same policy succeeds less


def _tasks() -> dict[str, Task]:
    base = [
        Task("Isaac-Velocity-Rough-Anymal-C-v0", "anymal_c_rough", ("time_out", "base_contact"), height_scan=True),
        Task("Isaac-Velocity-Flat-Anymal-C-v0", "anymal_c_flat", ("time_out", "base_contact")),
        Task(
            "Isaac-Stack-Cube-Franka-v0",
            "franka_stack",
            ("time_out", "cube_1_dropping", "cube_2_dropping", "cube_3_dropping", "success"),
            success_term="success",
        ),
        Task("Isaac-Cartpole-Direct-v0", "cartpole_direct", None),
        Task("Isaac-Cartpole-RGB-Camera-Direct-v0", "cartpole_camera_direct", None, camera=True),
    ]
    found: dict[str, Task] = {}
    for task in base:
        found[task.name] = Task(**{**task.__dict__, "difficulty": 0.85})
        stem, _, version = task.name.rpartition("-")
        if task.terms is not None:  # IsaacLab registers -Play variants for its manager-based tasks
            play = f"{stem}-Play-{version}"
            found[play] = Task(**{**task.__dict__, "name": play, "play": True})
    return found


TASKS = _tasks()


def env_cfg(task: Task) -> Cfg:
    return Cfg(
        seed=None,
        episode_length_steps=20,
        scene=Cfg(num_envs=4096),
        sim=Cfg(device="cuda:0", dt=0.005),
        observations=Cfg(policy=Cfg(enable_corruption=not task.play, height_scan=task.height_scan)),
        curriculum=None if task.play else Cfg(terrain_levels=True),
        log_dir=None,
    )


def agent_cfg(task: Task) -> Cfg:
    return Cfg(
        class_name="OnPolicyRunner",
        experiment_name=task.experiment,
        run_name="",
        seed=42,
        device="cuda:0",
        max_iterations=1500,
        save_interval=50,
        clip_actions=None,
        resume=False,
        load_run=".*",
        load_checkpoint="model_.*.pt",
        algorithm=Cfg(class_name="PPO"),
        policy=Cfg(class_name="ActorCritic"),
    )


def obs_dim(cfg: Cfg) -> int:
    return 48 + (187 if cfg.observations.policy.height_scan else 0)


def quality_after(iterations: int) -> float:
    """How often a policy trained this long succeeds on its Play variant."""
    return round(0.97 * (1 - pow(2.718281828, -iterations / 300)), 4)


class Actions(list):
    """What a policy returns: one action per environment, and (the sandbox's secret) how good the policy is."""

    quality: float = 0.0

    def tolist(self) -> list[Any]:
        return list(self)


class Tensor(list):
    def tolist(self) -> list[Any]:
        return list(self)


class TensorDict(dict):
    """IsaacLab 2.3's observations: a mapping (unpacking it splits it by keys)."""


@dataclass
class TerminationManager:
    active_terms: list[str]
    fired: dict[str, list[bool]] = field(default_factory=dict)

    def get_term(self, name: str) -> Tensor:
        return Tensor(self.fired.get(name, []))


class Env:
    """One vectorised IsaacLab environment (manager-based, or direct when the task has no terms)."""

    def __init__(self, task: Task, cfg: Cfg) -> None:
        misbehave("make")
        if task.camera and not LAUNCHED.get("enable_cameras"):
            raise RuntimeError(
                "A camera was spawned without the --enable_cameras flag. Please use --enable_cameras to enable "
                "rendering."
            )
        self.task, self.cfg = task, cfg
        self.num_envs = int(cfg.scene.num_envs)
        self.device = cfg.sim.device
        self.step_dt = cfg.sim.dt * 4
        self.obs_dim = obs_dim(cfg)
        self.random = random.Random(cfg.seed)
        self.length = int(cfg.episode_length_steps)
        self.ages = [0] * self.num_envs
        self.plans: list[tuple[bool, int]] = [(False, 0)] * self.num_envs
        self.quality = 0.0
        self.unwrapped = self
        if task.terms is not None:
            self.termination_manager = TerminationManager(list(task.terms))
        record = os.environ.get("AMLWIRE_SANDBOX_RECORD")
        if record:  # what the env was made with, for the tests that check Hydra overrides reach it
            with open(record, "a") as file:
                file.write(json.dumps({"task": task.name, "cfg": cfg.to_dict()}) + "\n")

    def _plan(self, env: int) -> None:  # rule: isaac.episodes
        """An episode's fate, drawn at its reset: success lasts (or fires its term late), failure ends early."""
        chance = self.quality * self.task.difficulty
        success = self.random.random() < chance
        if success:
            end = self.length if self.task.success_term is None else self.random.randint(self.length // 2, self.length)
        else:
            end = self.random.randint(1, self.length - 1) if self.task.success_term is None else self.length
        self.plans[env] = (success, end)
        self.ages[env] = 0

    def observations(self) -> Any:
        return Tensor([0.0] * self.obs_dim)

    def step(self, actions: Any) -> tuple[Any, Tensor, Tensor, dict[str, Any]]:
        misbehave("step")
        if isinstance(actions, Actions) and actions.quality != self.quality:
            self.quality = actions.quality
            for env in range(self.num_envs):
                self._plan(env)
        rewards, dones, time_outs, fired = [], [], [], []
        for env in range(self.num_envs):
            if self.ages[env] == 0 and self.plans[env][1] == 0:
                self._plan(env)
            self.ages[env] += 1
            success, end = self.plans[env]
            done = self.ages[env] >= end
            timed_out = done and end >= self.length and not (self.task.success_term and success)
            rewards.append(1.0)
            dones.append(done)
            time_outs.append(timed_out)
            fired.append(done and success and self.task.success_term is not None)
            if done:
                self._plan(env)
        if self.task.terms is not None and self.task.success_term:
            self.termination_manager.fired = {self.task.success_term: fired}
        return self.observations(), Tensor(rewards), Tensor(dones), {"time_outs": Tensor(time_outs)}

    def close(self) -> None:
        misbehave("close")


def checkpoint_body(cfg: Cfg, task: Task, iteration: int, quality: float | None = None) -> dict[str, Any]:
    """What a model_<iteration>.pt holds here: the network's input size and how good the policy is."""
    return {
        "format": "amlwire-sandbox-rsl_rl",
        "task": task.name,
        "obs_dim": obs_dim(cfg),
        "iteration": iteration,
        "quality": quality_after(iteration) if quality is None else quality,
    }


def checkpoint(path: str, cfg: Cfg, task: Task, iteration: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        json.dump(checkpoint_body(cfg, task, iteration), file)


def load_checkpoint(path: str, env_obs_dim: int) -> dict[str, Any]:
    with open(path) as file:
        body = json.load(file)
    if body.get("obs_dim") != env_obs_dim:  # rule: isaac.loading
        raise RuntimeError(
            "Error(s) in loading state_dict for ActorCritic:\n\tsize mismatch for actor.0.weight: copying a param "
            f"with shape torch.Size([512, {body.get('obs_dim')}]) from checkpoint, the shape in current model is "
            f"torch.Size([512, {env_obs_dim}])."
        )
    return body


def iteration_pause() -> None:
    time.sleep(float(BEHAVIOUR.get("iterationSeconds", 0.002)))
