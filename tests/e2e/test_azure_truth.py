"""amlwire against the sandbox answering as real Azure does (docs/sandbox.md): an unchanged PATCH, the
extension's training switch, the compute's namespace, a compute already gone, and every way the
data-capability sidecar may get its credential."""

from __future__ import annotations

import time
import uuid

import pytest

from amlwire.domain.extension import cli_settings
from amlwire_sandbox.world import SIDECAR_CREDENTIALS
from tests.conftest import wait_for
from tests.e2e.harness import CLUSTER_ID, EXTENSION_ID, IDENTITY_ID, WORKSPACE_ID, condition
from tests.e2e.test_doctor import result_of, run_doctor

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
MODEL = {"name": "isaaclab-anymal-latest", "version": "2"}


def extension_patches(harness, since: int = 0) -> int:
    return sum(1 for c in harness.ctl.calls(since) if c["method"] == "PATCH" and c["route"] == "ext.extension")


def test_a_failed_extension_with_identical_settings_gets_at_most_the_retry_limit_of_patches(harness):
    settings = {
        **cli_settings(CLUSTER_ID, "aks-robotics", "eastus", 3),  # installed by az k8s-extension create
        "enableTraining": "True",
        "identityType": "UserAssigned",
        "userAssignedIdentityResourceId": IDENTITY_ID,
    }
    harness.ctl.patch(EXTENSION_ID, {"properties": {"provisioningState": "Failed", "configurationSettings": settings}})
    harness.start()
    compute = harness.apply_compute("robotics-gpu")
    obj = harness.wait_condition(compute, "ExtensionReady", "False", "ExtensionOperationFailed", timeout=30)
    message = condition(obj, "ExtensionReady")["message"]
    assert "failed 3 times" in message
    assert "provisioning state Failed" in message
    time.sleep(3)  # several rechecks later: still no more PATCHes
    assert extension_patches(harness) == 3
    assert all(
        c["status"] == 200 for c in harness.ctl.calls() if c["route"] == "ext.extension" and c["method"] == "PATCH"
    )


def test_an_extension_amlwire_installs_can_train_and_lives_in_the_azureml_namespace(harness):
    harness.ctl.delete(EXTENSION_ID)
    harness.start()
    compute = harness.apply_compute("robotics-gpu", extension={"name": "azureml", "mode": "Configure"})
    harness.wait_ready(compute)
    properties = harness.ctl.resource(EXTENSION_ID)["properties"]
    assert properties["configurationSettings"]["enableTraining"] == "True"
    assert properties["scope"] == {"cluster": {"releaseNamespace": "azureml"}}
    job = harness.apply_job("amljob-train.yaml")
    harness.wait_job(job)


def test_training_switched_off_in_the_spec_is_a_condition_and_aml_refuses_the_jobs(harness):
    harness.start()
    compute = harness.apply_compute(
        "robotics-gpu", extension={"name": "azureml", "mode": "Configure", "settings": {"enableTraining": "False"}}
    )
    obj = harness.wait_condition(compute, "ExtensionReady", "False", "TrainingDisabled")
    assert "spec.jobs.allowedNamespaces" in condition(obj, "ExtensionReady")["message"]
    assert harness.extension_settings()["enableTraining"] == "False"
    harness.wait_condition(compute, "ComputeReady", "True")  # attached all the same: only training is off
    harness.patch_compute(compute, {"extension": {"settings": {"enableTraining": "True"}}})
    harness.wait_ready(compute)


def test_the_compute_namespace_is_created_before_the_attach(harness):
    namespace = f"aml-{uuid.uuid4().hex[:8]}"
    harness.start()
    compute = harness.apply_compute("robotics-gpu", compute__namespace=namespace)
    harness.wait_ready(compute)
    labels = harness.core.read_namespace(namespace).metadata.labels
    assert labels["app.kubernetes.io/managed-by"] == "amlwire"
    assert labels["amlwire.io/attached-compute"] == compute
    assert harness.sandbox_compute()["properties"]["properties"]["namespace"] == namespace
    assert harness.sandbox_compute()["tags"] == {"amlwire-attached-compute": compute}
    assert any(e.reason == "NamespaceCreated" for e in harness.events(compute))


def test_a_compute_already_gone_from_azure_is_taken_as_detached(harness):
    compute = harness.wired()
    harness.ctl.delete(f"{WORKSPACE_ID}/computes/k8s-gpu")
    mark = harness.ctl.mark()
    harness.delete_compute(compute)
    wait_for(
        lambda: not harness.custom.list_cluster_custom_object("amlwire.io", "v1alpha1", "attachedcomputes")["items"],
        timeout=30,
        what="the AttachedCompute gone",
    )
    deletes = [c for c in harness.ctl.calls(mark) if c["route"] == "ml.compute" and c["method"] == "DELETE"]
    assert [c["status"] for c in deletes] in ([], [204])


@pytest.mark.parametrize("credential", SIDECAR_CREDENTIALS)
def test_training_and_validation_under_each_way_the_sidecar_gets_its_credential(
    harness, monkeypatch, view_only_user, credential
):
    harness.ctl.patch(CLUSTER_ID, extra={"sidecar_credential": credential})
    harness.wired()
    mounted = harness.apply_job("amljob-validate.yaml", model={**MODEL, "delivery": "Mount"})
    in_container = harness.apply_job("amljob-validate.yaml", model={**MODEL, "delivery": "InContainer"})
    assert harness.wait_job(in_container)["status"]["verdict"] == "Passed"  # works whatever the sidecar does
    if credential == "brokenCertificate":
        stalled = harness.wait_job(mounted, "Stalled", "True", "ScriptExecutionStreamAccessAuthentication")
        assert "certificate auth (field failure F23)" in stalled["status"]["failure"]["hint"]
        assert "InContainer" in stalled["status"]["failure"]["hint"]
    else:
        assert harness.wait_job(mounted)["status"]["verdict"] == "Passed"
    harness.stop()
    _, report = run_doctor(harness, monkeypatch, "robotics-gpu")
    said = result_of(report, "F23")
    assert said["status"] == ("fail" if credential == "brokenCertificate" else "pass")
    expected = "certificate auth" if credential == "brokenCertificate" else "working (2 job(s) completed)"
    assert expected in said["evidence"]["sidecar credential"]
