"""The data-path doctor's pure part: who reads each datastore, and each check over hand-made facts (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from amlwire.domain.access import ROLE_GUIDS
from amlwire.domain.azure import RoleAssignment, WorkspaceInfo
from amlwire.domain.datapath import (
    DEFAULT_DATASTORE,
    ComputeIdentities,
    DataPathFacts,
    DatastoreInfo,
    RoleDefinitionInfo,
    StepIdentity,
    StorageNetwork,
    Usage,
    diagnose_data_path,
    job_path,
    reader_of,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SUB = "/subscriptions/s"
ACCOUNT = f"{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"
WORKSPACE = f"{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"
UAMI = f"{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-jobs"
BLOB = DatastoreInfo("workspaceblobstore", ACCOUNT, "azureml-blobstore", "None", is_default=True)
KEYED = DatastoreInfo("keyed", ACCOUNT, "data", "AccountKey")
CONTRIBUTOR = ROLE_GUIDS["Storage Blob Data Contributor"]
READER = ROLE_GUIDS["Storage Blob Data Reader"]


def role(principal: str, guid: str, scope: str = ACCOUNT, age: timedelta = timedelta(days=1)) -> RoleAssignment:
    return RoleAssignment(
        f"ra-{principal}-{guid[:4]}", scope, f"{SUB}/providers/x/roleDefinitions/{guid}", principal, NOW - age
    )


def facts(
    compute: ComputeIdentities | None = None,
    identity: Any = "aml-token",
    usages: list[Usage] | None = None,
    roles: Sequence[RoleAssignment] = (),
    **values: Any,
) -> DataPathFacts:
    found = DataPathFacts(
        workspace=WorkspaceInfo(WORKSPACE, "eastus", ACCOUNT, "identity", "ws-principal"),
        workspace_group="rg",
        workspace_name="w",
        compute=compute or ComputeIdentities("cpu", "AmlCompute", system_principal="cpu-principal"),
        job_identity=identity,
        now=NOW,
        role_propagation=timedelta(minutes=10),
        usages=usages if usages is not None else [Usage(BLOB, True)],
        storage={ACCOUNT.lower(): StorageNetwork(ACCOUNT, False)},
        **values,
    )
    for assignment in roles:
        found.roles.setdefault(assignment.principal_id, []).append(assignment)
    return found


def statuses(found: DataPathFacts) -> dict[str, str]:
    return {r.id: r.status for r in diagnose_data_path(found)}


def failing(found: DataPathFacts) -> list[str]:
    return [r.id for r in diagnose_data_path(found) if r.status == "fail"]


USER = "user-oid"
CLUSTER = ComputeIdentities(
    "cpu", "AmlCompute", system_principal="cpu-principal", user_assigned={UAMI: ("uami-p", "uami-c")}
)


@pytest.mark.parametrize(
    ("compute", "identity", "selector", "principal", "kind"),
    [
        (CLUSTER, "aml-token", None, "cpu-principal", "ServicePrincipal"),  # no identity: the compute's, as fallback
        (CLUSTER, "managed", None, "cpu-principal", "ServicePrincipal"),
        (CLUSTER, "managed", "uami-c", "uami-p", "ServicePrincipal"),  # the identity the job names, by client ID
        (CLUSTER, "managed", UAMI.upper(), "uami-p", "ServicePrincipal"),  # or by resource ID, any case
        (CLUSTER, "user", None, USER, "User"),
        (ComputeIdentities("cpu", "AmlCompute"), "managed", None, None, "ServicePrincipal"),
        (
            ComputeIdentities("k8s", "Kubernetes", user_assigned={UAMI: ("uami-p", "uami-c")}),
            "user",
            None,
            "uami-p",
            "ServicePrincipal",
        ),
        (ComputeIdentities("serverless", "Serverless"), "aml-token", None, USER, "User"),
        (ComputeIdentities("serverless", "Serverless"), "managed", None, None, "ServicePrincipal"),
    ],
)
def test_who_reads_identity_based_data(compute, identity, selector, principal, kind):
    reader = reader_of(facts(compute, identity, identity_selector=selector, user=USER))
    assert (reader.principal, reader.principal_type) == (principal, kind)
    assert bool(reader.missing) == (principal is None)


def test_a_user_identity_without_a_user_says_how_to_name_one():
    reader = reader_of(facts(CLUSTER, "user"))
    assert reader.principal is None
    assert "--user" in reader.missing


@pytest.mark.parametrize(
    ("roles", "write", "failing_ids"),
    [
        ([], True, ["F24"]),
        ([role("cpu-principal", CONTRIBUTOR)], True, []),
        ([role("cpu-principal", CONTRIBUTOR, scope=SUB)], True, []),  # inherited from the subscription
        (
            [role("cpu-principal", CONTRIBUTOR, scope=f"{ACCOUNT}/blobServices/default/containers/azureml-blobstore")],
            True,
            [],
        ),
        ([role("cpu-principal", CONTRIBUTOR, scope=f"{ACCOUNT}/blobServices/default/containers/other")], True, ["F24"]),
        ([role("cpu-principal", READER)], True, ["F24"]),  # reading is not writing the outputs
        ([role("cpu-principal", READER)], False, []),
        ([role("ws-principal", CONTRIBUTOR)], True, ["F24", "F25"]),  # the field story
        ([role("cpu-principal", CONTRIBUTOR, age=timedelta(minutes=1))], True, ["F16"]),
    ],
)
def test_the_reader_and_its_roles(roles, write, failing_ids):
    assert failing(facts(roles=roles, usages=[Usage(BLOB, write)])) == failing_ids


def test_the_fix_is_the_exact_command_for_the_reader_and_the_account():
    found = {r.id: r for r in diagnose_data_path(facts(roles=[role("ws-principal", CONTRIBUTOR)]))}
    command = (
        "az role assignment create --assignee-object-id cpu-principal --assignee-principal-type ServicePrincipal "
        f'--role "Storage Blob Data Contributor" --scope {ACCOUNT}'
    )
    assert found["F24"].fix == command
    assert found["F24"].headline.startswith("principal cpu-principal (the managed identity of compute cpu")
    assert found["F25"].fix.endswith(command)


@pytest.mark.parametrize(
    ("datastore", "has_secret", "shared_keys", "failing_ids", "way_out"),
    [
        (KEYED, True, True, [], ""),
        (KEYED, False, True, ["F26"], "az ml datastore create --file keyed.yml"),
        (KEYED, True, False, ["F17"], "identity-based datastore for st"),
        (
            DatastoreInfo("workspaceblobstore", ACCOUNT, "c", "AccountKey", True),
            False,
            False,
            ["F17", "F26"],
            "az ml workspace create",
        ),
        (DatastoreInfo("sas", ACCOUNT, "c", "Sas"), True, False, ["F17"], "identity-based datastore"),
    ],
)
def test_credential_based_datastores(datastore, has_secret, shared_keys, failing_ids, way_out):
    found = facts(usages=[Usage(datastore, False)], secrets={datastore.name: has_secret})
    found.storage[ACCOUNT.lower()] = StorageNetwork(ACCOUNT, shared_keys)
    may_list_secrets(found, "cpu-principal")  # the compute's identity fetches the stored credential (F28)
    results = {r.id: r for r in diagnose_data_path(found)}
    assert [i for i, r in results.items() if r.status == "fail"] == failing_ids
    assert all(way_out in results[i].fix for i in failing_ids)
    assert results["F24"].status == "pass"  # a stored credential reads, not the compute identity
    assert f"read with its stored {datastore.credential_type}" in " ".join(results["F24"].evidence.values())


def test_secrets_not_read_skip_the_check_and_say_why():
    found = facts(usages=[Usage(KEYED, False)], unreadable={"datastore secrets": "403 AuthorizationFailed"})
    assert statuses(found)["F26"] == "skip"


def may_list_secrets(found: DataPathFacts, principal: str) -> None:
    found.role_definitions = LIST_SECRETS_ROLES
    found.workspace_roles[principal] = [
        RoleAssignment("a-ds", WORKSPACE, f"{SUB}/providers/x/roleDefinitions/ds", principal)
    ]


LIST_SECRETS_ROLES = {
    "ds": RoleDefinitionInfo(
        "ds", "AzureML Data Scientist", ("Microsoft.MachineLearningServices/workspaces/*/action",)
    ),
    "reader": RoleDefinitionInfo("reader", "Reader", ("*/read",)),
    "contributor": RoleDefinitionInfo("contributor", "Contributor", ("*",), ("Microsoft.Authorization/*/Write",)),
    "nosecrets": RoleDefinitionInfo(
        "nosecrets",
        "custom",
        ("Microsoft.MachineLearningServices/*",),
        ("Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action",),
    ),
}


@pytest.mark.parametrize(
    ("held", "status"),
    [([], "fail"), (["reader"], "fail"), (["ds"], "pass"), (["contributor"], "pass"), (["nosecrets"], "fail")],
)
def test_the_user_may_read_datastore_secrets(held, status):
    user_roles = [RoleAssignment(f"a{g}", WORKSPACE, f"{SUB}/providers/x/roleDefinitions/{g}", USER) for g in held]
    found = facts(usages=[Usage(KEYED, False)], secrets={"keyed": True}, user=USER, workspace_roles={USER: user_roles})
    found.storage[ACCOUNT.lower()] = StorageNetwork(ACCOUNT, True)
    may_list_secrets(found, "cpu-principal")
    assert statuses(found)["F28"] == status


K8S = ComputeIdentities("k8s", "Kubernetes", user_assigned={UAMI: ("uami-p", "uami-c")})


@pytest.mark.parametrize(
    ("compute", "identity", "user", "held", "fails_for"),
    [
        (K8S, "aml-token", None, {}, ["uami-p"]),  # the sidecar fetches the key with the attached identity
        (K8S, "aml-token", None, {"uami-p": ["ds"]}, []),
        (K8S, "aml-token", USER, {"uami-p": ["ds"]}, [USER]),  # and the user uploads with it
        (CLUSTER, "managed", None, {"cpu-principal": ["nosecrets"]}, ["cpu-principal"]),
        (CLUSTER, "managed", USER, {"cpu-principal": ["contributor"], USER: ["ds"]}, []),
        (CLUSTER, "aml-token", None, {}, ["cpu-principal"]),  # no job identity: the compute's, as fallback
        (ComputeIdentities("serverless", "Serverless"), "aml-token", None, {}, None),  # the user: name them
    ],
)
def test_whoever_fetches_a_stored_credential_may_list_secrets(compute, identity, user, held, fails_for):
    found = facts(compute, identity, usages=[Usage(KEYED, False)], secrets={"keyed": True}, user=user)
    found.storage[ACCOUNT.lower()] = StorageNetwork(ACCOUNT, True)
    found.role_definitions = LIST_SECRETS_ROLES
    found.workspace_roles = {
        p: [RoleAssignment(f"a{p}{g}", WORKSPACE, f"{SUB}/providers/x/roleDefinitions/{g}", p) for g in guids]
        for p, guids in held.items()
    }
    f28 = {r.id: r for r in diagnose_data_path(found)}["F28"]
    if fails_for is None:
        assert f28.status == "skip"
        return
    assert f28.status == ("fail" if fails_for else "pass")
    for principal in fails_for:
        kind = "User" if principal == USER else "ServicePrincipal"
        assert f"--assignee-object-id {principal} --assignee-principal-type {kind}" in f28.fix
        assert '"AzureML Data Scientist"' in f28.fix


def test_each_pipeline_step_is_checked_with_the_identity_it_runs_under():
    """The pipeline reads with the compute's system identity; step `prep` names the user-assigned one."""
    own = StepIdentity("managed", "uami-c")
    usages = [Usage(BLOB, True, "train"), Usage(BLOB, True, "prep", own)]
    found = facts(CLUSTER, "managed", usages=usages, roles=[role("cpu-principal", CONTRIBUTOR)])
    results = {r.id: r for r in diagnose_data_path(found)}
    assert [i for i, r in results.items() if r.status == "fail"] == ["F24"]
    assert "--assignee-object-id uami-p " in results["F24"].fix
    assert "cpu-principal" not in results["F24"].fix
    assert results["F24"].evidence["datastore workspaceblobstore (step train) on st"] == "needs write: role held"
    assert results["F24"].evidence["datastore workspaceblobstore (step prep) on st"] == "needs write: no role"
    missing = facts(CLUSTER, "managed", usages=[Usage(BLOB, True, "prep", StepIdentity("managed", "other-c"))])
    assert "named other-c" in {r.id: r for r in diagnose_data_path(missing)}["F27"].evidence["missing"]


