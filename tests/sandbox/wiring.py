"""Wire the sandbox by hand with the real SDK clients: what a careful admin (or amlwire) does."""

from __future__ import annotations

from typing import Any

from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.kubernetesconfiguration.extensions import KubernetesConfigurationExtensionsMgmtClient
from azure.mgmt.kubernetesconfiguration.extensions import models as ext_models
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import FederatedIdentityCredential

from tests.sandbox.conftest import (
    AUDIENCE,
    BLOB_CONTRIBUTOR,
    CLUSTER_ID,
    IDENTITY_ID,
    IDENTITY_PRINCIPAL,
    STORAGE_ID,
    SUB,
    WORKSPACE_ID,
)

DATA_SCIENTIST = (
    f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/f6c7c914-8db3-469d-8ca1-694a8f32e121"
)


def attach_compute(ml: Any, name: str = "k8s-gpu", identity: str | None = IDENTITY_ID) -> Any:
    from azure.ai.ml.entities import IdentityConfiguration, KubernetesCompute, ManagedIdentityConfiguration

    config = None
    if identity:
        config = IdentityConfiguration(
            type="user_assigned", user_assigned_identities=[ManagedIdentityConfiguration(resource_id=identity)]
        )
    compute = KubernetesCompute(name=name, resource_id=CLUSTER_ID, namespace="azureml-jobs", identity=config)
    return ml.compute.begin_create_or_update(compute).result()


def wire(
    credential: Any,
    arm: dict[str, Any],
    ml: Any,
    role: bool = True,
    extension: bool = True,
    subjects: tuple[str, ...] = ("azureml:default", "azureml:training", "azureml-jobs:default"),
) -> None:
    issuer = (
        ContainerServiceClient(credential, SUB, **arm)
        .managed_clusters.get("rg-aks", "aks-robotics")
        .oidc_issuer_profile.issuer_url
    )
    msi = ManagedServiceIdentityClient(credential, SUB, **arm)
    for subject in subjects:
        msi.federated_identity_credentials.create_or_update(
            "rg-id",
            "id-ml",
            f"fic-{subject.replace(':', '-')}",
            FederatedIdentityCredential(
                issuer=issuer, subject=f"system:serviceaccount:{subject}", audiences=[AUDIENCE]
            ),
        )
    if extension:
        KubernetesConfigurationExtensionsMgmtClient(credential, SUB, **arm).extensions.begin_update(
            "rg-aks",
            "Microsoft.ContainerService",
            "managedClusters",
            "aks-robotics",
            "azureml",
            ext_models.PatchExtension(
                properties=ext_models.PatchExtensionProperties(
                    configuration_settings={
                        "identityType": "UserAssigned",
                        "userAssignedIdentityResourceId": IDENTITY_ID,
                    }
                )
            ),
        ).result()
    if role:
        AuthorizationManagementClient(credential, SUB, **arm).role_assignments.create(
            STORAGE_ID,
            "4b7e0d3e-3f3e-4c1b-8f0a-0a0a0a0a0a0a",
            RoleAssignmentCreateParameters(  # type: ignore[call-arg]  # flattened properties
                role_definition_id=BLOB_CONTRIBUTOR, principal_id=IDENTITY_PRINCIPAL, principal_type="ServicePrincipal"
            ),
        )
    if role:  # in-container downloads read the model version with the identity
        AuthorizationManagementClient(credential, SUB, **arm).role_assignments.create(
            WORKSPACE_ID,
            "5b7e0d3e-3f3e-4c1b-8f0a-0a0a0a0a0a0a",
            RoleAssignmentCreateParameters(  # type: ignore[call-arg]  # flattened properties
                role_definition_id=DATA_SCIENTIST, principal_id=IDENTITY_PRINCIPAL, principal_type="ServicePrincipal"
            ),
        )
    attach_compute(ml)
