"""AmlJobs against the sandbox: train, validate with a verdict, wiring failures with hints, lifecycle."""

from __future__ import annotations

import time

import pytest

from amlwire_devenv.chaos import condition
from tests.conftest import wait_for
from tests.e2e.harness import EXTENSION_ID, IDENTITY_ID, WORKSPACE_ID

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
MODEL = {"name": "isaaclab-anymal-latest", "version": "2", "type": "custom_model", "delivery": "Download"}


def aml_job(harness, name: str) -> dict:
    return next(j for j in harness.aml_jobs() if j["name"] == harness.job(name)["status"]["amlJobName"])


def test_training_completes_fills_status_and_registers_the_checkpoint(harness):
    harness.wired()
    mark = harness.ctl.mark()
    name = harness.apply_job("amljob-train.yaml")
    obj = harness.wait_job(name)
    status = obj["status"]
    assert status["amlStatus"] == "Completed"
    assert status["amlJobName"].startswith(name + "-")
    assert status["studioUrl"].startswith("https://ml.azure.com/runs/" + status["amlJobName"])
    assert status["startTime"] <= status["endTime"]
    routes = [c["route"] for c in harness.ctl.calls(since=mark)]
    assert "mlflow.run" in routes
    assert "history.run.details" not in routes, "a completed job's times come from its MLflow run, read anyway"
    assert status["workspace"].lower() == WORKSPACE_ID.lower()
    assert status["registeredModel"] == {"name": "isaaclab-anymal-latest", "version": "3"}
    assert status.get("metrics", {}) == {}  # IsaacLab's train.py logs to TensorBoard, not to MLflow
    submitted = harness.ctl.resource(f"{WORKSPACE_ID}/jobs/{status['amlJobName']}")["properties"]
    assert "scripts/reinforcement_learning/rsl_rl/train.py" in submitted["command"]
    assert submitted["outputs"]["checkpoint"]["jobOutputType"] == "custom_model"
    assert submitted["resources"]["instanceType"] == "gpu-1"
    assert submitted["tags"]["amlwire.io/namespace"] == "robotics"
    assert submitted["tags"]["amlwire.io/uid"] == obj["metadata"]["uid"]
    # the operator runs in this repository here, and is nobody's repository in its pod: no git stamp on the job
    assert not [k for k in submitted.get("properties") or {} if "git" in k.lower()]


@pytest.mark.parametrize(
    ("model", "verdict", "ready"),
    [
        ({**MODEL}, "Passed", "True"),
        ({**MODEL, "name": "isaaclab-anymal-weak", "version": "1"}, "Failed", "False"),
    ],
)
def test_validation_reports_metrics_and_a_verdict(harness, model, verdict, ready):
    harness.wired()
    name = harness.apply_job("amljob-validate.yaml", model=model)
    obj = harness.wait_job(name, "Reconciling", "False", timeout=30)
    status = obj["status"]
    assert status["verdict"] == verdict
    assert "success_rate" in status["metrics"]
    ready_condition = condition(obj, "Ready")
    assert ready_condition["status"] == ready
    if verdict == "Failed":
        assert ready_condition["reason"] == "VerdictFailed"
        assert condition(obj, "Stalled")["status"] == "True"
    inputs = harness.ctl.resource(f"{WORKSPACE_ID}/jobs/{status['amlJobName']}")["properties"]["inputs"]
    assert set(inputs) == {"model"}  # the seed is an IsaacLab argument, not an unused input
    assert inputs["model"]["jobInputType"] == "custom_model"


def test_train_validate_register_chain(harness):
    harness.wired()
    trained = harness.wait_job(harness.apply_job("amljob-train.yaml"))["status"]["registeredModel"]
    mark = harness.ctl.mark()
    name = harness.apply_job("amljob-validate.yaml", model={**MODEL, "version": trained["version"]})
    status = harness.wait_job(name, timeout=60)["status"]
    assert status["verdict"] == "Passed"
    assert status["metrics"]["success_rate"] >= 0.9  # 1500 iterations of the sandbox's training
    assert status["evidence"]["checkpoint"].endswith("/model_1500.pt")
    reads = [c for c in harness.ctl.calls(since=mark) if (c["method"], c["route"]) == ("GET", "ml.workspace")]
    assert reads == [], "the MLflow tracking URI is read once per workspace, not once per finished job"


