"""ARM authorisation: the built-in roles' actions, and the 403s Azure answers when a caller lacks one.

Role definitions are amlwire.api.roles' table, copied from Learn's "Azure built-in roles" (actions and notActions;
data actions are not control-plane and are judged by the data path). ABAC conditions on assignments are not
modelled.
"""

from __future__ import annotations

from amlwire.api.roles import BY_GUID as ROLES
from amlwire.api.roles import BuiltinRole
from amlwire_sandbox.directory import Directory
from amlwire_sandbox.state import ArmError, Resource

ASSIGN_IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"


def role_of(assignment: Resource) -> BuiltinRole | None:
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
            and role.allows(action)  # rule: arm.wildcard-actions (the table's matcher)
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
