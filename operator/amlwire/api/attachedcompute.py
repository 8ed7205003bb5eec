"""AttachedCompute: one AML Kubernetes compute on an AKS cluster, wired for keyless storage access."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator

from amlwire.api.common import (
    DNS1123_LABEL_RE,
    RESOURCE_GROUP_RE,
    UUID_RE,
    CRDModel,
    CRDRoot,
    Matches,
    ObjectStatus,
    cel,
    cel_string,
    rule,
)
from amlwire.api.roles import GRANTABLE

UAMI_ID_RE = (
    r"(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"/resourceGroups/[-\w.()]{1,90}/providers/Microsoft\.ManagedIdentity"
    r"/userAssignedIdentities/[a-zA-Z0-9][-a-zA-Z0-9_]{2,127}$"
)
ARM_SCOPE_RE = r"(?i)^/subscriptions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(/.*)?$"
ROLE_DEFINITION_RE = (
    r"(?i)^(/subscriptions/[0-9a-f-]{36})?/providers/Microsoft\.Authorization/roleDefinitions/"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
_SYSTEM_NAMESPACES_CEL = "[" + ", ".join(cel_string(n) for n in SYSTEM_NAMESPACES) + "]"

Quantity = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True, "maxLength": 64})]
SubscriptionId = Annotated[
    str,
    Matches(
        UUID_RE,
        "subscriptionId must be a subscription UUID such as 00000000-0000-0000-0000-000000000000 "
        "(az account show --query id)",
    ),
]
ResourceGroup = Annotated[
    str,
    Matches(
        RESOURCE_GROUP_RE,
        "resourceGroup must be an Azure resource group name: 1-90 letters, digits, "
        "'-', '_', '.', '(' or ')', not ending in '.'",
    ),
]
Dns1123Label = Annotated[
    str,
    Matches(
        DNS1123_LABEL_RE,
        "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit",
    ),
]


class WorkspaceSpec(CRDModel):
    """The Azure Machine Learning workspace the compute is attached to."""

    subscription_id: SubscriptionId = Field(max_length=36, description="Subscription ID (a UUID) of the workspace.")
    resource_group: ResourceGroup = Field(min_length=1, max_length=90, description="Resource group of the workspace.")
    name: Annotated[
        str,
        Matches(
            r"^[a-zA-Z0-9][-a-zA-Z0-9_]{2,32}$",
            "spec.workspace.name must be an AML workspace name: 3-33 letters, digits, '-' or '_', starting "
            "with a letter or digit",
        ),
    ] = Field(min_length=3, max_length=33, description="Name of the AML workspace.")


class ClusterSpec(CRDModel):
    """The AKS managed cluster that becomes the compute."""

    subscription_id: SubscriptionId | None = Field(
        default=None,
        max_length=36,
        description="Subscription ID of the AKS cluster. Defaults to the workspace's subscription.",
    )
    resource_group: ResourceGroup = Field(min_length=1, max_length=90, description="Resource group of the cluster.")
    name: Annotated[
        str,
        Matches(
            r"^[a-zA-Z0-9]([-a-zA-Z0-9_]{0,61}[a-zA-Z0-9])?$",
            "spec.cluster.name must be an AKS cluster name: 1-63 letters, digits, '-' or '_'",
        ),
    ] = Field(min_length=1, max_length=63, description="Name of the AKS managed cluster.")


class IdentitySpec(CRDModel):
    """The user-assigned managed identity (UAMI) that AML jobs use to reach storage."""

    resource_id: Annotated[
        str,
        Matches(
            UAMI_ID_RE,
            "spec.identity.resourceId must be a user-assigned identity resource ID: /subscriptions/<uuid>/"
            "resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name> "
            "(az identity show -g <rg> -n <name> --query id)",
        ),
    ] = Field(
        max_length=512,
        description="Full ARM resource ID of the user-assigned managed identity, e.g. /subscriptions/<uuid>/"
        "resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>.",
    )


class ServiceAccountRef(CRDModel):
    """A Kubernetes service account that AML job pods run as, federated to the identity."""

    namespace: Dns1123Label = Field(max_length=63, description="Namespace of the service account.")
    name: Dns1123Label = Field(max_length=63, description="Name of the service account.")
    create: bool = Field(
        default=True,
        description="Create the service account when it is missing. Set false when the AzureML extension "
        "creates it; amlwire then reports it missing instead.",
    )


class ExtensionSpec(CRDModel):
    """The AzureML cluster extension (Microsoft.AzureML.Kubernetes) and its identity settings."""

    name: Annotated[
        str,
        Matches(
            r"^[a-zA-Z0-9][-a-zA-Z0-9_.]*$",
            "spec.extension.name must be an extension name: letters, digits, '-', '_' or '.'",
        ),
    ] = Field(default="azureml", min_length=1, max_length=253, description="Name of the AzureML extension.")
    mode: Literal["Configure", "Verify"] = Field(
        default="Configure",
        description="Configure: amlwire installs the extension if missing and sets its identity settings. "
        "Verify: amlwire only reports what differs.",
    )
    set_identity_settings: bool = Field(
        default=True,
        description="Set the extension's identityType: UserAssigned and userAssignedIdentityResourceId from "
        "spec.identity. Microsoft does not document these two settings (the documented ones are enableTraining, "
        "enableInference, allowInsecureConnections, inferenceRouterServiceType, internalLoadBalancerProvider, "
        "sslSecret, sslCname, inferenceRouterHA, nodeSelector, installNvidiaDevicePlugin, installPromOp, "
        "installVolcano, installDcgmExporter); they are field practice for the data-capability sidecar's "
        "workload identity, cost nothing where unused, and are on by default. false: amlwire leaves them alone.",
    )
    settings: dict[str, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=64,
        description='Extra configuration settings for the extension (strings). amlwire sets enableTraining: "True" '
        "(AML's default is off, and training jobs need it) unless this says otherwise. Identity settings are set "
        "by amlwire from spec.identity.",
        json_schema_extra=cel(
            rule(
                "!('identityType' in self) && !('userAssignedIdentityResourceId' in self)",
                "spec.extension.settings must not set identityType or userAssignedIdentityResourceId: "
                "amlwire sets them from spec.identity",
            ),
        ),
    )


QUANTITY_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([eE][+-]?[0-9]+)|[numkMGTPE]|[KMGTPE]i)?$")
QUANTITIES_RULE = "self.all(k, type(self[k]) == int || isQuantity(self[k]))"
NOT_A_QUANTITY = (
    "spec.compute.instanceTypes[].resources.{field} values must be Kubernetes quantities such as 8, 500m or 64Gi"
)


class ResourceList(CRDModel):
    """Compute resources of an instance type."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description='Requested resources, e.g. cpu: "8", memory: 64Gi.',
        json_schema_extra=cel(rule(QUANTITIES_RULE, NOT_A_QUANTITY.format(field="requests"))),
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description='Resource limits, e.g. cpu: "8", memory: 64Gi, nvidia.com/gpu: 1.',
        json_schema_extra=cel(rule(QUANTITIES_RULE, NOT_A_QUANTITY.format(field="limits"))),
    )

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, values: dict[str, int | str], info: ValidationInfo) -> dict[str, int | str]:
        if any(isinstance(v, str) and not QUANTITY_RE.match(v) for v in values.values()):
            raise ValueError(NOT_A_QUANTITY.format(field=info.field_name))
        return values


