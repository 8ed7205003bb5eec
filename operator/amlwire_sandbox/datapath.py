"""A job's data path on compute clusters and serverless compute: which principal reads each datastore, and
whether storage lets it (Kubernetes computes go through the data-capability sidecar: Cloud.storage_access_problem).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from amlwire_sandbox import ids
from amlwire_sandbox.cloud import LIST_SECRETS, STORAGE_DATA_ROLES, STORAGE_WRITE_ROLES, Cloud
from amlwire_sandbox.state import Resource, key

# the short form, and the long one azure-ai-ml writes when it registers a model from a job output
DATASTORE_URI = re.compile(
    r"^azureml://(?:subscriptions/[^/]+/resourcegroups/[^/]+/workspaces/[^/]+/)?datastores/([^/]+)/paths/",
    re.IGNORECASE,
)
PERMISSION_MISMATCH = "AuthorizationPermissionMismatch"
NETWORK_DENIED = "AuthorizationFailure"
KEY_REFUSED = "KeyBasedAuthenticationNotPermitted"
NO_IDENTITY = "ComputeIdentityNotFound"


@dataclass(frozen=True)
class Step:
    """One command job, or one step of a pipeline job, as AML runs it."""

    name: str
    compute_id: str | None  # None: serverless
    identity: dict[str, Any] | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass(frozen=True)
class Denied:
    code: str
    message: str


def steps_of(props: dict[str, Any]) -> list[Step]:
    """The command steps of a job body: itself, or each child of a pipeline (children inherit the pipeline's
    compute and identity when they name none)."""
    if props.get("jobType") != "Pipeline":
        return [
            Step(
                "", props.get("computeId"), props.get("identity"), props.get("inputs") or {}, props.get("outputs") or {}
            )
        ]
    settings = props.get("settings") or {}
    default_compute = props.get("computeId") or settings.get("default_compute") or settings.get("defaultCompute")
    return [
        Step(
            name,
            child.get("computeId") or child.get("compute") or default_compute,
            child.get("identity") or props.get("identity"),
            child.get("inputs") or {},
            child.get("outputs") or {},
        )
        for name, child in (props.get("jobs") or {}).items()
        if isinstance(child, dict)
    ]


def _input_type(value: dict[str, Any]) -> str:
    return str(value.get("jobInputType") or value.get("job_input_type") or value.get("type") or "")


class DataPath:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.state = cloud.state

    def denied(self, workspace: Resource, step: Step, submitter: str | None) -> Denied | None:
        """Why the step cannot read its inputs or write its outputs at its start, or None when it can."""
        compute = self.state.get(step.compute_id) if step.compute_id else None
        if step.compute_id and compute is None:
            return Denied("UserError", f"Compute '{step.compute_id.rsplit('/', 1)[-1]}' no longer exists.")
        for datastore, write in self._datastores(workspace, step):
            denied = self._access(workspace, compute, step, submitter, datastore, write)
            if denied is not None:
                return denied
        return None

    def default_datastore(self, workspace_id: str) -> Resource | None:
        return next(
            (d for d in self.state.children(workspace_id, ids.DATASTORE) if d.properties.get("isDefault")), None
        )

    def _datastores(self, workspace: Resource, step: Step) -> list[tuple[Resource, bool]]:
        """(datastore, written) for each datastore the step touches: inputs read, outputs write (an output with
        no path goes to the workspace's default datastore)."""
        used: list[tuple[Resource, bool]] = []
        default = self.default_datastore(workspace.id)
        for value in step.inputs.values():
            if isinstance(value, dict) and _input_type(value) != "literal":
                found = self.datastore_at(workspace.id, str(value.get("uri") or value.get("path") or ""))
                if found is not None:
                    used.append((found[0], False))
        for value in step.outputs.values():
            uri = str((value or {}).get("uri") or "")
            datastore = found[0] if (found := self.datastore_at(workspace.id, uri)) else None
            if datastore is None and not DATASTORE_URI.match(uri):
                datastore = default
            if datastore is not None:
                used.append((datastore, True))
        return used

    def datastore_at(self, workspace_id: str, uri: str) -> tuple[Resource, str] | None:
        """The datastore an azureml://datastores/NAME/paths/PATH URI names, and PATH; None when there is none."""
        found = DATASTORE_URI.match(uri)
        datastore = self.state.get(f"{workspace_id}/datastores/{found.group(1)}") if found else None
        return (datastore, uri[found.end() :]) if found and datastore is not None else None

    def _access(
        self,
        workspace: Resource,
        compute: Resource | None,
        step: Step,
        submitter: str | None,
        datastore: Resource,
        write: bool,
    ) -> Denied | None:
        props = datastore.properties
        account_id = account_of(datastore)
        storage = self.state.get(account_id)
        if storage is None:
            return Denied(
                "UserError", f"Storage account '{props['accountName']}' of datastore '{datastore.name}' was not found."
            )
        if self._network_closed(storage, compute):  # rule: storage.network
            return Denied(NETWORK_DENIED, "This request is not authorized to perform this operation.")
        principal = self._reader(workspace, compute, step.identity, submitter)
        if props["credentials"]["credentialsType"] != "None":
            # rule: data.credential-datastore-secrets (who reads fetches the stored credential first)
            if isinstance(principal, str) and principal and not self.cloud.may(principal, LIST_SECRETS, workspace.id):
                return Denied("AuthorizationFailed", self.cloud.not_permitted(principal, LIST_SECRETS, workspace.id))
            return self._credential_access(storage, datastore)
        if isinstance(principal, Denied):
            return principal
        container = f"{account_id}/blobServices/default/containers/{props['containerName']}"
        if not self.cloud.has_access(principal, container, STORAGE_WRITE_ROLES if write else STORAGE_DATA_ROLES):
            return Denied(
                PERMISSION_MISMATCH, "This request is not authorized to perform this operation using this permission."
            )
        return None

    def _credential_access(self, storage: Resource, datastore: Resource) -> Denied | None:
        # rule: storage.shared-key (account keys and the SAS tokens they sign)
        if storage.properties.get("allowSharedKeyAccess") is False:
            return Denied(KEY_REFUSED, "Key based authentication is not permitted on this storage account.")
        if datastore.extra.get("secret") == "empty":  # rule: ml.datastore-secrets
            return Denied(
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization header is formed "
                "correctly including the signature.",
            )
        return None

    def _reader(
        self, workspace: Resource, compute: Resource | None, identity: dict[str, Any] | None, submitter: str | None
    ) -> str | Denied:
        """The principal that reads identity-based data for the job."""
        # rule: data.job-identity
        identity = _camel(identity or {})
        kind = str(identity.get("identityType") or "AMLToken").lower()
        if kind == "useridentity":
            return submitter or ""
        if compute is None:  # rule: data.serverless-identity
            if kind == "managed":
                assigned = (workspace.body.get("identity") or {}).get("userAssignedIdentities") or {}
                if not assigned:
                    return Denied(
                        NO_IDENTITY,
                        "Serverless jobs with a managed identity need a user-assigned identity on the workspace.",
                    )
                return str(next(iter(assigned.values()))["principalId"])
            return submitter or ""
        principals = _compute_principals(compute)
        wanted = str(identity.get("clientId") or identity.get("resourceId") or "")
        if wanted:
            principals = [(principal, names) for principal, names in principals if key(wanted) in names]
        if not principals:
            return Denied(NO_IDENTITY, f"Compute '{compute.name}' has no managed identity to access data with.")
        return principals[0][0]

    def _network_closed(self, storage: Resource, compute: Resource | None) -> bool:
        props = storage.properties
        acls = props.get("networkAcls") or {}
        public = props.get("publicNetworkAccess", "Enabled") != "Disabled"
        if open_to_the_internet(storage):
            return False
        subnet = self._subnet_of(compute)
        if subnet is None:
            return True
        if public and any(key(rule.get("id", "")) == key(subnet) for rule in acls.get("virtualNetworkRules") or []):
            return False
        network = _network_of(subnet)
        for connection in props.get("privateEndpointConnections") or []:
            values = connection.get("properties") or {}
            approved = (values.get("privateLinkServiceConnectionState") or {}).get("status") == "Approved"
            endpoint = self.state.get((values.get("privateEndpoint") or {}).get("id", ""))
            if approved and endpoint is not None and _network_of(endpoint.properties["subnet"]["id"]) == network:
                return False
        return True

    def _subnet_of(self, compute: Resource | None) -> str | None:
        if compute is None:
            return None
        props = compute.properties
        if props.get("computeType") == "Kubernetes":
            cluster = self.state.get(props.get("resourceId") or "")
            pools = (cluster.properties.get("agentPoolProfiles") or []) if cluster else []
            return next((p["vnetSubnetID"] for p in pools if p.get("vnetSubnetID")), None)
        return ((props.get("properties") or {}).get("subnet") or {}).get("id")


def _compute_principals(compute: Resource) -> list[tuple[str, set[str]]]:
    """(principal, names it answers to) of the compute's managed identities, system-assigned first."""
    identity = compute.body.get("identity") or {}
    found: list[tuple[str, set[str]]] = []
    if "SystemAssigned" in str(identity.get("type")) and identity.get("principalId"):
        found.append((identity["principalId"], set()))
    for rid, values in (identity.get("userAssignedIdentities") or {}).items():
        found.append((values["principalId"], {key(rid), key(values.get("clientId", ""))}))
    return found


def _network_of(subnet: str) -> str:
    return key(subnet).split("/subnets/", 1)[0]


def account_of(datastore: Resource) -> str:
    """The resource ID of a datastore's storage account."""
    props = datastore.properties
    return ids.resource_id(props["subscriptionId"], props["resourceGroup"], ids.STORAGE, props["accountName"])


def open_to_the_internet(storage: Resource) -> bool:
    """Public network access on and no firewall default of Deny (rule storage.network)."""
    props = storage.properties
    public = props.get("publicNetworkAccess", "Enabled") != "Disabled"
    return public and (props.get("networkAcls") or {}).get("defaultAction", "Allow") == "Allow"


def _camel(identity: dict[str, Any]) -> dict[str, Any]:
    """A pipeline step's identity arrives in snake_case (identity_type, client_id: azure-ai-ml 1.35.2)."""
    return {"".join(p if i == 0 else p.title() for i, p in enumerate(k.split("_"))): v for k, v in identity.items()}
