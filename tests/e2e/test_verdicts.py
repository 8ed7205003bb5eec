"""Verdicts that are evidence, failures that are loud, training that keeps its work: IsaacLab jobs as the sandbox
runs them for real (its IsaacLab image runs amlwire's evaluator and IsaacLab's train.py; see
operator/amlwire_sandbox/isaaclab_image/README.md), followed by the operator against the real apiserver."""

from __future__ import annotations

import re

import pytest

from amlwire_devenv.chaos import condition
from amlwire_sandbox.world import JOB_TIMEOUT_OUTCOMES
from tests.conftest import wait_for
from tests.e2e import harness as e2e
from tests.e2e.harness import WORKSPACE_ID

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
VALIDATE_LAB = {
    "task": "Isaac-Velocity-Rough-Anymal-C-v0",
    "framework": "rsl_rl",
    "numEnvs": 64,
    "episodes": 100,
    "seed": 42,
}


def aml_job(harness, name: str) -> dict:
    aml = wait_for(lambda: (harness.job(name).get("status") or {}).get("amlJobName"), timeout=30, what="submitted")
    return harness.ctl.resource(f"{WORKSPACE_ID}/jobs/{aml}")


def test_a_passing_validation_shows_what_it_measured(harness):
    harness.wired()
    name = harness.apply_job("amljob-validate.yaml", gate={"metric": "success_rate_ci_low", "min": 0.85})
    status = harness.wait_job(name, timeout=60)["status"]
    assert status["verdict"] == "Passed"
    metrics, evidence = status["metrics"], status["evidence"]
    assert metrics["episodes"] == 128  # two episodes of each of the 64 environments
    assert metrics["success_rate_ci_low"] <= metrics["success_rate"] <= metrics["success_rate_ci_high"]
    assert evidence["task"] == "Isaac-Velocity-Rough-Anymal-C-Play-v0"  # the -Play variant by default
    assert re.fullmatch(r"[0-9a-f]{64}", evidence["checkpoint_sha256"])
    assert (evidence["seed"], evidence["num_envs"]) == ("42", "64")
    log = harness.ctl.job_log(status["amlJobName"])
    assert "Successfully installed mlflow-skinny==2.15.1 azureml-mlflow==1.57.0" in log


def test_a_validation_whose_evaluator_fails_is_failed_with_its_reason_not_a_missed_gate(harness):
    harness.wired()
    lab = {**VALIDATE_LAB, "successTerm": "goal_reached"}  # the locomotion task has no such term
    name = harness.apply_job("amljob-validate.yaml", isaacLab=lab)
    obj = harness.wait_job(name, "Stalled", "True", "EvaluationFailed", timeout=60)
    stalled, status = condition(obj, "Stalled"), obj["status"]
    assert stalled["message"] == (
        "amlwire's evaluator failed: spec.isaacLab.successTerm 'goal_reached' is not a termination term of task "
        "Isaac-Velocity-Rough-Anymal-C-Play-v0; its terms are: time_out, base_contact"
    )
    assert status["amlStatus"] == "Failed"
    assert "verdict" not in status
    assert "exited with status code 1" in status["failure"]["message"]
    warned = wait_for(lambda: [e for e in harness.events(name) if e.type == "Warning"], timeout=10, what="event")
    assert [(e.reason, e.message) for e in warned] == [("EvaluationFailed", stalled["message"])]


def test_a_crash_in_the_simulator_fails_the_job_with_its_traceback(harness):
    harness.wired()
    name = harness.apply_job("amljob-validate.yaml", displayName="crashing")
    harness.ctl.add_job_rule({"displayName": "crashing"}, isaacSim={"crash": "step"})
    obj = harness.wait_job(name, "Stalled", "True", "EvaluationFailed", timeout=60)
    assert condition(obj, "Stalled")["message"].startswith(
        "amlwire's evaluator failed: RuntimeError: [Isaac Sim] PhysX error in step"
    )
    log = harness.ctl.job_log(obj["status"]["amlJobName"])
    assert "Traceback (most recent call last)" in log
    assert log.strip().splitlines()[-1].startswith("amlwire: evaluation failed: RuntimeError")