def test_broken_wiring_fails_a_mount_job_with_a_hint_and_in_container_completes(harness):
    compute = harness.wired(drift_interval=1.0)
    # held in the queue until the wiring is broken: the sandbox judges the wiring when the job starts
    harness.ctl.timing(job={"queuedSeconds": 3600, "runningSeconds": 0.5})
    mounted = harness.apply_job("amljob-validate.yaml", model={**MODEL, "delivery": "Mount"})
    aml_name = wait_for(lambda: (harness.job(mounted).get("status") or {}).get("amlJobName"), timeout=10)
    # someone strips the extension's identity settings; amlwire is in Verify mode for the extension
    harness.patch_compute(compute, {"extension": {"mode": "Verify"}})
    harness.wait_reconciled(compute)  # no reconcile still working to the Configure spec when the break comes
    harness.ctl.patch(
        EXTENSION_ID,
        {"properties": {"configurationSettings": {"identityType": None, "userAssignedIdentityResourceId": None}}},
    )
    harness.wait_condition(compute, "ExtensionReady", "False", "ExtensionIdentityMismatch")
    harness.ctl.patch(f"{WORKSPACE_ID}/jobs/{aml_name}", extra={"queued": 0.1})
    harness.ctl.timing(job={"queuedSeconds": 0.5, "runningSeconds": 0.5})
    obj = harness.wait_job(mounted, "Stalled", "True", "ScriptExecutionStreamAccessAuthentication")
    failure = obj["status"]["failure"]
    assert failure["code"] == "ScriptExecution.StreamAccess.Authentication"
    assert "ExtensionReady is False (ExtensionIdentityMismatch" in failure["hint"]
    assert "spec.model.delivery: InContainer" in failure["hint"]
    wait_for(  # the event follows the status write
        lambda: any(e.reason == "JobFailed" and e.type == "Warning" for e in harness.events(mounted)),
        10,
        what="a JobFailed Warning event",
    )
    # the compute is not Ready any more: put it right for admission, but break the sidecar itself (F23)
    harness.ctl.patch(
        EXTENSION_ID,
        {
            "properties": {
                "configurationSettings": {"identityType": "UserAssigned", "userAssignedIdentityResourceId": IDENTITY_ID}
            }
        },
    )
    harness.wait_ready(compute)
    cluster_id = harness.ctl.resource(EXTENSION_ID)["id"].split("/providers/Microsoft.KubernetesConfiguration")[0]
    harness.ctl.patch(cluster_id, extra={"sidecar_credential": "brokenCertificate"})
    again = harness.apply_job("amljob-validate.yaml", model={**MODEL, "delivery": "Mount"})
    # the operator's view of the compute may lag the apiserver's for a moment: wait for the job's own failure
    stalled = harness.wait_job(again, "Stalled", "True", "ScriptExecutionStreamAccessAuthentication")
    failure = stalled["status"]["failure"]
    assert "certificate auth (field failure F23)" in failure["hint"]
    in_container = harness.apply_job("amljob-validate.yaml", model={**MODEL, "delivery": "InContainer"})
    status = harness.wait_job(in_container)["status"]
    assert status["verdict"] == "Passed"
    env = harness.ctl.resource(f"{WORKSPACE_ID}/jobs/{status['amlJobName']}")["properties"]["environmentVariables"]
    assert env["AMLWIRE_MODEL"] == "azureml:isaaclab-anymal-latest:2"


def test_namespace_not_allowed_is_stalled_until_an_admin_allows_it(harness):
    compute = harness.wired()
    harness.core.create_namespace({"metadata": {"name": f"team-{int(time.time() * 1000) % 100000}"}})
    namespace = harness.core.list_namespace().items[-1].metadata.name
    name = harness.apply_job("amljob-validate.yaml", namespace=namespace)
    obj = harness.wait_job(name, "Stalled", "True", "NamespaceNotAllowed", namespace=namespace)
    message = condition(obj, "Stalled")["message"]
    assert f"namespace {namespace} may not run jobs" in message
    assert "spec.jobs.allowedNamespaces" in message
    assert harness.aml_jobs() == []
    harness.patch_compute(compute, {"jobs": {"allowedNamespaces": ["robotics", namespace]}})
    harness.wait_job(name, namespace=namespace)


def test_compute_not_ready_is_rechecked_not_terminal(harness):
    harness.start()
    name = harness.apply_job("amljob-validate.yaml")
    harness.wait_job(name, "Submitted", "False", "ComputeNotFound")
    harness.apply_compute("robotics-gpu")
    harness.wait_job(name)


def test_deleting_a_running_job_cancels_it(harness):
    harness.wired()
    harness.ctl.timing(job={"queuedSeconds": 0.1, "runningSeconds": 60})
    name = harness.apply_job("amljob-train.yaml")
    harness.wait_job(name, "Reconciling", "True", "Running")
    aml_name = harness.job(name)["status"]["amlJobName"]
    harness.delete_job(name)
    wait_for(
        lambda: next(j for j in harness.aml_jobs() if j["name"] == aml_name)["status"] == "Canceled",
        timeout=15,
        what="AML job canceled",
    )


