"""The field failures amlwire knows: one table for the operator's messages, `amlwire doctor`, `amlwire lint`
and docs/troubleshooting.md.

Each failure's fix is a template written once. The operator and the doctor render it with the real names
(`BY_ID["F01"].fix(group="rg-aks", cluster="aks")`); the docs render it with placeholders (`<group>`).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from amlwire.api.reasons import REASONS

AUDIENCE = "api://AzureADTokenExchange"


class _Placeholders(dict[str, Any]):
    """Values for a template; a name without a value renders as <name>."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def render(template: str, values: Mapping[str, object] | None = None) -> str:
    return string.Formatter().vformat(template, (), _Placeholders(values or {}))


@dataclass(frozen=True)
class Failure:
    id: str
    title: str
    shows: str  # how it shows itself in the field
    template: str  # the fix, with {placeholders} for the real names
    checked_by: str  # doctor | lint
    commands: dict[str, str] = field(default_factory=dict)  # further named fixes, e.g. F12's update
    # where `amlwire doctor` checks it: (link of the chain, what the check verifies), in the wiring's chain
    # (an AttachedCompute's) and in a job's data path; the chains are derived from these, in table order
    wiring: tuple[str, str] | None = None
    data_path: tuple[str, str] | None = None

    def fix(self, **values: object) -> str:
        return render(self.template, values)

    def command(self, which: str, /, **values: object) -> str:
        return render(self.commands[which], values)


IDENTITY_CLI = "--identity-name {identity} -g {group}"
FIC_DELETE_CLI = f"az identity federated-credential delete {IDENTITY_CLI} -n {{name}}"
ROLE_CLI = (
    "az role assignment create --assignee-object-id {principal} --assignee-principal-type {principal_type} "
    '--role "{role}" --scope {scope}'
)
EXTENSION_CLI = "--name {name} --cluster-type managedClusters --cluster-name {cluster} --resource-group {group}"

