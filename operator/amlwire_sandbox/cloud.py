"""Azure's behaviour, as the sandbox emulates it: the rules each service enforces.

Route handlers (app.py) translate HTTP to these methods; tests may also call them directly while
holding `state.lock`.
"""

from __future__ import annotations

import base64
import copy
import re
import uuid
from collections.abc import Set as AbstractSet
from typing import Any

from amlwire.api.roles import BLOB_READERS, BLOB_WRITERS, guid, guids
from amlwire_sandbox import authorization, ids
from amlwire_sandbox.directory import Directory
from amlwire_sandbox.state import AUDIENCE, ArmError, Operation, Resource, State, iso, key, not_found
from amlwire_sandbox.world import ClusterWorld, ComputeWorld, DatastoreWorld, StorageAccountWorld, World

SHORT_JOB_OUTPUT = re.compile(r"^azureml://jobs/[^/]+/outputs/[^/]+/?$", re.IGNORECASE)
FIC_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-_]{2,119}$")
FIC_LIMIT = 20
STORAGE_DATA_ROLES = BLOB_READERS  # judged by the roles' data actions, as Storage does
STORAGE_WRITE_ROLES = BLOB_WRITERS
STREAM_AUTH = "ScriptExecution.StreamAccess.Authentication"
TERMINAL_JOB_STATES = {"Completed", "Failed", "Canceled"}
LIST_SECRETS = "Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action"
ACR_PULL = guid("AcrPull")
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MODEL_REFS = (
    re.compile(r"azureml:([A-Za-z0-9][A-Za-z0-9_.-]*):([A-Za-z0-9_.-]+)"),
    re.compile(r"/models/([A-Za-z0-9][A-Za-z0-9_.-]*)/versions/([A-Za-z0-9_.-]+)", re.IGNORECASE),
)


def model_ref(text: str) -> tuple[str, str] | None:
    """(name, version) of a model named in `text` as azureml:NAME:VERSION or by its ARM ID."""
    for pattern in _MODEL_REFS:
        found = pattern.search(text)
        if found:
            return found.group(1), found.group(2)
    return None


def issuer_url(base_url: str, location: str, tenant: str, cluster: str) -> str:
    """A world cluster's OIDC issuer: AKS's is https://{location}.oic.prod-aks.azure.com/{tenant}/{id}/; the
    sandbox is that host (nothing leaves 127.0.0.1), so the issuer lives under its own URL, same shape."""
    return f"{base_url}/oic/{location}/{tenant}/{cluster}/"


