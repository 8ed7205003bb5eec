"""A job's data path in the sandbox, through azure-ai-ml and azure-mgmt-authorization: compute clusters with their
identities, datastores with their credentials, and the principal each job setting reads with."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.ai.ml import Input, command
from azure.ai.ml.entities import Environment, ManagedIdentityConfiguration, UserIdentityConfiguration
from azure.core.exceptions import HttpResponseError
from azure.mgmt.authorization import AuthorizationManagementClient

from amlwire_sandbox.client import SandboxClient
from amlwire_sandbox.server import SandboxServer
from amlwire_sandbox.world import ComputeIdentityWorld, ComputeWorld, DatastoreWorld
from tests.conftest import OWNER_PRINCIPAL, wait_for
from tests.sandbox.conftest import SUB, WORKSPACE_ID, StaticCredential, fast_world, ml_client, running

pytestmark = pytest.mark.sandbox
STORAGE = f"/subscriptions/{SUB}/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlrobotics"
CONTRIBUTOR = (
    f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/ba92f5b4-2d11-453d-a403-e96b0029c9fe"
)
READER = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
RAW = "azureml://datastores/workspaceblobstore/paths/raw/"


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    world = fast_world()
    workspace = world.workspaces[0]
    workspace.computes = [
        ComputeWorld(name="cpu", identity=ComputeIdentityWorld(type="SystemAssigned")),
        ComputeWorld(name="cpu-noid"),
    ]
    workspace.datastores = [DatastoreWorld(name="keyed", credentials="AccountKey")]
    yield from running(world, tmp_path, monkeypatch)


@pytest.fixture
def ml(sandbox):
    return ml_client(sandbox, "DataPath")


def job(compute: str | None, identity=None, path: str = RAW):
    spec = {
        "command": "python train.py --data ${{inputs.data}}",
        "environment": Environment(image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"),
        "inputs": {"data": Input(type="uri_folder", path=path)},
        "identity": identity,
    }
    if compute:
        spec["compute"] = compute
    return command(**spec)


def outcome(ml, submitted) -> tuple[str, str]:
    name = submitted.name
    wait_for(lambda: ml.jobs.get(name).status in ("Completed", "Failed"), timeout=15, what=f"{name} finished")
    error = ml.jobs._runs_operations.get_run_details(name).error
    return ml.jobs.get(name).status, str(error.error.code if error else "") + str(error.error.message if error else "")


def authorization(sandbox) -> AuthorizationManagementClient:
    return AuthorizationManagementClient(
        StaticCredential(sandbox, OWNER_PRINCIPAL),
        SUB,
        base_url=sandbox.base_url,
        credential_scopes=[sandbox.base_url + "/.default"],
        connection_verify=str(sandbox.ca_file),
    )


def grant(sandbox, principal: str, role: str = CONTRIBUTOR, scope: str = STORAGE) -> None:
    authorization(sandbox).role_assignments.create(
        scope, str(uuid.uuid4()), {"role_definition_id": role, "principal_id": principal}
    )


def test_compute_clusters_and_datastores_read_back_through_azure_ai_ml(ml):
    cpu = ml.compute.get("cpu")
    assert cpu.type == "amlcompute"
    assert cpu.identity.type == "system_assigned"
    assert cpu.identity.principal_id
    assert ml.compute.get("cpu-noid").identity is None or ml.compute.get("cpu-noid").identity.type in (None, "none")
    stores = {d.name: d for d in ml.datastores.list()}
    assert set(stores) == {"workspaceblobstore", "workspaceartifactstore", "keyed"}
    assert stores["workspaceblobstore"].account_name == "stmlrobotics"
    assert ml.datastores.get_default().name == "workspaceblobstore"
    assert type(ml.datastores.get("keyed").credentials).__name__ == "AccountKeyConfiguration"
    assert ml.datastores.get("keyed", include_secrets=True).credentials.account_key  # listSecrets


def test_listing_secrets_needs_the_action(sandbox):
    reader = "3d4c5b6a-0000-4000-8000-0000000000d1"
    grant(sandbox, reader, READER, WORKSPACE_ID)
    as_reader = ml_client(sandbox, "DataPathReader", StaticCredential(sandbox, reader))
    assert as_reader.datastores.get("keyed").name == "keyed"
    with pytest.raises(HttpResponseError, match="listsecrets/action"):
        as_reader.datastores.get("keyed", include_secrets=True)


def test_a_compute_cluster_reads_with_its_identity_not_the_workspaces(sandbox, ml):
    grant(sandbox, "9a0c7a52-0000-4000-8000-00000000aa01")  # the workspace identity: jobs never use it
    status, error = outcome(ml, ml.jobs.create_or_update(job("cpu")))
    assert status == "Failed"
    assert "AuthorizationPermissionMismatch" in error
    grant(sandbox, ml.compute.get("cpu").identity.principal_id)
    assert outcome(ml, ml.jobs.create_or_update(job("cpu", ManagedIdentityConfiguration())))[0] == "Completed"
    assert outcome(ml, ml.jobs.create_or_update(job("cpu")))[0] == "Completed"  # no identity: the compute's


def test_user_identity_reads_as_the_submitter(sandbox):
    # a user-identity submission carries the user's AML token too; azure-ai-ml checks its audience
    user = StaticCredential(sandbox, OWNER_PRINCIPAL, audience=sandbox.base_url)
    ml = ml_client(sandbox, "DataPathUser", user)
    grant(sandbox, ml.compute.get("cpu").identity.principal_id)
    assert (
        "AuthorizationPermissionMismatch"
        in outcome(ml, ml.jobs.create_or_update(job("cpu", UserIdentityConfiguration())))[1]
    )
    grant(sandbox, OWNER_PRINCIPAL)
    assert outcome(ml, ml.jobs.create_or_update(job("cpu", UserIdentityConfiguration())))[0] == "Completed"


def test_a_compute_without_identity_cannot_read_as_managed(ml):
    status, error = outcome(ml, ml.jobs.create_or_update(job("cpu-noid", ManagedIdentityConfiguration())))
    assert status == "Failed"
    assert "no managed identity" in error


def test_a_key_based_datastore_reads_with_its_key_when_shared_keys_are_on(sandbox, ml):
    ctl = SandboxClient(sandbox.base_url, sandbox.ca_file)
    status, error = outcome(ml, ml.jobs.create_or_update(job("cpu", path="azureml://datastores/keyed/paths/x/")))
    assert status == "Failed"  # the compute's identity may not fetch the stored key
    assert "datastores/listsecrets/action" in error
    data_scientist = (
        f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/f6c7c914-8db3-469d-8ca1-694a8f32e121"
    )
    grant(sandbox, ml.compute.get("cpu").identity.principal_id, data_scientist, WORKSPACE_ID)
    status, error = outcome(ml, ml.jobs.create_or_update(job("cpu", path="azureml://datastores/keyed/paths/x/")))
    assert status == "Failed"  # the world's account has shared keys off
    assert "KeyBasedAuthenticationNotPermitted" in error
    ctl.patch(STORAGE, {"properties": {"allowSharedKeyAccess": True}})
    assert (
        outcome(ml, ml.jobs.create_or_update(job("cpu", path="azureml://datastores/keyed/paths/x/")))[0] == "Completed"
    )


def test_role_definitions_read_at_any_scope(sandbox):
    found = authorization(sandbox).role_definitions.get_by_id(
        f"{WORKSPACE_ID}/providers/Microsoft.Authorization/roleDefinitions/f6c7c914-8db3-469d-8ca1-694a8f32e121"
    )
    assert found.role_name == "AzureML Data Scientist"
    assert "Microsoft.MachineLearningServices/workspaces/*/action" in found.permissions[0].actions


def test_a_pipeline_steps_own_identity_sent_in_snake_case_is_the_reader(sandbox):
    """azure-ai-ml sends each step's identity as {"identity_type": "UserIdentity"}: the step reads as the user."""
    from azure.ai.ml.dsl import pipeline

    user = StaticCredential(sandbox, OWNER_PRINCIPAL, audience=sandbox.base_url)
    ml = ml_client(sandbox, "DataPathPipeline", user)
    grant(sandbox, ml.compute.get("cpu").identity.principal_id)  # the compute could read: the user cannot

    @pipeline(compute="cpu")
    def steps():
        job("cpu", UserIdentityConfiguration())()

    built = steps()
    built.name = f"pipe-{uuid.uuid4().hex[:8]}"
    rest = built._to_rest_object()  # what the SDK sends (its anonymous components are registered apart)
    (step,) = rest.properties.jobs.values()
    assert step["identity"] == {"identity_type": "UserIdentity"}  # in snake_case, unlike a job's root
    # what the SDK's resolution would have filled in before sending
    step["componentId"] = f"{WORKSPACE_ID}/components/train/versions/1"
    cpu = f"{WORKSPACE_ID}/computes/cpu"
    step["computeId"] = rest.properties.settings["default_compute"] = rest.properties.compute_id = cpu
    ml.jobs._operation_2023_02_preview.create_or_update(ml.resource_group_name, ml.workspace_name, built.name, rest)
    status, error = outcome(ml, built)
    assert status == "Failed"
    assert "AuthorizationPermissionMismatch" in error