FAILURES = (
    Failure(
        "F01",
        "AKS OIDC issuer disabled",
        "oidcIssuerProfile.enabled=false or no issuerURL; Entra cannot trust the cluster's service-account tokens",
        "az aks update -g {group} -n {cluster} --enable-oidc-issuer",
        "doctor",
        wiring=("cluster", "AKS OIDC issuer enabled"),
    ),
    Failure(
        "F02",
        "AKS workload identity disabled",
        "securityProfile.workloadIdentity.enabled is false; pods get no federated token",
        "az aks update -g {group} -n {cluster} --enable-workload-identity",
        "doctor",
        wiring=("cluster", "AKS workload identity enabled"),
    ),
    Failure(
        "F03",
        "Identity missing",
        "the user-assigned identity's GET answers 404",
        "az identity create -g {group} -n {name}, or fix spec.identity.resourceId",
        "doctor",
        wiring=("identity", "user-assigned identity exists"),
    ),
    Failure(
        "F04",
        "Federated credential missing for a service account",
        "no federated credential on the identity with the cluster's issuer and system:serviceaccount:NS:SA",
        f"az identity federated-credential create {IDENTITY_CLI} -n {{name}} --issuer {{issuer}} --subject "
        f"{{subject}} --audiences {AUDIENCE}",
        "doctor",
        wiring=("credentials", "a federated credential per service account"),
    ),
    Failure(
        "F05",
        "Federated credential issuer mismatch",
        "a credential for the subject has another issuer than the "
        "cluster's (often the trailing '/' or letter case); token exchange fails with AADSTS70021",
        f"az identity federated-credential update {IDENTITY_CLI} -n {{name}} --issuer {{issuer}}",
        "doctor",
        {"delete": FIC_DELETE_CLI},
        wiring=("credentials", "credential issuers match the cluster's exactly"),
    ),
    Failure(
        "F06",
        "Federated credential audience wrong",
        f"a credential for the issuer and subject has an audience other than {AUDIENCE}",
        f"az identity federated-credential update {IDENTITY_CLI} -n {{name}} --audiences {AUDIENCE}",
        "doctor",
        {"delete": FIC_DELETE_CLI},
        wiring=("credentials", "credential audiences are api://AzureADTokenExchange"),
    ),
    Failure(
        "F07",
        "Federated credential cap reached",
        "20 federated credentials already on the identity (Azure's limit)",
        f"az identity federated-credential list {IDENTITY_CLI}; delete the unused ones, or use another "
        f"identity in spec.identity.resourceId",
        "doctor",
        {"delete": FIC_DELETE_CLI},
        wiring=("credentials", "room under the 20-credential cap"),
    ),
    Failure(
        "F08",
        "Concurrent federated credential writes",
        "Azure answered 409 ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
        "find the other tool writing federated credentials of this identity at the same time (Terraform, "
        "Bicep, another amlwire) and serialize it",
        "doctor",
        wiring=("credentials", "credential writes not colliding"),
    ),
    Failure(
        "F09",
        "Service account missing",
        "the service account does not exist in its namespace",
        "kubectl create serviceaccount -n {namespace} {name}, or wait for the AzureML extension",
        "doctor",
        {
            "extension-owned": "the AzureML extension creates {namespace}/{name} (check ExtensionReady), or set "
            "spec.serviceAccounts[].create: true",
            "namespace": "kubectl create namespace {namespace}",
        },
        wiring=("service accounts", "service accounts exist"),
    ),
    Failure(
        "F10",
        "Service account annotation missing or wrong",
        "azure.workload.identity/client-id is absent or is not the identity's client ID",
        "kubectl annotate serviceaccount -n {namespace} {name} azure.workload.identity/client-id={client_id} "
        "--overwrite",
        "doctor",
        wiring=("service accounts", "service accounts carry the client ID"),
    ),
    Failure(
        "F11",
        "Job pods not labelled for workload identity",
        'job pods lack azure.workload.identity/use: "true", '
        "so the webhook injects no AZURE_FEDERATED_TOKEN_FILE and no projected token volume",
        'make job pods in namespace {namespace} carry the label azure.workload.identity/use: "true" (the '
        "workload identity webhook mutates only labelled pods)",
        "doctor",
        wiring=("jobs", "job pods labelled for workload identity"),
    ),
    Failure(
        "F12",
        "AzureML extension missing or failed",
        "the extension's GET answers 404 or provisioningState is Failed",
        f"az k8s-extension create --extension-type Microsoft.AzureML.Kubernetes {EXTENSION_CLI} --config {{config}}",
        "doctor",
        {"update": f"az k8s-extension update {EXTENSION_CLI} --config {{config}}"},
        wiring=("extension", "AzureML extension installed and healthy"),
    ),
    Failure(
        "F13",
        "Extension identity not set",
        "identityType or userAssignedIdentityResourceId is absent or names another identity",
        f"az k8s-extension update {EXTENSION_CLI} --config identityType=UserAssigned "
        f"userAssignedIdentityResourceId={{identity_id}}",
        "doctor",
        wiring=("extension", "extension set to the user-assigned identity"),
    ),
    Failure(
        "F14",
        "Compute not attached, attached without the identity, or Failed",
        "compute 404, identity None or SystemAssigned, or provisioningState Failed",
        "az ml compute attach --type Kubernetes --name {compute} --resource-id {cluster_id} --identity-type "
        "UserAssigned --user-assigned-identities {identity_id} --namespace {namespace} -g {workspace_group} "
        "-w {workspace}",
        "doctor",
        {"detach": "az ml compute detach --name {compute} -g {workspace_group} -w {workspace}"},
        wiring=("compute", "compute attached with the identity and healthy"),
    ),
    Failure(
        "F15",
        "Data-plane role missing",
        "no Storage Blob Data Reader/Contributor for the identity on the "
        "datastore's storage account (ScriptExecution.StreamAccess.Authentication, "
        "AuthorizationPermissionMismatch)",
        "az role assignment create --assignee-object-id {principal} --assignee-principal-type ServicePrincipal "
        '--role "{role}" --scope {scope}',
        "doctor",
        wiring=("access", "data-plane roles granted"),
    ),
    Failure(
        "F16",
        "Role assignment still propagating",
        "the assignment is younger than the propagation window; access may still be denied",
        "wait: Azure RBAC applies new assignments within minutes, sometimes longer; retry after {until}",
        "doctor",
        wiring=("access", "role assignments old enough to be effective"),
        data_path=("roles", "role assignments old enough to be effective"),
    ),
    Failure(
        "F17",
        "Shared keys disabled with a key-based datastore",
        "allowSharedKeyAccess=false while the "
        "workspace's datastores authenticate with account keys (system_datastores_auth_mode accesskey)",
        "switch the workspace's datastores to identity-based access (az ml datastore update ... --identity) or, "
        "if the default datastore cannot change, create a new workspace with system_datastores_auth_mode=identity",
        "doctor",
        wiring=("access", "datastore reachable with shared keys off"),
        data_path=("datastores", "shared keys allowed where datastores use keys"),
    ),
    Failure(
        "F18",
        "Workspace identity lacks cluster roles",
        "the workspace's identity lacks a role on the cluster; a user-assigned one needs all of Reader, Kubernetes "
        "Extension Contributor and Azure Kubernetes Service Cluster Admin Role, or the attach gets 400 'AKS role "
        "check failed for user assigned identity'",
        "az role assignment create --assignee-object-id {principal} --assignee-principal-type ServicePrincipal "
        '--role "<role>" --scope {cluster_id}, once for each of Reader, "Kubernetes Extension Contributor" and '
        '"Azure Kubernetes Service Cluster Admin Role"',
        "doctor",
        wiring=("access", "workspace identity holds its cluster roles"),
    ),
    Failure(
        "F19",
        "AKS local accounts disabled",
        "disableLocalAccounts=true, which the AzureML extension does not support",
        "the AzureML extension does not support clusters without local accounts: az aks update -g {group} -n "
        "{cluster} --enable-local-accounts, or another cluster",
        "doctor",
        wiring=("cluster", "AKS local accounts allow the attach"),
    ),
    Failure(
        "F20",
        "Command-job input typed as literal",
        "type: string/integer/number/boolean under a command job's inputs",
        "write plain literals: `seed: 42`",
        "lint",
    ),
    Failure(
        "F21",
        "Empty-string input",
        '"" as an input value: "Empty string is not allowed for input value"',
        "omit the input or use a sentinel",
        "lint",
    ),
    Failure(
        "F22",
        "Non-MLflow checkpoint as mlflow_model",
        "a model input of type mlflow_model for a plain checkpoint",
        "use type custom_model",
        "lint",
    ),
    Failure(
        "F23",
        "Data-capability sidecar using certificate auth",
        "sidecar log `failed to load certificate ... .pfx: no such file`",
        "set spec.model.delivery: InContainer on AmlJobs (the job downloads the model with its own identity), "
        "and repair the AzureML extension's data-capability identity",
        "doctor",
        wiring=("jobs", "data-capability sidecar authenticates"),
    ),
    Failure(
        "F24",
        "The principal a job reads data with lacks a storage data role",
        "a job's identity-based datastore is read by the compute's managed identity (identity managed, or none) or "
        "the submitting user (identity user_identity), and that principal holds no Storage Blob Data role at the "
        "account or above: the job (or every step of a pipeline) fails at its start with "
        "AuthorizationPermissionMismatch",
        f"{ROLE_CLI}",
        "doctor",
        data_path=("roles", "the job's reader holds a storage data role"),
    ),
    Failure(
        "F25",
        "Storage roles granted only to the workspace identity",
        "the workspace's managed identity holds a Storage Blob Data role on the account but the principal the "
        "job reads with does not; jobs never use the workspace identity for data (it serves studio preview and "
        "profiling), so waiting for RBAC to propagate never helps",
        f"grant the role to the job's reader instead: {ROLE_CLI}",
        "doctor",
        data_path=("roles", "roles not only on the workspace identity"),
    ),
    Failure(
        "F26",
        "Key-based datastore without credentials",
        "a datastore that authenticates with an account key or SAS token holds none (listSecrets returns an empty "
        "value): every read fails with AuthenticationFailed",
        "recreate the datastore with its credential, or as identity-based: az ml datastore create --file "
        "{datastore}.yml -g {workspace_group} -w {workspace}",
        "doctor",
        {
            "system": "Azure does not let a workspace's default datastores be changed, so this workspace cannot "
            "be repaired in place: create a new workspace with identity-based system datastores (az ml workspace "
            "create -n <new-workspace> -g {workspace_group} --system-datastores-auth-mode identity), grant its "
            'compute identity "Storage Blob Data Contributor" on the new storage account, and move the jobs there',
        },
        data_path=("datastores", "credential-based datastores keep a credential"),
    ),
    Failure(
        "F27",
        "Compute without a managed identity for a managed-identity job",
        "the job reads identity-based data with the compute's managed identity (identity managed, or none) but "
        "the compute cluster has none (or not the one the job names)",
        "az ml compute update --name {compute} -g {workspace_group} -w {workspace} --identity-type SystemAssigned "
        "(or --identity-type UserAssigned --user-assigned-identities <identity-id>), then grant it the data role",
        "doctor",
        data_path=("compute", "the compute has the identity the job reads with"),
    ),
    Failure(
        "F28",
        "A principal cannot read a credential-based datastore's secrets",
        "a datastore on the job's path keeps a credential and a principal that fetches it lacks "
        "Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action: the user (the CLI and SDK "
        "read it to upload code and local inputs), or the managed identity the job reads with at run time (a "
        "Kubernetes compute's attached identity), which then fails with 403 AuthorizationFailed",
        "az role assignment create --assignee-object-id {principal} --assignee-principal-type {principal_type} --role "
        '"AzureML Data Scientist" --scope {workspace_id}',
        "doctor",
        data_path=("datastores", "the user and the job's identity may read datastore secrets"),
    ),
    Failure(
        "F29",
        "Storage closed to the compute's network",
        "the storage account denies public network access (publicNetworkAccess Disabled or defaultAction Deny) "
        "and the compute is in no subnet with an approved private endpoint or virtual-network rule of the "
        "account: reads fail with AuthorizationFailure",
        "az network private-endpoint create -g <network-group> -n pe-{account}-blob --subnet <compute-subnet-id> "
        "--private-connection-resource-id {account_id} --group-id blob --connection-name {account}-blob, or run "
        "the job on a compute in a network that has one",
        "doctor",
        data_path=("network", "storage reachable from the compute's network"),
    ),
)
BY_ID = {f.id: f for f in FAILURES}

