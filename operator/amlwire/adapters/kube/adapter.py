"""KubePort over the official client: server-side apply as `amlwire`, never forcing other managers' fields."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kubernetes import client

from amlwire.adapters.kube.client import FIELD_MANAGER
from amlwire.domain.errors import KubeConflict, KubeError, KubeNotFound
from amlwire.reconcile.ports import ServiceAccountInfo

APPLY = "application/apply-patch+yaml"
INSTANCE_TYPES = ("amlarc.azureml.com", "v1alpha1", "instancetypes")
AML_JOBS = ("amlwire.io", "v1alpha1", "amljobs")


def _message(error: client.ApiException) -> str:
    try:
        return str(json.loads(error.body).get("message", error.reason))
    except (TypeError, ValueError):
        return str(error.reason)


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except client.ApiException as error:
        if error.status == 409:
            message = _message(error)
            managers = tuple(
                sorted({part.split('"')[1] for part in message.split("conflict with ")[1:] if '"' in part})
            )
            raise KubeConflict(f"{action}: {message}", managers) from error
        if error.status == 404:
            raise KubeNotFound(f"{action}: {_message(error)}") from error
        raise KubeError(f"{action}: {error.status} {_message(error)}") from error


class KubeAdapter:
    """The Kubernetes API as amlwire writes to it."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def get_service_account(self, namespace: str, name: str) -> ServiceAccountInfo | None:
        try:
            with _translated(f"read service account {namespace}/{name}"):
                found = self.core.read_namespaced_service_account(name, namespace)
        except KubeNotFound:
            return None
        return ServiceAccountInfo(
            namespace, name, dict(found.metadata.annotations or {}), dict(found.metadata.labels or {})
        )

    def apply_service_account(
        self, namespace: str, name: str, annotations: Mapping[str, str], labels: Mapping[str, str]
    ) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": dict(annotations),
                "labels": dict(labels),
            },
        }
        with _translated(f"apply service account {namespace}/{name}"):
            self.core.patch_namespaced_service_account(
                name, namespace, body, field_manager=FIELD_MANAGER, force=False, _content_type=APPLY
            )

    def release_service_account(self, namespace: str, name: str) -> None:
        """Give up every field amlwire applied (annotations, labels); other managers' fields stay."""
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
        try:
            with _translated(f"release service account {namespace}/{name}"):
                self.core.patch_namespaced_service_account(
                    name, namespace, body, field_manager=FIELD_MANAGER, force=False, _content_type=APPLY
                )
        except KubeNotFound:
            return

    def instance_types_supported(self) -> bool:
        """Whether the AzureML extension's InstanceType CRD is served (API discovery; needs no extra RBAC)."""
        group, version, plural = INSTANCE_TYPES
        try:
            with _translated("discover InstanceType"):
                resources = self.custom.get_api_resources(group, version)
        except KubeNotFound:
            return False
        return any(resource.name == plural for resource in resources.resources or [])

    def apply_instance_type(self, manifest: Mapping[str, Any]) -> None:
        group, version, plural = INSTANCE_TYPES
        name = manifest["metadata"]["name"]
        with _translated(f"apply InstanceType {name}"):
            self.custom.patch_cluster_custom_object(
                group,
                version,
                plural,
                name,
                dict(manifest),
                field_manager=FIELD_MANAGER,
                force=False,
                _content_type=APPLY,
            )

    def list_instance_types(self, label_selector: str) -> list[str]:
        group, version, plural = INSTANCE_TYPES
        with _translated("list InstanceTypes"):
            found = self.custom.list_cluster_custom_object(group, version, plural, label_selector=label_selector)
        return [item["metadata"]["name"] for item in found.get("items", [])]

    def delete_instance_type(self, name: str) -> None:
        group, version, plural = INSTANCE_TYPES
        try:
            with _translated(f"delete InstanceType {name}"):
                self.custom.delete_cluster_custom_object(group, version, plural, name)
        except KubeNotFound:
            return

    def get_aml_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        group, version, plural = AML_JOBS
        try:
            with _translated(f"read AmlJob {namespace}/{name}"):
                return self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)  # type: ignore[no-any-return]
        except KubeNotFound:
            return None

    def patch_aml_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        group, version, plural = AML_JOBS
        with _translated(f"update status of AmlJob {namespace}/{name}"):
            self.custom.patch_namespaced_custom_object_status(
                group, version, namespace, plural, name, {"status": dict(status)}
            )
