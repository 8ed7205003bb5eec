"""The sandbox answers as Azure is documented to (docs/sandbox.md), through the real SDK clients."""

from __future__ import annotations

import uuid

import pytest
from azure.ai.ml.entities import KubernetesCompute
from azure.core.exceptions import HttpResponseError
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.kubernetesconfiguration.extensions import KubernetesConfigurationExtensionsMgmtClient
from azure.mgmt.kubernetesconfiguration.extensions import models as ext_models

from tests.conftest import wait_for
from tests.sandbox.conftest import (
    CLUSTER_ARGS,
    CLUSTER_ID,
    IDENTITY_ID,
    SUB,
    WORKSPACE_ID,
    StaticCredential,
    ml_client,
)
from tests.sandbox.test_aml import finished, validation_job
from tests.sandbox.wiring import attach_compute, wire

pytestmark = pytest.mark.sandbox
ROLES = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions"
MI_OPERATOR = "f1a07417-d97a-45cb-824c-7a7467783830"
COMPUTE_OPERATOR = "e503ece1-11d0-4e8e-8e2c-7a6c3bf38815"
DATA_SCIENTIST = "f6c7c914-8db3-469d-8ca1-694a8f32e121"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
ADMIN = "7d000000-0000-4000-8000-0000000000ad"  # a principal the tests grant roles to, one at a time


def grant(ctl, principal: str, role: str, scope: str) -> None:
    name = uuid.uuid5(uuid.NAMESPACE_URL, f"{principal}|{role}|{scope}")
    ctl.create(
        f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
        "Microsoft.Authorization/roleAssignments",
        {"properties": {"roleDefinitionId": f"{ROLES}/{role}", "principalId": principal, "scope": scope}},
        {"backdated": True},
    )


# -- extensions --------------------------------------------------------------------------------------
def test_a_patch_that_changes_nothing_answers_200_without_an_operation(credential, arm, ctl):
    extensions = KubernetesConfigurationExtensionsMgmtClient(credential, SUB, **arm).extensions
    current = extensions.get(*CLUSTER_ARGS, "azureml").properties.configuration_settings
    headers: dict[str, str] = {}
    body = ext_models.PatchExtension(properties=ext_models.PatchExtensionProperties(configuration_settings=current))
    poller = extensions.begin_update(
        *CLUSTER_ARGS,
        "azureml",
        body,
        raw_response_hook=lambda r: headers.update(r.http_response.headers),
    )
    assert poller.done()
    assert "Azure-AsyncOperation" not in headers
    assert ctl.calls()[-1]["status"] == 200
    # a Failed extension PATCHed with the same settings stays Failed
    ctl.patch(
        f"{CLUSTER_ID}/providers/Microsoft.KubernetesConfiguration/extensions/azureml",
        {"properties": {"provisioningState": "Failed"}},
    )
    again = extensions.begin_update(*CLUSTER_ARGS, "azureml", body).result()
    assert again.properties.provisioning_state == "Failed"


def test_jobs_are_refused_on_a_compute_whose_extension_does_not_train(credential, arm, ml, ctl):
    wire(credential, arm, ml)
    extension = f"{CLUSTER_ID}/providers/Microsoft.KubernetesConfiguration/extensions/azureml"
    settings = ctl.resource(extension)["properties"]["configurationSettings"]
    ctl.patch(extension, {"properties": {"configurationSettings": {**settings, "enableTraining": "False"}}})
    with pytest.raises(HttpResponseError, match="does not support training jobs") as refused:
        ml.jobs.create_or_update(validation_job("no-training"))
    assert "enableTraining=True" in str(refused.value)


# -- computes ----------------------------------------------------------------------------------------
def test_deleting_a_compute_that_is_gone_answers_204(ml, ctl):
    ml.compute.begin_delete("never-attached", action="Detach").result()
    assert ctl.calls()[-1]["status"] == 204


