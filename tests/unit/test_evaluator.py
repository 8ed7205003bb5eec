"""The scripts amlwire ships into IsaacLab jobs, on fakes (no Isaac Sim): how they end (the exit status is the
truth, even under a close() that exits 0; a crash prints its traceback; a hang that holds the GIL is killed),
honest statistics at any numEnvs, Hydra overrides, success terms, checkpoint choice, resume arguments.

The process tests run the real scripts against the sandbox's IsaacLab image (its stand-ins fail the way Isaac Sim
and IsaacLab fail; see operator/amlwire_sandbox/isaaclab_image/README.md), each in its own session so a watchdog's
SIGKILL of its process group never reaches pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amlwire.api.templates import EVALUATOR_METRICS
from amlwire.templates import isaaclab_evaluate as evaluator
from amlwire.templates.isaaclab_evaluate import (
    EpisodeTally,
    check_success_term,
    find_checkpoint,
    observations_of,
    parse_args,
    play_variant,
    rollout,
    successes,
    wilson,
)
from amlwire.templates.jobkit import StepFailed
from amlwire.templates.resume import arguments, last_checkpoint
from amlwire_sandbox.execution import IMAGE, sim_module

TEMPLATES = Path(evaluator.__file__).resolve().parent
SIM = sim_module()
ANYMAL = "Isaac-Velocity-Rough-Anymal-C-v0"


# -- how a step ends ---------------------------------------------------------------------------------------
def run_script(tmp_path: Path, script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60):
    """A step script as the job runs it: Isaac Sim's python with only the image's packages (and what pip put in
    the job's own folder), in its own session."""
    installed = tmp_path / "installed"
    for package in ("mlflow", "azureml"):  # as the template's pip step leaves them
        shutil.copytree(IMAGE / "index" / package / package, installed / package, dirs_exist_ok=True)
    environment = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{TEMPLATES}:{installed}:{IMAGE / 'site'}",
        "AMLWIRE_SANDBOX_MLFLOW": str(tmp_path / "mlflow.jsonl"),
        "MLFLOW_TRACKING_URI": "azureml://sandbox/mlflow/v1.0/subscriptions/x",
        "AMLWIRE_OUTPUTS": str(tmp_path / "outputs"),
        **(env or {}),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-S", "-B", str(TEMPLATES / script), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
        check=False,
    )
    return done, time.monotonic() - started


def checkpoint_file(folder: Path, task: str = ANYMAL, quality: float = 0.9, height_scan: bool = True) -> Path:
    found = SIM.TASKS[task]
    cfg = SIM.env_cfg(found)
    cfg.observations.policy.height_scan = height_scan and found.height_scan
    path = folder / "model_1500.pt"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(SIM.checkpoint_body(cfg, found, 1500, quality)))
    return path


def logged(tmp_path: Path) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {"metrics": {}, "params": {}, "tags": {}}
    path = tmp_path / "mlflow.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        record = json.loads(line)
        found[record["kind"]].update(record["values"])
    return found