Chain = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (link, ((failure, what its check verifies), ...))
# The links of each chain, in the order the wiring (or a job's data) flows through them.
WIRING_LINKS = ("cluster", "identity", "credentials", "service accounts", "extension", "access", "compute", "jobs")
DATA_PATH_LINKS = ("compute", "datastores", "roles", "network")


def _chain(links: tuple[str, ...], position: Callable[[Failure], tuple[str, str] | None]) -> Chain:
    placed = [(found, f.id) for f in FAILURES if (found := position(f)) is not None]
    unknown = sorted({link for (link, _), _ in placed} - set(links))
    if unknown:
        raise ValueError(f"failures placed in links the chain does not have: {unknown}")
    return tuple(
        (link, tuple((failure, verifies) for (at, verifies), failure in placed if at == link)) for link in links
    )


WIRING_CHAIN = _chain(WIRING_LINKS, lambda f: f.wiring)
DATA_PATH_CHAIN = _chain(DATA_PATH_LINKS, lambda f: f.data_path)


def reasons_of(failure_id: str) -> list[str]:
    """The condition and event reasons that point at a failure."""
    return [r.name for r in REASONS.values() if r.failure == failure_id]


def troubleshooting_markdown() -> str:
    """docs/troubleshooting.md, from the same table the operator, the doctor and the linter use."""
    lines = [
        "# Troubleshooting: every field failure amlwire knows",
        "",
        "Generated from `operator/amlwire/domain/failures.py` by `make docs`; `amlwire doctor` and "
        "`amlwire lint` report these same ids, and the operator's conditions carry the reasons listed. Do not "
        "edit by hand.",
        "",
        "| id | failure | how it shows | fix | condition reasons | checked by |",
        "|---|---|---|---|---|---|",
    ]
    for f in FAILURES:
        reasons = ", ".join(f"`{r}`" for r in reasons_of(f.id)) or "-"
        cells = [f.id, f.title, f.shows, f.fix(), reasons, f"`amlwire {f.checked_by}`"]
        lines.append("| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