def test_a_failed_attach_carries_provisioning_errors(ml, ctl):
    ctl.add_fault(route="ml.compute", method="PUT", lroFailed=True, count=1)
    compute = KubernetesCompute(name="broken", resource_id=CLUSTER_ID, namespace="azureml-jobs")
    with pytest.raises(HttpResponseError):
        ml.compute.begin_create_or_update(compute).result()
    stored = ctl.resource(f"{WORKSPACE_ID}/computes/broken")["properties"]
    assert stored["provisioningState"] == "Failed"
    (error,) = stored["provisioningErrors"]
    assert error["error"]["code"] == "InjectedOperationFailure"
    # what azure-ai-ml makes of it: the first error's code, a string
    assert ml.compute.get("broken").provisioning_errors == error["error"]["code"]


def test_the_attach_neither_creates_nor_checks_the_namespace_and_jobs_there_fail(credential, arm, ml, ctl):
    wire(credential, arm, ml)
    compute = KubernetesCompute(name="no-ns", resource_id=CLUSTER_ID, namespace="no-such-namespace")
    assert ml.compute.begin_create_or_update(compute).result().provisioning_state == "Succeeded"
    ml.jobs.create_or_update(validation_job("in-no-namespace", compute="no-ns"))
    wait_for(lambda: finished(ml, "in-no-namespace"), timeout=20, what="the job to end")
    assert ml.jobs.get("in-no-namespace").status == "Failed"
    error = ctl.resource(f"{WORKSPACE_ID}/jobs/in-no-namespace")
    details = ml.jobs._runs_operations.get_run_details("in-no-namespace")
    assert 'namespaces "no-such-namespace" not found' in details.error.error.message
    assert error["properties"]["status"] == "Failed"


@pytest.mark.parametrize("mode", ["refuse", "accept"])
def test_tag_names_with_a_slash(ml, ctl, sandbox, mode):
    sandbox.sandbox.world.rules.tag_names = mode
    compute = KubernetesCompute(
        name="tagged", resource_id=CLUSTER_ID, namespace="azureml-jobs", tags={"amlwire.io/owner": "x"}
    )
    if mode == "refuse":
        with pytest.raises(HttpResponseError, match="InvalidTagNameCharacters"):
            ml.compute.begin_create_or_update(compute).result()
    else:
        assert ml.compute.begin_create_or_update(compute).result().tags == {"amlwire.io/owner": "x"}
    compute.tags = {"amlwire-owner": "x"}
    assert ml.compute.begin_create_or_update(compute).result().tags == {"amlwire-owner": "x"}


# -- ARM authorisation --------------------------------------------------------------------------------
def test_every_call_is_authorised_by_the_callers_roles(sandbox, arm, ctl):
    reader = StaticCredential(sandbox, ADMIN)
    clusters = ContainerServiceClient(reader, SUB, **arm).managed_clusters
    with pytest.raises(HttpResponseError) as refused:
        clusters.get("rg-aks", "aks-robotics")
    assert refused.value.status_code == 403
    assert refused.value.error.code == "AuthorizationFailed"
    assert "'Microsoft.ContainerService/managedClusters/read' over scope" in refused.value.error.message
    grant(ctl, ADMIN, READER, "/subscriptions/" + SUB + "/resourceGroups/rg-aks")  # inherited from the group
    assert clusters.get("rg-aks", "aks-robotics").oidc_issuer_profile.enabled


def test_attaching_an_identity_needs_assign_action_on_it(sandbox, ctl):
    ml = ml_client(sandbox, "linked", StaticCredential(sandbox, ADMIN))
    grant(ctl, ADMIN, DATA_SCIENTIST, WORKSPACE_ID)
    grant(ctl, ADMIN, COMPUTE_OPERATOR, WORKSPACE_ID)
    with pytest.raises(HttpResponseError) as refused:
        attach_compute(ml)
    assert refused.value.error.code == "LinkedAuthorizationFailed"
    assert f"on the linked scope(s) '{IDENTITY_ID}'" in refused.value.error.message
    grant(ctl, ADMIN, MI_OPERATOR, IDENTITY_ID)
    assert attach_compute(ml).provisioning_state == "Succeeded"


