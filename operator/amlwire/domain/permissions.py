"""The Azure roles amlwire's own identity needs, least privilege, and how to read Azure's 403 against them.

The README's table is this one (tests/unit/test_permissions.py); the dev stack grants exactly these rows
(amlwire_devenv.stack), and tests/e2e/test_permissions.py removes each row in turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from amlwire.api import roles

ScopeKind = Literal["cluster", "identity", "workspace", "storage", "grant"]

SCOPE_TEXT: dict[ScopeKind, str] = {
    "cluster": "the AKS cluster",
    "identity": "the jobs' user-assigned identity",
    "workspace": "the AML workspace",
    "storage": "the workspace's default storage account",
    "grant": "each `access.grants[].scope`",
}
_SCOPE_TYPE: dict[ScopeKind, str] = {
    "cluster": "Microsoft.ContainerService/managedClusters",
    "identity": "Microsoft.ManagedIdentity/userAssignedIdentities",
    "workspace": "Microsoft.MachineLearningServices/workspaces",
    "storage": "Microsoft.Storage/storageAccounts",
}
ML = "Microsoft.MachineLearningServices/workspaces"
UAMI = "Microsoft.ManagedIdentity/userAssignedIdentities"
EXT = "Microsoft.KubernetesConfiguration/extensions"


@dataclass(frozen=True)
class Permission:
    role: str
    scope: ScopeKind
    purpose: str
    actions: tuple[str, ...]  # the ARM actions amlwire performs that this row grants

    @property
    def role_id(self) -> str:
        return roles.guid(self.role)


PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "Reader",
        "cluster",
        "read the cluster, its extension and role assignments",
        (
            "Microsoft.ContainerService/managedClusters/read",
            f"{EXT}/read",
            "Microsoft.Authorization/roleAssignments/read",
        ),
    ),
    Permission(
        "Kubernetes Extension Contributor",
        "cluster",
        "install the AzureML extension and set its settings (`extension.mode: Configure`)",
        (f"{EXT}/write", f"{EXT}/delete", f"{EXT}/operations/read"),
    ),
    Permission(
        "Managed Identity Contributor",
        "identity",
        "read the identity, write and delete its federated credentials",
        (
            f"{UAMI}/read",
            f"{UAMI}/federatedIdentityCredentials/read",
            f"{UAMI}/federatedIdentityCredentials/write",
            f"{UAMI}/federatedIdentityCredentials/delete",
        ),
    ),
    Permission(
        "Managed Identity Operator",
        "identity",
        "attach the compute with the identity (`*/assign/action`)",
        (f"{UAMI}/assign/action",),
    ),
    Permission(
        "AzureML Data Scientist",
        "workspace",
        "read the workspace, submit, read and cancel jobs, register models",
        (
            f"{ML}/read",
            f"{ML}/jobs/read",
            f"{ML}/jobs/write",
            f"{ML}/jobs/cancel/action",
            f"{ML}/environments/versions/read",
            f"{ML}/environments/versions/write",
            f"{ML}/models/read",
            f"{ML}/models/versions/read",
            f"{ML}/models/versions/write",
            f"{ML}/experiments/runs/read",
        ),
    ),
    Permission(
        "AzureML Compute Operator",
        "workspace",
        "attach, read and detach the compute",
        (f"{ML}/computes/read", f"{ML}/computes/write", f"{ML}/computes/delete"),
    ),
    Permission(
        "Reader",
        "storage",
        "read the storage account (shared-key check, F17) and, with `access.mode: Verify`, its role assignments",
        ("Microsoft.Storage/storageAccounts/read", "Microsoft.Authorization/roleAssignments/read"),
    ),
    Permission(
        "Role Based Access Control Administrator",
        "grant",
        "list, create and delete the identity's role assignments (`access.mode: Ensure`, constrained to the "
        "roles in `access.grants`; with `Verify`, Reader is enough)",
        (
            "Microsoft.Authorization/roleAssignments/read",
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
        ),
    ),
)

_DENIED = re.compile(
    r"object id '(?P<oid>[^']*)' does not have authorization to perform action '(?P<action>[^']+)' "
    r"over scope '(?P<scope>[^']+)'"
)
_LINKED = re.compile(
    r"object id '(?P<oid>[^']*)' has permission .* perform action\(s\) '(?P<action>[^']+)' "
    r"on the linked scope\(s\) '(?P<scope>[^']+)'"
)


@dataclass(frozen=True)
class Denial:
    """What Azure refused: which action, on which scope, for which principal; and the row that grants it."""

    principal: str
    action: str
    scope: str
    needed: Permission | None

    @property
    def grant_scope(self) -> str:
        return (self.needed and scope_to_grant(self.needed.scope, self.scope)) or self.scope

    def advice(self) -> str:
        refused = f"amlwire's identity may not '{self.action}' on {self.scope}"
        if self.needed is None:
            return f"{refused}; grant it a role with that action there"
        role, scope = self.needed.role, self.grant_scope
        assignee = self.principal or "<amlwire principal ID>"
        return (
            f"{refused} (Azure also answers so for a resource that does not exist: check the spec names it); "
            f"grant it '{role}' on {'that scope' if scope == self.scope else scope}, needed to {self.needed.purpose}: "
            f"az role assignment create --assignee-object-id {assignee} --assignee-principal-type ServicePrincipal "
            f'--role "{role}" --scope {scope}'
        )


def permission_for(action: str, scope: str) -> Permission | None:
    """The row that grants `action`; of several, the one whose resource type the refused scope names."""
    wanted = action.lower()
    rows = [p for p in PERMISSIONS if wanted in (a.lower() for a in p.actions)]
    on_type = [p for p in rows if p.scope in _SCOPE_TYPE and _SCOPE_TYPE[p.scope].lower() in scope.lower()]
    return next(iter(on_type or [p for p in rows if p.scope == "grant"] or rows), None)


def read_denial(message: str) -> Denial | None:
    """Azure's AuthorizationFailed / LinkedAuthorizationFailed message, read; None when it is neither."""
    found = _DENIED.search(message) or _LINKED.search(message)
    if found is None:
        return None
    action = found.group("action")
    scope = found.group("scope")
    return Denial(found.group("oid"), action, scope, permission_for(action, scope))


def scope_to_grant(kind: ScopeKind, refused_on: str) -> str:
    """The resource a row's role belongs on, cut from the (deeper) path Azure refused."""
    if kind == "grant":
        return refused_on.split("/providers/Microsoft.Authorization/", 1)[0]
    type_ = _SCOPE_TYPE[kind]
    found = re.search(re.escape(type_) + r"/[^/]+", refused_on, re.IGNORECASE)
    return refused_on[: found.end()] if found else refused_on


def markdown_table() -> str:
    """The README's table of Azure roles."""
    rows = ["| what | role | scope |", "|---|---|---|"]
    rows += [f"| {p.purpose} | {p.role} | {SCOPE_TEXT[p.scope]} |" for p in PERMISSIONS]
    return "\n".join(rows)