class Cloud:
    """The emulated Azure services over one State: the rules each service enforces."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.directory = Directory.of(state.world)
        self.revoked: list[tuple[Resource, float]] = []  # deleted role assignments, and when

    # -- seeding ---------------------------------------------------------------------------------
    def seed(self, world: World) -> None:
        d = world.defaults
        sub = lambda item: item.subscription_id or d.subscription_id  # noqa: E731
        loc = lambda item: item.location or d.location  # noqa: E731
        for group in world.resource_groups:
            self.state.put(
                ids.resource_group_id(d.subscription_id, group),
                ids.RESOURCE_GROUP,
                {"location": d.location, "properties": {"provisioningState": "Succeeded"}},
            )
        for c in world.clusters:
            self._seed_cluster(c, sub(c), loc(c), d.tenant_id)
        for i in world.identities:
            rid = ids.resource_id(sub(i), i.resource_group, ids.MSI, i.name)
            self.state.put(
                rid,
                ids.MSI,
                {
                    "location": loc(i),
                    "tags": i.tags,
                    "properties": {
                        "tenantId": i.tenant_id or d.tenant_id,
                        "principalId": i.principal_id,
                        "clientId": i.client_id,
                    },
                },
            )
        for s in world.storage_accounts:
            self._seed_storage(s, sub(s), loc(s))
        for r in world.registries:
            self.state.put(
                ids.resource_id(sub(r), r.resource_group, ids.REGISTRY, r.name),
                ids.REGISTRY,
                {"location": loc(r), "properties": {"loginServer": f"{r.name}.azurecr.io"}},
            )
        for v in world.key_vaults:
            self.state.put(
                ids.resource_id(sub(v), v.resource_group, ids.KEY_VAULT, v.name),
                ids.KEY_VAULT,
                {"location": loc(v), "properties": {"enableRbacAuthorization": True}},
            )
        for w in world.workspaces:
            self._seed_workspace(w, sub(w), loc(w), d.tenant_id)
        for ra in world.role_assignments:
            name = ra.name or ids.stable_uuid(ra.scope, ra.role_definition_id, ra.principal_id)
            self._store_role_assignment(ra.scope, name, ra.role_definition_id, ra.principal_id, backdate=True)
        for f in world.federated_credentials:
            self.state.put(
                f"{f.identity}/federatedIdentityCredentials/{f.name}",
                ids.FIC,
                {"properties": {"issuer": f.issuer, "subject": f.subject, "audiences": f.audiences}},
                backdated=True,
            )

    def _seed_cluster(self, c: ClusterWorld, sub: str, location: str, tenant: str) -> None:
        rid = ids.resource_id(sub, c.resource_group, ids.AKS, c.name)
        issuer = c.oidc_issuer_url or issuer_url(self.state.base_url, location, tenant, ids.stable_uuid(rid))
        self.state.put(
            rid,
            ids.AKS,
            {
                "location": location,
                "identity": {"type": "SystemAssigned"},
                "properties": {
                    "provisioningState": "Succeeded",
                    "kubernetesVersion": "1.34.4",
                    "fqdn": f"{c.name}.hcp.{location}.azmk8s.io",
                    "oidcIssuerProfile": {
                        "enabled": c.oidc_issuer_enabled,
                        **({"issuerURL": issuer} if c.oidc_issuer_enabled else {}),
                    },
                    # rule: aks.cluster-profile
                    "securityProfile": {"workloadIdentity": {"enabled": c.workload_identity_enabled}},
                    "disableLocalAccounts": c.local_accounts_disabled,
                    "agentPoolProfiles": [
                        {
                            "name": "nodepool1",
                            "mode": "System",
                            "count": c.node_count,
                            **({"vnetSubnetID": c.subnet} if c.subnet else {}),
                        }
                    ],
                },
            },
            aml_service_accounts=list(c.aml_service_accounts),
            job_service_account=c.job_service_account,
            sidecar_credential=c.sidecar_credential,
            namespaces=list(c.namespaces),
            issuer_url=issuer,
        )
        for e in c.extensions:
            self.state.put(
                f"{rid}/providers/{ids.EXTENSION}/{e.name}",
                ids.EXTENSION,
                {
                    "properties": {
                        "extensionType": e.extension_type,
                        "autoUpgradeMinorVersion": True,
                        "releaseTrain": "stable",
                        "version": "1.1.64",
                        "configurationSettings": dict(e.settings),
                        "provisioningState": e.provisioning_state,
                        **_extension_outcome(
                            e.provisioning_state, {"code": "ExtensionOperationFailed", "message": e.error}
                        ),
                        "aksAssignedIdentity": {
                            "type": "SystemAssigned",
                            "principalId": ids.stable_uuid(rid, "extension", e.name),
                        },
                    },
                },
            )

    def _seed_storage(self, s: StorageAccountWorld, sub: str, location: str) -> None:
        rid = ids.resource_id(sub, s.resource_group, ids.STORAGE, s.name)
        connections = []
        for pe in s.private_endpoints:
            pe_id = ids.resource_id(sub, s.resource_group, ids.PRIVATE_ENDPOINT, pe.name)
            self.state.put(
                pe_id,
                ids.PRIVATE_ENDPOINT,
                {"location": location, "properties": {"subnet": {"id": pe.subnet}, "provisioningState": "Succeeded"}},
            )
            connections.append(
                {
                    "id": f"{rid}/privateEndpointConnections/{pe.name}",
                    "name": pe.name,
                    "properties": {
                        "privateEndpoint": {"id": pe_id},
                        "privateLinkServiceConnectionState": {"status": pe.status},
                        "provisioningState": "Succeeded",
                    },
                }
            )
        self.state.put(
            rid,
            ids.STORAGE,
            {
                "location": location,
                "kind": "StorageV2",
                "sku": {"name": "Standard_LRS"},
                "properties": {
                    "allowSharedKeyAccess": s.allow_shared_key_access,
                    "publicNetworkAccess": s.public_network_access,
                    "networkAcls": {
                        "defaultAction": s.default_action,
                        "bypass": "AzureServices",
                        "virtualNetworkRules": [
                            {"id": subnet, "action": "Allow"} for subnet in s.virtual_network_rules
                        ],
                        "ipRules": [],
                    },
                    "privateEndpointConnections": connections,
                    "provisioningState": "Succeeded",
                    "primaryEndpoints": {"blob": f"https://{s.name}.blob.core.windows.net/"},
                },
            },
        )

    def _workspace_identity(self, w: Any, sub: str, tenant: str) -> dict[str, Any]:
        """A system-assigned identity reports its principalId at the top; a user-assigned one only in
        userAssignedIdentities (spec: ManagedServiceIdentity)."""
        if w.identity.type == "SystemAssigned":
            return {"type": "SystemAssigned", "principalId": w.identity.principal_id, "tenantId": tenant}
        uami = w.identity.resource_id or ids.resource_id(sub, w.resource_group, ids.MSI, f"id-{w.name}")
        return {
            "type": "UserAssigned",
            "userAssignedIdentities": {
                uami: {"principalId": w.identity.principal_id, "clientId": w.identity.client_id}
            },
        }

    def _seed_workspace(self, w: Any, sub: str, location: str, tenant: str) -> None:
        rid = ids.resource_id(sub, w.resource_group, ids.WORKSPACE, w.name)
        storage = ids.resource_id(sub, w.resource_group, ids.STORAGE, w.storage_account)
        workspace_path = rid.removeprefix("/")
        self.state.put(
            rid,
            ids.WORKSPACE,
            {
                "location": location,
                "identity": self._workspace_identity(w, sub, tenant),
                "sku": {"name": "Basic", "tier": "Basic"},
                "kind": "Default",
                "properties": {
                    "friendlyName": w.name,
                    "workspaceId": ids.stable_uuid(rid),
                    "storageAccount": storage,
                    "systemDatastoresAuthMode": w.system_datastores_auth_mode,
                    "discoveryUrl": f"{self.state.base_url}/discovery/{location}",
                    "mlFlowTrackingUri": f"azureml://{self.state.base_url.removeprefix('https://')}/mlflow/v1.0/"
                    f"{workspace_path}",
                    "provisioningState": "Succeeded",
                },
            },
        )
        for m in w.models:
            model = self.put_model_version(rid, m.name, m.version, {"properties": {"modelType": m.type}})
            model.extra["metrics"] = dict(m.metrics)
            model.extra["task"] = m.task
        for c in w.computes:
            self._seed_compute_cluster(rid, c, location, tenant)
        key_based = w.system_datastores_auth_mode == "accesskey"  # rule: ml.system-datastores
        system = [
            DatastoreWorld(
                name="workspaceblobstore",
                container=f"azureml-blobstore-{ids.stable_uuid(rid)}",
                credentials="AccountKey" if key_based else "None",
                secret=w.system_datastore_secret,
                default=True,
            ),
            DatastoreWorld(
                name="workspaceartifactstore",
                container="azureml",
                credentials="AccountKey" if key_based else "None",
                secret=w.system_datastore_secret,
            ),
        ]
        for d in system + list(w.datastores):
            self._seed_datastore(rid, d, sub, w.resource_group, d.storage_account or w.storage_account)

    def _seed_compute_cluster(self, workspace_id: str, c: ComputeWorld, location: str, tenant: str) -> None:
        compute_id = f"{workspace_id}/computes/{c.name}"
        identity: dict[str, Any] = {"type": c.identity.type}
        if "SystemAssigned" in c.identity.type:
            identity |= {"principalId": ids.stable_uuid(compute_id, "system-identity"), "tenantId": tenant}
        if c.identity.user_assigned_identities:
            identity["userAssignedIdentities"] = {
                uami.id: {"principalId": uami.properties["principalId"], "clientId": uami.properties["clientId"]}
                for uami in map(self.identity, c.identity.user_assigned_identities)
            }
        self.state.put(
            compute_id,
            ids.COMPUTE,
            {
                "location": location,
                "identity": identity,
                "properties": {
                    "computeType": "AmlCompute",
                    "computeLocation": location,
                    "provisioningState": "Succeeded",
                    "properties": {
                        "vmSize": c.vm_size,
                        "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 4},
                        **({"subnet": {"id": c.subnet}} if c.subnet else {}),
                    },
                },
            },
        )

    def _seed_datastore(self, workspace_id: str, d: DatastoreWorld, sub: str, group: str, account: str) -> None:
        self.state.put(
            f"{workspace_id}/datastores/{d.name}",
            ids.DATASTORE,
            {
                "properties": {
                    "datastoreType": "AzureBlob",
                    "accountName": account,
                    "containerName": d.container,
                    "endpoint": "core.windows.net",
                    "protocol": "https",
                    "subscriptionId": sub,
                    "resourceGroup": group,
                    "isDefault": d.default,
                    "serviceDataAccessAuthIdentity": "None",
                    # rule: ml.datastore-secrets (GET names the secrets' type, never their value)
                    "credentials": {"credentialsType": d.credentials}
                    | ({"secrets": {"secretsType": d.credentials}} if d.credentials != "None" else {}),
                }
            },
            secret=d.secret if d.credentials != "None" else None,
        )

    # -- managed identities and federated credentials -----------------------------------------
    def identity(self, identity_id: str) -> Resource:
        return self.state.require(identity_id, ids.MSI)

    def list_fics(self, identity_id: str) -> list[Resource]:
        self.identity(identity_id)
        return sorted(self.state.children(identity_id, ids.FIC), key=lambda r: r.created)

    def validate_fic(self, identity_id: str, name: str, body: dict[str, Any]) -> None:
        """Entra's rules for a FIC write, checked before it is applied."""
        self.identity(identity_id)
        if not FIC_NAME.match(name):  # rule: msi.fic-name
            raise ArmError(
                400,
                "BadRequest",
                f"Federated Identity Credential name '{name}' is invalid. The name "
                "must be 3-120 characters, start with a letter or number, and contain only letters, "
                "numbers, hyphens and underscores.",
            )
        props = body.get("properties") or {}
        issuer, subject, audiences = props.get("issuer"), props.get("subject"), props.get("audiences")
        if not issuer or not subject:  # rule: msi.fic-fields
            raise ArmError(400, "BadRequest", "Issuer and subject are required for a Federated Identity Credential.")
        if len(issuer) > 600 or len(subject) > 600:
            raise ArmError(400, "BadRequest", "Issuer and subject must be at most 600 characters.")
        if not isinstance(audiences, list) or len(audiences) != 1:
            raise ArmError(400, "BadRequest", "Federated Identity Credential must have exactly one audience.")
        if not issuer.startswith("https://"):
            raise ArmError(400, "BadRequest", f"Issuer '{issuer}' must be an https URL.")
        others = [f for f in self.list_fics(identity_id) if f.name.lower() != name.lower()]
        # rule: msi.fic-unique
        if any(f.properties.get("issuer") == issuer and f.properties.get("subject") == subject for f in others):
            raise ArmError(
                400, "BadRequest", "Issuer and subject combination already exists for this Managed Identity."
            )
        exists = self.state.get(f"{identity_id}/federatedIdentityCredentials/{name}") is not None
        if not exists and len(others) >= FIC_LIMIT:  # rule: msi.fic-limit
            raise ArmError(
                400,
                "BadRequest",
                f"The number of Federated Identity Credentials for the managed "
                f"identity has reached the limit of {FIC_LIMIT}.",
            )

    def put_fic(self, identity_id: str, name: str, body: dict[str, Any]) -> tuple[Resource, bool]:
        self.validate_fic(identity_id, name, body)
        fic_id = f"{self.identity(identity_id).id}/federatedIdentityCredentials/{name}"
        created = self.state.get(fic_id) is None
        props = body["properties"]
        resource = self.state.put(
            fic_id,
            ids.FIC,
            {"properties": {"issuer": props["issuer"], "subject": props["subject"], "audiences": props["audiences"]}},
            backdated=False,
        )
        return resource, created

    def fic_effective(self, fic: Resource) -> bool:  # rule: entra.fic-propagation
        if fic.extra.get("backdated"):
            return True
        return self.state.now() - fic.updated >= self.state.timing.fic_propagation_seconds

    def matching_fic(self, identity_id: str, issuer: str, subject: str) -> Resource | None:
        return next(
            (
                f
                for f in self.state.children(identity_id, ids.FIC)
                if f.properties.get("issuer") == issuer
                and f.properties.get("subject") == subject
                and f.properties.get("audiences") == [AUDIENCE]
            ),
            None,
        )

    def identity_by_client_id(self, client_id: str) -> Resource | None:
        return next((r for r in self.state.of_type(ids.MSI) if r.properties.get("clientId") == client_id), None)

    # -- role assignments -------------------------------------------------------------------------
    def _store_role_assignment(
        self,
        scope: str,
        name: str,
        role: str,
        principal: str,
        backdate: bool,
        principal_type: str = "ServicePrincipal",
        description: str | None = None,
    ) -> Resource:
        rid = f"{scope.rstrip('/')}/providers/{ids.ROLE_ASSIGNMENT}/{name}"
        props = {
            "roleDefinitionId": role,
            "principalId": principal,
            "principalType": principal_type,
            "scope": scope.rstrip("/"),
            "createdOn": iso(self.state.now()),
        }
        if description:
            props["description"] = description
        return self.state.put(rid, ids.ROLE_ASSIGNMENT, {"properties": props}, backdated=backdate)

    def scope_exists(self, scope: str) -> bool:
        parts = scope.strip("/").split("/")
        if len(parts) <= 2:  # subscriptions/{id}
            return True
        if len(parts) <= 4:  # resource group
            return True
        return self.state.get(scope) is not None

    def put_role_assignment(self, scope: str, name: str, body: dict[str, Any]) -> tuple[Resource, int]:
        if not GUID.match(name):  # rule: authz.ra-name
            raise ArmError(
                400,
                "InvalidRoleAssignmentId",
                f"The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID.",
            )
        if not self.scope_exists(scope):  # rule: authz.ra-scope
            raise not_found("scope", scope)
        props = body.get("properties") or {}
        role, principal = props.get("roleDefinitionId", ""), props.get("principalId", "")
        if not role or not principal:
            raise ArmError(400, "InvalidRoleAssignmentRequest", "roleDefinitionId and principalId are required.")
        # rule: authz.ra-exists
        same_name = self.state.get(f"{scope.rstrip('/')}/providers/{ids.ROLE_ASSIGNMENT}/{name}")
        if same_name is not None:
            if (
                _role_guid(same_name.properties["roleDefinitionId"]) == _role_guid(role)
                and same_name.properties["principalId"] == principal
            ):
                return same_name, 200
            raise ArmError(
                400,
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            )
        for existing in self.role_assignments_at(scope):
            if (
                _role_guid(existing.properties["roleDefinitionId"]) == _role_guid(role)
                and existing.properties["principalId"] == principal
            ):
                raise ArmError(409, "RoleAssignmentExists", "The role assignment already exists.")
        kind = props.get("principalType") or "ServicePrincipal"
        stored = self._store_role_assignment(
            scope, name, role, principal, backdate=False, principal_type=kind, description=props.get("description")
        )
        return stored, 201

    def role_assignments_at(self, scope: str) -> list[Resource]:
        return [r for r in self.state.of_type(ids.ROLE_ASSIGNMENT) if key(r.properties.get("scope", "")) == key(scope)]

    def list_role_assignments(self, scope: str, filter_: str | None) -> list[Resource]:  # rule: authz.ra-list
        covers = self.directory.covers
        found = [
            r
            for r in self.state.of_type(ids.ROLE_ASSIGNMENT)
            if covers(r.properties["scope"], scope) or ids.is_within(r.properties["scope"], scope)
        ]
        if filter_:
            assigned = re.search(r"assignedTo\('([^']+)'", filter_)  # rule: authz.inheritance (groups too)
            exact = re.search(r"principalId eq '([^']+)'", filter_)
            if assigned:
                found = [r for r in found if self.directory.applies_to(r.properties["principalId"], assigned.group(1))]
            elif exact:
                found = [r for r in found if r.properties["principalId"] == exact.group(1)]
            if "atScope()" in filter_:
                found = [r for r in found if covers(r.properties["scope"], scope)]
        return sorted(found, key=lambda r: r.created)

    def role_effective(self, assignment: Resource) -> bool:  # rule: authz.ra-propagation
        if assignment.extra.get("backdated"):
            return True
        return self.state.now() - assignment.created >= self.state.timing.role_propagation_seconds

    def may(self, principal: str, action: str, resource: str) -> bool:
        """Whether an effective role lets `principal` do `action` on `resource` (a data-plane caller's check)."""
        return authorization.permitted(self._effective_assignments(), principal, action, resource, self.directory)

    @staticmethod
    def not_permitted(principal: str, action: str, scope: str) -> str:
        return authorization.denied(principal, action, scope).message

    def image_pull_problem(self, compute: Resource, image: str) -> str | None:
        """A private ACR image is pulled with the compute's identity, which needs AcrPull (rule acr.pull)."""
        host, _, path = image.partition("/")
        if not host.lower().endswith(".azurecr.io") or not path:
            return None
        name = host.split(".", 1)[0].lower()
        registry = next((r for r in self.state.of_type(ids.REGISTRY) if r.name.lower() == name), None)
        failed = f'Failed to pull image "{image}": '
        if registry is None:
            return failed + f"dial tcp: lookup {host}: no such host"
        uami = _user_assigned(compute)
        principal = uami.properties["principalId"] if uami is not None else ""
        if not self.has_access(principal, registry.id, {ACR_PULL}):
            return (
                f"{failed}failed to authorize: failed to fetch anonymous token: unexpected status from GET request "
                f"to https://{host}/oauth2/token: 401 Unauthorized"
            )
        return None

    def revoke_role_assignment(self, assignment_id: str) -> Resource | None:
        removed = self.state.delete(assignment_id)
        if removed is not None:
            self.revoked.append((removed, self.state.now()))
        return removed

    def has_access(self, principal: str, resource: str, roles: AbstractSet[str]) -> bool:
        return any(
            self.directory.applies_to(r.properties["principalId"], principal)
            and _role_guid(r.properties["roleDefinitionId"]) in roles
            and self.directory.covers(r.properties["scope"], resource)
            for r in self._effective_assignments()
        )

    # -- ARM authorisation -----------------------------------------------------------------------
    def authorize(self, principal: str, action: str, path: str) -> None:
        """Refuse with Azure's 403 unless an effective role assignment lets `principal` do `action` there."""
        scope = path[path.lower().find("/subscriptions/") :].rstrip("/")
        if not authorization.permitted(self._effective_assignments(), principal, action, scope, self.directory):
            raise authorization.denied(principal, action, scope)

    def authorize_linked(self, principal: str, action: str, path: str, linked: list[str]) -> None:
        """Attaching an identity to a resource also needs assign/action on the identity."""
        effective = self._effective_assignments()
        for identity_id in linked:
            if not authorization.permitted(
                effective, principal, authorization.ASSIGN_IDENTITY, identity_id, self.directory
            ):
                raise authorization.linked_denied(principal, action, path.rstrip("/"), identity_id)

    def _effective_assignments(self) -> list[Resource]:
        """Assignments old enough to be honoured, and deleted ones whose removal has not propagated yet."""
        now, window = self.state.now(), self.state.timing.role_propagation_seconds
        self.revoked = [(r, at) for r, at in self.revoked if now - at < window]  # rule: authz.ra-propagation
        current = [r for r in self.state.of_type(ids.ROLE_ASSIGNMENT) if self.role_effective(r)]
        return current + [r for r, _ in self.revoked if self.role_effective(r)]

    # -- cluster extensions (long-running) -------------------------------------------------------
    def put_extension(self, extension_id: str, body: dict[str, Any], patch: bool) -> tuple[Resource, Operation | None]:
        """The stored extension and the operation the write started (None: nothing to change)."""
        cluster_id = extension_id.split("/providers/Microsoft.KubernetesConfiguration", 1)[0]
        self.state.require(cluster_id, ids.AKS)
        if self.state.pending_operation(extension_id):  # rule: ext.one-operation
            raise ArmError(409, "Conflict", "An operation is already in progress on this extension.")
        existing = self.state.get(extension_id)
        if patch and existing is None:
            raise not_found(ids.EXTENSION, extension_id)
        props = copy.deepcopy(existing.properties) if existing else {}
        incoming = body.get("properties") or {}
        if patch:  # rule: ext.patch-merges
            settings = {**props.get("configurationSettings", {}), **(incoming.get("configurationSettings") or {})}
            props.update(
                {
                    k: v
                    for k, v in incoming.items()
                    if k not in ("configurationSettings", "configurationProtectedSettings")
                }
            )
            props["configurationSettings"] = {k: v for k, v in settings.items() if v is not None}
            if existing is not None and props == existing.properties:  # rule: ext.patch-unchanged
                return existing, None
        else:
            if not incoming.get("extensionType"):
                raise ArmError(400, "InvalidExtensionRequest", "properties.extensionType is required.")
            props = {
                k: v for k, v in incoming.items() if k != "configurationProtectedSettings"
            }  # rule: ext.protected-settings
            props.setdefault("configurationSettings", {})
            props.setdefault("version", "1.1.64")
            props["aksAssignedIdentity"] = {
                "type": "SystemAssigned",
                "principalId": ids.stable_uuid(extension_id, "extension"),
            }
        props["provisioningState"] = "Updating" if existing else "Creating"
        props.update(_extension_outcome("Updating"))
        resource = self.state.put(extension_id, ids.EXTENSION, {"properties": props})
        operation = self.state.start_operation(extension_id, "ExtensionUpdate" if existing else "ExtensionCreate")
        return resource, operation

    def delete_extension(self, extension_id: str) -> Any:
        self.state.require(extension_id, ids.EXTENSION).properties["provisioningState"] = "Deleting"
        return self.state.start_operation(extension_id, "ExtensionDelete")

    # -- long-running operation completion -------------------------------------------------------
    def settle(self) -> None:
        """Apply the effect of every operation whose time has come."""
        now = self.state.now()
        for operation in self.state.operations.values():
            if operation.finished or operation.status(now) == "InProgress":
                continue
            operation.finished = True
            resource = self.state.get(operation.resource_id)
            if resource is None or resource.type == ids.JOB:  # a job's cancel changes its status, not a state
                continue
            if operation.kind.endswith("Delete") and operation.outcome == "Succeeded":
                self._finish_delete(resource)
                continue
            resource.properties["provisioningState"] = operation.outcome
            if resource.type == ids.EXTENSION:  # rule: ext.error-info
                resource.properties.update(_extension_outcome(operation.outcome, operation.error))
            if resource.type == ids.COMPUTE and operation.outcome == "Failed":  # rule: ml.compute-failed
                error = operation.error or {"code": "InternalError", "message": "The compute attach failed."}
                resource.properties["provisioningErrors"] = [{"error": dict(error)}]

    def _finish_delete(self, resource: Resource) -> None:
        self.state.delete(resource.id)

    # -- workspaces, computes, environments, models ----------------------------------------------
    def workspace(self, workspace_id: str) -> Resource:
        return self.state.require(workspace_id, ids.WORKSPACE)

    def put_compute(self, compute_id: str, body: dict[str, Any]) -> tuple[Resource, Any]:
        workspace_id = compute_id.split("/computes/", 1)[0]
        self.workspace(workspace_id)
        existing = self.state.get(compute_id)
        check_tag_names(body, self.state.world.rules.tag_names)
        if existing is not None and existing.properties.get("provisioningState") == "Failed":  # rule: ml.compute-failed
            raise ArmError(
                409, "Conflict", f"Compute '{existing.name}' is in a Failed state. Detach it before attaching again."
            )
        props = body.get("properties") or {}
        if props.get("computeType") != "Kubernetes":
            raise ArmError(400, "BadArgument", "Only computeType Kubernetes is supported by this sandbox.")
        cluster_id = props.get("resourceId") or ""
        if self.state.get(cluster_id) is None:
            raise ArmError(400, "BadArgument", f"The Kubernetes cluster '{cluster_id}' was not found.")
        if _subscription(cluster_id) != _subscription(compute_id):  # rule: ml.compute-cross-subscription
            raise ArmError(
                400,
                "BadArgument",
                "Attaching a Kubernetes cluster from another subscription than the workspace's is not supported.",
            )
        self._check_workspace_identity_roles(self.workspace(workspace_id), cluster_id)
        if (self.state.require(cluster_id, ids.AKS).properties.get("disableLocalAccounts")) is True:
            raise ArmError(  # rule: ml.attach-local-accounts
                400,
                "BadRequest",
                "The AzureML extension does not support Kubernetes clusters with local accounts disabled "
                "(disableLocalAccounts); enable local accounts to attach the cluster.",
            )
        if existing is not None and key(existing.properties.get("resourceId", "")) != key(
            cluster_id
        ):  # rule: ml.compute-other-cluster
            raise ArmError(409, "Conflict", f"Compute '{existing.name}' is attached to another cluster.")
        stored = copy.deepcopy(body)
        stored["properties"]["provisioningState"] = "Creating"
        stored["properties"]["createdOn"] = iso(self.state.now())
        stored["identity"] = self._expand_identity(body.get("identity"))
        resource = self.state.put(compute_id, ids.COMPUTE, stored)
        operation = self.state.start_operation(compute_id, "ComputeAttach")
        return resource, operation  # the namespace is neither created nor checked (rule ml.compute-namespace)

    def _check_workspace_identity_roles(self, workspace: Resource, cluster_id: str) -> None:
        """A workspace with a user-assigned identity attaches only when that identity holds Reader, Kubernetes
        Extension Contributor and AKS Cluster Admin Role on the cluster: else a synchronous 400."""
        identity = workspace.body.get("identity") or {}
        if identity.get("type") != "UserAssigned":
            return
        for details in (identity.get("userAssignedIdentities") or {}).values():
            principal = details["principalId"]
            if not all(self.has_access(principal, cluster_id, {role}) for role in WORKSPACE_UAMI_CLUSTER_ROLES):
                raise ArmError(  # rule: ml.attach-uami-roles
                    400,
                    "BadRequest",
                    "AKS role check failed for user assigned identity: the workspace's user-assigned identity needs "
                    "Reader, Kubernetes Extension Contributor and Azure Kubernetes Service Cluster Admin Role on the "
                    "cluster.",
                )

    def cluster_with_issuer(self, issuer: str) -> Resource | None:
        """The world's AKS cluster whose OIDC issuer URL this is (exactly, as Entra compares)."""
        return next((c for c in self.state.of_type(ids.AKS) if c.extra.get("issuer_url") == issuer), None)

    def namespace_phase(self, cluster_id: str, namespace: str) -> str | None:
        """The namespace's phase (Active, Terminating) or None when the cluster lacks it: asks its apiserver when
        one is registered, else the world."""
        cluster = self.state.require(cluster_id, ids.AKS)
        kubeconfig = cluster.extra.get("kubeconfig")
        if kubeconfig is None:
            return "Active" if namespace in cluster.extra["namespaces"] else None
        from kubernetes import client, config

        api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
        try:
            found = api.read_namespace(namespace, _request_timeout=5)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return (found.status.phase if found.status else None) or "Active"

    def _expand_identity(self, identity: dict[str, Any] | None) -> dict[str, Any]:  # rule: ml.compute-identity
        if not identity or identity.get("type", "None") == "None":
            return {"type": "None"}
        expanded: dict[str, Any] = {"type": identity["type"]}
        assigned = identity.get("userAssignedIdentities") or {}
        if assigned:
            expanded["userAssignedIdentities"] = {}
            for rid in assigned:
                uami = self.state.get(rid)
                if uami is None:
                    raise ArmError(400, "BadArgument", f"User-assigned identity '{rid}' was not found.")
                expanded["userAssignedIdentities"][uami.id] = {
                    "principalId": uami.properties["principalId"],
                    "clientId": uami.properties["clientId"],
                }
        if "SystemAssigned" in identity["type"]:
            expanded["principalId"] = ids.stable_uuid("compute-system", str(uuid.uuid4()))
        return expanded

    def delete_compute(self, compute_id: str, action: str | None) -> Operation | None:
        """The detach operation, or None when there is no such compute (Azure answers 204)."""
        resource = self.state.get(compute_id)
        if resource is None:  # rule: ml.compute-delete-missing
            return None
        if (action or "").lower() not in ("detach", "delete"):
            raise ArmError(400, "BadArgument", "underlyingResourceAction must be Detach or Delete.")
        resource.properties["provisioningState"] = "Deleting"
        return self.state.start_operation(compute_id, "ComputeDelete")

    def put_model_version(self, workspace_id: str, name: str, version: str, body: dict[str, Any]) -> Resource:
        path = str((body.get("properties") or {}).get("modelUri") or "")
        if SHORT_JOB_OUTPUT.match(path):  # rule: ml.model-job-output-uri
            raise ArmError(
                400,
                "UserError",
                f"Invalid model path '{path}': a job output is azureml://jobs/<job>/outputs/<output>/paths/<path>, "
                "or the output's datastore URI.",
            )
        container = f"{workspace_id}/models/{name}"
        if self.state.get(container) is None:
            self.state.put(container, ids.MODEL_CONTAINER, {"properties": {"isArchived": False}})
        properties = self.state.require(container, ids.MODEL_CONTAINER).properties
        properties["latestVersion"] = version
        properties["nextVersion"] = str(int(version) + 1) if version.isdigit() else None
        props = {
            "modelType": "custom_model",
            "isArchived": False,
            "flavors": {},
            "properties": {},
            "tags": {},
            "stage": "Development",
            **(body.get("properties") or {}),
        }
        props["provisioningState"] = "Succeeded"
        return self.state.put(f"{container}/versions/{version}", ids.MODEL_VERSION, {"properties": props})

    def datastore_secrets(self, datastore_id: str) -> dict[str, Any]:
        """What listSecrets answers: the stored key or token ("" when the datastore holds none)."""
        datastore = self.state.require(datastore_id, ids.DATASTORE)
        kind = datastore.properties["credentials"]["credentialsType"]
        if kind == "None":  # rule: ml.datastore-secrets
            raise ArmError(400, "UserError", f"Datastore '{datastore.name}' uses identity-based access: no secrets.")
        value = "" if datastore.extra.get("secret") == "empty" else base64.b64encode(datastore.id.encode()).decode()
        return (
            {"secretsType": "AccountKey", "key": value}
            if kind == "AccountKey"
            else {"secretsType": "Sas", "sasToken": value}
        )

    # -- the wiring judge ------------------------------------------------------------------------
    def storage_access_problem(self, compute: Resource, workspace: Resource, needs_write: bool) -> str | None:
        """Why the data-capability sidecar cannot reach the workspace's storage, or None when it can."""
        storage = self.state.get(workspace.properties["storageAccount"])
        if storage is None:
            return "the workspace's storage account does not exist"
        shared_keys = storage.properties.get("allowSharedKeyAccess")
        if workspace.properties.get("systemDatastoresAuthMode") == "accesskey":  # rule: data.key-based
            if shared_keys is False:  # rule: storage.shared-key
                return (
                    "KeyBasedAuthenticationNotPermitted: the datastore uses account keys but the storage "
                    "account has allowSharedKeyAccess=false"
                )
            uami = _user_assigned(compute)
            reader = uami.properties["principalId"] if uami is not None else ""
            if not self.may(reader, LIST_SECRETS, workspace.id):  # rule: data.credential-datastore-secrets
                return self.not_permitted(reader, LIST_SECRETS, workspace.id)
            return None
        cluster = self.state.get(compute.properties.get("resourceId", ""))
        if cluster is None:
            return "the compute's cluster does not exist"
        extension = self.aml_extension(cluster.id)
        if extension is None or extension.properties.get("provisioningState") != "Succeeded":
            return "the AzureML extension is not installed or not healthy"
        mode = cluster.extra["sidecar_credential"]  # rule: data.sidecar-credential
        if mode == "brokenCertificate":
            return (
                "data-capability: failed to load certificate /var/run/secrets/azureml/identity/cert.pfx: "
                "no such file or directory"
            )
        uami = _user_assigned(compute)
        if uami is None:
            return "the compute is not attached with a user-assigned identity"
        if mode == "workloadIdentity":
            settings = extension.properties.get("configurationSettings") or {}
            if settings.get("identityType") != "UserAssigned" or key(
                settings.get("userAssignedIdentityResourceId", "")
            ) != key(uami.id):
                return "the AzureML extension has no user-assigned identity settings for the compute's identity"
            problem = self._federation_problem(uami, cluster, cluster.extra["aml_service_accounts"])
            if problem:
                return problem
        roles = STORAGE_WRITE_ROLES if needs_write else STORAGE_DATA_ROLES
        if not self.has_access(uami.properties["principalId"], storage.id, roles):
            return (
                "AuthorizationPermissionMismatch: This request is not authorized to perform this operation "
                "using this permission (no effective Storage Blob Data role for the identity)"
            )
        return None

    def aml_extension(self, cluster_id: str) -> Resource | None:
        return next(
            (
                e
                for e in self.state.of_type(ids.EXTENSION)
                if key(e.id).startswith(key(cluster_id) + "/")
                and e.properties.get("extensionType") == "Microsoft.AzureML.Kubernetes"
            ),
            None,
        )

    def _federation_problem(self, uami: Resource, cluster: Resource, service_accounts: list[str]) -> str | None:
        issuer = cluster.extra["issuer_url"]
        for account in service_accounts:
            subject = f"system:serviceaccount:{account}"
            fic = self.matching_fic(uami.id, issuer, subject)
            if fic is None:
                return (
                    f"AADSTS70021: No matching federated identity record found for presented assertion. "
                    f"Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'."
                )
            if not self.fic_effective(fic):
                return f"AADSTS70021: the federated identity credential for '{subject}' is still propagating."
        return None

    def in_container_problem(self, compute: Resource, workspace: Resource, model_id: str) -> str | None:
        """Why the job cannot download the model with the SDK itself, or None when it can."""
        # rule: data.in-container
        cluster = self.state.get(compute.properties.get("resourceId", ""))
        uami = _user_assigned(compute)
        if cluster is None or uami is None:
            return "the compute is not attached with a user-assigned identity"
        if cluster.extra["sidecar_credential"] != "computeIdentity":  # the pod's workload identity is the way in
            namespace = (compute.properties.get("properties") or {}).get("namespace") or "default"
            account = f"{namespace}:{cluster.extra['job_service_account']}"
            problem = self._federation_problem(uami, cluster, [account])
            if problem:
                return problem
        principal = uami.properties["principalId"]
        read = "Microsoft.MachineLearningServices/workspaces/models/versions/read"
        if not authorization.permitted(self._effective_assignments(), principal, read, model_id, self.directory):
            return str(authorization.denied(principal, read, model_id).message)
        storage_id = workspace.properties["storageAccount"]
        if not self.has_access(uami.properties["principalId"], storage_id, STORAGE_DATA_ROLES):
            return "AuthorizationPermissionMismatch: no effective Storage Blob Data role for the identity"
        return None