def test_a_failed_evaluation_exits_1_although_isaac_sims_close_exits_0(tmp_path):
    # the image's SimulationApp.close() ends the process with 0 (fast shutdown): never called before the exit
    done, _ = run_script(tmp_path, "isaaclab_evaluate.py", "--task", ANYMAL, "--checkpoint", str(tmp_path / "none"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("amlwire: evaluation failed: no rsl_rl checkpoint")
    result = json.loads((tmp_path / "outputs" / "amlwire-result.json").read_text())
    assert (result["outcome"], result["step"]) == ("failed", "evaluation")
    assert logged(tmp_path)["tags"]["amlwire.failure"].startswith("no rsl_rl checkpoint")
    assert logged(tmp_path)["metrics"] == {}


def test_an_evaluation_leaves_its_evidence_and_exits_0(tmp_path):
    checkpoint_file(tmp_path / "model")
    args = ["--task", ANYMAL, "--checkpoint", str(tmp_path / "model"), "--num_envs", "16", "--episodes", "32"]
    done, _ = run_script(tmp_path, "isaaclab_evaluate.py", *args, "--headless")
    assert done.returncode == 0, done.stdout + done.stderr
    params, metrics = logged(tmp_path)["params"], logged(tmp_path)["metrics"]
    assert set(metrics) == set(EVALUATOR_METRICS)
    assert metrics["episodes"] == 32
    assert params["amlwire.task"] == "Isaac-Velocity-Rough-Anymal-C-Play-v0"  # the -Play variant by default
    assert params["amlwire.checkpoint"].endswith("model_1500.pt")
    assert len(params["amlwire.checkpoint_sha256"]) == 64
    assert (params["amlwire.seed"], params["amlwire.num_envs"]) == ("42", "16")
    result = json.loads((tmp_path / "outputs" / "amlwire-result.json").read_text())
    assert result["outcome"] == "succeeded"
    assert result["metrics"] == metrics


def evaluate_under(tmp_path: Path, simulator: dict[str, str], *args: str):
    """The evaluator on a checkpoint, with the sandbox's Isaac Sim behaving as `simulator` says."""
    checkpoint_file(tmp_path / "model")
    command = ("--task", ANYMAL, "--checkpoint", str(tmp_path / "model"), *args)
    return run_script(
        tmp_path, "isaaclab_evaluate.py", *command, env={"AMLWIRE_SANDBOX_ISAACSIM": json.dumps(simulator)}
    )


def test_a_crash_prints_its_traceback_and_fails(tmp_path):
    done, _ = evaluate_under(tmp_path, {"crash": "step"})
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "RuntimeError: [Isaac Sim] PhysX error in step" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("amlwire: evaluation failed: RuntimeError: [Isaac Sim]")


def test_the_watchdog_kills_a_call_that_holds_the_gil(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(
        "import ctypes\n"
        "from jobkit import run_step\n"
        "def body(watchdog):\n"
        "    watchdog.beat('calling native code')\n"
        "    ctypes.PyDLL(None).sleep(60)  # PyDLL keeps the GIL: a threading.Timer could never run\n"
        "    return {}\n"
        "run_step('stuck step', body, grace=1.0)\n"
    )
    started = time.monotonic()
    done = run_with_jobkit(script)
    assert done.returncode == -9  # SIGKILL of its process group
    assert time.monotonic() - started < 15
    assert "stuck step made no progress for 1 s (last: calling native code)" in done.stderr


def test_a_hang_inside_the_simulator_fails_the_job_within_the_grace(tmp_path):
    done, seconds = evaluate_under(tmp_path, {"hang": "step"}, "--hang_grace", "1")
    assert done.returncode == -9
    assert seconds < 15
    assert "evaluation made no progress for 1 s" in done.stderr


def test_a_step_that_ends_stops_its_watchdog(tmp_path):
    script = tmp_path / "quick.py"
    script.write_text("from jobkit import run_step\nrun_step('quick', lambda w: {'done': True}, grace=0.5)\n")
    done = run_with_jobkit(script)
    assert done.returncode == 0
    time.sleep(1.0)  # past the grace: a watchdog still alive would say so, and nothing may
    assert "made no progress" not in done.stderr


# -- honest statistics -------------------------------------------------------------------------------------
def measure(num_envs: int, quality: float, episodes: int, seed: int = 7) -> dict[str, float]:
    task = SIM.TASKS["Isaac-Velocity-Rough-Anymal-C-Play-v0"]
    cfg = SIM.env_cfg(task)
    cfg.scene.num_envs, cfg.seed = num_envs, seed
    env = SIM.Env(task, cfg)

    def policy(_observations):
        actions = SIM.Actions([0.0] * num_envs)
        actions.quality = quality
        return actions

    return rollout(Wrapped(env), policy, episodes, contextlib.nullcontext)


class Wrapped:
    """RslRlVecEnvWrapper's interface over the image's env (IsaacLab 2.3: observations as one TensorDict)."""

    def __init__(self, env) -> None:
        self.env, self.num_envs = env, env.num_envs

    def get_observations(self):
        return SIM.TensorDict(policy=self.env.observations())

    def step(self, actions):
        return self.env.step(actions)


def first_finished(num_envs: int, quality: float, episodes: int) -> float:
    """The rule amlwire used before: stop at the first `episodes` finished, whichever environments they came from."""
    task = SIM.TASKS["Isaac-Velocity-Rough-Anymal-C-Play-v0"]
    cfg = SIM.env_cfg(task)
    cfg.scene.num_envs, cfg.seed = num_envs, 7
    env = SIM.Env(task, cfg)
    actions = SIM.Actions([0.0] * num_envs)
    actions.quality = quality
    outcomes: list[bool] = []
    while len(outcomes) < episodes:
        _, _, dones, extras = env.step(actions)
        outcomes += [bool(t) for d, t in zip(dones, extras["time_outs"], strict=True) if d]
    return sum(outcomes[:episodes]) / episodes


@pytest.mark.parametrize("num_envs", [64, 1024, 4096])
@pytest.mark.parametrize("truth", [0.9, 0.5])
def test_the_success_rate_is_unbiased_at_any_number_of_environments(num_envs, truth):
    metrics = measure(num_envs, truth, episodes=1000)
    assert abs(metrics["success_rate"] - truth) <= 0.03, metrics
    assert metrics["success_rate_ci_low"] <= truth <= metrics["success_rate_ci_high"], metrics
    assert metrics["episodes"] >= 1000


def test_the_first_episodes_to_finish_are_the_failures():
    """Why the rule changed: all environments reset together and falls end episodes early."""
    assert first_finished(1024, 0.9, episodes=100) < 0.2
    assert first_finished(4096, 0.9, episodes=100) == 0.0
    assert abs(measure(4096, 0.9, episodes=100)["success_rate"] - 0.9) <= 0.03


@pytest.mark.parametrize(
    ("successes_", "trials", "low", "high"),
    [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (90, 100, 0.8256, 0.9448), (0, 0, 0.0, 1.0)],
)
def test_the_wilson_interval(successes_, trials, low, high):
    found = wilson(successes_, trials)
    assert found == pytest.approx((low, high), abs=1e-4)


def test_each_environment_counts_only_its_first_episodes():
    tally = EpisodeTally.for_episodes(episodes=3, num_envs=2)  # two per environment
    for dones in ([True, False], [True, False], [True, False], [False, True]):
        tally.step([1.0, 1.0], dones, dones)
    assert (tally.episodes, tally.complete) == (3, False)  # env 0's third episode is not counted
    tally.step([1.0, 1.0], [False, True], [False, False])
    assert (tally.episodes, tally.complete, tally.successes) == (4, True, 3)


# -- loading as upstream ------------------------------------------------------------------------------------
def test_hydra_overrides_reach_the_env_config(tmp_path):
    # trained without the height scan: loads only where the same override is applied, as play.py applies it
    checkpoint_file(tmp_path / "model", height_scan=False)
    record = tmp_path / "made.jsonl"
    base = ("--task", ANYMAL, "--checkpoint", str(tmp_path / "model"), "--num_envs", "8", "--episodes", "8")
    done, _ = run_script(
        tmp_path,
        "isaaclab_evaluate.py",
        *base,
        "env.observations.policy.height_scan=null",
        "env.episode_length_steps=30",
        env={"AMLWIRE_SANDBOX_RECORD": str(record)},
    )
    assert done.returncode == 0, done.stderr
    made = json.loads(record.read_text().splitlines()[-1])["cfg"]
    assert made["observations"]["policy"]["height_scan"] is None
    assert made["episode_length_steps"] == 30
    assert (made["scene"]["num_envs"], made["seed"]) == (8, 42)
    assert logged(tmp_path)["metrics"]["mean_episode_reward"] > 20  # episodes last up to 30 steps now
    without, _ = run_script(tmp_path, "isaaclab_evaluate.py", *base)
    assert without.returncode == 1
    assert "size mismatch for actor.0.weight" in without.stderr
    unknown, _ = run_script(tmp_path, "isaaclab_evaluate.py", *base, "env.not_a_key=1")
    assert "Key 'not_a_key' is not in struct" in unknown.stderr


def test_the_device_argument_wins_over_the_config(tmp_path):
    checkpoint_file(tmp_path / "model")
    record = tmp_path / "made.jsonl"
    args = ("--task", ANYMAL, "--checkpoint", str(tmp_path / "model"), "--num_envs", "4", "--device", "cpu")
    done, _ = run_script(tmp_path, "isaaclab_evaluate.py", *args, env={"AMLWIRE_SANDBOX_RECORD": str(record)})
    assert done.returncode == 0, done.stderr
    assert json.loads(record.read_text())["cfg"]["sim"]["device"] == "cpu"


def test_a_camera_task_needs_enable_cameras(tmp_path):
    task = "Isaac-Cartpole-RGB-Camera-Direct-v0"
    checkpoint_file(tmp_path / "model", task=task)
    args = ("--task", task, "--checkpoint", str(tmp_path / "model"), "--num_envs", "4", "--episodes", "4")
    refused, _ = run_script(tmp_path, "isaaclab_evaluate.py", *args)
    assert "Please use --enable_cameras" in refused.stderr
    done, _ = run_script(tmp_path, "isaaclab_evaluate.py", *args, "--enable_cameras")
    assert done.returncode == 0, done.stderr


def test_a_manipulation_task_succeeds_by_its_success_term(tmp_path):
    task = "Isaac-Stack-Cube-Franka-v0"
    checkpoint_file(tmp_path / "model", task=task, quality=0.8)
    args = ("--task", task, "--checkpoint", str(tmp_path / "model"), "--num_envs", "64", "--episodes", "512")
    done, _ = run_script(tmp_path, "isaaclab_evaluate.py", *args, "--success_term", "success")
    assert done.returncode == 0, done.stderr
    assert abs(float(logged(tmp_path)["metrics"]["success_rate"]) - 0.8) <= 0.05
    refused, _ = run_script(tmp_path, "isaaclab_evaluate.py", *args, "--success_term", "goal_reached")
    assert refused.returncode == 1
    assert "'goal_reached' is not a termination term of task Isaac-Stack-Cube-Franka-Play-v0" in refused.stderr


class Terms:
    active_terms = ("time_out", "success")

    def get_term(self, name):
        return [name]


@pytest.mark.parametrize(
    ("env", "term", "expected"),
    [
        (type("Managed", (), {"termination_manager": Terms()})(), "success", ["success"]),
        (type("Managed", (), {"termination_manager": Terms()})(), "goal", "is not a termination term of task T"),
        (type("Direct", (), {})(), "success", "has no termination manager (a DirectRLEnv)"),
        (type("Direct", (), {})(), None, None),
    ],
)
def test_the_success_term_is_checked_against_the_tasks_terms(env, term, expected):
    if isinstance(expected, str):
        with pytest.raises(StepFailed, match=re.escape(expected)):
            check_success_term(env, term, "T")
        return
    found = check_success_term(env, term, "T")
    assert (found() if found else None) == expected


@pytest.mark.parametrize(
    ("task", "registered", "expected"),
    [
        (
            "Isaac-Velocity-Rough-Anymal-C-v0",
            {"Isaac-Velocity-Rough-Anymal-C-Play-v0"},
            "Isaac-Velocity-Rough-Anymal-C-Play-v0",
        ),
        ("Isaac-Velocity-Rough-Anymal-C-v0", set(), "Isaac-Velocity-Rough-Anymal-C-v0"),
        ("Isaac-Velocity-Rough-Anymal-C-Play-v0", set(), "Isaac-Velocity-Rough-Anymal-C-Play-v0"),
        ("Isaac-Cartpole", {"Isaac-Cartpole-Play"}, "Isaac-Cartpole-Play"),
    ],
)
def test_the_play_variant(task, registered, expected):
    assert play_variant(task, registered) == expected


def test_the_checkpoint_is_the_experiments_last_run_then_highest_iteration_whatever_the_file_times(tmp_path):
    files = {
        "anymal_c_rough/2025-01-01_10-00-00/model_900.pt": 300,
        "anymal_c_rough/2025-01-02_09-00-00/model_50.pt": 100,
        "anymal_c_rough/2025-01-02_09-00-00/model_1500.pt": 50,  # oldest file time, still the one
        "anymal_c_rough/2025-01-02_09-00-00/model_200.pt": 400,
        "anymal_c_rough/2025-01-02_09-00-00/model_final.pt": 500,  # not an rsl_rl iteration file
        "zz_other_experiment/2026-01-01_00-00-00/model_9999.pt": 600,  # another experiment, a later run
    }
    for relative, mtime in files.items():
        path = tmp_path / "runs" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        os.utime(path, (mtime, mtime))
    runs = str(tmp_path / "runs")
    assert find_checkpoint(runs, "anymal_c_rough").endswith("anymal_c_rough/2025-01-02_09-00-00/model_1500.pt")
    assert find_checkpoint(runs).endswith("zz_other_experiment/2026-01-01_00-00-00/model_9999.pt")
    single = tmp_path / "runs" / "anymal_c_rough" / "2025-01-01_10-00-00" / "model_900.pt"
    assert find_checkpoint(str(single)) == str(single)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StepFailed, match="no rsl_rl checkpoint"):
        find_checkpoint(str(tmp_path / "empty"))


def test_resume_arguments_name_the_last_run_and_checkpoint(tmp_path):
    assert arguments(tmp_path / "nothing") == []
    for relative in (
        "exp/2025-01-01_10-00-00/model_900.pt",
        "exp/2025-01-02_09-00-00/model_50.pt",
        "exp/2025-01-02_09-00-00/model_100.pt",
    ):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert last_checkpoint(tmp_path) == ("2025-01-02_09-00-00", "model_100.pt", 100)
    assert arguments(tmp_path) == ["--resume", "--load_run", "2025-01-02_09-00-00", "--checkpoint", "model_100.pt"]


# -- arguments and observations -----------------------------------------------------------------------------
@pytest.mark.parametrize("generation", ["2.2", "2.3"])
def test_observations_of_both_wrapper_generations_are_never_unpacked(generation):
    tensordict = SIM.TensorDict(policy=[1], critic=[2])
    assert observations_of(tensordict) is tensordict
    assert observations_of((SIM.Tensor([1]), {})) == [1]


@pytest.mark.parametrize(
    ("dones", "time_outs", "term", "expected"),
    [
        ([True, True], [True, False], None, [True, False]),
        ([True, False], [True, True], None, [True, False]),
        ([True, True], [True, True], [False, True], [False, True]),
    ],
)
def test_successes(dones, time_outs, term, expected):
    assert successes(dones, time_outs, term) == expected


def test_no_time_outs_and_no_success_term_is_a_named_failure_not_a_zero():
    with pytest.raises(StepFailed, match=r"set spec\.isaacLab\.successTerm"):
        successes([True], None, None)


def test_arguments_as_play_py_takes_them_with_hydra_overrides_left_over(monkeypatch):
    def add_app_launcher_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--headless", action="store_true")
        parser.add_argument("--device", default="cuda:0")

    monkeypatch.setenv("AMLWIRE_OUTPUTS", "/mnt/azureml/cr/j/abc/exe/wd/outputs")
    args, rest = parse_args(
        [
            *("--task", ANYMAL, "--checkpoint", "/m", "--headless", "--device", "cpu"),
            "env.episode_length_s=10",
            *("--success_term", "goal_reached", "--no-play_variant", "--agent", "rsl_rl_distillation_cfg_entry_point"),
        ],
        add_app_launcher_args,
    )
    assert (args.task, args.headless, args.device, args.success_term, args.play_variant) == (
        ANYMAL,
        True,
        "cpu",
        "goal_reached",
        False,
    )
    assert args.agent == "rsl_rl_distillation_cfg_entry_point"
    assert args.outputs == "/mnt/azureml/cr/j/abc/exe/wd/outputs"
    assert rest == ["env.episode_length_s=10"]


def test_the_evaluator_logs_the_metrics_the_gate_may_name():
    assert evaluator.METRICS == EVALUATOR_METRICS


def run_with_jobkit(script: Path) -> subprocess.CompletedProcess[str]:
    """A script run as a job runs it: bare python (-S), jobkit importable, its own process group."""
    return subprocess.run(
        [sys.executable, "-S", str(script)],
        env={"PYTHONPATH": str(TEMPLATES)},
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
        check=False,
    )