VNET_A = f"{SUB}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/a/subnets/"


@pytest.mark.parametrize(
    ("storage", "subnet", "status"),
    [
        (StorageNetwork(ACCOUNT, False), None, "pass"),
        (StorageNetwork(ACCOUNT, False, "Disabled"), None, "fail"),
        (StorageNetwork(ACCOUNT, False, "Disabled", endpoint_subnets=(VNET_A + "pe",)), VNET_A + "compute", "pass"),
        (
            StorageNetwork(ACCOUNT, False, "Disabled", endpoint_subnets=(VNET_A + "pe",)),
            VNET_A.replace("/a/", "/b/") + "x",
            "fail",
        ),
        (
            StorageNetwork(ACCOUNT, False, "Enabled", "Deny", network_rules=(VNET_A + "compute",)),
            VNET_A + "compute",
            "pass",
        ),
        (
            StorageNetwork(ACCOUNT, False, "Disabled", "Deny", network_rules=(VNET_A + "compute",)),
            VNET_A + "compute",
            "fail",
        ),
    ],
)
def test_storage_networking(storage, subnet, status):
    found = facts(ComputeIdentities("cpu", "AmlCompute", system_principal="cpu-principal", subnet=subnet))
    found.storage[ACCOUNT.lower()] = storage
    assert statuses(found)["F29"] == status


