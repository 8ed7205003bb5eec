"""Helpers to prepare a (local) cluster: install CRDs and namespaces, wait for them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kubernetes import client

from amlwire.adapters.kube.client import core_api, custom_api, extensions_api
from amlwire.api.crdgen import KINDS, crd


def amlwire_crds() -> list[dict[str, Any]]:
    return [crd(kind) for kind in KINDS]


def install_crds(api: client.ApiClient, manifests: Iterable[dict[str, Any]], timeout: float = 30.0) -> None:
    """Create or replace CRDs and wait until each is Established."""
    ext = extensions_api(api)
    manifests_list = list(manifests)
    for manifest in manifests_list:
        name = manifest["metadata"]["name"]
        try:
            ext.create_custom_resource_definition(manifest)
        except client.ApiException as error:
            if error.status != 409:
                raise
            current = ext.read_custom_resource_definition(name)
            manifest = {
                **manifest,
                "metadata": {**manifest["metadata"], "resourceVersion": current.metadata.resource_version},
            }
            ext.replace_custom_resource_definition(name, manifest)
    deadline = time.monotonic() + timeout
    for manifest in manifests_list:
        name = manifest["metadata"]["name"]
        while not (_established(ext, name) and _discoverable(api, manifest) and _listable(api, manifest)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established and discoverable after {timeout}s")
            time.sleep(0.1)


def _discoverable(api: client.ApiClient, manifest: dict[str, Any]) -> bool:
    """Served in API discovery too, which lags Established (clients that discover would not see it yet)."""
    group, plural = manifest["spec"]["group"], manifest["spec"]["names"]["plural"]
    version = next(v["name"] for v in manifest["spec"]["versions"] if v.get("served", True))
    try:
        resources = custom_api(api).get_api_resources(group, version)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return any(r.name == plural for r in resources.resources or [])


def _listable(api: client.ApiClient, manifest: dict[str, Any]) -> bool:
    """Its storage is ready: right after a create or replace the apiserver answers 429 "storage is
    (re)initializing", which clients retry with a warning apiece."""
    group, plural = manifest["spec"]["group"], manifest["spec"]["names"]["plural"]
    version = next(v["name"] for v in manifest["spec"]["versions"] if v.get("served", True))
    try:
        custom_api(api).list_cluster_custom_object(group, version, plural, limit=1)
    except client.ApiException as error:
        if error.status in (404, 429, 503):
            return False
        raise
    return True


def _established(ext: Any, name: str) -> bool:
    conditions = ext.read_custom_resource_definition_status(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        core_api(api).create_namespace({"metadata": {"name": name}})
    except client.ApiException as error:
        if error.status != 409:
            raise


def cluster_role_binding(name: str, role: str, subject_kind: str, subject: str) -> dict[str, Any]:
    """A ClusterRoleBinding of one user or group to a ClusterRole."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": subject_kind, "name": subject}],
    }


def as_object(found: object) -> dict[str, Any]:
    """A custom object as the Kubernetes client returns it (typed `object`): a JSON object."""
    if not isinstance(found, dict):
        raise TypeError(f"expected a JSON object from the apiserver, got {type(found).__name__}")
    return found


def items_of(found: object) -> list[dict[str, Any]]:
    """The items of a custom-object list as the Kubernetes client returns it."""
    return list(as_object(found)["items"])
