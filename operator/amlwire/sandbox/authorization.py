"""ARM authorisation: the built-in roles' actions, and the 403s Azure answers when a caller lacks one.

Role definitions are copied from Learn's "Azure built-in roles" (actions and notActions; data actions are
not control-plane and are judged by the data path). ABAC conditions on assignments are not modelled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from amlwire.sandbox.directory import Directory
from amlwire.sandbox.state import ArmError, Resource

ASSIGN_IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"
BLOBS = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
_COMMON = ("Microsoft.Authorization/*/read", "Microsoft.Resources/subscriptions/resourceGroups/read")


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()  # as the built-in definitions list them (Learn: Azure built-in roles)


ROLES: dict[str, RoleDefinition] = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": RoleDefinition("Owner", ("*",)),
    "b24988ac-6180-42a0-ab88-20f7382dd24c": RoleDefinition(
        "Contributor",
        ("*",),
        (
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ),
    ),
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": RoleDefinition("Reader", ("*/read",)),
    "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59": RoleDefinition(
        "Managed Identity Contributor",
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
    "f1a07417-d97a-45cb-824c-7a7467783830": RoleDefinition(
        "Managed Identity Operator",
        (
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            *_COMMON,
        ),
    ),
    "85cb6faf-e071-4c9b-8136-154b5a04f717": RoleDefinition(
        "Kubernetes Extension Contributor",
        (
            "Microsoft.KubernetesConfiguration/extensions/write",
            "Microsoft.KubernetesConfiguration/extensions/read",
            "Microsoft.KubernetesConfiguration/extensions/delete",
            "Microsoft.KubernetesConfiguration/extensions/operations/read",
            *_COMMON,
        ),
    ),
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": RoleDefinition(
        "AzureML Data Scientist",
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
    "e503ece1-11d0-4e8e-8e2c-7a6c3bf38815": RoleDefinition(
        "AzureML Compute Operator",
        (
            "Microsoft.MachineLearningServices/workspaces/computes/*",
            "Microsoft.MachineLearningServices/workspaces/notebooks/vm/*",
        ),
    ),
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": RoleDefinition(
        "Role Based Access Control Administrator",
        (
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "*/read",
            "Microsoft.Support/*",
        ),
    ),
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": RoleDefinition(
        "Storage Blob Data Contributor",
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
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": RoleDefinition(
        "Storage Blob Data Reader",
        (
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ),
        data_actions=(f"{BLOBS}/read",),
    ),
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": RoleDefinition(
        "Storage Blob Data Owner",
        (
            "Microsoft.Storage/storageAccounts/blobServices/containers/*",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ),
        data_actions=(f"{BLOBS}/*",),
    ),
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": RoleDefinition(
        "AcrPull", ("Microsoft.ContainerRegistry/registries/pull/read",)
    ),
}


@cache
def _pattern(action: str) -> re.Pattern[str]:
    """A role's action as a regex: '*' matches anything, and 'x/*/y' also matches 'x/y'."""
    # rule: arm.wildcard-actions
    regex = re.escape(action).replace("/\\*/", "(?:/.*)?/").replace("\\*", ".*")
    return re.compile(f"^{regex}$", re.IGNORECASE)


def allows(role: RoleDefinition, action: str) -> bool:
    return any(_pattern(a).match(action) for a in role.actions) and not any(
        _pattern(n).match(action) for n in role.not_actions
    )


def role_of(assignment: Resource) -> RoleDefinition | None:
    return ROLES.get(assignment.properties["roleDefinitionId"].rstrip("/").rsplit("/", 1)[-1].lower())


def permitted(
    assignments: list[Resource], principal: str, action: str, resource: str, directory: Directory | None = None
) -> bool:
    """Whether one of `assignments` (already effective) lets `principal` do `action` on `resource` (through a
    group it is in, or from a management group above, per `directory`)."""
    directory = directory or Directory()
    for assignment in assignments:
        role = role_of(assignment)
        if (
            role is not None
            and directory.applies_to(assignment.properties["principalId"], principal)
            and directory.covers(assignment.properties["scope"], resource)
            and allows(role, action)
        ):
            return True
    return False


def denied(principal: str, action: str, scope: str) -> ArmError:
    # rule: arm.authorization
    return ArmError(
        403,
        "AuthorizationFailed",
        f"The client '{principal}' with object id '{principal}' does not have authorization to perform action "
        f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please "
        f"refresh your credentials.",
    )


def linked_denied(principal: str, action: str, scope: str, linked: str) -> ArmError:
    # rule: arm.linked-authorization
    return ArmError(
        403,
        "LinkedAuthorizationFailed",
        f"The client '{principal}' with object id '{principal}' has permission to perform action '{action}' on "
        f"scope '{scope}'; however, it does not have permission to perform action(s) '{ASSIGN_IDENTITY}' on the "
        f"linked scope(s) '{linked}' (respectively) or the linked scope(s) are invalid.",
    )
