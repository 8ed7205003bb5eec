"""A whole local amlwire installation: apiserver + Azure sandbox + the operator with its own workload identity.

Tests, benches and `amlwire demo` build on this. The operator authenticates to the sandbox exactly as in a
cluster: a projected service-account token from the apiserver, exchanged by WorkloadIdentityCredential for
an Azure token through a federated credential on amlwire's own identity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.identity import WorkloadIdentityCredential
from kubernetes import client, config

from amlwire.adapters.kube.client import core_api
from amlwire.config import Settings
from amlwire.domain.permissions import PERMISSIONS, Permission
from amlwire_devenv.cluster import amlwire_crds, ensure_namespace, install_crds
from amlwire_devenv.controlplane import ControlPlane
from amlwire_sandbox import ids
from amlwire_sandbox.client import SandboxClient
from amlwire_sandbox.cloud import issuer_url
from amlwire_sandbox.server import SandboxServer
from amlwire_sandbox.world import Located, World

OPERATOR_NAMESPACE, OPERATOR_ACCOUNT = "amlwire-system", "amlwire"
OPERATOR_CLIENT_ID = "5d0c9e3f-7a41-4b8e-9f2a-0c1d2e3f4a55"
OPERATOR_PRINCIPAL_ID = "0a1b2c3d-0000-4000-8000-0000000000aa"
FIC_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
NAMESPACES = ("azureml", "azureml-jobs", "robotics", OPERATOR_NAMESPACE)


def kube_client(plane: ControlPlane, as_operator: bool = False) -> client.ApiClient:
    return config.new_client_from_config(str(plane.operator_kubeconfig if as_operator else plane.kubeconfig))


INSTANCE_TYPE_CRD = Path(__file__).with_name("instancetypes.amlarc.azureml.com.yaml")


def prepare_cluster(kube: client.ApiClient) -> None:
    """amlwire's CRDs, the AzureML extension's InstanceType CRD (as the extension would install it), namespaces."""
    import yaml

    install_crds(kube, [*amlwire_crds(), yaml.safe_load(INSTANCE_TYPE_CRD.read_text())])
    for namespace in NAMESPACES:
        ensure_namespace(kube, namespace)


@dataclass
class LocalStack:
    """A sandbox seeded with `world`, amlwire's own identity in it, and (optionally) the operator running."""

    plane: ControlPlane
    world: World
    workdir: Path
    kube: Any = None  # an admin client of the apiserver (made from the plane when not given)
    sandbox: SandboxServer = field(init=False)
    ctl: SandboxClient = field(init=False)
    operator: Any = None
    # write amlwire's projected token to a file (an operator run as a process); off when a kubelet projects it
    project_operator_token: bool = True
    # another cluster's stack whose sandbox (one Azure) this one joins: a fleet, one apiserver and operator each
    joins: LocalStack | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kube = self.kube or kube_client(self.plane)
        if self.joins is None:
            self.sandbox = SandboxServer(self.world, self.workdir / "sandbox-ca.pem").start()
        else:
            self.sandbox = self.joins.sandbox
        self.ctl = SandboxClient(self.sandbox.base_url, self.sandbox.ca_file)
        # Entra fetches this apiserver's OpenID discovery and JWKS to verify amlwire's projected token
        self.ctl.register_issuer(self.plane.service_account_issuer, self.plane.ca_file)
        self.token_file = self.workdir / "azure-identity-token"
        self.seed_operator_identity()
        if self.joins is None:  # the world's clusters are the first stack's; a joining one adds its own
            self.grant_operator_roles()
            for cluster in self.world.clusters:
                self.register_cluster(ids.resource_id(self.subscription, cluster.resource_group, ids.AKS, cluster.name))
        if self.project_operator_token:
            self.refresh_operator_token()

    @property
    def subscription(self) -> str:
        return self.world.defaults.subscription_id

    @property
    def tenant(self) -> str:
        return self.world.defaults.tenant_id

    @property
    def operator_identity_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/rg-id/providers/"
            f"Microsoft.ManagedIdentity/userAssignedIdentities/id-amlwire"
        )

    def seed_operator_identity(self) -> None:
        """amlwire's own UAMI in the sandbox, federated to its service account on this apiserver (one credential
        per cluster of a fleet: the operators share the identity)."""
        credential = "amlwire-operator"
        if self.joins is not None:
            credential += "-" + hashlib.sha256(self.plane.service_account_issuer.encode()).hexdigest()[:8]
        self.ctl.create(
            self.operator_identity_id,
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            {
                "location": "eastus",
                "properties": {
                    "clientId": OPERATOR_CLIENT_ID,
                    "tenantId": self.tenant,
                    "principalId": OPERATOR_PRINCIPAL_ID,
                },
            },
        )
        self.ctl.create(
            f"{self.operator_identity_id}/federatedIdentityCredentials/{credential}",
            FIC_TYPE,
            {
                "properties": {
                    "issuer": self.plane.service_account_issuer,
                    "subject": f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}",
                    "audiences": ["api://AzureADTokenExchange"],
                }
            },
            {"backdated": True},
        )

    def register_cluster(self, cluster_id: str) -> None:
        """The sandbox answers questions about the cluster's Kubernetes side (namespaces) from this apiserver."""
        self.ctl.patch(cluster_id, extra={"kubeconfig": str(self.plane.kubeconfig)})

    def run_on_node(self, cluster_id: str, image: str) -> None:
        """The cluster IS this apiserver with a node: its OIDC issuer is the apiserver's (so the FICs amlwire
        writes match the tokens the kubelet projects), and the sandbox runs the data-capability sidecar's login
        there as pods of `image` (rule data.sidecar-pod)."""
        issuer = self.plane.service_account_issuer
        node = {"image": image, "authority": self.sandbox.base_url, "caPem": Path(self.sandbox.ca_file).read_text()}
        self.ctl.patch(
            cluster_id,
            body={"properties": {"oidcIssuerProfile": {"issuerURL": issuer}}},
            extra={"issuer_url": issuer, "node": node},
        )

    def grant_operator_roles(self) -> None:
        """amlwire's identity gets exactly the README's least-privilege roles, on every resource of the world."""
        for scope, permission in least_privilege(self.world, self.subscription):
            self.grant(scope, permission)

    def assignment_id(self, scope: str, permission: Permission, principal: str = OPERATOR_PRINCIPAL_ID) -> str:
        name = ids.stable_uuid(scope.lower(), permission.role_id, principal)
        return f"{scope}/providers/{ids.ROLE_ASSIGNMENT}/{name}"

    def grant(self, scope: str, permission: Permission, principal: str = OPERATOR_PRINCIPAL_ID) -> str:
        assignment = self.assignment_id(scope, permission, principal)
        role = (
            f"/subscriptions/{self.subscription}/providers/Microsoft.Authorization/roleDefinitions/{permission.role_id}"
        )
        self.ctl.create(
            assignment,
            ids.ROLE_ASSIGNMENT,
            {
                "properties": {
                    "roleDefinitionId": role,
                    "principalId": principal,
                    "principalType": "ServicePrincipal",
                    "scope": scope,
                    "createdOn": "2026-01-01T00:00:00Z",
                }
            },
            {"backdated": True},
        )
        return assignment

    def revoke(self, permission: Permission, principal: str = OPERATOR_PRINCIPAL_ID) -> list[str]:
        """Delete amlwire's assignments of one row of the table; the scopes they were on."""
        revoked = []
        for scope, row in least_privilege(self.world, self.subscription):
            if row == permission:
                self.ctl.delete(self.assignment_id(scope, row, principal))
                revoked.append(scope)
        return revoked

    def refresh_operator_token(self) -> None:
        """What the kubelet does for a pod: project a service-account token for Entra's audience."""
        core = core_api(self.kube)
        ensure_namespace(self.kube, OPERATOR_NAMESPACE)
        try:
            core.create_namespaced_service_account(OPERATOR_NAMESPACE, {"metadata": {"name": OPERATOR_ACCOUNT}})
        except client.ApiException as error:
            if error.status != 409:
                raise
        token = core.create_namespaced_service_account_token(
            OPERATOR_ACCOUNT,
            OPERATOR_NAMESPACE,
            {"spec": {"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 3600}},
        )
        self.token_file.write_text(token.status.token)

    def azure_environment(self) -> dict[str, str]:
        """The variables the workload identity webhook injects into amlwire's pod, pointed at the sandbox."""
        return {
            "AZURE_CLIENT_ID": OPERATOR_CLIENT_ID,
            "AZURE_TENANT_ID": self.tenant,
            "AZURE_FEDERATED_TOKEN_FILE": str(self.token_file),
            "AZURE_AUTHORITY_HOST": self.sandbox.base_url,
        }

    def credential(self) -> WorkloadIdentityCredential:
        return WorkloadIdentityCredential(
            tenant_id=self.tenant,
            client_id=OPERATOR_CLIENT_ID,
            token_file_path=str(self.token_file),
            authority=self.sandbox.base_url,
            connection_verify=str(self.sandbox.ca_file),
        )

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "arm_endpoint": self.sandbox.base_url,
            "ca_bundle": self.sandbox.ca_file,
            "kubeconfig": self.plane.kubeconfig,
            "drift_interval": 600,
            "retry_delay": 0.3,
            "max_retry_delay": 2,
            "lro_poll_delay": 0.2,
            "blocked_recheck_delay": 0.5,
            "federation_propagation_seconds": 0,
            "role_propagation_seconds": 0,
            "job_poll_interval": 0.5,
            "azure_retry_total": 0,
            "liveness_endpoint": None,
            "metrics_port": 0,
        }
        values.update(overrides)
        return Settings(**values)

    def add_cluster(self, name: str) -> str:
        """Another AKS cluster (OIDC issuer, workload identity, the AzureML extension) in rg-aks."""
        cluster = (
            f"/subscriptions/{self.subscription}/resourceGroups/rg-aks/providers/"
            f"Microsoft.ContainerService/managedClusters/{name}"
        )
        issuer = issuer_url(self.sandbox.base_url, "eastus", self.tenant, name)
        self.ctl.create(
            cluster,
            "Microsoft.ContainerService/managedClusters",
            {
                "location": "eastus",
                "properties": {
                    "oidcIssuerProfile": {"enabled": True, "issuerURL": issuer},
                    "provisioningState": "Succeeded",
                    "securityProfile": {"workloadIdentity": {"enabled": True}},
                },
            },
            {
                "issuer_url": issuer,
                "aml_service_accounts": ["azureml:default", "azureml:training"],
                "job_service_account": "default",
                "sidecar_credential": "workloadIdentity",
                "namespaces": [],
            },
        )
        self.register_cluster(cluster)
        for permission in PERMISSIONS:
            if permission.scope == "cluster":
                self.grant(cluster, permission)
        self.ctl.create(
            f"{cluster}/providers/Microsoft.KubernetesConfiguration/extensions/azureml",
            "Microsoft.KubernetesConfiguration/extensions",
            {
                "properties": {
                    "extensionType": "Microsoft.AzureML.Kubernetes",
                    "provisioningState": "Succeeded",
                    "configurationSettings": {},
                }
            },
        )
        return name

    def start_operator(self, **overrides: Any) -> Any:
        from amlwire.handlers.operator import BackgroundOperator
        from amlwire.main import build_services

        settings = self.settings(**overrides)
        self.operator = BackgroundOperator(settings, build_services(settings, self.credential())).start()
        return self.operator

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    def close(self) -> None:
        self.stop_operator()
        if self.joins is None:
            self.sandbox.stop()


def least_privilege(world: World, subscription: str) -> list[tuple[str, Permission]]:
    """Every (scope, row) of amlwire's permission table over the world's resources."""
    located: dict[str, list[tuple[Located, str]]] = {
        "cluster": [(c, ids.AKS) for c in world.clusters],
        "identity": [(i, ids.MSI) for i in world.identities],
        "workspace": [(w, ids.WORKSPACE) for w in world.workspaces],
        "storage": [(s, ids.STORAGE) for s in world.storage_accounts],
        "grant": [
            *((w, ids.WORKSPACE) for w in world.workspaces),
            *((s, ids.STORAGE) for s in world.storage_accounts),
            *((r, ids.REGISTRY) for r in world.registries),
            *((v, ids.KEY_VAULT) for v in world.key_vaults),
        ],
    }
    return [
        (ids.resource_id(item.subscription_id or subscription, item.resource_group, type_, item.name), permission)
        for permission in PERMISSIONS
        for item, type_ in located[permission.scope]
    ]


def inherited_environment() -> dict[str, str]:
    """This process's environment for a child, without what an in-process MLClient left in it.

    azure-ai-ml records the cloud of the last MLClient in os.environ (AZUREML_CURRENT_CLOUD); a child
    pointed at another sandbox would look that cloud up on management.azure.com.
    """
    import os

    return {k: v for k, v in os.environ.items() if k != "AZUREML_CURRENT_CLOUD"}


def operator_environment(stack: LocalStack, **settings: Any) -> dict[str, str]:
    """The environment of an `amlwire run` process pointed at this stack (as the Helm chart would set it)."""

    values: dict[str, Any] = {
        "AMLWIRE_ARM_ENDPOINT": stack.sandbox.base_url,
        "AMLWIRE_CA_BUNDLE": str(stack.sandbox.ca_file),
        "AMLWIRE_KUBECONFIG": str(stack.plane.kubeconfig),
        "AMLWIRE_METRICS_PORT": "0",
        "AMLWIRE_LIVENESS_ENDPOINT": "",
        "AMLWIRE_FEDERATION_PROPAGATION_SECONDS": "0",
        "AMLWIRE_ROLE_PROPAGATION_SECONDS": "0",
        "AMLWIRE_RETRY_DELAY": "0.3",
        "AMLWIRE_LRO_POLL_DELAY": "0.2",
        "AMLWIRE_BLOCKED_RECHECK_DELAY": "0.5",
        "AMLWIRE_AZURE_RETRY_TOTAL": "0",
    }
    values.update({f"AMLWIRE_{k.upper()}": str(v) for k, v in settings.items()})
    return {**inherited_environment(), **stack.azure_environment(), **{k: str(v) for k, v in values.items()}}


def spawn_operator(stack: LocalStack, log_file: Path, **settings: Any) -> Any:
    """`amlwire run` as its own process (what runs in the pod), logging to `log_file`."""
    import subprocess
    import sys

    from amlwire_devenv.process import die_with_parent

    log = log_file.open("ab")
    # Run outside any git work tree, as in the image: azure-ai-ml stamps the caller's git metadata onto every
    # job it submits (five `git` processes per job inside a repository), which is not the user's repository.
    return subprocess.Popen(
        [sys.executable, "-m", "amlwire.cli.main", "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=operator_environment(stack, **settings),
        start_new_session=True,
        preexec_fn=die_with_parent,
        cwd=stack.workdir,
    )