def test_an_evaluation_that_hangs_in_native_code_fails_within_its_grace(harness):
    harness.wired()
    lab = {**VALIDATE_LAB, "extraArgs": ["--hang_grace", "2"]}
    name = harness.apply_job("amljob-validate.yaml", displayName="hanging", isaacLab=lab)
    harness.ctl.add_job_rule({"displayName": "hanging"}, isaacSim={"hang": "step"})
    obj = harness.wait_job(name, "Stalled", "True", "JobFailed", timeout=60)
    assert "exited with signal 9 (SIGKILL)" in obj["status"]["failure"]["message"]
    assert "evaluation made no progress for 2 s" in harness.ctl.job_log(obj["status"]["amlJobName"])


@pytest.fixture(params=JOB_TIMEOUT_OUTCOMES)
def timing_out(request, control_plane, cluster, tmp_path):
    """A harness whose AML ends a job past its limits.timeout as Canceled, or as Failed (rule ml.job-timeout)."""
    world = e2e.test_world()
    world.rules.job_timeout = request.param
    for h in e2e.harness_over(world, control_plane, cluster, tmp_path):
        yield h, request.param


def test_a_training_stopped_at_its_timeout_keeps_its_checkpoints_and_resumes_from_the_last(timing_out):
    harness, ended = timing_out
    harness.wired()
    name = harness.apply_job("amljob-train.yaml", displayName="first-attempt", resume={"maxAttempts": 2})
    harness.ctl.add_job_rule({"displayName": "first-attempt"}, timeoutSeconds=2.5, isaacSim={"iterationSeconds": 0.01})
    obj = harness.wait_job(name, timeout=90)
    status = obj["status"]
    first = status["attempts"]
    assert [(a["amlStatus"], a["amlJobName"]) for a in first] == [(ended, first[0]["amlJobName"])]
    assert status["amlJobName"] == first[0]["amlJobName"] + "-a2"
    # attempt 1 was stopped, yet its checkpoints are in its output: written there while it trained
    kept = [b for b in harness.ctl.blob_names() if f"/azureml/{first[0]['amlJobName']}/checkpoint/" in b]
    iterations = sorted(int(m[1]) for b in kept if (m := re.search(r"/model_(\d+)\.pt$", b)))
    assert iterations[:2] == [0, 50]
    last = iterations[-1]
    assert 0 < last < 1500
    log = harness.ctl.job_log(status["amlJobName"])
    assert re.search(rf"resuming from \S+/model_{last}\.pt \(iteration {last}\)", log), log
    assert "Loading model checkpoint from: " in log
    # attempt 2 went on from there to the end, and its output is what got registered
    final = [b for b in harness.ctl.blob_names() if f"/azureml/{status['amlJobName']}/checkpoint/" in b]
    assert any(b.endswith(f"/model_{last + 1500}.pt") for b in final)
    assert status["registeredModel"]["name"] == "isaaclab-anymal-latest"
    reasons = [e.reason for e in harness.events(name)]
    assert "Resumed" in reasons


def test_a_cpu_instance_type_is_refused_for_isaaclab_templates_before_anything_is_submitted(harness):
    harness.start()
    cpu = {
        "name": "cpu-1",
        "resources": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
    }
    gpu = {
        "name": "gpu-1",
        "nodeSelector": {"agentpool": "gpu"},
        "resources": {
            "requests": {"cpu": "8", "memory": "64Gi"},
            "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 1},
        },
    }
    harness.wait_ready(harness.apply_compute("robotics-gpu", compute__instanceTypes=[gpu, cpu]))
    before = len(harness.aml_jobs())
    name = harness.apply_job("amljob-train.yaml", instanceType="cpu-1")
    obj = harness.wait_job(name, "Stalled", "True", "InstanceTypeWithoutGPU")
    assert "delete and recreate this AmlJob with one of gpu-1" in condition(obj, "Submitted")["message"]
    command = harness.apply_job("amljob-command.yaml", instanceType="cpu-1")  # a free command may run on CPUs
    harness.wait_job(command, timeout=60)
    assert len(harness.aml_jobs()) == before + 1
