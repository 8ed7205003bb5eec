"""The sandbox's world file: the Azure resources that exist before anything runs.

Lists are flat per resource type; `subscriptionId` defaults to `defaults.subscriptionId`. See
examples/sandbox/world.yaml and the README section "The Azure sandbox".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class WorldModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Defaults(WorldModel):
    subscription_id: str = "6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60"
    tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    location: str = "eastus"


class Located(WorldModel):
    subscription_id: str | None = None
    resource_group: str
    name: str
    location: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


StreamAccessShape = Literal["flat", "nested", "messageOnly"]
STREAM_ACCESS_SHAPES: tuple[StreamAccessShape, ...] = ("flat", "nested", "messageOnly")
SidecarCredential = Literal["computeIdentity", "workloadIdentity", "brokenCertificate"]
SIDECAR_CREDENTIALS: tuple[SidecarCredential, ...] = ("computeIdentity", "workloadIdentity", "brokenCertificate")


class ExtensionWorld(WorldModel):
    name: str = "azureml"
    extension_type: str = "Microsoft.AzureML.Kubernetes"
    provisioning_state: Literal["Succeeded", "Failed", "Canceled", "Creating", "Updating"] = "Succeeded"
    settings: dict[str, str] = Field(default_factory=lambda: {"enableTraining": "True"})
    error: str = Field(
        default="Helm installation failed: timed out waiting for the condition",
        description="What errorInfo and the Error status say of a Failed or Canceled extension (rule ext.error-info).",
    )


class ClusterWorld(Located):
    oidc_issuer_enabled: bool = True
    oidc_issuer_url: str | None = None  # derived from location, tenant and name when absent
    workload_identity_enabled: bool = True
    local_accounts_disabled: bool = False
    extensions: list[ExtensionWorld] = Field(default_factory=list)
    aml_service_accounts: list[str] = Field(
        default_factory=lambda: ["azureml:default", "azureml:training"],
        description="NAMESPACE:NAME of the service accounts the extension's data-capability sidecar uses.",
    )
    job_service_account: str = Field(
        default="default",
        description="The service account job pods run as, in the compute's namespace (where AML runs all its "
        "workloads on the compute); unverified which one, so a world option.",
    )
    sidecar_credential: SidecarCredential = Field(
        default="workloadIdentity",
        description="How the AzureML data-capability sidecar gets its storage credential (unverified; rule "
        "data.sidecar-credential): computeIdentity (documented: the compute's identity and a Storage Blob Data "
        "role), workloadIdentity (field practice: also FICs for amlServiceAccounts and the extension's identity "
        "settings), brokenCertificate (field failure F23: it never works; only in-container downloads do).",
    )
    namespaces: list[str] = Field(
        default_factory=lambda: ["default", "kube-system", "azureml"],
        description="Namespaces in the cluster, when no apiserver is registered for it (control API kubeconfig).",
    )
    subnet: str | None = Field(
        default=None, description="Resource ID of the node pool's subnet (agentPoolProfiles[].vnetSubnetID)."
    )
    node_count: int = Field(default=3, ge=1, description="Nodes of the cluster's one pool (agentPoolProfiles[].count).")


JobTimeoutOutcome = Literal["Canceled", "Failed"]
JOB_TIMEOUT_OUTCOMES: tuple[JobTimeoutOutcome, ...] = ("Canceled", "Failed")


class Rules(WorldModel):
    """How the sandbox answers where Azure's behaviour is unverified (docs/sandbox.md)."""

    operation_status_words: Literal["specExamples", "inProgress", "other"] = Field(
        default="specExamples",
        description="What an operation-status body says while it runs (rule arm.operation-status-words): the "
        "specs' examples (Creating, Updating, Deleting), InProgress, or another word (Running).",
    )
    bare_extension: Literal["works", "jobsStayQueued"] = Field(
        default="works",
        description="Jobs on a cluster whose AzureML extension lacks the settings `az k8s-extension create` adds "
        "(clusterId, jobSchedulerLocation, ...), as a bare ARM PUT installs it (rule ext.cli-settings, unverified): "
        "they run, or they never leave Queued.",
    )
    job_timeout: JobTimeoutOutcome = Field(
        default="Canceled",
        description="How a job that runs past limits.timeout ends (rule ml.job-timeout): Canceled or Failed.",
    )

    deleted_cluster_issuer: Literal["notFound", "served"] = Field(
        default="notFound",
        description="What a deleted cluster's OIDC issuer answers (rule aks.issuer-after-delete): 404 for its "
        "discovery document, or the document it served while the cluster existed.",
    )
    tag_names: Literal["refuse", "accept"] = Field(
        default="refuse", description="Tag names with < > % & \\ ? / on AML computes (rule arm.tag-names)."
    )
    stream_access_error: StreamAccessShape = Field(
        default="flat",
        description="How a storage-access failure is reported (rule data.stream-error-shape): the dotted code "
        "flat in the message and one innerError, one innerError per code segment, or the message alone.",
    )


