"""Every rule the sandbox enforces, with where it comes from.

The code that enforces a rule carries a `# rule: ID` marker (tests/sandbox/test_rules.py checks both ways).
docs/sandbox.md is generated from this table (`make docs`); `make test` fails when it drifts.

Sources: spec (Azure/azure-rest-api-specs or the pinned SDK's generated code), doc (Microsoft Learn),
field (seen in a field report), inference (follows from documented behaviour, not itself documented),
unverified (no primary source: a world option, and the tests run every option, or a note saying why amlwire
never depends on the answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["spec", "doc", "field", "inference", "unverified"]


@dataclass(frozen=True)
class Rule:
    id: str
    service: str
    says: str
    source: Source
    citation: str
    option: str = ""  # the world option that chooses Azure's answer, for unverified rules
    note: str = ""  # why amlwire never depends on an unverified answer, when there is no option


RULES: tuple[Rule, ...] = (
    # -- transport and ARM in general ------------------------------------------------------------------
    Rule(
        "arm.any-api-version",
        "ARM",
        "Any api-version is accepted (each SDK release pins another).",
        "spec",
        "azure-mgmt-* clients send their own pinned api-version",
    ),
    Rule(
        "arm.error-shape",
        "ARM",
        'Errors are JSON {"error": {"code", "message"}}; throttling is 429 with Retry-After.',
        "spec",
        "ARM RPC: Error Response Content; azure-core RetryPolicy",
    ),
    Rule(
        "arm.throttling",
        "ARM",
        "Token buckets per subscription, principal and operation type: reads 250 (refill 25/s), writes 200 "
        "(10/s), deletes 200 (10/s), and a subscription bucket for all principals at 15 times that; every "
        "answer carries x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}; an empty bucket answers "
        "429 SubscriptionRequestsThrottled with Retry-After and costs no token. World option armLimits.",
        "doc",
        "Learn, Azure Resource Manager: Understand how ARM throttles requests (regional throttling and token "
        "bucket algorithm, 2024)",
    ),
    Rule(
        "arm.lro",
        "ARM",
        "Long-running writes answer with Azure-AsyncOperation (and Location on DELETE) and retry-after-ms; "
        "never Retry-After: 0. The status URL is an ARM path under the resource (as Extensions' "
        ".../extensions/{name}/operations/{id}): polling it is metered and needs read on the resource.",
        "spec",
        "ARM RPC: Asynchronous Operations; azure-mgmt-core ARMPolling; Extensions OperationStatus_Get",
    ),
    Rule(
        "arm.operation-status-words",
        "ARM",
        "An operation-status body's status while it runs: the specs' examples use the action's word (Creating, "
        "Updating, Deleting); other words exist; azure-core reads all but Succeeded, Failed and Canceled as running.",
        "unverified",
        "azure-core base_polling (finished states); the specs' operation-status examples",
        option="rules.operationStatusWords: specExamples | inProgress | other",
    ),
    Rule(
        "arm.authorization",
        "ARM",
        "Every control-plane call is authorised against the caller's role assignments at or above the "
        "resource, with the real actions/notActions of the built-in roles (Owner, Contributor, Reader, "
        "Managed Identity Contributor/Operator, Kubernetes Extension Contributor, AzureML Data Scientist, "
        "AzureML Compute Operator, Role Based Access Control Administrator, Storage Blob Data roles, AcrPull); "
        "refused: 403 AuthorizationFailed naming the client, action and scope.",
        "doc",
        "Learn: Azure built-in roles; Troubleshoot Azure RBAC (AuthorizationFailed)",
    ),
    Rule(
        "arm.wildcard-actions",
        "ARM",
        "'*' in a role's action matches any characters, and 'x/*/y' also matches 'x/y' (how "
        "Managed Identity Operator's '.../userAssignedIdentities/*/assign/action' grants "
        "'.../userAssignedIdentities/assign/action').",
        "inference",
        "Learn: Understand Azure role definitions (wildcards); Managed Identity Operator description (the "
        "'x/*/y' matching 'x/y' is inferred from that role granting the action, not stated)",
    ),
    Rule(
        "msi.identity-throttling",
        "ARM",
        "The managed-identity provider throttles per identity resource (0.5 GET/s, 0.25 writes/s): its 429 comes "
        "through ARM, which reports its own budget as not spent. World option armLimits.identity (bucket sizes "
        "unverified; off unless a world tests them).",
        "doc",
        "Learn: Managed identities for Azure resources, limits (requests per managed identity)",
    ),
    Rule(
        "arm.linked-authorization",
        "ARM",
        "Attaching a user-assigned identity to a resource also needs "
        "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action on the identity; refused: 403 "
        "LinkedAuthorizationFailed.",
        "doc",
        "Learn: Managed identities for Azure resources, built-in role Managed Identity Operator; "
        "AML 'Set up authentication between Azure ML and other services' prerequisites",
    ),
    Rule(
        "arm.tag-names",
        "ARM",
        "Tag names may not contain < > % & \\ ? /; refused with 400 InvalidTagNameCharacters.",
        "doc",
        "Learn: Use tags to organize your Azure resources (limitations)",
        option="rules.tagNames: refuse | accept (whether AML computes enforce it is unverified)",
    ),
    # -- Entra ----------------------------------------------------------------------------------------
    Rule(
        "entra.fic-match",
        "Entra",
        "A workload identity token exchange needs a FIC on the identity whose issuer, subject and audience "
        "match the assertion exactly (case-sensitive); else AADSTS70021.",
        "doc",
        "Learn: Workload identity federation; AADSTS70021",
    ),
    Rule(
        "entra.fic-propagation",
        "Entra",
        "A new FIC may not be honoured for a while after it is written.",
        "doc",
        "Learn: Federated identity credential considerations (propagation delay)",
        option="timing.ficPropagationSeconds",
    ),
    Rule(
        "entra.assertion",
        "Entra",
        "A client assertion is verified against its issuer's keys, found through the issuer's OpenID discovery "
        "document (jwks_uri): a bad signature is AADSTS700027, outside exp/nbf (60 s skew) AADSTS700024, an "
        "audience the FIC lacks AADSTS700212, an unreachable issuer AADSTS50166, a malformed token AADSTS50027.",
        "doc",
        "Learn: Workload identity federation (how it works: Entra checks the token against the issuer's keys); "
        "Learn: Entra authentication and authorization error codes",
    ),
    Rule(
        "entra.signed-tokens",
        "Entra",
        "Entra signs the access tokens it issues (RS256, the kid its JWKS publishes); ARM and Storage verify the "
        "signature and expiry: a forged or unsigned token is 401 InvalidAuthenticationToken, an expired one "
        "401 ExpiredAuthenticationToken.",
        "doc",
        "Learn: Microsoft identity platform access tokens (validating tokens); ARM RPC: authentication errors",
    ),
    # -- managed identities -----------------------------------------------------------------------------
    Rule(
        "msi.identity-delete",
        "Managed identities",
        "Deleting a user-assigned identity deletes its federated credentials with it (200, or 204 when absent); "
        "role assignments scoped to it go with the resource.",
        "spec",
        "Microsoft.ManagedIdentity 2023-01-31 UserAssignedIdentities_Delete; Learn: role assignments of deleted "
        "resources",
    ),
    Rule(
        "msi.fic-name",
        "Managed identities",
        "FIC names are 3-120 characters of letters, digits, '-' and '_', starting with a letter or digit; else 400.",
        "doc",
        "Learn: Federated identity credential considerations",
    ),
    Rule(
        "msi.fic-fields",
        "Managed identities",
        "Issuer and subject are required and at most 600 characters; the issuer is https; exactly one audience.",
        "doc",
        "Learn: Federated identity credential considerations",
    ),
    Rule(
        "msi.fic-unique",
        "Managed identities",
        "One identity may not hold two FICs with the same issuer and subject (400).",
        "doc",
        "Learn: Federated identity credential considerations",
    ),
    Rule(
        "msi.fic-limit",
        "Managed identities",
        "At most 20 FICs per identity (400).",
        "doc",
        "Learn: Federated identity credential considerations",
    ),
    Rule(
        "msi.fic-concurrent",
        "Managed identities",
        "A FIC write or delete while another runs on the same identity gets 409 "
        "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity (no Retry-After).",
        "doc",
        "Learn: Federated identity credential considerations (concurrent updates)",
        option="timing.ficWriteWindowSeconds",
    ),
    Rule(
        "msi.fic-sync",
        "Managed identities",
        "FIC PUT is synchronous: 201 created, 200 updated; DELETE 200 or 204; 404 without the identity.",
        "spec",
        "Microsoft.ManagedIdentity 2023-01-31 FederatedIdentityCredentials",
    ),
    # -- AKS and the AzureML extension --------------------------------------------------------------------
    Rule(
        "aks.cluster-profile",
        "AKS",
        "A managed cluster reports oidcIssuerProfile.{enabled, issuerURL}, "
        "securityProfile.workloadIdentity.enabled and disableLocalAccounts.",
        "spec",
        "Microsoft.ContainerService ManagedClusters",
    ),
    Rule(
        "aks.issuer-discovery",
        "AKS",
        "A cluster's OIDC issuer serves its OpenID discovery document and JWKS publicly at the issuer URL "
        "(Entra fetches them to verify the cluster's service-account tokens).",
        "doc",
        "Learn: Create an OpenID Connect provider on AKS (the issuer's .well-known/openid-configuration)",
    ),
    Rule(
        "aks.issuer-after-delete",
        "AKS",
        "After the cluster is deleted its issuer answers 404, or goes on serving the last document for a while.",
        "unverified",
        "",
        option="rules.deletedClusterIssuer: notFound | served",
    ),
    Rule(
        "ext.lro",
        "Cluster extensions",
        "Extension PUT, PATCH and DELETE are long-running (Azure-AsyncOperation).",
        "spec",
        "Microsoft.KubernetesConfiguration extensions 2025-03-01",
    ),
    Rule(
        "ext.patch-unchanged",
        "Cluster extensions",
        "A PATCH that changes no setting answers 200 with no operation header and changes nothing (a Failed "
        "extension stays Failed).",
        "spec",
        "extensions 2025-03-01 Extensions_Update, example PatchExtension.json",
    ),
    Rule(
        "ext.patch-merges",
        "Cluster extensions",
        "PATCH merges configurationSettings into the current ones; a null value removes a key.",
        "spec",
        "extensions 2025-03-01 PatchExtension (JSON merge patch)",
    ),
    Rule(
        "ext.protected-settings",
        "Cluster extensions",
        "configurationProtectedSettings are write-only: never returned.",
        "spec",
        "extensions 2025-03-01 ExtensionProperties",
    ),
    Rule(
        "ext.one-operation",
        "Cluster extensions",
        "A write while an operation runs on the extension gets 409 Conflict.",
        "unverified",
        "",
        note="amlwire never writes an extension with an operation in flight (it follows the recorded "
        "operation first); the rule only catches a regression",
    ),
    Rule(
        "ext.training-setting",
        "Cluster extensions",
        "enableTraining defaults to False; AML refuses training (command) jobs on a compute whose extension "
        "does not have enableTraining=True.",
        "doc",
        "Learn: Deploy AzureML extension on AKS or Arc Kubernetes cluster, configuration settings",
        note="the refusal's shape (a 400 UserError at submission, its words) is unverified; amlwire never submits "
        "to such a compute (ExtensionReady False TrainingDisabled) and reads any refusal's message as it is",
    ),
    Rule(
        "ext.error-info",
        "Cluster extensions",
        "Every extension carries errorInfo and statuses; a Failed or Canceled one has the agent's error in "
        "errorInfo and an Error-level status. Canceled means the install never finished.",
        "spec",
        "extensions 2025-03-01 Extension (errorInfo: ErrorDetail, statuses: ExtensionStatus[], provisioningState "
        "Canceled)",
    ),
    Rule(
        "ext.cli-settings",
        "Cluster extensions",
        "az k8s-extension create adds settings a bare ARM PUT lacks (clusterId, cluster_name, the Prometheus "
        "cluster label, location, jobSchedulerLocation, domain, cluster_name_friendly, servicebus/relayserver "
        "disabled, nginxIngress, enableInference; clusterPurpose=DevTest and inferenceRouterHA=false under 3 "
        "nodes). Whether AML schedules jobs on an extension without them is unverified.",
        "unverified",
        "azure-cli-extensions src/k8s-extension/azext_k8s_extension/partner_extensions/AzureMLKubernetes.py (Create)",
        option="rules.bareExtension: works | jobsStayQueued",
    ),
    # -- role assignments -------------------------------------------------------------------------------
    Rule(
        "authz.ra-name",
        "Role assignments",
        "A role assignment's name is a GUID (400 InvalidRoleAssignmentId).",
        "spec",
        "Microsoft.Authorization RoleAssignments_Create",
    ),
    Rule(
        "authz.ra-exists",
        "Role assignments",
        "The same principal, role and scope under another name: 409 RoleAssignmentExists; the same name "
        "with other values: 400 RoleAssignmentUpdateNotPermitted.",
        "doc",
        "Learn: Troubleshoot Azure RBAC",
    ),
    Rule(
        "authz.ra-scope",
        "Role assignments",
        "The scope must exist (404).",
        "spec",
        "Microsoft.Authorization RoleAssignments_Create",
    ),
    Rule(
        "authz.ra-propagation",
        "Role assignments",
        "A new role assignment may take minutes to grant access, and a deleted one to stop granting it.",
        "doc",
        "Learn: Troubleshoot Azure RBAC (role assignment changes take up to 10 minutes)",
        option="timing.rolePropagationSeconds",
    ),
    Rule(
        "authz.inheritance",
        "Role assignments",
        "An assignment at a management group applies to the subscriptions under it (and its child groups), one at "
        "the tenant root to all; one to an Entra group applies to its members, nested groups included. "
        "$filter=assignedTo('id') lists those too; principalId eq lists the principal's own. World: "
        "managementGroups, groups.",
        "doc",
        "Learn: Understand scope for Azure RBAC; Assign Azure roles to groups; RoleAssignments_ListForScope "
        "($filter=assignedTo)",
    ),
    Rule(
        "authz.ra-list",
        "Role assignments",
        "Listing at a scope returns assignments at, above and below it; $filter=assignedTo('id') keeps one "
        "principal; atScope() keeps those at or above. Paged.",
        "spec",
        "Microsoft.Authorization RoleAssignments_ListForScope",
    ),
    # -- storage --------------------------------------------------------------------------------------------
    Rule(
        "storage.shared-key",
        "Storage",
        "allowSharedKeyAccess null means true; false refuses account-key requests "
        "(KeyBasedAuthenticationNotPermitted).",
        "spec",
        "Microsoft.Storage StorageAccountProperties.allowSharedKeyAccess",
    ),
    Rule(
        "storage.network",
        "Storage",
        "With publicNetworkAccess Disabled or networkAcls.defaultAction Deny, only requests from a subnet in a "
        "virtual-network rule (public access on) or from a network with an Approved private endpoint of the "
        "account get through; others answer 403 AuthorizationFailure.",
        "doc",
        "Learn: Configure Azure Storage firewalls and virtual networks; Data administration (Other general checks)",
    ),
    Rule(
        "acr.pull",
        "AML computes",
        "A job's image in a private Azure Container Registry is pulled with the compute's identity, which needs "
        "AcrPull on the registry; without it the job fails at image pull (401 from the registry's token "
        "endpoint). A registry that does not exist does not resolve.",
        "doc",
        "Learn: Attach a Kubernetes cluster (AcrPull for the compute's managed identity); the error words are "
        "containerd's",
    ),
    Rule(
        "data.credential-datastore-secrets",
        "Data path",
        "A credential-based datastore is read by first fetching its stored credential: whoever reads (the user, "
        "or the compute's identity) needs Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action "
        "on the workspace, else 403 AuthorizationFailed naming that action.",
        "doc",
        "Learn: Data administration (credential-based data authentication: listsecrets)",
    ),
    Rule(
        "storage.blob-errors",
        "Storage",
        "The blob data plane refuses a bearer token for another audience than https://storage.azure.com (or the "
        "account's endpoint) with 401 InvalidAuthenticationInfo, answers 404 ContainerNotFound for a container "
        "that does not exist, and a storage account that does not exist has no DNS record (the client's request "
        "fails before reaching Azure; the sandbox's tests resolve only existing accounts).",
        "doc",
        "Learn: Blob service error codes; Authorize with Microsoft Entra ID (token audience); storage account "
        "endpoints (DNS)",
    ),
    Rule(
        "storage.data-roles",
        "Storage",
        "The blob data plane (https://<account>.blob.<suffix>) authorises a bearer token by a Storage Blob Data "
        "role on the container or above (Reader or Contributor to read, Contributor or Owner to write), else 403 "
        "AuthorizationPermissionMismatch; Owner or Contributor on the account grants no data access. SharedKey "
        "requests pass only where allowSharedKeyAccess is not false (their signatures are not checked).",
        "doc",
        "Learn: Authorize access to blobs using Microsoft Entra ID; Assign an Azure role for access to blob data",
    ),
    Rule(
        "authz.role-definitions",
        "Role assignments",
        "Built-in role definitions are readable at any scope by GUID, with their actions, notActions and "
        "dataActions (the Storage Blob Data roles' blob reads and writes are dataActions); an "
        "unknown GUID answers 404 RoleDefinitionDoesNotExist.",
        "spec",
        "Microsoft.Authorization RoleDefinitions_Get; Learn: Azure built-in roles",
    ),
    # -- AML computes -------------------------------------------------------------------------------------------
    Rule(
        "ml.compute-lro",
        "AML computes",
        "Compute attach (PUT) and detach (DELETE ?underlyingResourceAction=Detach) are long-running.",
        "spec",
        "Microsoft.MachineLearningServices Compute_CreateOrUpdate, Compute_Delete",
    ),
    Rule(
        "ml.compute-delete-missing",
        "AML computes",
        "DELETE of a compute that does not exist answers 204.",
        "spec",
        "Microsoft.MachineLearningServices example Compute/delete.json",
    ),
    Rule(
        "ml.compute-failed",
        "AML computes",
        "A failed attach leaves the compute Failed with properties.provisioningErrors "
        "[{error: {code, message}}]; a Failed compute must be detached before it is attached again (409).",
        "field",
        "field failure F14; ComputeResource.provisioningErrors in the spec",
    ),
    Rule(
        "ml.compute-namespace",
        "AML computes",
        "The attach neither creates nor checks the compute's namespace; a job on a compute whose namespace does "
        "not exist (never created, or deleted since) fails when its pods are created.",
        "doc",
        "Learn: Attach a Kubernetes cluster ('Compute attach won't create the Kubernetes namespace automatically "
        "or validate whether the kubernetes namespace existed'); CLI (v2) Kubernetes compute YAML schema",
        note="the job's error words are not documented; amlwire keeps the namespace in place (it creates it, "
        "also after a deletion) so jobs never meet it",
    ),
    Rule(
        "ml.compute-other-cluster",
        "AML computes",
        "A compute attached to one cluster cannot be re-pointed at another (409).",
        "unverified",
        "",
        note="spec.cluster is immutable in amlwire (CEL), so amlwire never asks",
    ),
    Rule(
        "ml.compute-identity",
        "AML computes",
        "A compute's userAssignedIdentities must exist; the stored identity carries their principalId and clientId.",
        "spec",
        "Microsoft.MachineLearningServices ManagedServiceIdentity",
    ),
    Rule(
        "ml.attach-uami-roles",
        "AML computes",
        "A workspace with a user-assigned identity attaches a Kubernetes cluster only when that identity holds "
        "Reader, Kubernetes Extension Contributor and Azure Kubernetes Service Cluster Admin Role on the cluster; "
        "else a synchronous 400 'AKS role check failed for user assigned identity'. Its body reports the "
        "identity's principalId only under userAssignedIdentities.",
        "doc",
        "Learn: Attach a Kubernetes cluster to an AML workspace (prerequisites); field: AML-Kubernetes 279; "
        "spec: ManagedServiceIdentity (principalId for system-assigned only)",
    ),
    Rule(
        "ml.attach-local-accounts",
        "AML computes",
        "An AKS cluster with local accounts disabled (disableLocalAccounts) cannot be attached: a synchronous 400.",
        "doc",
        "Learn: Deploy the AzureML extension (limitations: local accounts disabled is not supported); the reference "
        "repo re-enables local accounts for the attach",
        note="Azure's exact words are not documented; amlwire says so before it tries (ClusterReady)",
    ),
    Rule(
        "ml.compute-cross-subscription",
        "AML computes",
        "A Kubernetes cluster in another subscription than the workspace's cannot be attached (400).",
        "doc",
        "Learn: Deploy the AzureML extension on AKS or Arc Kubernetes (limitations); field: AML-Kubernetes 155",
    ),
    # -- AML jobs --------------------------------------------------------------------------------------------
    Rule(
        "ml.job-compute",
        "AML jobs",
        "A job needs an existing compute in provisioning state Succeeded.",
        "doc",
        "Learn: Train models with Azure Machine Learning (compute target)",
    ),
    Rule(
        "ml.job-empty-input",
        "AML jobs",
        'An empty-string literal input is refused: "Empty string is not allowed for input value".',
        "field",
        "field failure F21",
    ),
    Rule(
        "ml.job-model-input",
        "AML jobs",
        "A model input must name an existing model version; mlflow_model needs an MLflow model.",
        "field",
        "field failure F22",
    ),
    Rule(
        "ml.job-immutable",
        "AML jobs",
        "A submitted job is immutable but for tags, displayName and description.",
        "doc",
        "Learn: az ml job update (only tags, display name, description)",
    ),
    Rule(
        "ml.job-states",
        "AML jobs",
        "Jobs go NotStarted, Starting, Preparing, Queued, Running, Finalizing, then Completed, Failed or "
        "Canceled; cancel goes through CancelRequested. A job may go NotResponding or Paused and back to Running "
        "(job rule `interruptions`): neither is final.",
        "spec",
        "Microsoft.MachineLearningServices JobStatus; Learn: NotResponding can go back to any previous state",
    ),
    Rule(
        "ml.job-list",
        "AML jobs",
        "The job list is paged, in no specified order (the sandbox: a seeded shuffle, stable across the pages of "
        "one listing); tag=KEY keeps jobs carrying that tag key; archived jobs only with listViewType All or "
        "ArchivedOnly (the SDK asks ActiveOnly).",
        "spec",
        "Microsoft.MachineLearningServices Jobs_List ($skip, jobType, tag, listViewType)",
    ),
    Rule(
        "ml.job-output-uri",
        "AML jobs",
        "An output without a path gets azureml://datastores/workspaceblobstore/paths/azureml/<job>/<output>/.",
        "doc",
        "Learn: Manage inputs and outputs of jobs (default output path)",
    ),
    Rule(
        "ml.model-job-output-uri",
        "AML jobs",
        "A model registered from a job output names it azureml://jobs/<job>/outputs/<output>/paths/<path> or by "
        "the output's datastore URI; the short form without /paths/ is refused.",
        "unverified",
        "Learn: Register models (job output URI); azure-ai-ml JOB_URI_REGEX_FORMAT requires /paths/",
        note="amlwire registers from the datastore URI the service reports for the output",
    ),
    Rule(
        "ml.job-execution",
        "AML jobs",
        "A job runs its command in its image's container: ${{inputs.X}} and ${{outputs.X}} become paths (inputs "
        "downloaded first), literal inputs their values, MLFLOW_TRACKING_URI is the workspace's; exit status 0 is "
        "Completed, anything else Failed with \"Execution failed. User process '...' exited with status code N. "
        "Please check log file 'user_logs/std_log.txt'...\". Outputs mounted read-write (rw_mount, the default) "
        "hold what the job wrote whatever ends it; upload outputs are copied only when it completes. The sandbox "
        "runs commands that use IsaacLab against its stand-in IsaacLab image (world option executeIsaaclab).",
        "doc",
        "Learn: Access data in a job (input and output modes); Learn: Track experiments with MLflow (the tracking "
        "URI is set in jobs); field: the 'Execution failed. User process ... exited with status code' error",
    ),
    Rule(
        "ml.mlflow-run-info",
        "AML jobs",
        "The workspace's MLflow tracking server answers runs/get for a job (its run) with the run's info: "
        "status, and start_time and end_time in milliseconds since the epoch once the run has started and ended.",
        "inference",
        "Learn: Query & compare experiments and runs with MLflow (runs are queried with MLflow's get_run); MLflow "
        "REST API, RunInfo (start_time, end_time)",
        note="amlwire takes a completed job's times from it and reads run history instead when end_time is absent",
    ),
    Rule(
        "ml.job-timeout",
        "AML jobs",
        "A job running past limits.timeout is stopped: as Canceled (default) or Failed.",
        "unverified",
        "Learn: CommandJobLimits (timeout: the job is cancelled after it)",
        option="rules.jobTimeout",
    ),
    Rule(
        "ml.job-compute-detached",
        "AML jobs",
        "A job whose compute is detached (or deleted) while it runs fails: its pods go with the compute.",
        "unverified",
        "Learn: Detach a Kubernetes compute (the compute's workloads are removed)",
        note="the error's wording is not documented; amlwire reports any failure with AML's words and depends "
        "only on the job ending Failed",
    ),
    # -- the IsaacLab image the sandbox runs jobs in -----------------------------------------------------------
    Rule(
        "isaac.fast-shutdown",
        "IsaacLab image",
        "SimulationApp.close() ends the process with status 0 from inside its shutdown (fast shutdown, the "
        "default), whatever happened before.",
        "field",
        "Isaac Sim PR 717; IsaacLab issue 6573",
    ),
    Rule(
        "isaac.gil-hang",
        "IsaacLab image",
        "Kit's teardown can deadlock in native code that holds the GIL (no Python thread runs meanwhile); a job "
        "rule's isaacSim.hang reproduces it at a step.",
        "field",
        "IsaacLab changelog (ISAACLAB_FORCE_EXIT_TIMEOUT); IsaacLab issues 3288, 3782, 3475",
    ),
    Rule(
        "isaac.episodes",
        "IsaacLab image",
        "Every environment resets at once; failures (falls, drops) end episodes early, successes last to the "
        "time-out (locomotion) or end when the success term fires (manipulation); -Play variants have no "
        "curriculum, pushes or noise; a DirectRLEnv has no termination manager.",
        "spec",
        "isaaclab ManagerBasedRLEnv / DirectRLEnv (wheels 2.2.0, 2.3.2); isaaclab_tasks registrations (-Play)",
    ),
    Rule(
        "isaac.loading",
        "IsaacLab image",
        "Hydra overrides (env.x=y, agent.x=y) change the configs; a key the config lacks is 'not in struct'; a "
        "checkpoint whose input size differs from the env's fails in load_state_dict (size mismatch); a camera "
        "task fails without --enable_cameras; runs and checkpoints are picked by name (get_checkpoint_path).",
        "spec",
        "isaaclab_tasks.utils.hydra.hydra_task_config; torch.nn.Module.load_state_dict; isaaclab "
        "SimulationContext camera check; isaaclab_tasks.utils.get_checkpoint_path",
    ),
    Rule(
        "isaac.packages",
        "IsaacLab image",
        "Isaac Sim's python has neither mlflow nor azureml-mlflow, azure-ai-ml or azure-identity; without "
        "azureml-mlflow an azureml:// tracking URI is an unknown scheme.",
        "field",
        "reference repos install mlflow and azureml-mlflow before evaluating; mlflow tracking store registry",
    ),
    # -- the data path: how a job's storage access is judged -----------------------------------------------
    Rule(
        "ml.job-on-node",
        "AML jobs",
        "Where the compute's cluster has a real node (the node tier), a Command job that is not an IsaacLab script "
        "runs as a pod in the compute's namespace as the job service account, on the node's local base image (no "
        "registry: the job's image is not pulled), literals bound; its exit status decides Completed or Failed, "
        "named outputs reach their datastore paths and ./outputs the run's artifacts "
        "(workspaceartifactstore ExperimentRun/dcid.<run>/outputs/).",
        "inference",
        "Learn: Azure ML Kubernetes compute (jobs run as pods in the compute's namespace); Learn: Where to save "
        "and write files for Azure ML experiments (./outputs is uploaded as run artifacts)",
    ),
    Rule(
        "data.sidecar-pod",
        "Data path",
        "Where the compute's cluster has a real node (the node tier), the sidecar's login is not judged but done: "
        "a pod per extension service account, on the node, exchanges its kubelet-projected token at Entra as the "
        "extension's identity and lists the default datastore's container; a failed pod fails the job with "
        "ScriptExecution.StreamAccess.Authentication and the pod's error.",
        "inference",
        "Learn: Workload identity federation (the projected-token exchange); field failures F13",
    ),
    Rule(
        "data.sidecar-credential",
        "Data path",
        "How the AzureML data-capability sidecar gets a storage credential: computeIdentity (documented: the "
        "compute's identity plus a Storage Blob Data role), workloadIdentity (field practice: FICs for the "
        "extension's service accounts, the extension's identityType/userAssignedIdentityResourceId, the "
        "role), or brokenCertificate (field report F23: the sidecar's certificate auth fails whatever the "
        "wiring; only in-container downloads work). A missing link fails the job with "
        "ScriptExecution.StreamAccess.Authentication.",
        "unverified",
        "Learn: Set up authentication between Azure ML and other services (Kubernetes cluster compute); "
        "field failures F13, F23",
        option="clusters[].sidecarCredential: computeIdentity | workloadIdentity | brokenCertificate",
    ),
    Rule(
        "data.outputs-at-end",
        "Data path",
        "A job's outputs reach storage through the data-capability sidecar until the job ends: a wiring that "
        "breaks while it runs (a federated credential or a role removed) fails it at its end with the storage "
        "error, as at its start.",
        "doc",
        "Learn: Access data in a job (output modes rw_mount and upload go through the compute's data access); "
        "field failure F15",
    ),
    Rule(
        "data.stream-error-shape",
        "Data path",
        "A storage-access failure names ScriptExecution.StreamAccess.Authentication flat (in the message and one "
        "innerError), nested (one innerError per segment), or not at all (the message only).",
        "unverified",
        "field reports: Studio shows the dotted code, messages read 'permission denied when access stream'",
        option="rules.streamAccessError: flat | nested | messageOnly",
    ),
    Rule(
        "data.key-based",
        "Data path",
        "A key-based default datastore with allowSharedKeyAccess=false fails every data access, whatever the roles.",
        "field",
        "field failure F17",
    ),
    Rule(
        "ml.system-datastores",
        "AML datastores",
        "A workspace has workspaceblobstore (the default) and workspaceartifactstore; with "
        "systemDatastoresAuthMode accesskey they hold the account key, with identity no credential. Azure does "
        "not let the default datastores be changed afterwards.",
        "doc",
        "Learn: Create datastores (system datastores), az ml workspace create --system-datastores-auth-mode",
    ),
    Rule(
        "ml.datastore-secrets",
        "AML datastores",
        "GET never returns a datastore's secrets; POST listSecrets (workspaces/datastores/listsecrets/action) "
        "returns the stored key or token; an identity-based datastore has none (400).",
        "spec",
        "Microsoft.MachineLearningServices Datastores_ListSecrets; Learn: Data administration",
    ),
    Rule(
        "ml.job-serverless",
        "AML jobs",
        "A command job with no computeId runs on serverless compute.",
        "doc",
        "Learn: Model training on serverless compute",
    ),
    Rule(
        "ml.pipeline-start",
        "AML jobs",
        "A pipeline step reads its inputs and writes its outputs with its own identity setting (or the "
        "pipeline's); a denied step fails the pipeline at its start with the storage error "
        "(AuthorizationPermissionMismatch) and no child job runs.",
        "field",
        "field story: pipelines failing within 30 seconds with AuthorizationPermissionMismatch and no child jobs",
    ),
    Rule(
        "data.job-identity",
        "Data path",
        "Identity-based data in a job is read by: identity user_identity: the submitting user; managed: the "
        "compute's managed identity (a named one when the job gives its client or resource ID); none (AMLToken): "
        "the compute's managed identity as fallback. A datastore with a stored credential uses that credential "
        "instead. The workspace's identity is never used by jobs. A pipeline step's own identity (snake_case: "
        "identity_type, client_id) wins over the pipeline's.",
        "doc",
        "Learn: Set up authentication between Azure ML and other services (user identity note: compute managed "
        "identity is the fallback); Data administration (jobs use the compute identity, not the workspace's); "
        "azure-ai-ml 1.35.2 PipelineJob._to_rest_object (step identity keys, verified by running the SDK)",
    ),
    Rule(
        "data.serverless-identity",
        "Data path",
        "On serverless compute a job without identity reads as the submitting user, and identity managed uses "
        "the workspace's user-assigned identity.",
        "unverified",
        "",
        note="amlwire's doctor prints the principal it assumed for serverless jobs and the world's examples "
        "give serverless jobs an explicit identity",
    ),
    Rule(
        "data.in-container",
        "Data path",
        "A job that downloads a model itself (azureml:NAME:VERSION as a literal or environment variable) "
        "needs a FIC for the job's service account and a Storage Blob Data role.",
        "field",
        "field failure F23 (the InContainer workaround)",
    ),
)

BY_RULE_ID = {rule.id: rule for rule in RULES}


def markdown() -> str:
    """docs/sandbox.md."""
    lines = [
        "# The Azure sandbox's rules",
        "",
        "Generated from `operator/amlwire_sandbox/rules.py` (`make docs`); do not edit. Each rule says where it",
        "comes from: **spec** (Azure REST API specs or the pinned SDK), **doc** (Microsoft Learn), **field** (a",
        "field report), **unverified** (a world option the tests run every way, or a note on why amlwire never",
        "depends on the answer). The code enforcing a rule carries a `# rule: ID` marker.",
        "",
    ]
    for service in dict.fromkeys(rule.service for rule in RULES):
        lines += [f"## {service}", "", "| id | rule | source | where from |", "|---|---|---|---|"]
        for rule in (r for r in RULES if r.service == service):
            where = "; ".join(part for part in (rule.citation, _option(rule), rule.note) if part)
            lines.append(f"| `{rule.id}` | {_cell(rule.says)} | {rule.source} | {_cell(where)} |")
        lines.append("")
    return "\n".join(lines)


def _option(rule: Rule) -> str:
    return f"world option `{rule.option}`" if rule.option else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
