"""amlwire's vocabulary: condition types and the reasons its conditions and events carry.

Every reason a condition or an event may carry is declared here once, with the field failure (F-id, see
domain/failures.py and docs/troubleshooting.md) it points at when there is one. Code names reasons by
these constants; a test checks that no reason is written inline and that every reason is in the table.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- condition types --------------------------------------------------------------------------------
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
SUMMARY_TYPES = (READY, RECONCILING, STALLED)

CLUSTER_READY = "ClusterReady"
IDENTITY_READY = "IdentityReady"
FEDERATION_READY = "FederationReady"
SERVICE_ACCOUNTS_READY = "ServiceAccountsReady"
EXTENSION_READY = "ExtensionReady"
ACCESS_READY = "AccessReady"
INSTANCE_TYPES_READY = "InstanceTypesReady"
COMPUTE_READY = "ComputeReady"
COMPUTE_STEP_TYPES = (
    CLUSTER_READY,
    IDENTITY_READY,
    FEDERATION_READY,
    SERVICE_ACCOUNTS_READY,
    EXTENSION_READY,
    ACCESS_READY,
    INSTANCE_TYPES_READY,
    COMPUTE_READY,
)

SUBMITTED = "Submitted"
FINISHED = "Finished"
JOB_STEP_TYPES = (SUBMITTED, FINISHED)


@dataclass(frozen=True)
class Reason:
    """A reason: its CamelCase name, the field failure it points at (if any), and what it means."""

    name: str
    failure: str | None
    meaning: str


REASONS: dict[str, Reason] = {}


def reason(name: str, meaning: str, failure: str | None = None) -> str:
    """Declare a reason once; the constant holding the returned name is how code refers to it."""
    if name in REASONS:
        raise ValueError(f"reason {name} is declared twice")
    REASONS[name] = Reason(name, failure, meaning)
    return name


def waiting_reason(condition: str) -> str:
    """The reason of a step that waits for another condition to be True: Waiting<Condition>."""
    return f"Waiting{condition}"


# Summaries and first visit
READY_REASON = reason("Ready", "every link is in place")
RECONCILED = reason("Reconciled", "nothing left to do")
NOT_STALLED = reason("NotStalled", "nothing needs attention")
STALLED_REASON = reason("Stalled", "waiting for the fix named in the Stalled condition")
NOT_YET_CHECKED = reason("NotYetChecked", "amlwire has not checked this link yet")
FIRST_VISIT = reason("FirstVisit", "amlwire is reconciling the resource for the first time")
RECONCILING_REASON = reason("Reconciling", "amlwire is reconciling the resource")
INVALID_SPEC = reason("InvalidSpec", "the spec cannot be read; the message names the field")
NEW_GENERATION = reason("NewGeneration", "the spec changed: amlwire is reconciling the new generation")
for _condition in (*COMPUTE_STEP_TYPES, SUBMITTED):
    reason(waiting_reason(_condition), f"waiting for {_condition} to be True")

# ClusterReady
CLUSTER_NOT_FOUND = reason("ClusterNotFound", "the AKS cluster named in spec.cluster does not exist")
OIDC_ISSUER_DISABLED = reason("OIDCIssuerDisabled", "the cluster has no OIDC issuer", "F01")
WORKLOAD_IDENTITY_DISABLED = reason("WorkloadIdentityDisabled", "the workload identity webhook is off", "F02")
LOCAL_ACCOUNTS_DISABLED = reason(
    "LocalAccountsDisabled",
    "the cluster has local accounts disabled, which the AzureML extension does not support",
    "F19",
)
WORKLOAD_IDENTITY_ENABLED = reason("WorkloadIdentityEnabled", "OIDC issuer and workload identity are on")

# IdentityReady
IDENTITY_NOT_FOUND = reason("IdentityNotFound", "the user-assigned identity does not exist", "F03")
IDENTITY_FOUND = reason("IdentityFound", "the identity exists")

# FederationReady
FEDERATED_CREDENTIAL_MISSING = reason(
    "FederatedCredentialMissing", "a service account had no federated credential (amlwire creates it)", "F04"
)
FEDERATED_CREDENTIAL_ISSUER_MISMATCH = reason(
    "FederatedCredentialIssuerMismatch", "a credential's issuer differs from the cluster's", "F05"
)
FEDERATED_CREDENTIAL_AUDIENCE_MISMATCH = reason(
    "FederatedCredentialAudienceMismatch", "a credential's audience is not api://AzureADTokenExchange", "F06"
)
FEDERATED_CREDENTIAL_SUBJECT_MISMATCH = reason(
    "FederatedCredentialSubjectMismatch", "an amlwire credential federated another subject", "F04"
)
FEDERATED_CREDENTIAL_LIMIT = reason("FederatedCredentialLimit", "the identity holds 20 credentials", "F07")
FEDERATED_CREDENTIAL_PROPAGATING = reason(
    "FederatedCredentialPropagating", "Entra has not started honouring a new credential yet", "F04"
)
FEDERATED_CREDENTIAL_WRITE_CONFLICT = reason(
    "FederatedCredentialWriteConflict", "Azure refused a concurrent credential write on the identity", "F08"
)
SERVICE_ACCOUNTS_FEDERATED = reason("ServiceAccountsFederated", "every service account is federated")
EXTENSION_SERVICE_ACCOUNT_NOT_FEDERATED = reason(
    "ExtensionServiceAccountNotFederated", "a service account the AzureML extension runs as is not federated", "F04"
)

# ServiceAccountsReady
SERVICE_ACCOUNT_MISSING = reason("ServiceAccountMissing", "a service account does not exist", "F09")
SERVICE_ACCOUNT_ANNOTATION_CONFLICT = reason(
    "ServiceAccountAnnotationConflict", "another manager set the client-id annotation to another value", "F10"
)
NAMESPACE_NOT_FOUND = reason("NamespaceNotFound", "a service account's namespace does not exist", "F09")
SERVICE_ACCOUNT_OWNED_BY_ANOTHER = reason(
    "ServiceAccountOwnedByAnotherCompute", "another AttachedCompute annotated the account for another identity", "F10"
)
SERVICE_ACCOUNTS_ANNOTATED = reason("ServiceAccountsAnnotated", "every service account carries the client ID")

# ExtensionReady
EXTENSION_MISSING = reason("ExtensionMissing", "the AzureML extension is not installed", "F12")
EXTENSION_FAILED = reason("ExtensionFailed", "the extension is in provisioning state Failed", "F12")
EXTENSION_TYPE_MISMATCH = reason("ExtensionTypeMismatch", "spec.extension.name is another extension type", "F12")
EXTENSION_INSTALLING = reason("ExtensionInstalling", "amlwire is installing the extension", "F12")
EXTENSION_REPAIRING = reason("ExtensionRepairing", "amlwire re-applies the settings of a Failed extension", "F12")
EXTENSION_PROVISIONING = reason("ExtensionProvisioning", "an extension operation is in progress")
EXTENSION_OPERATION_FAILED = reason(
    "ExtensionOperationFailed", "an extension operation amlwire started failed (as often as allowed)", "F12"
)
EXTENSION_OPERATION_TIMED_OUT = reason("ExtensionOperationTimedOut", "an extension operation never finished", "F12")
EXTENSION_IDENTITY_MISMATCH = reason(
    "ExtensionIdentityMismatch", "the extension's identity settings are absent or name another identity", "F13"
)
EXTENSION_SETTINGS_DIFFER = reason(
    "ExtensionSettingsDiffer", "settings other than the identity's differ from spec.extension (e.g. enableTraining)"
)
EXTENSION_LACKS_CLI_SETTINGS = reason(
    "ExtensionLacksClusterSettings",
    "the extension lacks settings `az k8s-extension create` adds (clusterId, jobSchedulerLocation, ...), as a bare "
    "ARM PUT installs it; whether AML's scheduler runs jobs without them is unverified",
    "F12",
)
TRAINING_DISABLED = reason(
    "TrainingDisabled", "the extension has enableTraining off while spec.jobs lets AmlJobs use the compute"
)
EXTENSION_CONFIGURED = reason("ExtensionConfigured", "the extension uses the identity")
EXTENSION_OWNED_BY_ANOTHER = reason(
    "ExtensionOwnedByAnotherCompute", "another AttachedCompute on the cluster set the extension's identity", "F13"
)

# AccessReady
NO_GRANTS_REQUESTED = reason("NoGrantsRequested", "spec.access.grants is empty")
ROLE_ASSIGNMENT_MISSING = reason("RoleAssignmentMissing", "a role in spec.access.grants is not assigned", "F15")
ROLE_ASSIGNMENT_PROPAGATING = reason(
    "RoleAssignmentPropagating", "a new role assignment may not be effective yet", "F16"
)
ACCESS_SCOPE_NOT_FOUND = reason("AccessScopeNotFound", "a scope in spec.access.grants does not exist", "F15")
ROLES_ASSIGNED = reason("RolesAssigned", "the identity holds every role in spec.access.grants")
SHARED_KEY_ACCESS_DISABLED = reason(
    "SharedKeyAccessDisabled",
    "the workspace's key-based default datastore sits on an account with shared keys off",
    "F17",
)

# InstanceTypesReady
NO_INSTANCE_TYPES_REQUESTED = reason("NoInstanceTypesRequested", "spec.compute.instanceTypes is empty")
INSTANCE_TYPE_CRD_MISSING = reason("InstanceTypeCRDMissing", "the extension's InstanceType CRD is not served", "F12")
INSTANCE_TYPES_APPLIED = reason("InstanceTypesApplied", "the instance types are on the cluster")

# ComputeReady
WORKSPACE_NOT_FOUND = reason("WorkspaceNotFound", "the AML workspace named in spec.workspace does not exist")
COMPUTE_ATTACHING = reason("ComputeAttaching", "amlwire is attaching the compute", "F14")
COMPUTE_PROVISIONING = reason("ComputeProvisioning", "a compute operation is in progress")
COMPUTE_ATTACHED = reason("ComputeAttached", "the compute is attached with the identity")
COMPUTE_ATTACH_FAILED = reason("ComputeAttachFailed", "the compute attach failed", "F14")
COMPUTE_DETACH_FAILED = reason("ComputeDetachFailed", "detaching the compute failed", "F14")
COMPUTE_IDENTITY_MISMATCH = reason(
    "ComputeIdentityMismatch", "the compute is attached without the identity or in another namespace", "F14"
)
COMPUTE_NAMESPACE_MISSING = reason(
    "ComputeNamespaceMissing", "the compute's namespace does not exist and amlwire may not create it"
)
COMPUTE_NAMESPACE_DELETING = reason(
    "ComputeNamespaceDeleting", "the compute's namespace is being deleted: AML's jobs there fail until it is back"
)
NAMESPACE_CREATED = reason(
    "NamespaceCreated", "amlwire created the compute's namespace (before the attach, or again after a deletion)"
)
WORKSPACE_IDENTITY_LACKS_CLUSTER_ROLES = reason(
    "WorkspaceIdentityLacksClusterRoles",
    "the workspace's user-assigned identity lacks a role AML's attach checks on the cluster",
    "F18",
)
COMPUTE_NAME_CONFLICT = reason("ComputeNameConflict", "the compute name is taken by another cluster", "F14")
COMPUTE_DETACH_WAITS_FOR_JOBS = reason(
    "ComputeDetachWaitsForJobs", "the compute must be attached again but AmlJobs still run on it", "F14"
)

# AmlJob: Submitted and Finished, and the summaries of a job
COMPUTE_NOT_FOUND = reason("ComputeNotFound", "spec.computeRef names no AttachedCompute")
COMPUTE_NOT_READY = reason("ComputeNotReady", "the AttachedCompute is not Ready")
NAMESPACE_NOT_ALLOWED = reason("NamespaceNotAllowed", "the job's namespace may not use the compute")
INSTANCE_TYPE_NOT_FOUND = reason("InstanceTypeNotFound", "spec.instanceType is not one of the compute's")
INSTANCE_TYPE_WITHOUT_GPU = reason(
    "InstanceTypeWithoutGPU", "an IsaacLab template names an instance type without nvidia.com/gpu"
)
JOB_ACCOUNT_NOT_FEDERATED = reason(
    "JobServiceAccountNotFederated",
    "InContainer delivery downloads with the job pods' workload identity, whose account the compute does not federate",
    "F04",
)
MODEL_NOT_FOUND = reason("ModelNotFound", "spec.model names a model version that is not registered")
SUBMISSION_REJECTED = reason("SubmissionRejected", "AML refused the job")
AML_JOB_NOT_FOUND = reason("AmlJobNotFound", "the AML job this AmlJob followed no longer exists")
SUBMITTED_REASON = reason("Submitted", "the AML job exists")
NOT_SUBMITTED = reason("NotSubmitted", "the AML job is not submitted yet")
SUBMITTING = reason("Submitting", "amlwire is submitting the AML job")
ADOPTED = reason("Adopted", "an AML job of this AmlJob existed already and is followed")
FOLLOWING = reason("Following", "amlwire follows the AML job")
RESULTS_RECORDED = reason("ResultsRecorded", "the AML job ended and its results are in status")
VERDICT_FAILED = reason("VerdictFailed", "the job's metric missed spec.gate")
EVALUATION_FAILED = reason("EvaluationFailed", "amlwire's evaluator failed; status.failure says why")
NO_EVIDENCE = reason(
    "NoEvidence", "the job completed without the evaluator's evidence (metrics with an episode count, checkpoint, task)"
)
GATE_METRIC_NOT_LOGGED = reason("GateMetricNotLogged", "the job completed without logging the metric spec.gate names")
RESUMED = reason("Resumed", "a training attempt ended early; the next continues from its last checkpoint")
JOB_FAILED = reason("JobFailed", "the AML job failed; status.failure says why")
STORAGE_ACCESS_FAILED = reason(
    "ScriptExecutionStreamAccessAuthentication", "the job could not reach storage; status.failure.hint names the link"
)
IMAGE_PULL_FAILED = reason(
    "ImagePullFailed", "the job's image could not be pulled; status.failure.hint names the registry and the role"
)
MODEL_REGISTERED = reason("ModelRegistered", "the checkpoint output was registered as a model version")
CANCELED = reason("Canceled", "the AML job was canceled")
COMPLETED = reason("Completed", "the AML job completed")
# AML's own job states (spec: JobStatus) are reasons of a job's summaries while it runs or when it ended.
AML_JOB_STATES = (
    "NotStarted",
    "Starting",
    "Provisioning",
    "Preparing",
    "Queued",
    "Running",
    "Finalizing",
    "CancelRequested",
    "Failed",
    "NotResponding",
    "Paused",
    "Unknown",
)
for _state in AML_JOB_STATES:
    reason(_state, f"AML reports the job {_state}")

# Events that name what amlwire did
FEDERATED_CREDENTIAL_DELETED = reason("FederatedCredentialDeleted", "amlwire deleted a credential it had created")
FEDERATED_CREDENTIAL_CREATED = reason("FederatedCredentialCreated", "amlwire created a federated credential")
SERVICE_ACCOUNT_ANNOTATED = reason("ServiceAccountAnnotated", "amlwire annotated a service account")
SERVICE_ACCOUNT_RELEASED = reason("ServiceAccountReleased", "amlwire took its annotation off an unlisted account")
ROLE_ASSIGNMENT_CREATED = reason("RoleAssignmentCreated", "amlwire assigned a role")
ROLE_ASSIGNMENT_DELETED = reason("RoleAssignmentDeleted", "amlwire removed a role assignment it had created")
ROLE_ASSIGNMENT_KEPT = reason(
    "RoleAssignmentKept", "amlwire kept a role assignment it had created: another cluster federates the identity"
)
FEDERATED_CLUSTER_GONE = reason(
    "FederatedClusterGone",
    "another cluster's amlwire credentials remain on the identity, but that cluster's issuer no longer exists",
)
COMPUTE_DETACHING = reason("ComputeDetaching", "amlwire is detaching the compute")
COMPUTE_ADOPTED = reason(
    "ComputeAdopted", "the compute was attached by an AttachedCompute that is gone; this one adopted it"
)
COMPUTE_LEFT_ATTACHED = reason("ComputeLeftAttached", "deletion left a compute attached that is not this one's")
FORMER_COMPUTE_DETACHING = reason(
    "FormerComputeDetaching", "spec.compute.name changed: amlwire detaches the compute attached under the old name"
)
DELETING = reason("Deleting", "the resource is being deleted: amlwire removes what it created (deletionPolicy Delete)")
ORPHANED = reason("Orphaned", "deletionPolicy Orphan: amlwire left Azure as it was")
JOBS_STILL_RUNNING = reason("JobsStillRunning", "a deleted AttachedCompute had AmlJobs running on it")

# Errors, classified once at the adapters (adapters/azure/errors.py, adapters/kube/adapter.py)
AZURE_THROTTLED = reason("AzureThrottled", "Azure answered 429; amlwire waits for Retry-After")
AZURE_UNAVAILABLE = reason("AzureUnavailable", "Azure answered 5xx; amlwire retries")
AZURE_TIMEOUT = reason("AzureTimeout", "Azure did not answer in time; amlwire retries")
AZURE_CONFLICT = reason("AzureConflict", "Azure answered 409; amlwire retries")
AZURE_OPERATION_IN_PROGRESS = reason("AzureOperationInProgress", "another operation runs on the resource")
AZURE_OPERATION_NOT_ALLOWED = reason("AzureOperationNotAllowed", "Azure does not allow the operation")
AZURE_PERMISSION_DENIED = reason("AzurePermissionDenied", "amlwire's own identity lacks a role")
AZURE_AUTHENTICATION_FAILED = reason("AzureAuthenticationFailed", "amlwire could not authenticate to Azure")
AZURE_BAD_REQUEST = reason("AzureBadRequest", "Azure refused the request as malformed")
AZURE_REQUEST_FAILED = reason("AzureRequestFailed", "an Azure request failed")
AZURE_REQUEST_REJECTED = reason("AzureRequestRejected", "the Azure SDK refused the request before sending it")
AZURE_UNREACHABLE = reason("AzureUnreachable", "Azure could not be reached")
AZURE_NOT_FOUND = reason("NotFound", "an Azure resource does not exist")
SUBSCRIPTION_NOT_FOUND = reason("SubscriptionNotFound", "the subscription does not exist or is not visible")
RESOURCE_GROUP_NOT_FOUND = reason("ResourceGroupNotFound", "the resource group does not exist")
KUBERNETES_FIELD_CONFLICT = reason("KubernetesFieldConflict", "another field manager owns a field amlwire applies")
KUBERNETES_OBJECT_NOT_FOUND = reason("KubernetesObjectNotFound", "a Kubernetes object does not exist")
KUBERNETES_PERMISSION_DENIED = reason("KubernetesPermissionDenied", "amlwire's ClusterRole lacks a permission")
KUBERNETES_UNAVAILABLE = reason("KubernetesUnavailable", "the Kubernetes API server did not answer")


def failure_of(name: str) -> str | None:
    """The field failure a reason points at, if any."""
    found = REASONS.get(name)
    return found.failure if found else None