class BucketLimit(WorldModel):
    size: float = Field(gt=0, description="Tokens the bucket holds when full.")
    refill: float = Field(gt=0, description="Tokens added per second.")


class IdentityLimits(WorldModel):
    """The managed-identity provider's own limits per identity resource (rule msi.identity-throttling)."""

    enabled: bool = Field(default=False, description="Off unless a world tests them: they slow every wiring.")
    reads: BucketLimit = Field(default_factory=lambda: BucketLimit(size=5, refill=0.5))
    writes: BucketLimit = Field(default_factory=lambda: BucketLimit(size=5, refill=0.25))


class ArmLimits(WorldModel):
    """ARM's token buckets per subscription, principal and operation type (rule arm.throttling)."""

    enabled: bool = Field(default=True, description="Off in worlds that measure something else at full speed.")
    reads: BucketLimit = Field(default_factory=lambda: BucketLimit(size=250, refill=25))
    writes: BucketLimit = Field(default_factory=lambda: BucketLimit(size=200, refill=10))
    deletes: BucketLimit = Field(default_factory=lambda: BucketLimit(size=200, refill=10))
    global_factor: float = Field(
        default=15.0, gt=0, description="The subscription's bucket for all principals, times a principal's."
    )
    identity: IdentityLimits = Field(default_factory=lambda: IdentityLimits())


class IdentityWorld(Located):
    client_id: str
    principal_id: str
    tenant_id: str | None = None


class PrivateEndpointWorld(WorldModel):
    name: str
    subnet: str = Field(description="Resource ID of the subnet the private endpoint's address is in.")
    status: Literal["Approved", "Pending", "Rejected", "Disconnected"] = "Approved"


class StorageAccountWorld(Located):
    allow_shared_key_access: bool | None = False
    public_network_access: Literal["Enabled", "Disabled"] = "Enabled"
    default_action: Literal["Allow", "Deny"] = Field(
        default="Allow", description="networkRuleSet.defaultAction: Deny admits only the rules and endpoints."
    )
    virtual_network_rules: list[str] = Field(
        default_factory=list, description="Subnet resource IDs admitted through a service endpoint."
    )
    private_endpoints: list[PrivateEndpointWorld] = Field(default_factory=list)


class WorkspaceIdentity(WorldModel):
    type: Literal["SystemAssigned", "UserAssigned"] = "SystemAssigned"
    principal_id: str = "9a0c7a52-0000-4000-8000-00000000aa01"
    client_id: str = "9a0c7a52-0000-4000-8000-00000000cc01"
    resource_id: str | None = Field(
        default=None,
        description="UserAssigned: the identity's resource ID (default: id-<workspace> in the workspace's group).",
    )


class ModelWorld(WorldModel):
    name: str
    version: str
    type: Literal["custom_model", "mlflow_model"] = "custom_model"
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Metrics a simulated validation of this model logs (e.g. success_rate); an executed one "
        "measures its checkpoint, whose policy succeeds this often (success_rate, default 0.9).",
    )
    task: str = Field(
        default="Isaac-Velocity-Rough-Anymal-C-v0",
        description="The task the model's checkpoint was trained on (its network's input size follows).",
    )


class ComputeIdentityWorld(WorldModel):
    type: Literal["None", "SystemAssigned", "UserAssigned", "SystemAssigned,UserAssigned"] = "None"
    user_assigned_identities: list[str] = Field(
        default_factory=list, description="Resource IDs of identities in the world attached to the compute."
    )


class ComputeWorld(WorldModel):
    """A compute cluster (AmlCompute) of the workspace; Kubernetes computes are attached, not seeded."""

    name: str
    vm_size: str = "STANDARD_DS3_V2"
    identity: ComputeIdentityWorld = Field(default_factory=ComputeIdentityWorld)
    subnet: str | None = Field(default=None, description="Resource ID of the compute's subnet (none: no VNet).")


class DatastoreWorld(WorldModel):
    name: str
    storage_account: str | None = Field(default=None, description="Account name (default: the workspace's).")
    container: str = "data"
    credentials: Literal["None", "AccountKey", "Sas"] = Field(
        default="None", description="None: identity-based; AccountKey or Sas: a stored credential."
    )
    secret: Literal["present", "empty"] = Field(
        default="present", description="Whether the stored credential holds a key or token (listSecrets)."
    )
    default: bool = False


