"""The field failures amlwire knows: one table for `amlwire doctor`, `amlwire lint` and docs/troubleshooting.md."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    id: str
    title: str
    shows: str  # how it shows itself in the field
    fix: str  # the generic fix; doctor fills in the real names
    checked_by: str  # doctor | lint


FAILURES = (
    Failure(
        "F01",
        "AKS OIDC issuer disabled",
        "oidcIssuerProfile.enabled=false or no issuerURL; Entra cannot trust the cluster's service-account tokens",
        "az aks update -g <group> -n <cluster> --enable-oidc-issuer",
        "doctor",
    ),
    Failure(
        "F02",
        "AKS workload identity disabled",
        "securityProfile.workloadIdentity.enabled is false; pods get no federated token",
        "az aks update -g <group> -n <cluster> --enable-workload-identity",
        "doctor",
    ),
    Failure(
        "F03",
        "Identity missing",
        "the user-assigned identity's GET answers 404",
        "az identity create -g <group> -n <name>, or fix spec.identity.resourceId",
        "doctor",
    ),
    Failure(
        "F04",
        "Federated credential missing for a service account",
        "no federated credential on the identity with the cluster's issuer and system:serviceaccount:NS:SA",
        "az identity federated-credential create "
        "--identity-name <identity> -g <group> -n <name> --issuer <issuer> --subject <subject> --audiences "
        "api://AzureADTokenExchange (amlwire does this)",
        "doctor",
    ),
    Failure(
        "F05",
        "Federated credential issuer mismatch",
        "a credential for the subject has another issuer than the "
        "cluster's (often the trailing '/' or letter case); token exchange fails with AADSTS70021",
        "recreate the credential with the cluster's exact issuer URL",
        "doctor",
    ),
    Failure(
        "F06",
        "Federated credential audience wrong",
        "a credential for the issuer and subject has an audience other than api://AzureADTokenExchange",
        "set its audience to api://AzureADTokenExchange",
        "doctor",
    ),
    Failure(
        "F07",
        "Federated credential cap reached",
        "20 federated credentials already on the identity (Azure's limit)",
        "delete unused credentials or use another identity",
        "doctor",
    ),
    Failure(
        "F08",
        "Concurrent federated credential writes",
        "Azure answered 409 ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
        "serialize writes to one identity (amlwire does; check other tools writing the same identity at the same time)",
        "doctor",
    ),
    Failure(
        "F09",
        "Service account missing",
        "the service account does not exist in its namespace",
        "kubectl create serviceaccount -n <ns> <name>, or wait for the AzureML extension",
        "doctor",
    ),
    Failure(
        "F10",
        "Service account annotation missing or wrong",
        "azure.workload.identity/client-id is absent or is not the identity's client ID",
        "kubectl annotate serviceaccount -n <ns> <name> azure.workload.identity/client-id=<client id> --overwrite",
        "doctor",
    ),
    Failure(
        "F11",
        "Job pods not labelled for workload identity",
        'job pods lack azure.workload.identity/use: "true", '
        "so the webhook injects no AZURE_FEDERATED_TOKEN_FILE and no projected token volume",
        "label the job pods azure.workload.identity/use=true (the webhook only mutates labelled pods)",
        "doctor",
    ),
    Failure(
        "F12",
        "AzureML extension missing or failed",
        "the extension's GET answers 404 or provisioningState is Failed",
        "az k8s-extension create/update --extension-type Microsoft.AzureML.Kubernetes ...",
        "doctor",
    ),
    Failure(
        "F13",
        "Extension identity not set",
        "identityType or userAssignedIdentityResourceId is absent or names another identity",
        "az k8s-extension update ... --config identityType=UserAssigned userAssignedIdentityResourceId=<identity id>",
        "doctor",
    ),
    Failure(
        "F14",
        "Compute not attached, attached without the identity, or Failed",
        "compute 404, identity None or SystemAssigned, or provisioningState Failed",
        "attach with identity: UserAssigned (detach a Failed compute first: az ml compute detach)",
        "doctor",
    ),
    Failure(
        "F15",
        "Data-plane role missing",
        "no Storage Blob Data Reader/Contributor for the identity on the "
        "datastore's storage account (ScriptExecution.StreamAccess.Authentication, "
        "AuthorizationPermissionMismatch)",
        "az role assignment create --assignee-object-id <principal> "
        '--assignee-principal-type ServicePrincipal --role "Storage Blob Data Contributor" --scope <account>',
        "doctor",
    ),
    Failure(
        "F16",
        "Role assignment still propagating",
        "the assignment is younger than the propagation window; access may still be denied",
        "wait until the time given",
        "doctor",
    ),
    Failure(
        "F17",
        "Shared keys disabled with a key-based datastore",
        "allowSharedKeyAccess=false while the "
        "workspace's datastores authenticate with account keys (system_datastores_auth_mode accesskey)",
        "use identity-based datastores; if the default datastore cannot change, a new workspace",
        "doctor",
    ),
    Failure(
        "F18",
        "Workspace identity lacks cluster roles",
        "the workspace's identity has no Reader, Kubernetes "
        "Extension Contributor or AKS cluster admin role on the cluster",
        "az role assignment create --assignee-object-id <workspace principal> --role Reader --scope <cluster>",
        "doctor",
    ),
    Failure(
        "F19",
        "AKS local accounts disabled",
        "disableLocalAccounts=true, which the AzureML extension does not support",
        "a documented limitation: enable local accounts (az aks update --enable-local-accounts) or use another cluster",
        "doctor",
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
        "model.delivery: InContainer (SDK download with workload identity)",
        "doctor",
    ),
)
BY_ID = {f.id: f for f in FAILURES}


def troubleshooting_markdown() -> str:
    """docs/troubleshooting.md, from the same table the doctor and the linter use."""
    lines = [
        "# Troubleshooting: every field failure amlwire knows",
        "",
        "Generated from `operator/amlwire/domain/failures.py` by `make docs`; `amlwire doctor` and "
        "`amlwire lint` report these same ids. Do not edit by hand.",
        "",
        "| id | failure | how it shows | fix | checked by |",
        "|---|---|---|---|---|",
    ]
    for f in FAILURES:
        cells = [f.id, f.title, f.shows, f.fix, f"`amlwire {f.checked_by}`"]
        lines.append("| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
