"""amlwire's least-privilege table, how Azure's 403s are read against it, and the built-in roles the sandbox
models (the expected answers below are copied from Learn's "Azure built-in roles", not from the code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amlwire.api.roles import BY_GUID as ROLES
from amlwire.api.roles import BY_NAME
from amlwire.domain.permissions import PERMISSIONS, markdown_table, read_denial, scope_to_grant

REPO = Path(__file__).resolve().parents[2]
SUB = "/subscriptions/6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60"
IDENTITY = f"{SUB}/resourceGroups/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-ml"
WORKSPACE = f"{SUB}/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw-robotics"
STORAGE = f"{SUB}/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlrobotics"
REGISTRY = f"{SUB}/resourceGroups/rg-ml/providers/Microsoft.ContainerRegistry/registries/crrobotics"
CLUSTER = f"{SUB}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks-robotics"
OID = "0a1b2c3d-0000-4000-8000-0000000000aa"


def role(name: str):
    return BY_NAME[name]


def test_the_readme_table_is_the_one_amlwire_reads_403s_with():
    assert markdown_table() in (REPO / "README.md").read_text()


MI = "Microsoft.ManagedIdentity/userAssignedIdentities"
ML = "Microsoft.MachineLearningServices/workspaces"
LEARN = {  # role: (actions it allows, actions it does not), as Learn's "Azure built-in roles" lists them
    "Reader": (
        ["Microsoft.ContainerService/managedClusters/read"],
        ["Microsoft.KubernetesConfiguration/extensions/write"],
    ),
    "Managed Identity Contributor": ([f"{MI}/federatedIdentityCredentials/write"], [f"{MI}/assign/action"]),
    "Managed Identity Operator": ([f"{MI}/assign/action", f"{MI}/read"], [f"{MI}/federatedIdentityCredentials/write"]),
    "Kubernetes Extension Contributor": (
        ["Microsoft.KubernetesConfiguration/extensions/write"],
        ["Microsoft.ContainerService/managedClusters/read"],
    ),
    "AzureML Data Scientist": (
        [f"{ML}/read", f"{ML}/jobs/write", f"{ML}/computes/read"],
        [f"{ML}/computes/write", f"{ML}/write"],
    ),
    "AzureML Compute Operator": ([f"{ML}/computes/write"], [f"{ML}/read"]),
    "Role Based Access Control Administrator": (
        ["Microsoft.Authorization/roleAssignments/write", "Microsoft.Storage/storageAccounts/read"],
        [],
    ),
    "Contributor": ([f"{ML}/computes/write"], ["Microsoft.Authorization/roleAssignments/write"]),
    "Storage Blob Data Contributor": ([], ["Microsoft.Storage/storageAccounts/read"]),
    "AcrPull": (["Microsoft.ContainerRegistry/registries/pull/read"], []),
}
CASES = [(n, a, True) for n, (yes, _) in LEARN.items() for a in yes]
CASES += [(n, a, False) for n, (_, no) in LEARN.items() for a in no]


@pytest.mark.parametrize(("name", "action", "allowed"), CASES)
def test_built_in_roles_allow_what_learn_says(name, action, allowed):
    assert role(name).allows(action) is allowed


def test_each_row_of_the_table_grants_every_action_it_is_listed_for():
    for permission in PERMISSIONS:
        assert permission.role_id in ROLES, permission.role
        for action in permission.actions:
            assert ROLES[permission.role_id].allows(action), f"{permission.role} lacks {action}"


def test_an_authorization_failure_names_the_role_and_the_scope_to_grant():
    message = (
        f"The client '{OID}' with object id '{OID}' does not have authorization to perform action "
        f"'Microsoft.MachineLearningServices/workspaces/computes/write' over scope '{WORKSPACE}/computes/k8s-gpu' "
        "or the scope is invalid. If access was recently granted, please refresh your credentials."
    )
    denial = read_denial(message)
    assert denial is not None
    assert denial.needed is not None
    assert denial.needed.role == "AzureML Compute Operator"
    assert denial.grant_scope == WORKSPACE
    assert f'--role "AzureML Compute Operator" --scope {WORKSPACE}' in denial.advice()
    assert f"--assignee-object-id {OID}" in denial.advice()


def test_a_linked_authorization_failure_names_managed_identity_operator_on_the_identity():
    message = (
        f"The client '{OID}' with object id '{OID}' has permission to perform action "
        f"'Microsoft.MachineLearningServices/workspaces/computes/write' on scope '{WORKSPACE}/computes/k8s-gpu'; "
        "however, it does not have permission to perform action(s) "
        f"'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '{IDENTITY}' "
        "(respectively) or the linked scope(s) are invalid."
    )
    denial = read_denial(message)
    assert denial is not None
    assert denial.needed is not None
    assert (denial.needed.role, denial.grant_scope) == ("Managed Identity Operator", IDENTITY)


@pytest.mark.parametrize(
    ("action", "scope", "role_name"),
    [
        (
            "Microsoft.Authorization/roleAssignments/read",
            f"{STORAGE}/providers/Microsoft.Authorization/roleAssignments",
            "Reader",
        ),
        (
            "Microsoft.Authorization/roleAssignments/read",
            f"{REGISTRY}/providers/Microsoft.Authorization/roleAssignments",
            "Role Based Access Control Administrator",
        ),
        (
            "Microsoft.Authorization/roleAssignments/read",
            f"{CLUSTER}/providers/Microsoft.Authorization/roleAssignments",
            "Reader",
        ),
        ("Microsoft.Storage/storageAccounts/read", STORAGE, "Reader"),
        ("Microsoft.ManagedIdentity/userAssignedIdentities/read", IDENTITY, "Managed Identity Contributor"),
    ],
)
def test_the_same_action_is_read_against_the_row_of_its_scope(action, scope, role_name):
    denial = read_denial(
        f"object id '{OID}' does not have authorization to perform action '{action}' over scope '{scope}'"
    )
    assert denial is not None
    assert denial.needed is not None
    assert denial.needed.role == role_name


def test_the_grant_scope_is_cut_from_the_refused_path():
    assert scope_to_grant("identity", f"{IDENTITY}/federatedIdentityCredentials/x") == IDENTITY
    assert scope_to_grant("grant", f"{STORAGE}/providers/Microsoft.Authorization/roleAssignments/abc") == STORAGE
    assert read_denial("The resource was not found.") is None
