"""KubePort over the official client: server-side apply as `amlwire`, never forcing other managers' fields."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client

from amlwire.adapters.kube.client import FIELD_MANAGER, core_api, custom_api
from amlwire.domain.doctor import Pod
from amlwire.domain.errors import KubeConflict, KubeError, KubeForbidden, KubeNotFound
from amlwire.domain.jobs import runs_in_aml
from amlwire.reconcile.common import Event
from amlwire.reconcile.ports import ObjectRef, ServiceAccountInfo

log = logging.getLogger("amlwire.events")
APPLY = "application/apply-patch+yaml"
COMPONENT = "amlwire"
RECONCILE_REQUESTED_AT = "amlwire.io/reconcile-requested-at"
CLUSTER_EVENTS_NAMESPACE = "default"  # where Kubernetes records the events of cluster-scoped objects
INSTANCE_TYPES = ("amlarc.azureml.com", "v1alpha1", "instancetypes")
AML_JOBS = ("amlwire.io", "v1alpha1", "amljobs")
LIST_PAGE = 500
EVENTS_REMEMBERED = 4096


def _message(error: client.ApiException) -> str:
    try:
        return str(json.loads(error.body or "").get("message", error.reason))
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
        if error.status == 403:
            raise KubeForbidden(
                f"{action}: {_message(error)}; amlwire's ClusterRole (charts/amlwire) must allow "
                f"it: upgrade the chart, or restore a ClusterRole that was edited"
            ) from error
        raise KubeError(f"{action}: {error.status} {_message(error)}") from error
    except urllib3.exceptions.HTTPError as error:  # refused, reset, timed out: the apiserver is away for now
        raise KubeError(f"{action}: the Kubernetes API server did not answer ({type(error).__name__})") from error


class KubeAdapter:
    """The Kubernetes API as amlwire writes to it."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = core_api(api)
        self.custom = custom_api(api)
        # (namespace, name) -> count of the events this process recorded, to count them again without a read;
        # names carry a per-process epoch, so a restarted operator starts new Event objects (no read needed)
        self._event_counts: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._events_epoch = secrets.token_hex(4)
        self._events_lock = threading.Lock()

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

    def namespace_phase(self, name: str) -> str | None:
        try:
            with _translated(f"read namespace {name}"):
                found = self.core.read_namespace(name)
        except KubeNotFound:
            return None
        return (found.status.phase if found.status else None) or "Active"

    def apply_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}
        with _translated(f"create namespace {name}"):
            self.core.patch_namespace(name, body, field_manager=FIELD_MANAGER, force=False, _content_type=APPLY)

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

    def running_aml_jobs(self) -> list[tuple[str, str]]:
        group, version, plural = AML_JOBS
        running: list[tuple[str, str]] = []
        page: str | None = None
        with _translated("list AmlJobs"):
            while True:  # pages of 500: the operator never holds every AmlJob's body at once
                kwargs = {"limit": LIST_PAGE, **({"_continue": page} if page else {})}
                listing = self.custom.list_cluster_custom_object(group, version, plural, **kwargs)
                for item in listing.get("items", []):
                    meta, spec = item.get("metadata") or {}, item.get("spec") or {}
                    if runs_in_aml(item.get("status")):
                        running.append((f"{meta.get('namespace')}/{meta.get('name')}", str(spec.get("computeRef", ""))))
                page = (listing.get("metadata") or {}).get("continue")
                if not page:
                    return running

    def count_attached_computes(self) -> int:
        with _translated("list AttachedComputes"):
            listing = self.custom.list_cluster_custom_object("amlwire.io", "v1alpha1", "attachedcomputes")
        return len(listing.get("items", []))

    def get_aml_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        group, version, plural = AML_JOBS
        try:
            with _translated(f"read AmlJob {namespace}/{name}"):
                return self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        except KubeNotFound:
            return None

    def patch_aml_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        group, version, plural = AML_JOBS
        with _translated(f"update status of AmlJob {namespace}/{name}"):
            self.custom.patch_namespaced_custom_object_status(
                group, version, namespace, plural, name, {"status": dict(status)}, field_manager=FIELD_MANAGER
            )

    def patch_attached_compute_status(self, name: str, status: Mapping[str, Any]) -> None:
        with _translated(f"update status of AttachedCompute {name}"):
            self.custom.patch_cluster_custom_object_status(
                "amlwire.io",
                "v1alpha1",
                "attachedcomputes",
                name,
                {"status": dict(status)},
                field_manager=FIELD_MANAGER,
            )

    def request_reconcile(self, attached_compute: str, at: str) -> None:
        """Ask for an AttachedCompute's reconcile now, as a user would (annotation reconcile-requested-at)."""
        body = {"metadata": {"annotations": {RECONCILE_REQUESTED_AT: at}}}
        try:
            with _translated(f"request a reconcile of AttachedCompute {attached_compute}"):
                self.custom.patch_cluster_custom_object(
                    "amlwire.io", "v1alpha1", "attachedcomputes", attached_compute, body, field_manager=FIELD_MANAGER
                )
        except KubeNotFound:
            return

    def post_events(self, about: ObjectRef, events: Sequence[Event]) -> None:
        """Record events as Kubernetes does: in the object's namespace, or in `default` for a cluster-scoped
        object with no namespace in involvedObject (so `kubectl describe` finds them). The same event again is
        the same Event with a growing count, as client-go's correlator does, never a new object per retry. Best
        effort: an event that cannot be written is logged, never raised."""
        for event in events:
            try:
                with _translated(f"record event {event.reason} about {about.kind} {about.name}"):
                    self._record(about, event)
            except (KubeError, KubeNotFound, KubeConflict) as error:
                log.warning("%s", error)

    def _record(self, about: ObjectRef, event: Event) -> None:
        namespace = about.namespace or CLUSTER_EVENTS_NAMESPACE
        message = event.message[:1024]
        key = f"{self._events_epoch}|{about.uid}|{event.type}|{event.reason}|{message}"
        name = f"{about.name[:200]}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._events_lock:
            count = self._event_counts.get((namespace, name))
            if count is not None:
                try:
                    self._count_again(namespace, name, count + 1, stamp)
                    return
                except client.ApiException as error:
                    if error.status != 404:  # expired (events live an hour): record it anew
                        raise
            involved = {"apiVersion": about.api_version, "kind": about.kind, "name": about.name, "uid": about.uid}
            if about.namespace:
                involved["namespace"] = about.namespace
            body = {
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": involved,
                "type": event.type,
                "reason": event.reason,
                "message": message,
                "source": {"component": COMPONENT},
                "reportingComponent": COMPONENT,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
            self.core.create_namespaced_event(namespace, body, field_manager=FIELD_MANAGER)
            self._remember(namespace, name, 1)

    def _count_again(self, namespace: str, name: str, count: int, stamp: str) -> None:
        self.core.patch_namespaced_event(
            name, namespace, {"count": count, "lastTimestamp": stamp}, field_manager=FIELD_MANAGER
        )
        self._remember(namespace, name, count)

    def _remember(self, namespace: str, name: str, count: int) -> None:
        self._event_counts[(namespace, name)] = count
        self._event_counts.move_to_end((namespace, name))
        while len(self._event_counts) > EVENTS_REMEMBERED:
            self._event_counts.popitem(last=False)  # an event seen again after this is a new Event object

    # -- reads for amlwire doctor -----------------------------------------------------------------
    def list_pods(self, namespace: str) -> list[Pod]:
        with _translated(f"list pods in {namespace}"):
            pods = self.core.list_namespaced_pod(namespace).items
        result = []
        for pod in pods:
            containers = [*(pod.spec.containers or []), *(pod.spec.init_containers or [])]
            result.append(
                Pod(
                    name=pod.metadata.name,
                    labels=dict(pod.metadata.labels or {}),
                    env=tuple(sorted({e.name for c in containers for e in (c.env or [])})),
                    volumes=tuple(v.name for v in pod.spec.volumes or []),
                    containers=tuple(c.name for c in containers),
                )
            )
        return result

    def pod_log(self, namespace: str, pod: str, container: str, tail_lines: int = 200) -> str | None:
        """The container's recent log, or None when it cannot be read (no kubelet, no permission)."""
        try:
            return str(self.core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=tail_lines))
        except client.ApiException:
            return None

    def get_attached_compute(self, name: str) -> dict[str, Any] | None:
        try:
            with _translated(f"read AttachedCompute {name}"):
                return self.custom.get_cluster_custom_object("amlwire.io", "v1alpha1", "attachedcomputes", name)
        except KubeNotFound:
            return None

    def list_aml_jobs(self) -> list[dict[str, Any]]:
        group, version, plural = AML_JOBS
        with _translated("list AmlJobs"):
            return list(self.custom.list_cluster_custom_object(group, version, plural).get("items", []))

    def events_about(self, kind: str, name: str, uid: str) -> list[tuple[str, str]]:
        """(reason, message) of the Events about one object (this incarnation of it), oldest first."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name},involvedObject.uid={uid}"
        with _translated(f"list events of {kind} {name}"):
            events = self.core.list_event_for_all_namespaces(field_selector=selector).items
        events.sort(key=lambda e: (e.last_timestamp or e.event_time or e.metadata.creation_timestamp).isoformat())
        return [(e.reason or "", e.message or "") for e in events]
