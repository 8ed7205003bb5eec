"""Azure facts as the domain sees them: resource IDs and what the adapters read from Azure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

AUDIENCE = "api://AzureADTokenExchange"
EXTENSION_TYPE = "Microsoft.AzureML.Kubernetes"
EXTENSION_RELEASE_NAMESPACE = "azureml"

_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)/providers/"
    r"(?P<namespace>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)(?P<rest>/.*)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ResourceId:
    """A top-level ARM resource ID: /subscriptions/S/resourceGroups/G/providers/NS/TYPE/NAME."""

    subscription: str
    group: str
    namespace: str
    type: str
    name: str

    @classmethod
    def parse(cls, value: str) -> ResourceId:
        match = _ID.match(value.rstrip("/"))
        if match is None or match.group("rest"):
            raise ValueError(f"not a top-level ARM resource ID: {value!r}")
        return cls(match["subscription"], match["group"], match["namespace"], match["type"], match["name"])

    @classmethod
    def of(cls, subscription: str, group: str, namespace: str, type_: str, name: str) -> ResourceId:
        return cls(subscription, group, namespace, type_, name)

    def __str__(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.group}/providers/"
            f"{self.namespace}/{self.type}/{self.name}"
        )

    def same_as(self, other: str | ResourceId | None) -> bool:
        return other is not None and str(self).lower() == str(other).rstrip("/").lower()


def same_id(a: str | None, b: str | None) -> bool:
    """ARM IDs compare case-insensitively."""
    return a is not None and b is not None and a.rstrip("/").lower() == b.rstrip("/").lower()


_SUBSCRIPTION = re.compile(r"^/subscriptions/(?P<subscription>[^/]+)", re.IGNORECASE)


def subscription_of(scope: str) -> str:
    """The subscription of any ARM ID or scope (/subscriptions/S/...)."""
    match = _SUBSCRIPTION.match(scope)
    if match is None:
        raise ValueError(f"not an ARM scope: {scope!r}")
    return match["subscription"]


def name_of(resource_id: str) -> str:
    """The last segment of an ARM ID: the resource's name."""
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


def managed_cluster_id(subscription: str, group: str, name: str) -> str:
    return str(ResourceId(subscription, group, "Microsoft.ContainerService", "managedClusters", name))


@dataclass(frozen=True)
class WorkspaceRef:
    """An AML workspace, as the Azure port addresses it."""

    subscription: str
    group: str
    name: str

    @property
    def id(self) -> str:
        return str(
            ResourceId(self.subscription, self.group, "Microsoft.MachineLearningServices", "workspaces", self.name)
        )

    @classmethod
    def parse(cls, workspace_id: str) -> WorkspaceRef:
        rid = ResourceId.parse(workspace_id)
        return cls(rid.subscription, rid.group, rid.name)


@dataclass(frozen=True)
class ClusterInfo:
    id: str
    location: str
    oidc_issuer_enabled: bool
    issuer_url: str | None
    workload_identity_enabled: bool
    local_accounts_disabled: bool
    node_count: int | None = None  # over every agent pool (None when Azure does not say)


@dataclass(frozen=True)
class IdentityInfo:
    id: str
    client_id: str
    principal_id: str
    tenant_id: str


@dataclass(frozen=True)
class FederatedCredential:
    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...] = (AUDIENCE,)

    def federates(self, issuer: str, subject: str) -> bool:
        """Whether Entra would accept a token of this issuer and subject through this credential."""
        return self.issuer == issuer and self.subject == subject and self.audiences == (AUDIENCE,)


IssuerState = Literal["publishing", "gone", "unknown"]


@dataclass(frozen=True)
class IssuerAnswer:
    """What an OIDC issuer's discovery document answered (Entra fetches it to verify a federated token)."""

    state: IssuerState
    detail: str  # what it answered, as the user would see it ("answers 404", "connection refused")


@dataclass(frozen=True)
class ExtensionInfo:
    id: str
    extension_type: str
    provisioning_state: str
    settings: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # errorInfo and error statuses of a Failed or Canceled extension


@dataclass(frozen=True)
class RoleAssignment:
    name: str
    scope: str
    role_definition_id: str
    principal_id: str
    created_on: datetime | None = None
    assigned_to: str | None = None  # listed with $filter=assignedTo(this principal): it applies to it

    @property
    def role_guid(self) -> str:
        return name_of(self.role_definition_id).lower()

    def applies_to(self, principal: str) -> bool:
        """Assigned to the principal, or to a group it is in (ARM listed it for the principal with assignedTo)."""
        return principal in (self.principal_id, self.assigned_to)


@dataclass(frozen=True)
class StorageInfo:
    id: str
    allow_shared_key_access: bool | None


@dataclass(frozen=True)
class WorkspaceInfo:
    id: str
    location: str
    storage_account_id: str | None
    system_datastores_auth_mode: str | None
    identity_principal_id: str | None
    identity_user_assigned: bool = False  # the workspace's identity is user-assigned (not system-assigned)


@dataclass(frozen=True)
class ComputeInfo:
    id: str
    provisioning_state: str
    cluster_id: str | None
    namespace: str | None
    identity_type: str
    identity_ids: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ComputeAttachment:
    """What attaching a Kubernetes compute to a workspace takes: the cluster, its namespace, the identity."""

    name: str
    cluster_id: str
    namespace: str
    identity_id: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OperationState:
    """Where a long-running operation amlwire started stands now."""

    done: bool
    succeeded: bool
    error: str | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> OperationState:
        """An operation-status body read as azure-core reads it: only Succeeded, Failed and Canceled are final;
        every other word (InProgress, Accepted, Creating, Updating, Deleting, ... or none yet) is in progress."""
        status = str(body.get("status") or "").lower()
        if status not in FINAL_OPERATION_STATES:
            return cls(done=False, succeeded=False)
        error = body.get("error") or {}
        message = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ") or None
        if status != "succeeded" and message is None:
            message = f"the operation ended {body.get('status')}"
        return cls(done=True, succeeded=status == "succeeded", error=message)


FINAL_OPERATION_STATES = frozenset({"succeeded", "failed", "canceled", "cancelled"})  # azure-core base_polling