class WorkspaceWorld(Located):
    storage_account: str = Field(description="Name of the workspace's default storage account (same subscription).")
    system_datastores_auth_mode: Literal["accesskey", "identity"] = "identity"
    system_datastore_secret: Literal["present", "empty"] = Field(
        default="present",
        description="With accesskey system datastores: whether they hold the account key (an old workspace "
        "created while shared keys were off holds none).",
    )
    identity: WorkspaceIdentity = Field(default_factory=WorkspaceIdentity)
    models: list[ModelWorld] = Field(default_factory=list)
    computes: list[ComputeWorld] = Field(default_factory=list)
    datastores: list[DatastoreWorld] = Field(
        default_factory=list, description="Datastores besides the system ones (workspaceblobstore, ...)."
    )


class RoleAssignmentWorld(WorldModel):
    scope: str
    role_definition_id: str
    principal_id: str
    name: str | None = None


class ManagementGroupWorld(WorldModel):
    name: str
    subscriptions: list[str] = Field(default_factory=list, description="Subscription IDs under the group.")
    parent: str | None = Field(default=None, description="The management group above it (None: the tenant root).")


class GroupWorld(WorldModel):
    """An Entra security group: role assignments to it apply to its members (and members of member groups)."""

    id: str
    members: list[str] = Field(default_factory=list, description="Object IDs of principals or other groups.")


class FederatedCredentialWorld(WorldModel):
    identity: str = Field(description="Resource ID of the identity.")
    name: str
    issuer: str
    subject: str
    audiences: list[str] = Field(default_factory=lambda: ["api://AzureADTokenExchange"])


class JobTiming(WorldModel):
    queued_seconds: float = 0.2
    running_seconds: float = 1.0
    metrics: dict[str, float] = Field(
        default_factory=lambda: {"mean_episode_reward": 18.5},
        description="Metrics a job logs when no model it consumes says otherwise.",
    )
    output_files: dict[str, str] = Field(
        default_factory=lambda: {"model_100.pt": "a checkpoint written by a sandbox job\n"},
        description="Files a completed job leaves in each of its outputs (a job rule's outputFiles overrides).",
    )
    trained_model_metrics: dict[str, float] = Field(
        default_factory=lambda: {"success_rate": 0.93, "mean_episode_reward": 21.0},
        description="Metrics validation jobs log for models registered from job outputs in the sandbox.",
    )


class Timing(WorldModel):
    fic_write_window_seconds: float = Field(
        default=0.15, description="How long a FIC write holds its identity: a second write meanwhile gets a 409."
    )
    fic_propagation_seconds: float = Field(default=0.0, description="Age before Entra honours a new FIC.")
    role_propagation_seconds: float = Field(default=0.0, description="Age before a role assignment grants access.")
    lro_seconds: float = Field(default=0.0, description="Duration of extension and compute operations.")
    lro_outcome: Literal["Succeeded", "Failed"] = "Succeeded"
    job: JobTiming = Field(default_factory=JobTiming)
    page_size: int = Field(default=50, ge=1, description="Items per page of list calls (nextLink beyond).")


class World(WorldModel):
    """The whole world file."""

    defaults: Defaults = Field(default_factory=Defaults)
    resource_groups: list[str] = Field(default_factory=list)
    clusters: list[ClusterWorld] = Field(default_factory=list)
    identities: list[IdentityWorld] = Field(default_factory=list)
    storage_accounts: list[StorageAccountWorld] = Field(default_factory=list)
    registries: list[Located] = Field(default_factory=list)
    key_vaults: list[Located] = Field(default_factory=list)
    workspaces: list[WorkspaceWorld] = Field(default_factory=list)
    role_assignments: list[RoleAssignmentWorld] = Field(default_factory=list)
    management_groups: list[ManagementGroupWorld] = Field(default_factory=list)
    groups: list[GroupWorld] = Field(default_factory=list)
    federated_credentials: list[FederatedCredentialWorld] = Field(default_factory=list)
    timing: Timing = Field(default_factory=Timing)
    rules: Rules = Field(default_factory=Rules)
    arm_limits: ArmLimits = Field(default_factory=ArmLimits)
    execute_isaaclab: bool = Field(
        default=True,
        description="Run jobs whose command uses IsaacLab against the sandbox's IsaacLab image (rule "
        "ml.job-execution); off: they are simulated like any other job (timing and job rules decide).",
    )

    @classmethod
    def load(cls, path: Path, options: Path | None = None) -> World:
        """A world file, with the world options of `options` (what `amlwire conformance` found) laid over it."""
        document = yaml.safe_load(path.read_text()) or {}
        if options is not None:
            document = _overlay(document, yaml.safe_load(options.read_text()) or {})
        return cls.model_validate(document)


def _overlay(base: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in options.items():
        merged[key] = _overlay(base.get(key) or {}, value) if isinstance(value, dict) else value
    return merged
