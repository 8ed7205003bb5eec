"""amlwire doctor, the gathering part: read-only calls through the same ports the operator uses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import AttachedComputeSpec
from amlwire.domain.azure import RoleAssignment
from amlwire.domain.doctor import SIDECAR_CERTIFICATE_ERROR, Facts, Pod
from amlwire.domain.errors import AzureError, AzureNotFound, KubeError, KubeNotFound
from amlwire.domain.view import target_of
from amlwire.reconcile.ports import AzurePort, ServiceAccountInfo

T = TypeVar("T")
NO_ROLES: list[RoleAssignment] = []
NO_EVENTS: list[tuple[str, str]] = []
NO_OBJECTS: list[dict[str, Any]] = []
CANNOT_RUN = {r.AZURE_AUTHENTICATION_FAILED, r.AZURE_UNREACHABLE}
SIDECAR = "data-capability"


class DoctorCannotRun(Exception):
    """The doctor could not look at all (credentials, network, a target that does not exist)."""


class DoctorKube(Protocol):
    """The Kubernetes reads the doctor makes (it never writes)."""

    def get_service_account(self, namespace: str, name: str) -> ServiceAccountInfo | None: ...
    def list_pods(self, namespace: str) -> list[Pod]: ...
    def pod_log(self, namespace: str, pod: str, container: str, tail_lines: int = 200) -> str | None: ...
    def list_aml_jobs(self) -> list[dict[str, Any]]: ...
    def events_about(self, kind: str, name: str, uid: str) -> list[tuple[str, str]]: ...


class NotesUnreadable(Protocol):
    unreadable: dict[str, str]


def read_or_note(facts: NotesUnreadable | None, area: str, read: Callable[[], T], missing: T) -> T:
    """One read: its value; `missing` on 404; on other errors noted in `facts.unreadable[area]`, or fatal (bad
    credentials, no network, or nowhere to note it)."""
    try:
        return read()
    except (AzureNotFound, KubeNotFound):
        return missing
    except (AzureError, KubeError) as error:
        message = error.message if isinstance(error, AzureError) else str(error)
        if facts is None or (isinstance(error, AzureError) and error.reason in CANNOT_RUN):
            raise DoctorCannotRun(f"could not read the {area}: {message}") from error
        facts.unreadable[area] = message
    return missing


def gather(
    spec: AttachedComputeSpec,
    azure: AzurePort,
    kube: DoctorKube | None,
    now: datetime,
    role_propagation: timedelta,
    attached_compute: tuple[str, str] | None = None,
    kube_problem: str | None = None,
) -> Facts:
    facts = Facts(spec=spec, now=now, role_propagation=role_propagation)
    c, w = spec.cluster, spec.workspace
    target = target_of(spec)
    cluster_id, workspace = target.cluster_id, target.workspace
    facts.cluster = read_or_note(
        facts, "cluster", lambda: azure.get_cluster(spec.cluster_subscription_id, c.resource_group, c.name), None
    )
    if facts.cluster is None and "cluster" not in facts.unreadable:
        raise DoctorCannotRun(
            f"AKS cluster {c.resource_group}/{c.name} does not exist in subscription "
            f"{spec.cluster_subscription_id}: check the cluster you named"
        )
    facts.workspace = read_or_note(facts, "workspace", lambda: azure.get_workspace(workspace), None)
    if facts.workspace is None and "workspace" not in facts.unreadable:
        raise DoctorCannotRun(
            f"AML workspace {w.resource_group}/{w.name} does not exist in subscription "
            f"{w.subscription_id}: check the workspace you named"
        )
    _gather_identity(facts, azure)
    facts.extension = read_or_note(
        facts, "extension", lambda: azure.get_extension(cluster_id, spec.extension.name), None
    )
    facts.compute = read_or_note(facts, "compute", lambda: azure.get_compute(workspace, spec.compute.name), None)
    if facts.workspace is not None and facts.workspace.storage_account_id:
        account = facts.workspace.storage_account_id
        facts.storage = read_or_note(facts, "storage", lambda: azure.get_storage_account(account), None)
    principal = facts.workspace.identity_principal_id if facts.workspace else None
    if principal:
        facts.workspace_roles = read_or_note(
            facts, "workspace role assignments", lambda: azure.list_role_assignments(cluster_id, principal), []
        )
    if kube is None:
        for area in ("service accounts", "pods"):
            facts.unreadable[area] = kube_problem or "no Kubernetes access"
    else:
        _gather_kubernetes(facts, kube, attached_compute)
    return facts


def _gather_identity(facts: Facts, azure: AzurePort) -> None:
    spec = facts.spec
    facts.identity = read_or_note(facts, "identity", lambda: azure.get_identity(spec.identity.resource_id), None)
    if facts.identity is None:
        return
    facts.credentials = read_or_note(
        facts, "federated credentials", lambda: azure.list_federated_credentials(spec.identity.resource_id), []
    )
    principal = facts.identity.principal_id
    scopes = {g.scope for g in spec.access.grants}
    if facts.workspace is not None and facts.workspace.storage_account_id:
        scopes.add(facts.workspace.storage_account_id)
    for scope in sorted(scopes):
        facts.identity_roles[scope] = read_or_note(
            facts, "role assignments", partial(azure.list_role_assignments, scope, principal), NO_ROLES
        )
    workspace = facts.workspace.id if facts.workspace is not None else None
    if workspace and workspace not in scopes:  # InContainer downloads read the model with the identity
        read = partial(azure.list_role_assignments, workspace, principal)
        roles = read_or_note(facts, "the identity's workspace roles", read, None)
        if roles is not None:
            facts.identity_roles[workspace] = roles


def _gather_kubernetes(facts: Facts, kube: DoctorKube, attached_compute: tuple[str, str] | None) -> None:
    spec = facts.spec
    for account in spec.service_accounts:
        found = read_or_note(
            facts, "service accounts", partial(kube.get_service_account, account.namespace, account.name), None
        )
        facts.service_accounts[(account.namespace, account.name)] = found.annotations if found else None
    facts.pods = read_or_note(facts, "pods", lambda: kube.list_pods(spec.compute.namespace), None)
    for pod in facts.pods or []:
        for container in (c for c in pod.containers if SIDECAR in c):
            log = kube.pod_log(spec.compute.namespace, pod.name, container)
            if log is None:
                continue
            facts.sidecar_sources.append(f"log of {pod.name}/{container}")
            facts.sidecar_evidence += [line.strip() for line in log.splitlines() if SIDECAR_CERTIFICATE_ERROR in line]
    if attached_compute is None:
        return
    name, uid = attached_compute
    events = read_or_note(facts, "events", partial(kube.events_about, "AttachedCompute", name, uid), NO_EVENTS)
    if "events" not in facts.unreadable:
        facts.write_conflicts = [
            message for reason, message in events if reason == r.FEDERATED_CREDENTIAL_WRITE_CONFLICT
        ]
    jobs = [
        j
        for j in read_or_note(facts, "AmlJobs", kube.list_aml_jobs, NO_OBJECTS)
        if (j.get("spec") or {}).get("computeRef") == name
    ]
    if jobs:
        facts.sidecar_sources.append(f"{len(jobs)} AmlJob(s) on {name}")
    for job in jobs:
        status = job.get("status") or {}
        failure = status.get("failure") or {}
        facts.jobs_completed += status.get("amlStatus") == "Completed"
        facts.in_container_jobs += ((job.get("spec") or {}).get("model") or {}).get("delivery") == "InContainer"
        if failure.get("hint"):  # amlwire recognised it as a storage-access failure
            facts.storage_failures.append(f"{failure.get('code', '')} {failure.get('message', '')}")
        if SIDECAR_CERTIFICATE_ERROR in str(failure.get("message", "")):
            facts.sidecar_evidence.append(
                f"AmlJob {job['metadata']['namespace']}/{job['metadata']['name']}: {failure['message'][:300]}"
            )
