"""The evaluator amlwire ships into validation jobs, on fake envs and tensors (no Isaac Sim): arguments as
IsaacLab's play.py takes them, both observation shapes, success counting, checkpoint choice, logging, exit."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amlwire.templates.isaaclab_evaluate import (
    EpisodeTally,
    find_checkpoint,
    log_metrics,
    observations_of,
    parse_args,
    rollout,
    successes,
)

REPO = Path(__file__).resolve().parents[2]


class FakeTensor(list):
    """Enough of a torch tensor: a list with tolist()."""

    def tolist(self) -> list:
        return list(self)


class FakeTensorDict(dict):
    """IsaacLab 2.3's observations: a mapping. Unpacking it (obs, _ = ...) would split it by keys."""


class FakeEnv:
    """Two environments; env 0 survives to the time-out every 3 steps, env 1 falls every 2."""

    num_envs = 2

    def __init__(self, generation: str) -> None:
        self.generation, self.steps, self.seen = generation, 0, []

    def _obs(self):
        return (
            FakeTensorDict(policy=FakeTensor([self.steps, self.steps]))
            if self.generation == "2.3"
            else FakeTensor([1, 2])
        )

    def get_observations(self):
        return self._obs() if self.generation == "2.3" else (self._obs(), {"observations": {}})

    def step(self, actions):
        self.seen.append(actions)
        self.steps += 1
        dones = FakeTensor([self.steps % 3 == 0, self.steps % 2 == 0])
        time_outs = FakeTensor([self.steps % 3 == 0, False])
        return self._obs(), FakeTensor([1.0, 0.5]), dones, {"time_outs": time_outs}


@pytest.mark.parametrize("generation", ["2.2", "2.3"])
def test_rollout_counts_time_outs_as_successes_over_both_observation_shapes(generation):
    env = FakeEnv(generation)
    shapes = []

    def policy(observations):
        shapes.append(type(observations).__name__)
        return "actions"

    metrics = rollout(env, policy, episodes=5, no_grad=contextlib.nullcontext)
    assert set(shapes) == {"FakeTensorDict" if generation == "2.3" else "FakeTensor"}
    # steps 2, 3, 4, 6: env 1 falls at 2, 4, 6 (0.5 each step: returns 1.0, 1.0, 1.0); env 0 times out at 3, 6
    assert metrics == {"episodes": 5.0, "success_rate": 2 / 5, "mean_episode_reward": (1.0 * 3 + 3.0 * 2) / 5}


def test_rollout_steps_under_the_no_grad_context():
    entered = []

    @contextlib.contextmanager
    def inference_mode():
        entered.append(True)
        yield

    rollout(FakeEnv("2.3"), lambda o: o, episodes=1, no_grad=inference_mode)
    assert len(entered) == 2  # one per step until the first episode ended


def test_a_success_term_replaces_the_time_out():
    env = FakeEnv("2.2")
    metrics = rollout(
        env, lambda o: o, episodes=2, no_grad=contextlib.nullcontext, success_term=lambda: FakeTensor([0, 1])
    )
    assert metrics["success_rate"] == 0.5  # the fall of env 1 at step 2 was the "success" here; env 0 timed out


@pytest.mark.parametrize(
    ("dones", "time_outs", "term", "expected"),
    [
        ([True, True], [True, False], None, [True, False]),
        ([True, False], [True, True], None, [True, False]),
        ([True, True], [True, True], [False, True], [False, True]),
        ([True, True], None, None, [False, False]),
    ],
)
def test_successes(dones, time_outs, term, expected):
    assert successes(dones, time_outs, term) == expected


def test_observations_are_never_unpacked_from_a_tensordict():
    tensordict = FakeTensorDict(policy=[1], critic=[2])
    assert observations_of(tensordict) is tensordict
    assert observations_of((FakeTensor([1]), {})) == [1]


def test_episode_tally_summary_without_episodes():
    assert EpisodeTally(1).summary() == {"episodes": 0.0, "success_rate": 0.0, "mean_episode_reward": 0.0}


def test_arguments_as_play_py_takes_them_with_hydra_overrides_left_over(monkeypatch):
    def add_app_launcher_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--headless", action="store_true")
        parser.add_argument("--device", default="cuda:0")

    monkeypatch.setenv("AMLWIRE_OUTPUTS", "/mnt/azureml/cr/j/abc/exe/wd/outputs")
    args, rest = parse_args(
        [
            "--task",
            "Isaac-Velocity-Rough-Anymal-C-v0",
            "--checkpoint",
            "/m",
            "--headless",
            "--device",
            "cpu",
            "env.episode_length_s=10",
            "--success_term",
            "goal_reached",
        ],
        add_app_launcher_args,
    )
    assert (args.task, args.headless, args.device, args.success_term) == (
        "Isaac-Velocity-Rough-Anymal-C-v0",
        True,
        "cpu",
        "goal_reached",
    )
    assert args.outputs == "/mnt/azureml/cr/j/abc/exe/wd/outputs"
    assert rest == ["env.episode_length_s=10"]


def test_the_checkpoint_is_the_last_run_then_the_highest_iteration_whatever_the_file_times(tmp_path):
    files = {
        "2025-01-01_10-00-00/model_900.pt": 300,
        "2025-01-02_09-00-00/model_50.pt": 100,
        "2025-01-02_09-00-00/model_1500.pt": 50,  # oldest file time, still the one
        "2025-01-02_09-00-00/model_200.pt": 400,
        "2025-01-02_09-00-00/model_final.pt": 500,  # not an rsl_rl iteration file
    }
    for relative, mtime in files.items():
        path = tmp_path / "runs" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        os.utime(path, (mtime, mtime))
    assert find_checkpoint(str(tmp_path / "runs")).endswith("2025-01-02_09-00-00/model_1500.pt")
    single = tmp_path / "runs" / "2025-01-01_10-00-00" / "model_900.pt"
    assert find_checkpoint(str(single)) == str(single)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no rsl_rl checkpoint"):
        find_checkpoint(str(tmp_path / "empty"))


def test_metrics_land_in_the_outputs_folder_and_no_mlflow_fails_the_job(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as in the stock IsaacLab image
    outputs = tmp_path / "wd" / "outputs"
    with pytest.raises(SystemExit, match="could not log metrics to MLflow"):
        log_metrics({"success_rate": 0.9}, str(outputs))
    assert (outputs / "metrics.json").read_text() == '{"success_rate": 0.9}'


def test_an_app_that_hangs_on_close_cannot_keep_the_job_running():
    script = (
        "import time; from amlwire.templates.isaaclab_evaluate import exit_without_hanging; "
        "exit_without_hanging(lambda: time.sleep(60), 3, grace=0.3)"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], timeout=20, check=False)
    assert done.returncode == 3
    assert time.monotonic() - started < 10