def test_a_data_scientist_submits_jobs_but_may_not_attach_computes(sandbox, ctl, credential, arm, ml):
    wire(credential, arm, ml)  # as the Owner
    scientist = ml_client(sandbox, "scientist", StaticCredential(sandbox, ADMIN))
    grant(ctl, ADMIN, DATA_SCIENTIST, WORKSPACE_ID)
    scientist.jobs.create_or_update(validation_job("by-a-scientist"))
    assert wait_for(lambda: finished(scientist, "by-a-scientist"), timeout=20) == "Completed"
    with pytest.raises(HttpResponseError) as refused:
        attach_compute(scientist, name="another")
    assert refused.value.error.code == "AuthorizationFailed"
    assert "workspaces/computes/write" in refused.value.error.message


# -- the attach paths that fail in the field (issue 26) -------------------------------------------------------
def test_an_attach_of_a_cluster_with_local_accounts_disabled_gets_a_400(ml, ctl):
    ctl.patch(CLUSTER_ID, {"properties": {"disableLocalAccounts": True}})
    with pytest.raises(HttpResponseError) as refused:
        attach_compute(ml)
    assert refused.value.status_code == 400
    assert "local accounts disabled" in str(refused.value)
    assert ctl.resource(f"{WORKSPACE_ID}/computes/k8s-gpu") is None


def test_an_attach_of_a_cluster_in_another_subscription_gets_a_400(ml, ctl):
    other = CLUSTER_ID.replace(SUB, "0b9e8d7c-0000-4000-8000-00000000abcd")
    ctl.create(other, "Microsoft.ContainerService/managedClusters", {"location": "eastus", "properties": {}})
    compute = KubernetesCompute(name="k8s-other", resource_id=other, namespace="azureml-jobs")
    with pytest.raises(HttpResponseError) as refused:
        ml.compute.begin_create_or_update(compute).result()
    assert refused.value.status_code == 400
    assert "another subscription" in str(refused.value)


UAMI_CLUSTER_ROLES = {
    "Reader": READER,
    "Kubernetes Extension Contributor": "85cb6faf-e071-4c9b-8136-154b5a04f717",
    "Azure Kubernetes Service Cluster Admin Role": "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",
}


@pytest.fixture
def uami_sandbox(tmp_path, monkeypatch):
    from tests.sandbox.conftest import fast_world, running

    world = fast_world()
    world.workspaces[0].identity.type = "UserAssigned"
    world.role_assignments = [
        a for a in world.role_assignments if a.principal_id != world.workspaces[0].identity.principal_id
    ]
    yield from running(world, tmp_path, monkeypatch)


@pytest.mark.parametrize("lacking", [*UAMI_CLUSTER_ROLES, None])
def test_a_user_assigned_workspace_identity_attaches_only_with_all_three_cluster_roles(uami_sandbox, lacking):
    from amlwire_sandbox.client import SandboxClient

    ctl = SandboxClient(uami_sandbox.base_url, uami_sandbox.ca_file)
    workspace = ctl.resource(WORKSPACE_ID)
    assert "principalId" not in workspace["identity"]  # only under userAssignedIdentities, as Azure sends it
    (principal,) = [v["principalId"] for v in workspace["identity"]["userAssignedIdentities"].values()]
    for role, guid in UAMI_CLUSTER_ROLES.items():
        if role != lacking:
            grant(ctl, principal, guid, CLUSTER_ID)
    ml = ml_client(uami_sandbox, "SandboxUami")
    if lacking is None:
        assert attach_compute(ml).provisioning_state == "Succeeded"
        return
    with pytest.raises(HttpResponseError) as refused:
        attach_compute(ml)
    assert refused.value.status_code == 400
    assert "AKS role check failed for user assigned identity" in str(refused.value)


