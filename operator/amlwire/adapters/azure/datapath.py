"""The reads `amlwire doctor` makes of a job's data path: computes of any type, datastores, storage networking,
role definitions and jobs (mixed into AzureAdapter). Read-only: listSecrets is a POST that changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from amlwire.adapters.azure.clients import ML_API_VERSION, AzureClients
from amlwire.domain.azure import ResourceId, WorkspaceRef, subscription_of
from amlwire.domain.datapath import (
    SERVERLESS,
    ComputeIdentities,
    DatastoreInfo,
    JobPath,
    RoleDefinitionInfo,
    StorageNetwork,
    job_path,
)
from amlwire.domain.errors import AzureNotFound

NETWORK_API_VERSION = "2024-05-01"


class DataPathReads:
    clients: AzureClients
    _call: Callable[..., Any]

    def _get(self, subscription: str, route: str, path: str, action: str, api_version: str = ML_API_VERSION) -> Any:
        with self._call(route, "GET", action, subscription):
            return self.clients.get(subscription, path, api_version)

    def _pages(self, subscription: str, route: str, path: str, action: str) -> Iterator[dict[str, Any]]:
        page = self._get(subscription, route, path, action)
        while True:
            yield from page.get("value") or []
            if not page.get("nextLink"):
                return
            with self._call(route, "GET", action, subscription):
                page = self.clients.send(subscription, page["nextLink"])

    def get_compute_identities(self, workspace: WorkspaceRef, name: str) -> ComputeIdentities:
        if name == SERVERLESS:
            return ComputeIdentities(SERVERLESS, "Serverless")
        body = self._get(workspace.subscription, "ml.compute", f"{workspace.id}/computes/{name}", f"get compute {name}")
        identity = body.get("identity") or {}
        props = body.get("properties") or {}
        subnet = ((props.get("properties") or {}).get("subnet") or {}).get("id")
        if props.get("computeType") == "Kubernetes" and props.get("resourceId"):
            subnet = self._cluster_subnet(props["resourceId"])
        return ComputeIdentities(
            name=body.get("name", name),
            kind=str(props.get("computeType") or "Unknown"),
            system_principal=identity.get("principalId") if "SystemAssigned" in str(identity.get("type")) else None,
            user_assigned={
                rid: (str(v.get("principalId") or ""), str(v.get("clientId") or ""))
                for rid, v in (identity.get("userAssignedIdentities") or {}).items()
            },
            subnet=subnet,
        )

    def _cluster_subnet(self, cluster_id: str) -> str | None:
        rid = ResourceId.parse(cluster_id)
        with self._call("aks.cluster", "GET", f"get AKS cluster {rid.name}", rid.subscription):
            cluster = self.clients.containers(rid.subscription).managed_clusters.get(rid.group, rid.name)
        return next((p.vnet_subnet_id for p in cluster.agent_pool_profiles or [] if p.vnet_subnet_id), None)

    def list_datastores(self, workspace: WorkspaceRef) -> list[DatastoreInfo]:
        found = self._pages(
            workspace.subscription, "ml.datastore.list", f"{workspace.id}/datastores", "list datastores"
        )
        return [_datastore(body, workspace) for body in found]

    def datastore_has_secret(self, workspace: WorkspaceRef, name: str) -> bool:
        """Whether a credential-based datastore stores a key or token (its value is never kept or shown)."""
        path = f"{workspace.id}/datastores/{name}/listSecrets"
        url = f"{self.clients.settings.arm_endpoint}{path}?api-version={ML_API_VERSION}"
        with self._call(
            "ml.datastore.secrets", "POST", f"read whether datastore {name} keeps a credential", workspace.subscription
        ):
            secrets = self.clients.send(workspace.subscription, url, method="POST")
        return any(secrets.get(field) for field in ("key", "sasToken", "clientSecret", "certificate"))

    def get_storage_network(self, account_id: str) -> StorageNetwork:
        rid = ResourceId.parse(account_id)
        with self._call("storage.account", "GET", f"get storage account {rid.name}", rid.subscription):
            account = self.clients.storage(rid.subscription).storage_accounts.get_properties(rid.group, rid.name)
        rules = account.network_rule_set
        endpoints = [
            c.private_endpoint.id
            for c in account.private_endpoint_connections or []
            if c.private_endpoint is not None
            and c.private_link_service_connection_state is not None
            and _text(c.private_link_service_connection_state.status) == "Approved"
        ]
        return StorageNetwork(
            id=account.id,
            allow_shared_key_access=account.allow_shared_key_access,
            public_network_access=_text(account.public_network_access) or "Enabled",
            default_action=_text(getattr(rules, "default_action", None)) or "Allow",
            network_rules=tuple(
                r.virtual_network_resource_id for r in getattr(rules, "virtual_network_rules", None) or []
            ),
            endpoint_subnets=tuple(filter(None, (self._endpoint_subnet(e) for e in endpoints))),
        )

    def _endpoint_subnet(self, endpoint_id: str) -> str | None:
        rid = ResourceId.parse(endpoint_id)
        try:
            body = self._get(
                rid.subscription,
                "network.privateEndpoint",
                endpoint_id,
                f"get private endpoint {rid.name}",
                NETWORK_API_VERSION,
            )
        except AzureNotFound:
            return None
        return ((body.get("properties") or {}).get("subnet") or {}).get("id")

    def get_role_definition(self, definition_id: str) -> RoleDefinitionInfo:
        subscription = subscription_of(definition_id)
        with self._call("authz.roleDefinition", "GET", f"get role definition {definition_id}", subscription):
            found = self.clients.authorization(subscription).role_definitions.get_by_id(definition_id)
        permissions = found.permissions or []
        return RoleDefinitionInfo(
            guid=str(found.name).lower(),
            name=str(found.role_name),
            actions=tuple(a for p in permissions for a in p.actions or []),
            not_actions=tuple(a for p in permissions for a in p.not_actions or []),
        )

    def get_job_path(self, workspace: WorkspaceRef, name: str) -> JobPath:
        body = self._get(workspace.subscription, "ml.job", f"{workspace.id}/jobs/{name}", f"get AML job {name}")
        return job_path(body)

    def workspace_user_assigned(self, workspace: WorkspaceRef) -> tuple[str, ...]:
        body = self._get(workspace.subscription, "ml.workspace", workspace.id, f"get AML workspace {workspace.name}")
        assigned = (body.get("identity") or {}).get("userAssignedIdentities") or {}
        return tuple(str(v.get("principalId")) for v in assigned.values() if v.get("principalId"))


def _datastore(body: dict[str, Any], workspace: WorkspaceRef) -> DatastoreInfo:
    props = body.get("properties") or {}
    account = str(
        ResourceId(
            props.get("subscriptionId") or workspace.subscription,
            props.get("resourceGroup") or workspace.group,
            "Microsoft.Storage",
            "storageAccounts",
            str(props.get("accountName") or ""),
        )
    )
    return DatastoreInfo(
        name=str(body.get("name")),
        account_id=account,
        container=str(props.get("containerName") or ""),
        credential_type=str((props.get("credentials") or {}).get("credentialsType") or "None"),
        is_default=bool(props.get("isDefault")),
    )


def _text(value: Any) -> str:
    """An SDK enum (or plain string) as Azure spells it."""
    return str(getattr(value, "value", value) or "")