def test_a_pipeline_reads_its_steps_and_inherits_compute_and_identity():
    path = job_path(
        {
            "name": "p1",
            "systemData": {"createdBy": "dev@contoso.com"},
            "properties": {
                "jobType": "Pipeline",
                "status": "Failed",
                "identity": {"identityType": "UserIdentity"},
                "settings": {"default_compute": f"{WORKSPACE}/computes/cpu"},
                "jobs": {
                    "prep": {"outputs": {"o": {"job_output_type": "uri_folder"}}},
                    "train": {
                        "inputs": {
                            "d": {"job_input_type": "uri_folder", "uri": "azureml://datastores/raw/paths/x/"},
                            "lr": {"job_input_type": "literal", "value": "0.1"},
                        },
                        "outputs": {"m": {"uri": "azureml://datastores/models/paths/m/"}},
                    },
                },
            },
        }
    )
    assert (path.compute, path.identity, path.job.submitted_by) == ("cpu", "user", "dev@contoso.com")
    assert path.datastores == ((DEFAULT_DATASTORE, True, "prep"), ("raw", False, "train"), ("models", True, "train"))


def test_a_command_job_without_compute_is_serverless_and_names_its_identity():
    path = job_path(
        {
            "name": "c",
            "properties": {"jobType": "Command", "identity": {"identityType": "Managed", "clientId": "uami-c"}},
        }
    )
    assert (path.compute, path.identity, path.identity_selector, path.datastores) == (
        "serverless",
        "managed",
        "uami-c",
        (),
    )


@pytest.mark.parametrize(
    ("identity", "kind", "selector"),
    [
        ({"identity_type": "UserIdentity"}, "user", None),
        ({"client_id": "uami-c", "identity_type": "Managed"}, "managed", "uami-c"),
        ({"identityType": "Managed", "clientId": "uami-c"}, "managed", "uami-c"),
        ({}, "user", None),  # none of its own: the pipeline's
    ],
)
def test_a_steps_own_identity_in_either_spelling_is_read_per_step(identity, kind, selector):
    step = {"outputs": {"o": {"uri": "azureml://datastores/models/paths/m/"}}, "identity": identity}
    path = job_path(
        {
            "name": "p",
            "properties": {
                "jobType": "Pipeline",
                "identity": {"identityType": "UserIdentity"},
                "settings": {"default_compute": f"{WORKSPACE}/computes/cpu"},
                "jobs": {"train": step},
            },
        }
    )
    assert (path.identity, path.identity_selector) == ("user", None)  # the pipeline's
    own = path.step_identities.get("train")
    assert ((own.identity, own.selector) if own else ("user", None)) == (kind, selector)