# -- the managed-identity provider's own limits (rule msi.identity-throttling) ---------------------------------
@pytest.fixture
def identity_limited(tmp_path, monkeypatch):
    from tests.sandbox.conftest import fast_world, running

    world = fast_world()
    world.arm_limits.identity.enabled = True
    yield from running(world, tmp_path, monkeypatch)


def test_the_identity_provider_throttles_one_identity_and_arm_says_its_budget_is_left(identity_limited):
    from azure.mgmt.msi import ManagedServiceIdentityClient

    from tests.sandbox.conftest import arm_kwargs

    client = ManagedServiceIdentityClient(StaticCredential(identity_limited), SUB, **arm_kwargs(identity_limited))
    msi = client.user_assigned_identities
    answers: list[dict] = []
    for _ in range(5):
        msi.get("rg-id", "id-ml", raw_response_hook=lambda r: answers.append(dict(r.http_response.headers)))
    with pytest.raises(HttpResponseError) as throttled:
        msi.get("rg-id", "id-ml")
    assert throttled.value.status_code == 429
    headers = throttled.value.response.headers
    assert int(headers["Retry-After"]) >= 1
    assert int(headers["x-ms-ratelimit-remaining-subscription-reads"]) > 0  # ARM's own budget is not the cause
    with pytest.raises(HttpResponseError):  # its credentials are the same identity's
        next(iter(client.federated_identity_credentials.list("rg-id", "id-ml")))


# -- role inheritance: management groups and Entra groups (rule authz.inheritance) --------------------------------
PLATFORM_GROUP = "0c3b2a19-0000-4000-8000-00000000ab01"
OUTSIDER = "7d000000-0000-4000-8000-0000000000ee"


@pytest.fixture
def inherited(tmp_path, monkeypatch):
    """Reader for the platform group (ADMIN a member, through a nested group) at a management group above
    the subscription."""
    from amlwire_sandbox.world import GroupWorld, ManagementGroupWorld, RoleAssignmentWorld
    from tests.sandbox.conftest import fast_world, running

    world = fast_world()
    world.management_groups = [
        ManagementGroupWorld(name="mg-root-platform"),
        ManagementGroupWorld(name="mg-ml", subscriptions=[SUB], parent="mg-root-platform"),
    ]
    world.groups = [
        GroupWorld(id=PLATFORM_GROUP, members=["0c3b2a19-0000-4000-8000-00000000ab02"]),
        GroupWorld(id="0c3b2a19-0000-4000-8000-00000000ab02", members=[ADMIN]),
    ]
    world.role_assignments.append(
        RoleAssignmentWorld(
            scope="/providers/Microsoft.Management/managementGroups/mg-root-platform",
            role_definition_id=f"{ROLES}/{READER}",
            principal_id=PLATFORM_GROUP,
        )
    )
    yield from running(world, tmp_path, monkeypatch)


def test_a_role_at_a_management_group_for_a_group_applies_to_its_members_below(inherited):
    from azure.mgmt.authorization import AuthorizationManagementClient

    from tests.sandbox.conftest import arm_kwargs

    kwargs = arm_kwargs(inherited)
    as_admin = ContainerServiceClient(StaticCredential(inherited, ADMIN), SUB, **kwargs)
    assert as_admin.managed_clusters.get("rg-aks", "aks-robotics").name == "aks-robotics"
    with pytest.raises(HttpResponseError) as refused:
        ContainerServiceClient(StaticCredential(inherited, OUTSIDER), SUB, **kwargs).managed_clusters.get(
            "rg-aks", "aks-robotics"
        )
    assert refused.value.status_code == 403
    assignments = AuthorizationManagementClient(StaticCredential(inherited), SUB, **kwargs).role_assignments
    assigned = list(assignments.list_for_scope(CLUSTER_ID, filter=f"assignedTo('{ADMIN}')"))
    assert [(a.scope, a.principal_id) for a in assigned] == [
        ("/providers/Microsoft.Management/managementGroups/mg-root-platform", PLATFORM_GROUP)
    ]
    assert list(assignments.list_for_scope(CLUSTER_ID, filter=f"principalId eq '{ADMIN}'")) == []
