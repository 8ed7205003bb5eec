"""A fresh AttachedCompute against the sandbox: every link made, Ready, and a job on it completes."""

from __future__ import annotations

import pytest

from amlwire_devenv.stack import OPERATOR_PRINCIPAL_ID
from tests.e2e.harness import EXAMPLE_SUBJECTS, IDENTITY_CLIENT_ID, IDENTITY_ID

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]


def test_fresh_attached_compute_becomes_ready_with_every_link_right(harness):
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_ready(name)
    status = obj["status"]
    issuer = status["oidcIssuer"]
    assert issuer.endswith("/")
    assert status["identity"]["clientId"] == IDENTITY_CLIENT_ID
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    # federation: one credential per service account, with the cluster's exact issuer
    fics = harness.fics()
    subjects = {f["subject"] for f in fics.values() if f["issuer"] == issuer}
    assert subjects == EXAMPLE_SUBJECTS
    assert all(f["audiences"] == ["api://AzureADTokenExchange"] for f in fics.values())
    assert {f["name"] for f in status["federatedCredentials"]} == set(fics)
    # service accounts annotated
    for account in ("default", "training"):
        annotations = harness.service_account(account).metadata.annotations
        assert annotations["azure.workload.identity/client-id"] == IDENTITY_CLIENT_ID
    # extension identity settings
    settings = harness.extension_settings()
    assert settings["identityType"] == "UserAssigned"
    assert settings["userAssignedIdentityResourceId"].lower() == IDENTITY_ID.lower()
    assert settings["enableTraining"] == "True"
    # role assignments
    roles = {a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1] for a in harness.role_assignments()}
    assert "ba92f5b4-2d11-453d-a403-e96b0029c9fe" in roles  # Storage Blob Data Contributor
    # compute attached with the identity
    compute = harness.sandbox_compute()
    assert compute["properties"]["provisioningState"] == "Succeeded"
    assert [k.lower() for k in compute["identity"]["userAssignedIdentities"]] == [IDENTITY_ID.lower()]
    assert status["computeId"].lower().endswith("/computes/k8s-gpu")
    # instance types on the cluster
    from kubernetes import client

    instance_type = client.CustomObjectsApi(harness.kube).get_cluster_custom_object(
        "amlarc.azureml.com", "v1alpha1", "instancetypes", "gpu-1"
    )
    assert instance_type["spec"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    # the operator authenticated as its own workload identity, never anonymously
    callers = {c["caller"] for c in harness.ctl.calls() if not c["route"].startswith(("entra.", "ml.discovery"))}
    assert callers == {OPERATOR_PRINCIPAL_ID}
    assert harness.ctl.judge(compute["id"]) == {"sidecar": None, "inContainer": None}


def test_first_visit_status_is_set_before_azure_answers(harness):
    harness.ctl.add_fault(route="aks.cluster", latency=3, count=1)
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_condition(name, "Reconciling", "True", "FirstVisit", timeout=2.5)
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "Unknown"
    assert conditions["Stalled"]["status"] == "False"
    assert {conditions[t]["status"] for t in ("ClusterReady", "FederationReady", "ComputeReady")} == {"Unknown"}
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    harness.wait_ready(name)


def test_no_error_events_for_requeues(harness):
    harness.start(federation_propagation_seconds=1)
    name = harness.apply_compute()
    harness.wait_ready(name)
    types = {(e.type, e.reason) for e in harness.events(name)}
    assert not [t for t in types if t[0] not in ("Normal", "Warning")], types
    assert {("Normal", "RoleAssignmentCreated"), ("Normal", "ComputeAttaching")} <= types, types
    assert not [t for t in types if t[0] == "Warning"], types
