"""The attach paths that fail most in the field (issue 26), against the sandbox answering as Azure does: what the
user sees (condition, the doctor's line, the fix) and that following the fix converges."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from amlwire.domain.compute import UAMI_CLUSTER_ROLES
from amlwire.sandbox import ids
from tests.conftest import wait_for
from tests.e2e import harness as e2e
from tests.e2e.harness import CLUSTER_ID, FIC_TYPE, IDENTITY_ID, SUB, Harness, condition
from tests.e2e.test_admin_actions import SECOND_IDENTITY, create_identity, fics_of
from tests.e2e.test_doctor import result_of, run_doctor

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
WORKSPACE_UAMI_PRINCIPAL = "9a0c7a52-0000-4000-8000-00000000aa01"
ROLES = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions"
CLUSTER_ADMIN = UAMI_CLUSTER_ROLES["Azure Kubernetes Service Cluster Admin Role"]
TWO_ACCOUNTS = [{"namespace": "azureml", "name": "default"}, {"namespace": "azureml", "name": "training"}]


def grant_role(harness: Harness, principal: str, role_guid: str, scope: str, backdated: bool = True) -> None:
    name = ids.stable_uuid(scope.lower(), role_guid, principal)
    harness.ctl.create(
        f"{scope}/providers/{ids.ROLE_ASSIGNMENT}/{name}",
        ids.ROLE_ASSIGNMENT,
        {
            "properties": {
                "roleDefinitionId": f"{ROLES}/{role_guid}",
                "principalId": principal,
                "principalType": "ServicePrincipal",
                "scope": scope,
            }
        },
        {"backdated": backdated},
    )


def attach_puts(harness: Harness, since: int = 0) -> list[dict]:
    return [c for c in harness.ctl.calls(since) if c["route"] == "ml.compute" and c["method"] == "PUT"]


# -- a workspace with a user-assigned identity -------------------------------------------------------------
@pytest.fixture
def uami_workspace(control_plane, cluster, tmp_path) -> Iterator[Harness]:
    """The demo world, its workspace on a user-assigned identity that holds Reader and Kubernetes Extension
    Contributor on the cluster (what a team grants after reading only half of the attach article)."""
    world = e2e.test_world()
    world.workspaces[0].identity.type = "UserAssigned"
    h = Harness(control_plane, cluster, tmp_path, world)
    try:
        yield h
    finally:
        h.close()


def test_a_user_assigned_workspace_identity_without_cluster_admin_is_named_before_the_attach(
    uami_workspace, view_only_user, monkeypatch
):
    harness = uami_workspace
    harness.start()
    name = harness.apply_compute("robotics-gpu")
    obj = harness.wait_condition(name, "ComputeReady", "False", "WorkspaceIdentityLacksClusterRoles")
    message = condition(obj, "ComputeReady")["message"]
    assert "user-assigned identity" in message
    assert "it lacks Azure Kubernetes Service Cluster Admin Role" in message
    assert f'--role "Azure Kubernetes Service Cluster Admin Role" --scope {CLUSTER_ID}' in message
    assert attach_puts(harness) == []  # said before Azure's 400, not after it
    code, report = run_doctor(harness, monkeypatch, name)
    f18 = result_of(report, "F18")
    assert (code, f18["status"]) == (1, "fail")
    assert f18["evidence"]["missing"] == "Azure Kubernetes Service Cluster Admin Role"
    assert "Cluster Admin Role" in f18["fix"]
    assert "--role Reader" not in f18["fix"]
    grant_role(harness, WORKSPACE_UAMI_PRINCIPAL, CLUSTER_ADMIN, CLUSTER_ID)
    harness.wait_ready(name)
    assert len(attach_puts(harness)) == 1
    code, report = run_doctor(harness, monkeypatch, name)
    assert result_of(report, "F18")["status"] == "pass"


@pytest.fixture
def propagating(control_plane, cluster, tmp_path) -> Iterator[Harness]:
    """As above, and a new role assignment takes 3 s to be honoured (ARM lists it at once)."""
    world = e2e.test_world()
    world.workspaces[0].identity.type = "UserAssigned"
    world.timing.role_propagation_seconds = 3
    h = Harness(control_plane, cluster, tmp_path, world)
    try:
        yield h
    finally:
        h.close()


def test_azures_400_for_a_role_still_propagating_is_explained_and_the_attach_retried(propagating):
    harness = propagating
    harness.start()
    grant_role(
        harness, WORKSPACE_UAMI_PRINCIPAL, CLUSTER_ADMIN, CLUSTER_ID, backdated=False
    )  # listed, not yet honoured
    name = harness.apply_compute("robotics-gpu")
    obj = harness.wait_condition(name, "ComputeReady", "False", "WorkspaceIdentityLacksClusterRoles")
    message = condition(obj, "ComputeReady")["message"]
    assert "AKS role check failed for user assigned identity" in message
    assert "a new role may still be propagating" in message
    assert [c["status"] for c in attach_puts(harness)] == [400]
    harness.wait_ready(name, timeout=45)
    assert [c["status"] for c in attach_puts(harness)][-1] in (200, 201)


# -- local accounts disabled -------------------------------------------------------------------------------
def test_local_accounts_disabled_blocks_the_cluster_writes_nothing_and_says_how_to_enable_them(
    harness, view_only_user, monkeypatch
):
    harness.ctl.patch(CLUSTER_ID, {"properties": {"disableLocalAccounts": True}})
    harness.start()
    mark = harness.ctl.mark()
    name = harness.apply_compute("robotics-gpu")
    obj = harness.wait_condition(name, "ClusterReady", "False", "LocalAccountsDisabled")
    message = condition(obj, "ClusterReady")["message"]
    assert "az aks update -g rg-aks -n aks-robotics --enable-local-accounts" in message
    assert condition(obj, "Ready")["status"] == "False"
    time.sleep(1)
    assert "neither federates this cluster's service accounts nor attaches it" in message
    assert [
        c for c in harness.ctl.calls(mark) if c["route"] in ("ml.compute", "msi.fic") and c["method"] != "GET"
    ] == []
    assert harness.fics() == {}
    code, report = run_doctor(harness, monkeypatch, name)
    f19 = result_of(report, "F19")
    assert (code, f19["status"]) == (1, "fail")
    assert "--enable-local-accounts" in f19["fix"]
    harness.ctl.patch(CLUSTER_ID, {"properties": {"disableLocalAccounts": False}})  # the admin's fix
    harness.wait_ready(name)


# -- the namespace after the attach ------------------------------------------------------------------------
def finish_namespace_deletion(core: client.CoreV1Api, namespace: str) -> None:
    """What the namespace controller (kube-controller-manager, absent from this apiserver) does at the end."""
    found = core.read_namespace(namespace)
    found.spec.finalizers = []
    core.replace_namespace_finalize(namespace, found)


def test_a_namespace_deleted_after_the_attach_holds_jobs_until_amlwire_creates_it_again(harness):
    name = harness.wired(drift_interval=2.0)
    harness.core.delete_namespace("azureml-jobs")
    try:
        obj = harness.wait_condition(name, "ComputeReady", "False", "ComputeNamespaceDeleting", timeout=15)
        assert "every AML job on compute k8s-gpu fails" in condition(obj, "ComputeReady")["message"]
        job = harness.apply_job("amljob-train.yaml")  # held by amlwire, not sent to fail on AML
        held = harness.wait_job(job, "Submitted", "False", "ComputeNotReady", timeout=15)
        assert "ComputeNamespaceDeleting" in condition(held, "Submitted")["message"]
        assert harness.aml_jobs() == []
    finally:
        finish_namespace_deletion(harness.core, "azureml-jobs")
    harness.wait_ready(name, timeout=20)
    labels = harness.core.read_namespace("azureml-jobs").metadata.labels
    assert labels["app.kubernetes.io/managed-by"] == "amlwire"
    assert any(e.reason == "NamespaceCreated" for e in harness.events(name))
    harness.wait_job(job)


# -- the federated-credential cap ----------------------------------------------------------------------------
def add_foreign_credentials(harness: Harness, count: int) -> None:
    for i in range(count):
        harness.ctl.create(
            f"{IDENTITY_ID}/federatedIdentityCredentials/platform-{i}",
            FIC_TYPE,
            {
                "properties": {
                    "issuer": "https://token.actions.githubusercontent.com",
                    "subject": f"repo:contoso/app-{i}:ref:refs/heads/main",
                    "audiences": ["api://AzureADTokenExchange"],
                }
            },
        )


def test_the_credential_budget_is_shown_and_the_compute_past_the_cap_names_the_way_out(
    harness, view_only_user, monkeypatch
):
    from amlwire.devenv.ports import free_port
    from tests.e2e.test_metrics import scrape, value

    add_foreign_credentials(harness, 18)  # another team's GitHub deployments on the same identity
    port = free_port()
    harness.start(metrics_port=port)
    first = harness.apply_compute("first-gpu", serviceAccounts=TWO_ACCOUNTS)
    obj = harness.wait_ready(first)
    assert obj["status"]["credentialBudget"] == {"used": 20, "limit": 20, "perCluster": 2, "clustersRemaining": 0}
    samples = scrape(port)
    assert value(samples, "amlwire_identity_federated_credentials", identity="id-ml") == 20
    assert value(samples, "amlwire_identity_clusters_remaining", identity="id-ml") == 0
    cluster = harness.add_cluster("aks-next")
    second = harness.apply_compute(
        "second-gpu",
        serviceAccounts=TWO_ACCOUNTS,
        cluster={"resourceGroup": "rg-aks", "name": cluster},
        compute={"name": "k8s-next", "namespace": "azureml-jobs"},
    )
    refused = harness.wait_condition(second, "FederationReady", "False", "FederatedCredentialLimit")
    message = condition(refused, "FederationReady")["message"]
    assert "Azure allows 20 per identity" in message
    assert "one identity serves at most 10 clusters" in message
    assert "never deletes a credential it did not create" in message
    assert "Use another identity for this and the next clusters (spec.identity.resourceId)" in message
    time.sleep(1)
    names = set(fics_of(harness, IDENTITY_ID))
    assert len(names) == 20
    assert {f"platform-{i}" for i in range(18)} <= names
    code, report = run_doctor(harness, monkeypatch, second)
    f07 = result_of(report, "F07")
    assert (code, f07["status"]) == (1, "fail")
    # the way out, as the message says: another identity. (The harness's clusters share one apiserver, so the
    # second cluster's service accounts are the first's, which federate id-ml: the budget is what is checked.)
    create_identity(harness)
    harness.patch_compute(second, {"identity": {"resourceId": SECOND_IDENTITY}})
    wait_for(
        lambda: (harness.compute(second)["status"].get("credentialBudget") or {}).get("clustersRemaining") == 10,
        timeout=15,
        what="the new identity's budget",
    )
    assert condition(harness.compute(second), "FederationReady")["reason"] != "FederatedCredentialLimit"
    assert len(fics_of(harness, IDENTITY_ID)) == 20
