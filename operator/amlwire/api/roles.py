"""Azure's built-in roles amlwire names, in one table: name, GUID, actions, not-actions and data actions, copied
from Learn's "Azure built-in roles". Admission, the access planner, the doctor, the permissions table and the
sandbox's authorisation all read it; what each role is needed for stays with the code that needs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

BLOBS = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
MODEL_VERSIONS_READ = "Microsoft.MachineLearningServices/workspaces/models/versions/read"
_COMMON = ("Microsoft.Authorization/*/read", "Microsoft.Resources/subscriptions/resourceGroups/read")


@dataclass(frozen=True)
class BuiltinRole:
    name: str
    guid: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()

    def allows(self, action: str) -> bool:
        """Whether the role's actions grant a control-plane `action`."""
        return matches_any(self.actions, action) and not matches_any(self.not_actions, action)

    def allows_data(self, action: str) -> bool:
        return matches_any(self.data_actions, action)


BUILTIN_ROLES: tuple[BuiltinRole, ...] = (
    BuiltinRole("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", ("*",)),
    BuiltinRole(
        "Contributor",
        "b24988ac-6180-42a0-ab88-20f7382dd24c",
        ("*",),
        (
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ),
    ),
    BuiltinRole("Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7", ("*/read",)),
    BuiltinRole(
        "Managed Identity Contributor",
        "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
        (
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/revokeTokens/action",
            *_COMMON,
        ),
    ),
    BuiltinRole(
        "Managed Identity Operator",
        "f1a07417-d97a-45cb-824c-7a7467783830",
        (
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            *_COMMON,
        ),
    ),
    BuiltinRole(
        "Kubernetes Extension Contributor",
        "85cb6faf-e071-4c9b-8136-154b5a04f717",
        (
            "Microsoft.KubernetesConfiguration/extensions/write",
            "Microsoft.KubernetesConfiguration/extensions/read",
            "Microsoft.KubernetesConfiguration/extensions/delete",
            "Microsoft.KubernetesConfiguration/extensions/operations/read",
            *_COMMON,
        ),
    ),
    BuiltinRole(
        "AzureML Data Scientist",
        "f6c7c914-8db3-469d-8ca1-694a8f32e121",
        (
            "Microsoft.MachineLearningServices/workspaces/*/read",
            "Microsoft.MachineLearningServices/workspaces/*/action",
            "Microsoft.MachineLearningServices/workspaces/*/delete",
            "Microsoft.MachineLearningServices/workspaces/*/write",
        ),
        (
            "Microsoft.MachineLearningServices/workspaces/delete",
            "Microsoft.MachineLearningServices/workspaces/write",
            "Microsoft.MachineLearningServices/workspaces/computes/*/write",
            "Microsoft.MachineLearningServices/workspaces/computes/*/delete",
            "Microsoft.MachineLearningServices/workspaces/computes/listKeys/action",
            "Microsoft.MachineLearningServices/workspaces/listKeys/action",
            "Microsoft.MachineLearningServices/hubs/write",
            "Microsoft.MachineLearningServices/hubs/delete",
            "Microsoft.MachineLearningServices/featurestores/write",
            "Microsoft.MachineLearningServices/featurestores/delete",
        ),
    ),
    BuiltinRole(
        "AzureML Compute Operator",
        "e503ece1-11d0-4e8e-8e2c-7a6c3bf38815",
        (
            "Microsoft.MachineLearningServices/workspaces/computes/*",
            "Microsoft.MachineLearningServices/workspaces/notebooks/vm/*",
        ),
    ),
    BuiltinRole(
        "Role Based Access Control Administrator",
        "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
        (
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "*/read",
            "Microsoft.Support/*",
        ),
    ),
    BuiltinRole(
        "Storage Blob Data Contributor",
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        (
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ),
        data_actions=(
            f"{BLOBS}/delete",
            f"{BLOBS}/read",
            f"{BLOBS}/write",
            f"{BLOBS}/move/action",
            f"{BLOBS}/add/action",
        ),
    ),
    BuiltinRole(
        "Storage Blob Data Reader",
        "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        (
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ),
        data_actions=(f"{BLOBS}/read",),
    ),
    BuiltinRole(
        "Storage Blob Data Owner",
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        (
            "Microsoft.Storage/storageAccounts/blobServices/containers/*",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ),
        data_actions=(f"{BLOBS}/*",),
    ),
    BuiltinRole(
        "AcrPull", "7f951dda-4ed3-4680-a7ca-43fe172d538d", ("Microsoft.ContainerRegistry/registries/pull/read",)
    ),
    BuiltinRole(
        "Key Vault Secrets User",
        "4633458b-17de-408a-b874-0445c86b69e6",
        data_actions=(
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ),
    ),
    BuiltinRole(
        "Azure Kubernetes Service Cluster Admin Role",
        "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",
        (
            "Microsoft.ContainerService/managedClusters/listClusterAdminCredential/action",
            "Microsoft.ContainerService/managedClusters/accessProfiles/listCredential/action",
            "Microsoft.ContainerService/managedClusters/read",
            "Microsoft.ContainerService/managedClusters/runcommand/action",
        ),
    ),
    BuiltinRole(
        "Azure Kubernetes Service RBAC Cluster Admin",
        "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b",
        (
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/deployments/write",
            "Microsoft.Resources/subscriptions/operationresults/read",
            "Microsoft.Resources/subscriptions/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
        ),
        data_actions=("Microsoft.ContainerService/managedClusters/*",),
    ),
)


# The roles spec.access.grants[].role may name (any other role by GUID or role definition ID)
GRANTABLE = (
    "Storage Blob Data Contributor",
    "Storage Blob Data Reader",
    "AcrPull",
    "Key Vault Secrets User",
    "AzureML Data Scientist",
    "Reader",
)
BY_NAME = {r.name: r for r in BUILTIN_ROLES}
BY_GUID = {r.guid: r for r in BUILTIN_ROLES}


def guid(name: str) -> str:
    """The GUID of a built-in role this table holds (a KeyError names a role missing from it)."""
    return BY_NAME[name].guid


def guids(*names: str) -> frozenset[str]:
    return frozenset(guid(n) for n in names)


def granting_data(action: str) -> frozenset[str]:
    """The GUIDs of the roles whose data actions grant `action` (e.g. reading blobs)."""
    return frozenset(r.guid for r in BUILTIN_ROLES if r.allows_data(action))


def granting(action: str) -> frozenset[str]:
    """The GUIDs of the roles whose actions grant a control-plane `action`."""
    return frozenset(r.guid for r in BUILTIN_ROLES if r.allows(action))


@cache
def _pattern(action: str) -> re.Pattern[str]:
    """A role's action as a regex: '*' matches anything, and 'x/*/y' also matches 'x/y'."""
    regex = re.escape(action).replace("/\\*/", "(?:/.*)?/").replace("\\*", ".*")
    return re.compile(f"^{regex}$", re.IGNORECASE)


def matches_any(patterns: tuple[str, ...], action: str) -> bool:
    """Whether one of a role definition's action patterns covers `action` (any role: built-in or read from Azure)."""
    return any(_pattern(p).match(action) for p in patterns)


BLOB_READERS = granting_data(f"{BLOBS}/read")  # Storage Blob Data Reader, Contributor, Owner
BLOB_WRITERS = granting_data(f"{BLOBS}/write")  # Storage Blob Data Contributor, Owner