class InstanceTypeSpec(CRDModel):
    """An AML instance type: which nodes job pods land on and what they may use."""

    model_config = CRDModel.model_config | {
        "json_schema_extra": cel(
            rule(
                "'cpu' in self.resources.requests && 'memory' in self.resources.requests",
                "spec.compute.instanceTypes[].resources.requests must set both cpu and memory",
                fieldPath=".resources.requests",
            ),
            rule(
                "'cpu' in self.resources.limits && 'memory' in self.resources.limits",
                "spec.compute.instanceTypes[].resources.limits must set both cpu and memory",
                fieldPath=".resources.limits",
            ),
            rule(
                "!('nvidia.com/gpu' in self.resources.requests)",
                "spec.compute.instanceTypes[].resources: put nvidia.com/gpu in limits only, not in requests "
                "(extended resources are requested through their limit)",
                fieldPath=".resources.requests",
            ),
        )
    }

    name: Dns1123Label = Field(
        max_length=63, description="Name of the instance type, used by AmlJob spec.instanceType."
    )
    node_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=dict, max_length=16, description="Node labels job pods must match, e.g. agentpool: gpu."
    )
    resources: ResourceList = Field(description="Requests and limits of job pods of this instance type.")


class ComputeSpec(CRDModel):
    """The AML Kubernetes compute target attached to the workspace."""

    name: Annotated[
        str,
        Matches(
            r"^[a-zA-Z][-a-zA-Z0-9]{1,15}$",
            "spec.compute.name must be an AML compute name: 2-16 letters, digits or '-', starting with a letter",
        ),
    ] = Field(min_length=2, max_length=16, description="Name of the compute in the AML workspace (2-16 characters).")
    namespace: Dns1123Label = Field(
        default="default", max_length=63, description="Kubernetes namespace AML job pods run in."
    )
    instance_types: list[InstanceTypeSpec] = Field(
        default_factory=list,
        max_length=32,
        description="Instance types to create on the cluster (amlarc.azureml.com InstanceType objects).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class AccessGrant(CRDModel):
    """A data-plane role the identity needs on an Azure resource."""

    scope: Annotated[
        str,
        Matches(
            ARM_SCOPE_RE,
            "spec.access.grants[].scope must be an ARM resource ID starting with /subscriptions/<uuid>/, "
            "e.g. the storage account's ID (az storage account show -n <name> --query id)",
        ),
    ] = Field(
        max_length=1024,
        description="ARM resource ID the role applies to, e.g. a storage account, registry or key vault.",
    )
    role: str = Field(
        max_length=256,
        description=f"Role to assign: one of {', '.join(GRANTABLE)}, or a role definition GUID or ID.",
        json_schema_extra=cel(
            rule(
                "self in [" + ", ".join(cel_string(r) for r in GRANTABLE) + "] || "
                f"self.matches({cel_string(UUID_RE)}) || self.matches({cel_string(ROLE_DEFINITION_RE)})",
                "spec.access.grants[].role must be a built-in role name ("
                + ", ".join(GRANTABLE)
                + ") or a role definition GUID or resource ID",
            )
        ),
    )


class AccessSpec(CRDModel):
    """Azure role assignments the identity needs for keyless data access."""

    mode: Literal["Ensure", "Verify"] = Field(
        default="Ensure",
        description="Ensure: amlwire creates missing role assignments. Verify: amlwire only reports them.",
    )
    grants: list[AccessGrant] = Field(
        default_factory=list,
        max_length=32,
        description="Roles the identity must hold.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["scope", "role"]},
    )


class JobsPolicy(CRDModel):
    """Which namespaces may run AmlJobs on this compute."""

    allowed_namespaces: list[Annotated[Dns1123Label, StringConstraints(max_length=63)]] = Field(
        default_factory=list,
        max_length=256,
        description="Namespaces whose AmlJobs may use this compute. Empty: none may. The list has one owner: "
        "applying it replaces it whole (server-side apply), so GitOps can take back a namespace it granted.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )


def _default_service_accounts() -> list[ServiceAccountRef]:
    return [
        ServiceAccountRef(namespace="azureml", name="default"),
        ServiceAccountRef(namespace="azureml", name="training"),
    ]


CROSS_SUBSCRIPTION = (
    "spec.cluster.subscriptionId must be the workspace's subscription: AML does not attach a Kubernetes cluster "
    "from another subscription (Learn: deploy the AzureML extension, limitations). Use a workspace in the "
    "cluster's subscription, or leave spec.cluster.subscriptionId out"
)


class AttachedComputeSpec(CRDModel):
    """Desired wiring of one AML Kubernetes compute."""

    model_config = CRDModel.model_config | {
        "json_schema_extra": cel(
            rule(
                "self.allowSystemNamespaces || "
                f"!self.serviceAccounts.exists(s, s.namespace in {_SYSTEM_NAMESPACES_CEL})",
                "spec.serviceAccounts must not federate service accounts in kube-system, kube-public or "
                "kube-node-lease; set spec.allowSystemNamespaces: true if that is really intended",
                fieldPath=".serviceAccounts",
            ),
            rule(
                f"self.allowSystemNamespaces || !(self.compute.namespace in {_SYSTEM_NAMESPACES_CEL})",
                "spec.compute.namespace must not be a system namespace; set spec.allowSystemNamespaces: true "
                "if that is really intended",
                fieldPath=".compute.namespace",
            ),
            rule(
                "!has(self.cluster.subscriptionId) || "
                "self.cluster.subscriptionId.lowerAscii() == self.workspace.subscriptionId.lowerAscii()",
                CROSS_SUBSCRIPTION,
                fieldPath=".cluster.subscriptionId",
            ),
            rule(
                "oldSelf.workspace == self.workspace && oldSelf.cluster == self.cluster",
                "spec.workspace and spec.cluster are immutable: create a new AttachedCompute to move to "
                "another workspace or cluster",
            ),
        )
    }

    workspace: WorkspaceSpec = Field(description="The AML workspace to attach the cluster to.")
    cluster: ClusterSpec = Field(description="The AKS cluster to attach.")
    identity: IdentitySpec = Field(description="The user-assigned managed identity jobs use.")
    service_accounts: list[ServiceAccountRef] = Field(
        default_factory=_default_service_accounts,
        min_length=1,
        max_length=20,
        description="Service accounts federated to the identity (one federated credential each). "
        "Defaults to azureml/default and azureml/training.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["namespace", "name"]},
    )
    allow_system_namespaces: bool = Field(
        default=False,
        description="Allow service accounts and the compute namespace in kube-system, kube-public or "
        "kube-node-lease. Off by default: federating system service accounts grants Azure access to them.",
    )
    extension: ExtensionSpec = Field(default_factory=ExtensionSpec, description="The AzureML extension.")
    compute: ComputeSpec = Field(description="The AML compute target.")
    access: AccessSpec = Field(default_factory=AccessSpec, description="Role assignments for the identity.")
    jobs: JobsPolicy = Field(default_factory=JobsPolicy, description="Who may run AmlJobs on this compute.")
    deletion_policy: Literal["Delete", "Orphan"] = Field(
        default="Delete",
        description="Delete: on deletion remove what amlwire created (federated credentials, compute attach, "
        "annotations, role assignments). Orphan: leave Azure untouched.",
    )

    @property
    def cluster_subscription_id(self) -> str:
        return self.cluster.subscription_id or self.workspace.subscription_id

    @model_validator(mode="after")
    def _same_subscription(self) -> AttachedComputeSpec:
        """Admission's rule, again where admission was skipped (an object stored under an older CRD)."""
        if self.cluster_subscription_id.lower() != self.workspace.subscription_id.lower():
            raise ValueError(CROSS_SUBSCRIPTION)
        return self


class IdentityStatus(CRDModel):
    """What Azure reports for the identity."""

    resource_id: str | None = Field(
        default=None, description="ARM ID of the identity these IDs belong to (spec.identity.resourceId when read)."
    )
    client_id: str | None = Field(default=None, description="Client (application) ID of the identity.")
    principal_id: str | None = Field(default=None, description="Object (principal) ID of the identity.")
    tenant_id: str | None = Field(default=None, description="Entra tenant of the identity.")


class FederatedCredentialStatus(CRDModel):
    """A federated identity credential amlwire manages on the identity."""

    name: str = Field(description="Name of the federated identity credential.")
    subject: str = Field(description="Subject it federates: system:serviceaccount:NAMESPACE:NAME.")
    effective_at: str | None = Field(
        default=None, description="When Entra is expected to honour it, after amlwire wrote it (RFC 3339)."
    )
    reason: str | None = Field(default=None, description="Why amlwire last wrote it, e.g. FederatedCredentialMissing.")


class CredentialBudgetStatus(CRDModel):
    """The identity's federated credentials against Azure's limit of 20 per identity."""

    used: int = Field(description="Federated credentials on the identity, amlwire's and others'.")
    limit: int = Field(default=20, description="Azure's limit per identity.")
    per_cluster: int = Field(description="Credentials a cluster wired like this one needs (its service accounts).")
    clusters_remaining: int = Field(description="More clusters like this one the identity can serve.")


class OperationStatus(CRDModel):
    """A long-running Azure operation amlwire started and is following without blocking."""

    kind: str = Field(description="What the operation does, e.g. ExtensionUpdate or ComputeAttach.")
    url: str | None = Field(
        default=None,
        description="Azure's operation status URL (no secrets), checked once per reconcile instead of blocking on it.",
    )
    started_at: str = Field(description="When the operation started (RFC 3339).")
    attempt: int = Field(default=1, ge=1, description="How many times amlwire has started this kind of operation.")
    target: str | None = Field(
        default=None,
        description="The resource it works on when not the one the spec names now, e.g. a compute attached under "
        "an earlier spec.compute.name.",
    )


class RoleAssignmentStatus(CRDModel):
    """A role assignment for one of spec.access.grants."""

    scope: str = Field(description="Scope of the assignment.")
    role: str = Field(description="Role as written in the spec.")
    name: str = Field(description="Name (GUID) of the role assignment.")
    created_by_amlwire: bool = Field(default=False, description="Whether amlwire created it.")
    effective_at: str | None = Field(
        default=None, description="When amlwire expects the assignment to be effective (RFC 3339)."
    )


class AttachedComputeStatus(ObjectStatus):
    """Observed state of the wiring."""

    identity: IdentityStatus | None = Field(default=None, description="The identity as Azure reports it.")
    oidc_issuer: str | None = Field(default=None, description="The cluster's OIDC issuer URL, exactly.")
    federated_credentials: list[FederatedCredentialStatus] = Field(
        default_factory=list, description="Federated identity credentials amlwire manages for this compute."
    )
    credential_budget: CredentialBudgetStatus | None = Field(
        default=None,
        description="How many federated credentials the identity holds and how many more clusters it can serve "
        "(Azure allows 20 per identity).",
    )
    role_assignments: list[RoleAssignmentStatus] = Field(
        default_factory=list, description="Role assignments for spec.access.grants."
    )
    compute_id: str | None = Field(default=None, description="ARM ID of the attached AML compute.")
    compute_adopted_from: str | None = Field(
        default=None,
        description="The AttachedCompute that attached the AML compute (its tag names it) and is gone: this one "
        "adopted the compute, and detaches it on deletion with deletionPolicy Delete. AML offers no way to change "
        "an attached Kubernetes compute's tags, so the adoption is recorded here.",
    )
    former_computes: list[str] = Field(
        default_factory=list,
        description="ARM IDs of AML computes attached under an earlier spec.compute.name, detached once no AmlJob "
        "runs on them.",
    )
    owns_extension: bool | None = Field(
        default=None,
        description="Whether this AttachedCompute sets the identity of its cluster's AzureML extension. One "
        "extension serves one identity: the first AttachedCompute Ready on a cluster owns it; others on the "
        "cluster share its identity or are refused.",
    )
    last_handled_reconcile_at: str | None = Field(
        default=None,
        description="The value of the amlwire.io/reconcile-requested-at annotation amlwire last reconciled for.",
    )
    operations: list[OperationStatus] = Field(
        default_factory=list, description="Long-running Azure operations in flight."
    )


class AttachedCompute(CRDRoot):
    """An AKS cluster attached to an AML workspace as a Kubernetes compute, with keyless storage access."""

    kind: Literal["AttachedCompute"] = "AttachedCompute"
    spec: AttachedComputeSpec
    status: AttachedComputeStatus = Field(default_factory=AttachedComputeStatus)
