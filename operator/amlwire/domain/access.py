"""Access: the role assignments the identity needs, when they become effective, and what to create."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from amlwire.api import roles
from amlwire.api.attachedcompute import AccessGrant, RoleAssignmentStatus
from amlwire.domain.azure import RoleAssignment, StorageInfo, WorkspaceInfo, name_of
from amlwire.domain.conditions import rfc3339

ROLE_GUIDS = {r.name: r.guid for r in roles.BUILTIN_ROLES}
# Roles that let an identity read a workspace's model versions (MLClient.models.download in InContainer jobs)
WORKSPACE_MODEL_READERS = roles.granting(roles.MODEL_VERSIONS_READ)
STORAGE_DATA_ROLES = roles.BLOB_READERS
_NAMESPACE = uuid.UUID("3f0b9f8e-0b5d-4f39-9a57-6a8f0e1d2c3b")


def role_guid(role: str) -> str:
    """The GUID of a role given by built-in name, GUID, or role definition ID."""
    return ROLE_GUIDS.get(role, role.rstrip("/").rsplit("/", 1)[-1]).lower()


def role_definition_id(subscription: str, role: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role_guid(role)}"


def assignment_name(scope: str, role: str, principal_id: str) -> str:
    """Deterministic, so a retry or a restart never creates a second assignment."""
    return str(uuid.uuid5(_NAMESPACE, f"{scope.rstrip('/').lower()}|{role_guid(role)}|{principal_id.lower()}"))


MANAGEMENT_GROUPS = "/providers/microsoft.management/managementgroups/"


def scope_covers(scope: str, resource: str) -> bool:
    """Whether an assignment at `scope`, as ARM lists them for `resource` (at, above and below it), applies to
    `resource`: itself or an ancestor. A management group's or the tenant root's ("/") was listed because the
    resource's subscription is under it."""
    scope, resource = scope.rstrip("/").lower(), resource.rstrip("/").lower()
    if scope == "" or scope.startswith(MANAGEMENT_GROUPS):
        return True
    return resource == scope or resource.startswith(scope + "/")


@dataclass(frozen=True)
class GrantCheck:
    grant: AccessGrant
    found: RoleAssignment | None
    status: RoleAssignmentStatus | None  # None while missing


@dataclass(frozen=True)
class AccessPlan:
    checks: tuple[GrantCheck, ...]
    to_create: tuple[tuple[AccessGrant, str, str], ...]  # (grant, assignment name, role definition id)

    def statuses(self) -> list[RoleAssignmentStatus]:
        return [c.status for c in self.checks if c.status is not None]


def _effective_at(found: RoleAssignment, recorded: RoleAssignmentStatus | None, window: timedelta) -> str | None:
    if recorded is not None and recorded.name == found.name and recorded.effective_at:
        return recorded.effective_at
    return rfc3339(found.created_on + window) if found.created_on is not None else None


def plan_access(
    grants: Sequence[AccessGrant],
    principal_id: str,
    subscription: str,
    assignments: Mapping[str, Iterable[RoleAssignment]],
    recorded: Iterable[RoleAssignmentStatus],
    window: timedelta,
) -> AccessPlan:
    """Match each grant against the identity's assignments (inherited ones count) and plan what is missing."""
    recorded_by_key = {(r.scope.lower(), r.role): r for r in recorded}
    checks: list[GrantCheck] = []
    to_create: list[tuple[AccessGrant, str, str]] = []
    for grant in grants:
        guid = role_guid(grant.role)
        found = next(
            (
                a
                for a in assignments.get(grant.scope, ())
                if a.applies_to(principal_id) and a.role_guid == guid and scope_covers(a.scope, grant.scope)
            ),
            None,
        )
        mine = assignment_name(grant.scope, grant.role, principal_id)
        if found is None:
            checks.append(GrantCheck(grant, None, None))
            to_create.append((grant, mine, role_definition_id(subscription, grant.role)))
            continue
        status = RoleAssignmentStatus(
            scope=grant.scope,
            role=grant.role,
            name=found.name,
            created_by_amlwire=found.name == mine,
            effective_at=_effective_at(found, recorded_by_key.get((grant.scope.lower(), grant.role)), window),
        )
        checks.append(GrantCheck(grant, found, status))
    return AccessPlan(tuple(checks), tuple(to_create))


def still_propagating(
    assignments: Iterable[RoleAssignment], now: datetime, window: timedelta
) -> list[tuple[RoleAssignment, datetime]]:
    """The assignments younger than the propagation window, each with when it takes effect."""
    return [(a, a.created_on + window) for a in assignments if a.created_on and a.created_on + window > now]


def shared_key_problem(workspace: WorkspaceInfo, storage: StorageInfo) -> str | None:
    """Why jobs cannot read the workspace's default datastore whatever roles they hold (F17), or None.

    A datastore that authenticates with account keys needs shared-key access on its storage account; with it
    off (allowSharedKeyAccess false, the secure default) every read fails (KeyBasedAuthenticationNotPermitted).
    """
    mode = (workspace.system_datastores_auth_mode or "accesskey").lower()
    if storage.allow_shared_key_access is False and mode == "accesskey":
        return (
            f"workspace {name_of(workspace.id)} keeps its default datastores with account keys "
            f"(systemDatastoresAuthMode accesskey) but storage account {name_of(storage.id)} has shared-key "
            f"access off, so jobs fail with KeyBasedAuthenticationNotPermitted whatever roles they hold"
        )
    return None


def created_status(grant: AccessGrant, name: str, now: datetime, window: timedelta) -> RoleAssignmentStatus:
    return RoleAssignmentStatus(
        scope=grant.scope, role=grant.role, name=name, created_by_amlwire=True, effective_at=rfc3339(now + window)
    )
