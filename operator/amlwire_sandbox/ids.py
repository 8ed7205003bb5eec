"""ARM resource IDs of the sandbox's resource types."""

from __future__ import annotations

import functools
import re
import uuid

MSI = "Microsoft.ManagedIdentity/userAssignedIdentities"
FIC = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
AKS = "Microsoft.ContainerService/managedClusters"
EXTENSION = "Microsoft.KubernetesConfiguration/extensions"
STORAGE = "Microsoft.Storage/storageAccounts"
REGISTRY = "Microsoft.ContainerRegistry/registries"
KEY_VAULT = "Microsoft.KeyVault/vaults"
WORKSPACE = "Microsoft.MachineLearningServices/workspaces"
COMPUTE = "Microsoft.MachineLearningServices/workspaces/computes"
JOB = "Microsoft.MachineLearningServices/workspaces/jobs"
ENVIRONMENT_VERSION = "Microsoft.MachineLearningServices/workspaces/environments/versions"
MODEL_CONTAINER = "Microsoft.MachineLearningServices/workspaces/models"
MODEL_VERSION = "Microsoft.MachineLearningServices/workspaces/models/versions"
DATASTORE = "Microsoft.MachineLearningServices/workspaces/datastores"
PRIVATE_ENDPOINT = "Microsoft.Network/privateEndpoints"
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"
RESOURCE_GROUP = "Microsoft.Resources/resourceGroups"

_NAMESPACE = uuid.UUID("8d6f1c33-6a0e-4c59-a5b8-5f2c0c8a5e11")


def resource_group_id(subscription: str, group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}"


def resource_id(subscription: str, group: str, type_: str, name: str) -> str:
    return f"{resource_group_id(subscription, group)}/providers/{type_}/{name}"


@functools.lru_cache(maxsize=65536)  # a listing of 10,000 jobs sorts by it on every page
def stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(p.lower() for p in parts)))


_PARENT = re.compile(r"^(?P<parent>.+)/providers/Microsoft\.Authorization/roleAssignments/[^/]+$", re.IGNORECASE)


def is_within(resource: str, scope: str) -> bool:
    """Whether `scope` is `resource` itself or one of its ancestors under /subscriptions (see Directory for
    management groups and the tenant root above them)."""
    resource, scope = resource.rstrip("/").lower(), scope.rstrip("/").lower()
    return resource == scope or resource.startswith(scope + "/")


MANAGEMENT_GROUP = "/providers/microsoft.management/managementgroups/"


def arm_type(resource_id: str) -> str:
    """The ARM type of a resource ID: its last provider namespace and the type names after it
    (.../providers/Microsoft.MachineLearningServices/workspaces/w/computes/c: ...workspaces/computes)."""
    _, _, tail = resource_id.rpartition("/providers/")
    parts = tail.strip("/").split("/")
    return "/".join([parts[0], *parts[1::2]]) if parts and parts[0] else ""
