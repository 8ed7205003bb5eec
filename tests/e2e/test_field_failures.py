"""Field failures F01-F07, F09, F10, F12-F16: each gives its condition, reason and fix; fixing the world converges."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from amlwire_devenv.chaos import condition
from tests.conftest import wait_for
from tests.e2e.harness import (
    CLUSTER_ID,
    EXAMPLE_SUBJECTS,
    EXTENSION_ID,
    FIC_TYPE,
    IDENTITY_ID,
    IDENTITY_PRINCIPAL,
    STORAGE_ID,
    WORKSPACE_ID,
)

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
AUDIENCE = "api://AzureADTokenExchange"
BLOB_CONTRIBUTOR = (
    "/subscriptions/6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60/providers/Microsoft.Authorization/"
    "roleDefinitions/ba92f5b4-2d11-453d-a403-e96b0029c9fe"
)


def issuer_of(harness) -> str:
    return harness.ctl.resource(CLUSTER_ID)["properties"]["oidcIssuerProfile"]["issuerURL"]


def foreign_fic(harness, name: str, subject: str, issuer: str, audiences: list[str] | None = None) -> None:
    harness.ctl.create(
        f"{IDENTITY_ID}/federatedIdentityCredentials/{name}",
        FIC_TYPE,
        {"properties": {"issuer": issuer, "subject": subject, "audiences": audiences or [AUDIENCE]}},
        {"backdated": True},
    )


def test_f01_oidc_issuer_disabled(harness):
    issuer = issuer_of(harness)
    harness.ctl.patch(CLUSTER_ID, {"properties": {"oidcIssuerProfile": {"enabled": False, "issuerURL": None}}})
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "ClusterReady", "False", "OIDCIssuerDisabled")
    message = condition(obj, "ClusterReady")["message"]
    assert "az aks update -g rg-aks -n aks-robotics --enable-oidc-issuer" in message
    harness.wait_condition(name, "Stalled", "True", "OIDCIssuerDisabled")
    assert harness.condition(name, "FederationReady")["reason"] == "WaitingClusterReady"
    harness.ctl.patch(CLUSTER_ID, {"properties": {"oidcIssuerProfile": {"enabled": True, "issuerURL": issuer}}})
    harness.wait_ready(name)


def test_f02_workload_identity_disabled(harness):
    harness.ctl.patch(CLUSTER_ID, {"properties": {"securityProfile": {"workloadIdentity": {"enabled": False}}}})
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "ClusterReady", "False", "WorkloadIdentityDisabled")
    message = condition(obj, "ClusterReady")["message"]
    assert "--enable-workload-identity" in message
    harness.ctl.patch(CLUSTER_ID, {"properties": {"securityProfile": {"workloadIdentity": {"enabled": True}}}})
    harness.wait_ready(name)


def test_f03_identity_missing(harness):
    identity = harness.ctl.resource(IDENTITY_ID)
    harness.ctl.delete(IDENTITY_ID)
    harness.start()
    name = harness.apply_compute()
    message = harness.refusal(name, "IdentityReady", "IdentityNotFound")
    assert "az identity create -g rg-id -n id-ml" in message
    assert "spec.identity.resourceId" in message
    harness.ctl.create(IDENTITY_ID, "Microsoft.ManagedIdentity/userAssignedIdentities", identity)
    harness.wait_ready(name)


def test_f04_missing_credential_is_created_and_reported_while_it_propagates(harness):
    harness.start(federation_propagation_seconds=2)
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "FederationReady", "False", "FederatedCredentialMissing")
    message = condition(obj, "FederationReady")["message"]
    assert "Entra honours a new federated credential" in message
    assert harness.condition(name, "Reconciling")["status"] == "True"
    harness.wait_ready(name)
    assert len(harness.fics()) == len(EXAMPLE_SUBJECTS)


def test_f05_issuer_mismatch_is_named_and_the_exact_issuer_used(harness):
    issuer = issuer_of(harness)
    foreign_fic(harness, "manual-training", "system:serviceaccount:azureml:training", issuer.rstrip("/"))
    harness.start(federation_propagation_seconds=2)
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "FederationReady", "False", "FederatedCredentialIssuerMismatch")
    message = condition(obj, "FederationReady")["message"]
    assert "'manual-training'" in message
    assert "only the trailing '/' differs" in message
    assert "delete 'manual-training'" in message
    obj = harness.wait_ready(name)
    assert any(f["issuer"] == issuer and f["subject"].endswith(":training") for f in harness.fics().values())
    assert "manual-training" in harness.fics()  # never touches what it did not create


def test_f05_drifted_issuer_on_its_own_credential_is_corrected(harness):
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_ready(name)
    ours = obj["status"]["federatedCredentials"][0]["name"]
    harness.ctl.patch(
        f"{IDENTITY_ID}/federatedIdentityCredentials/{ours}", {"properties": {"issuer": "https://wrong.example/"}}
    )
    harness.patch_compute(name, {"deletionPolicy": "Orphan"})  # any change reconciles now
    harness.wait_reconciled(name)
    assert harness.fics()[ours]["issuer"] == issuer_of(harness)
    reasons = {e.reason for e in harness.events(name)}
    assert "FederatedCredentialIssuerMismatch" in reasons


def test_f06_foreign_credential_with_wrong_audience_blocks(harness):
    issuer = issuer_of(harness)
    foreign_fic(harness, "manual-default", "system:serviceaccount:azureml:default", issuer, ["api://other"])
    harness.start()
    name = harness.apply_compute()
    message = harness.refusal(name, "FederationReady", "FederatedCredentialAudienceMismatch")
    assert "'manual-default'" in message
    assert "az identity federated-credential delete" in message
    harness.ctl.patch(
        f"{IDENTITY_ID}/federatedIdentityCredentials/manual-default", {"properties": {"audiences": [AUDIENCE]}}
    )
    harness.wait_ready(name)


def test_f07_credential_limit(harness):
    for index in range(20):
        foreign_fic(harness, f"other-{index:02d}", f"system:serviceaccount:team{index}:runner", "https://other/")
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "FederationReady", "False", "FederatedCredentialLimit")
    message = condition(obj, "FederationReady")["message"]
    assert "has 20 federated credentials (20 not created by amlwire)" in message
    assert f"amlwire needs {len(EXAMPLE_SUBJECTS)} more" in message
    assert harness.condition(name, "Stalled")["status"] == "True"
    assert not [c for c in harness.ctl.calls() if c["route"] == "msi.fic" and c["method"] == "PUT"]
    for index in range(5):
        harness.ctl.delete(f"{IDENTITY_ID}/federatedIdentityCredentials/other-{index:02d}")
    harness.wait_ready(name)


def test_f09_service_account_the_extension_should_create_is_missing(harness):
    harness.start()
    name = harness.apply_compute(
        serviceAccounts=[
            {"namespace": "azureml", "name": "default"},
            {"namespace": "azureml", "name": "training", "create": False},
        ]
    )
    obj = harness.wait_condition(name, "ServiceAccountsReady", "False", "ServiceAccountMissing")
    message = condition(obj, "ServiceAccountsReady")["message"]
    assert "azureml/training does not exist" in message
    assert harness.service_account("training") is None  # not created: the spec said the extension owns it
    harness.core.create_namespaced_service_account("azureml", {"metadata": {"name": "training"}})
    harness.wait_ready(name)


@pytest.mark.parametrize(
    ("labels", "manager"),
    [
        ({"team": "ml"}, "kubectl-annotate"),  # fields tracked from creation: the apiserver names the manager
        (None, "does not use server-side apply"),  # created with a bare name: Kubernetes says before-first-apply
    ],
)
def test_f10_annotation_set_wrong_by_someone_else(harness, labels, manager):
    metadata = {"name": "training", **({"labels": labels} if labels else {})}
    harness.core.create_namespaced_service_account("azureml", {"metadata": metadata})
    harness.core.patch_namespaced_service_account(
        "training",
        "azureml",
        {"metadata": {"annotations": {"azure.workload.identity/client-id": "wrong"}}},
        field_manager="kubectl-annotate",
    )
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "ServiceAccountsReady", "False", "ServiceAccountAnnotationConflict")
    message = condition(obj, "ServiceAccountsReady")["message"]
    assert manager in message
    assert "azure.workload.identity/client-id='wrong'" in message
    assert "kubectl annotate serviceaccount -n azureml training" in message
    assert harness.service_account("training").metadata.annotations["azure.workload.identity/client-id"] == "wrong"
    client_id = obj["status"]["identity"]["clientId"]
    harness.core.patch_namespaced_service_account(
        "training",
        "azureml",
        {"metadata": {"annotations": {"azure.workload.identity/client-id": client_id}}},
        field_manager="kubectl-annotate",
    )
    harness.wait_ready(name)


def test_f12_extension_missing_in_verify_mode(harness):
    extension = harness.ctl.resource(EXTENSION_ID)
    harness.ctl.delete(EXTENSION_ID)
    harness.start()
    name = harness.apply_compute(extension__mode="Verify")
    obj = harness.wait_condition(name, "ExtensionReady", "False", "ExtensionMissing")
    message = condition(obj, "ExtensionReady")["message"]
    assert "az k8s-extension create --extension-type Microsoft.AzureML.Kubernetes --name azureml" in message
    assert harness.condition(name, "ComputeReady")["reason"] == "WaitingExtensionReady"
    extension["properties"]["configurationSettings"].update(
        {"identityType": "UserAssigned", "userAssignedIdentityResourceId": IDENTITY_ID}
    )
    harness.ctl.create(EXTENSION_ID, "Microsoft.KubernetesConfiguration/extensions", extension)
    harness.wait_ready(name)


def test_f12_missing_extension_is_installed_in_configure_mode(harness):
    harness.ctl.delete(EXTENSION_ID)
    harness.ctl.timing(lroSeconds=0.5)
    harness.start()
    name = harness.apply_compute()
    harness.wait_condition(name, "ExtensionReady", "False", "ExtensionInstalling")
    harness.wait_ready(name)
    assert harness.ctl.resource(EXTENSION_ID)["properties"]["extensionType"] == "Microsoft.AzureML.Kubernetes"


def test_f12_failed_extension_in_verify_mode(harness):
    harness.ctl.patch(
        EXTENSION_ID,
        {
            "properties": {
                "provisioningState": "Failed",
                "configurationSettings": {
                    "identityType": "UserAssigned",
                    "userAssignedIdentityResourceId": IDENTITY_ID,
                },
            }
        },
    )
    harness.start()
    name = harness.apply_compute(extension__mode="Verify")
    harness.wait_condition(name, "ExtensionReady", "False", "ExtensionFailed")
    harness.ctl.patch(EXTENSION_ID, {"properties": {"provisioningState": "Succeeded"}})
    harness.wait_ready(name)


def test_f13_extension_identity_settings_missing_in_verify_mode(harness):
    harness.start()
    name = harness.apply_compute(extension__mode="Verify")
    obj = harness.wait_condition(name, "ExtensionReady", "False", "ExtensionIdentityMismatch")
    message = condition(obj, "ExtensionReady")["message"]
    assert f"userAssignedIdentityResourceId={IDENTITY_ID}" in message
    assert "az k8s-extension update" in message
    assert "identityType" not in harness.extension_settings()  # Verify never writes
    harness.ctl.patch(
        EXTENSION_ID,
        {
            "properties": {
                "configurationSettings": {
                    "identityType": "UserAssigned",
                    "userAssignedIdentityResourceId": IDENTITY_ID.upper(),
                }
            }
        },
    )
    harness.wait_ready(name)


def test_f14_compute_attached_by_someone_else_without_the_identity(harness, ml_attach):
    ml_attach(identity=None)
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "ComputeReady", "False", "ComputeIdentityMismatch")
    message = condition(obj, "ComputeReady")["message"]
    assert "az ml compute detach --name k8s-gpu -g rg-ml -w mlw-robotics" in message
    assert harness.sandbox_compute() is not None  # not detached: amlwire did not attach it
    harness.ctl.delete(f"{WORKSPACE_ID}/computes/k8s-gpu")
    harness.wait_ready(name)
    assert "UserAssigned" in harness.sandbox_compute()["identity"]["type"]


def test_f14_failed_compute_it_attached_is_detached_and_attached_again(harness):
    harness.start()
    name = harness.apply_compute()
    harness.wait_ready(name)
    harness.ctl.patch(f"{WORKSPACE_ID}/computes/k8s-gpu", {"properties": {"provisioningState": "Failed"}})
    harness.patch_compute(name, {"deletionPolicy": "Orphan"})
    harness.wait_reconciled(name)
    calls = [(c["method"], c["route"]) for c in harness.ctl.calls()]
    assert ("DELETE", "ml.compute") in calls
    assert calls.count(("PUT", "ml.compute")) == 2


def test_f14_a_failed_attach_operation_counts_as_an_attempt_and_is_retried(harness):
    harness.ctl.add_fault(route="ml.compute", method="PUT", lroFailed=True, count=1)
    harness.start()
    name = harness.wait_ready(harness.apply_compute())["metadata"]["name"]
    calls = [(c["method"], c["route"]) for c in harness.ctl.calls()]
    assert calls.count(("PUT", "ml.compute")) == 2  # the failed attach, then the one after detaching it
    assert ("DELETE", "ml.compute") in calls
    assert harness.compute(name)["status"]["operations"] == []


def test_f14_a_failed_detach_is_detached_again(harness):
    harness.start()
    name = harness.apply_compute()
    harness.wait_ready(name)
    harness.ctl.add_fault(route="ml.compute", method="DELETE", lroFailed=True, count=1)
    harness.ctl.patch(f"{WORKSPACE_ID}/computes/k8s-gpu", {"properties": {"provisioningState": "Failed"}})
    harness.patch_compute(name, {"deletionPolicy": "Orphan"})
    harness.wait_reconciled(name)
    calls = [(c["method"], c["route"]) for c in harness.ctl.calls()]
    assert calls.count(("DELETE", "ml.compute")) == 2
    assert harness.sandbox_compute()["properties"]["provisioningState"] == "Succeeded"


def test_f14_deletion_gives_up_a_detach_that_keeps_failing_and_finishes_once_it_is_detached_by_hand(harness):
    harness.start()
    name = harness.apply_compute()
    harness.wait_ready(name)
    harness.ctl.add_fault(route="ml.compute", method="DELETE", lroFailed=True, count=3)
    harness.delete_compute(name)
    obj = harness.wait_condition(name, "Stalled", "True", "ComputeDetachFailed", timeout=60)
    message = condition(obj, "Stalled")["message"]
    assert "detaching compute k8s-gpu failed 3 times" in message
    assert "az ml compute detach --name k8s-gpu -g rg-ml -w mlw-robotics" in message
    assert "spec.deletionPolicy: Orphan" in message
    assert [(op["kind"], op["attempt"]) for op in obj["status"]["operations"]] == [("ComputeDetach", 3)]
    assert condition(obj, "Ready")["status"] == "False"
    time.sleep(2)  # several re-checks (blocked_recheck_delay 0.5 s): no fourth detach, one Warning
    detaches = [c for c in harness.ctl.calls() if (c["method"], c["route"]) == ("DELETE", "ml.compute")]
    assert len(detaches) == 3
    stuck = [e for e in harness.events(name) if e.reason == "ComputeDetachFailed" and "failed 3 times" in e.message]
    assert [(e.type, e.count or 1) for e in stuck] == [("Warning", 1)]
    harness.ctl.delete(f"{WORKSPACE_ID}/computes/k8s-gpu")  # the fix the condition names, done by hand
    wait_for(lambda: not harness.exists(name), timeout=30, what="finalizer released")


def test_f14_attach_gives_up_after_three_failures_until_the_spec_changes(harness):
    harness.ctl.add_fault(route="ml.compute", method="PUT", lroFailed=True, count=3)
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "Stalled", "True", "ComputeAttachFailed", timeout=60)
    message = condition(obj, "ComputeReady")["message"]
    assert "az ml compute detach --name k8s-gpu -g rg-ml -w mlw-robotics" in message
    puts = [c for c in harness.ctl.calls() if (c["method"], c["route"]) == ("PUT", "ml.compute")]
    assert len(puts) == 3
    harness.patch_compute(name, {"deletionPolicy": "Orphan"})  # any change is "try again"
    harness.wait_reconciled(name)
    assert harness.sandbox_compute()["properties"]["provisioningState"] == "Succeeded"


def test_f14_compute_name_taken_by_another_cluster(harness):
    harness.ctl.create(
        f"{WORKSPACE_ID}/computes/k8s-gpu",
        "Microsoft.MachineLearningServices/workspaces/computes",
        {
            "location": "eastus",
            "identity": {"type": "None"},
            "properties": {
                "computeType": "Kubernetes",
                "provisioningState": "Succeeded",
                "resourceId": CLUSTER_ID.replace("aks-robotics", "aks-other"),
                "properties": {"namespace": "default"},
            },
        },
    )
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "ComputeReady", "False", "ComputeNameConflict")
    assert "choose another spec.compute.name" in condition(obj, "ComputeReady")["message"]
    harness.patch_compute(name, {"compute": {"name": "k8s-gpu-2"}})
    harness.wait_reconciled(name)


def test_f15_role_missing_in_verify_mode(harness):
    harness.start()
    name = harness.apply_compute(
        access={"mode": "Verify", "grants": [{"scope": STORAGE_ID, "role": "Storage Blob Data Contributor"}]}
    )
    obj = harness.wait_condition(name, "AccessReady", "False", "RoleAssignmentMissing")
    message = condition(obj, "AccessReady")["message"]
    assert f"--assignee-object-id {IDENTITY_PRINCIPAL}" in message
    assert f"--scope {STORAGE_ID}" in message
    assert harness.role_assignments() == []  # Verify never writes
    harness.ctl.create(
        f"{STORAGE_ID}/providers/Microsoft.Authorization/roleAssignments/5a7e0d3e-3f3e-4c1b-8f0a-0a0a0a0a0a0a",
        "Microsoft.Authorization/roleAssignments",
        {
            "properties": {
                "roleDefinitionId": BLOB_CONTRIBUTOR,
                "principalId": IDENTITY_PRINCIPAL,
                "scope": STORAGE_ID,
                "createdOn": "2026-01-01T00:00:00Z",
            }
        },
    )
    harness.wait_ready(name)


def test_f16_role_assignment_propagating_says_until_when(harness):
    harness.start(role_propagation_seconds=3)
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "AccessReady", "False", "RoleAssignmentPropagating")
    access = condition(obj, "AccessReady")
    effective = obj["status"]["roleAssignments"][0]["effectiveAt"]
    assert f"expected effective at {effective}" in access["message"]
    assert harness.condition(name, "Stalled")["status"] == "False"
    harness.wait_ready(name, timeout=30)


@pytest.fixture
def ml_attach(harness):
    """Attach the compute in the sandbox as someone else would, with the real MLClient."""
    from tests.sandbox.conftest import ml_client
    from tests.sandbox.wiring import attach_compute

    def attach(identity: str | None) -> None:
        attach_compute(ml_client(harness.sandbox, "Other"), identity=identity)

    return attach


def test_kubernetes_client_is_used(harness):
    assert isinstance(harness.core, client.CoreV1Api)
