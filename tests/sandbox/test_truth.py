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
    compute = KubernetesCompute(name="no-ns", resource_id=CLUSTER_ID, namespace="no-such-namespace")
    with pytest.raises(HttpResponseError):
        ml.compute.begin_create_or_update(compute).result()
    stored = ctl.resource(f"{WORKSPACE_ID}/computes/no-ns")["properties"]
    assert stored["provisioningState"] == "Failed"
    (error,) = stored["provisioningErrors"]
    assert "Namespace 'no-such-namespace' does not exist" in error["error"]["message"]
    # what azure-ai-ml makes of it: the first error's code, a string
    assert ml.compute.get("no-ns").provisioning_errors == error["error"]["code"]


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
def test_every_call_is_authorised_by_the_callers_roles(arm, ctl):
    reader = StaticCredential(ADMIN)
    clusters = ContainerServiceClient(reader, SUB, **arm).managed_clusters
    with pytest.raises(HttpResponseError) as refused:
        clusters.get("rg-aks", "aks-robotics")
    assert refused.value.status_code == 403
    assert refused.value.error.code == "AuthorizationFailed"
    assert "'Microsoft.ContainerService/managedClusters/read' over scope" in refused.value.error.message
    grant(ctl, ADMIN, READER, "/subscriptions/" + SUB + "/resourceGroups/rg-aks")  # inherited from the group
    assert clusters.get("rg-aks", "aks-robotics").oidc_issuer_profile.enabled


def test_attaching_an_identity_needs_assign_action_on_it(sandbox, ctl):
    ml = ml_client(sandbox, "linked", StaticCredential(ADMIN))
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
    scientist = ml_client(sandbox, "scientist", StaticCredential(ADMIN))
    grant(ctl, ADMIN, DATA_SCIENTIST, WORKSPACE_ID)
    scientist.jobs.create_or_update(validation_job("by-a-scientist"))
    assert wait_for(lambda: finished(scientist, "by-a-scientist"), timeout=20) == "Completed"
    with pytest.raises(HttpResponseError) as refused:
        attach_compute(scientist, name="another")
    assert refused.value.error.code == "AuthorizationFailed"
    assert "workspaces/computes/write" in refused.value.error.message