def test_restart_mid_flight_does_not_resubmit(harness):
    harness.wired()
    harness.ctl.timing(job={"queuedSeconds": 0.1, "runningSeconds": 3})
    names = [harness.apply_job("amljob-train.yaml") for _ in range(3)]
    for name in names:
        harness.wait_job(name, "Reconciling", "True", "Running")
    harness.restart()
    for name in names:
        harness.wait_job(name)
    puts = [c for c in harness.ctl.calls() if c["method"] == "PUT" and c["route"] == "ml.job"]
    assert len(puts) == 3
    assert len(harness.aml_jobs()) == 3


def test_a_restart_with_more_objects_than_handler_threads_resumes_every_job(harness):
    """With a limit on the objects kopf handles at once, a restart with more objects than the limit deadlocked
    kopf's first indexing (nolar/kopf#1243) and the operator never handled anything again: one handler thread
    and seven objects here (the limit was 4 per thread)."""
    harness.wired(max_workers=1)
    harness.ctl.timing(job={"queuedSeconds": 0.1, "runningSeconds": 4})
    names = [harness.apply_job("amljob-train.yaml") for _ in range(6)]
    for name in names:
        harness.wait_job(name, "Reconciling", "True", "Running", timeout=60)
    harness.restart(max_workers=1)
    for name in names:
        harness.wait_job(name, timeout=60)


def test_a_job_submitted_before_a_crash_is_adopted_not_submitted_again(harness):
    """As after a crash between AML's answer and the status write: the job exists under the derived name."""
    from azure.ai.ml import command
    from azure.ai.ml.entities import Environment

    from amlwire.domain.jobs import aml_job_name
    from tests.sandbox.conftest import ml_client

    compute = harness.wired()
    harness.stop()
    name = harness.apply_job("amljob-train.yaml")
    uid = harness.job(name)["metadata"]["uid"]
    ml = ml_client(harness.sandbox, "Pre")
    ml.jobs.create_or_update(
        command(
            name=aml_job_name(name, uid),
            command="python train.py",
            compute="k8s-gpu",
            environment=Environment(image="nvcr.io/nvidia/isaac-lab:2.1.0"),
            tags={"amlwire.io/attached-compute": compute},
        )
    )
    mark = harness.ctl.mark()
    harness.start()
    harness.wait_job(name)
    assert not [c for c in harness.ctl.calls(since=mark) if c["method"] == "PUT" and c["route"] == "ml.job"]
    assert len(harness.aml_jobs()) == 1
    assert any(e.reason == "Adopted" for e in harness.events(name))


def test_mlflow_model_type_for_a_plain_checkpoint_is_refused_with_the_fix(harness):
    harness.wired()
    name = harness.apply_job("amljob-validate.yaml", model={**MODEL, "type": "mlflow_model"})
    obj = harness.wait_job(name, "Stalled", "True", "SubmissionRejected")
    message = condition(obj, "Submitted")["message"]
    assert "use type custom_model" in message


def test_a_model_not_registered_is_named_and_the_job_runs_once_it_is(harness):
    harness.wired()
    name = harness.apply_job("amljob-validate.yaml", model={**MODEL, "version": "7"})
    obj = harness.wait_job(name, "Stalled", "True", "ModelNotFound")
    message = condition(obj, "Submitted")["message"]
    assert message.startswith("spec.model: model isaaclab-anymal-latest version 7 is not registered")
    assert "az ml model create --name isaaclab-anymal-latest --version 7" in message
    assert harness.aml_jobs() == []
    harness.register_model_version(MODEL["name"], "7")
    harness.wait_job(name, "Submitted", "True", timeout=30)


def test_unknown_instance_type_is_named(harness):
    harness.wired()
    name = harness.apply_job("amljob-validate.yaml", instanceType="gpu-8")
    obj = harness.wait_job(name, "Stalled", "True", "InstanceTypeNotFound")
    assert "(gpu-1)" in condition(obj, "Stalled")["message"]


def test_polling_cost_follows_computes_not_jobs(harness):
    harness.wired(job_poll_interval=0.5)
    harness.ctl.timing(job={"queuedSeconds": 0.1, "runningSeconds": 6})
    names = [harness.apply_job("amljob-train.yaml") for _ in range(8)]
    for name in names:
        harness.wait_job(name, "Reconciling", "True", "Running", timeout=20)
    mark = harness.ctl.mark()
    time.sleep(3)
    counts = harness.ctl.counts(since=mark)
    assert counts.get("GET ml.job", 0) == 0, "no per-job GETs while a poller covers the workspace"
    assert 2 <= counts.get("GET ml.job.list", 0) <= 7
    for name in names:
        harness.wait_job(name, timeout=20)