WORKSPACE_UAMI_CLUSTER_ROLES = guids(
    "Reader", "Kubernetes Extension Contributor", "Azure Kubernetes Service Cluster Admin Role"
)


def _subscription(resource_id: str) -> str:
    return resource_id.lower().split("/subscriptions/", 1)[-1].split("/", 1)[0]


def _role_guid(role_definition_id: str) -> str:
    return role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


def _user_assigned(compute: Resource) -> Resource | None:
    identity = compute.body.get("identity") or {}
    if "UserAssigned" not in str(identity.get("type")):
        return None
    assigned = identity.get("userAssignedIdentities") or {}
    if not assigned:
        return None
    return Resource(next(iter(assigned)), ids.MSI, {"properties": next(iter(assigned.values()))}, 0, 0)


FORBIDDEN_TAG_CHARACTERS = set("<>%&\\?/")


def check_tag_names(body: dict[str, Any], mode: str) -> None:
    """ARM refuses tag names with < > % & \\ ? / (the world option `rules.tagNames: accept` turns it off)."""
    if mode != "refuse":
        return
    for name in body.get("tags") or {}:  # rule: arm.tag-names
        if FORBIDDEN_TAG_CHARACTERS & set(name):
            raise ArmError(
                400,
                "InvalidTagNameCharacters",
                f"The tag names '{name}' have reserved characters '<,>,%,&,\\\\,?,/' or control characters.",
            )


def _extension_outcome(state: str, error: dict[str, str] | None = None) -> dict[str, Any]:
    """errorInfo and statuses as the Extensions spec models them: the agent's error of a Failed or Canceled
    extension, nothing otherwise (both always present)."""
    if state not in ("Failed", "Canceled"):
        return {"errorInfo": None, "statuses": []}
    error = error or {"code": "ExtensionOperationFailed", "message": f"The extension operation ended {state}."}
    return {
        "errorInfo": {"code": error["code"], "message": error["message"]},
        "statuses": [
            {
                "code": error["code"],
                "displayStatus": state,
                "level": "Error",
                "message": error["message"],
                "time": "2026-01-01T00:00:00Z",
            }
        ],
    }
