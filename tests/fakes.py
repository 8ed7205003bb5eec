"""In-memory fakes of the two ports (AzurePort, KubePort), for table tests of reconcile steps in milliseconds.

They keep state like the real services, record every call, and raise a classified error once when asked
(`azure.fail("put_federated_credential", error)`). They model what the ports promise, not Azure itself: the
sandbox (driven by the real SDKs) is where Azure's rules live.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from amlwire.domain import azure as az
from amlwire.domain.errors import AzureError, AzureNotFound, KubeConflict, KubeForbidden, KubeNotFound
from amlwire.domain.jobs import JobDetails, JobListing, JobRequest, JobSnapshot, RunResults, runs_in_aml
from amlwire.reconcile.common import Event
from amlwire.reconcile.ports import AzurePort, KubePort, ObjectRef, ServiceAccountInfo

SUB = "6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLUSTER_ID = az.managed_cluster_id(SUB, "rg-aks", "aks-robotics")
ISSUER = f"https://eastus.oic.prod-aks.azure.com/{TENANT}/aks-robotics/"
IDENTITY_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-ml"
)

T = TypeVar("T")
CLIENT_ID = "3c5b0f0e-1d6e-4a7b-9c2d-5e6f7a8b9c01"
PRINCIPAL = "8e2d4c6a-0b1f-4e3d-a5c7-9b8a7f6e5d02"
WORKSPACE = az.WorkspaceRef(SUB, "rg-ml", "mlw-robotics")
STORAGE_ID = f"/subscriptions/{SUB}/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlrobotics"
REGISTRY_ID = f"/subscriptions/{SUB}/resourceGroups/rg-ml/providers/Microsoft.ContainerRegistry/registries/crrobotics"
EXTENSION_TYPE = "Microsoft.AzureML.Kubernetes"


def throttled(seconds: float = 5.0) -> AzureError:
    return AzureError("AzureThrottled", "Azure is throttling", retryable=True, retry_after=seconds, status=429)


def rejected(message: str = "bad request", status: int = 400) -> AzureError:
    return AzureError("AzureBadRequest", message, retryable=False, status=status)


@dataclass
class FakeAzure:
    """AzurePort over dictionaries. Long-running operations finish when `finish(url)` says so."""

    clusters: dict[str, az.ClusterInfo] = field(default_factory=dict)
    identities: dict[str, az.IdentityInfo] = field(default_factory=dict)
    credentials: dict[str, dict[str, az.FederatedCredential]] = field(default_factory=lambda: defaultdict(dict))
    extensions: dict[tuple[str, str], az.ExtensionInfo] = field(default_factory=dict)
    operations: dict[str, az.OperationState] = field(default_factory=dict)
    assignments: list[az.RoleAssignment] = field(default_factory=list)
    issuers: dict[str, az.IssuerAnswer] = field(default_factory=dict)  # what other issuers answer (else publishing)
    storage: dict[str, az.StorageInfo] = field(default_factory=dict)
    workspaces: dict[str, az.WorkspaceInfo] = field(default_factory=dict)
    computes: dict[tuple[str, str], az.ComputeInfo] = field(default_factory=dict)
    jobs: dict[tuple[str, str], JobSnapshot] = field(default_factory=dict)
    page_size: int = 50  # jobs per page of a listing, as AML pages
    submitted: list[JobRequest] = field(default_factory=list)
    details: dict[str, JobDetails] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    run_times: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # MLflow's run info
    models: set[tuple[str, str]] = field(default_factory=set)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    failures: dict[str, list[Exception]] = field(default_factory=lambda: defaultdict(list))
    attach_finishes: bool = True  # an attach finishes within the grace (else it stays Creating)
    extension_operations_finish: bool = True
    update_answers_without_url: bool = False  # Azure's 200 to a PATCH that changes nothing

    # -- test controls ------------------------------------------------------------------------------
    def fail(self, method: str, error: Exception, times: int = 1) -> None:
        self.failures[method] += [error] * times

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if self.failures.get(method):
            raise self.failures[method].pop(0)

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def writes(self) -> list[str]:
        prefixes = ("put_", "delete_", "begin_", "create_", "submit_", "cancel_", "register_")
        return [name for name, _ in self.calls if name.startswith(prefixes)]

    # -- AKS ------------------------------------------------------------------------------------------
    def get_cluster(self, subscription: str, group: str, name: str) -> az.ClusterInfo:
        self._call("get_cluster", subscription, group, name)
        return _found(self.clusters, az.managed_cluster_id(subscription, group, name), f"cluster {name}")

    # -- identities and federated credentials ---------------------------------------------------------
    def get_identity(self, identity_id: str) -> az.IdentityInfo:
        self._call("get_identity", identity_id)
        return _found(self.identities, identity_id, f"identity {identity_id}")

    def list_federated_credentials(self, identity_id: str) -> list[az.FederatedCredential]:
        self._call("list_federated_credentials", identity_id)
        if identity_id.lower() not in self.identities:
            raise AzureNotFound(f"identity {identity_id}: not found")
        return list(self.credentials[identity_id.lower()].values())

    def put_federated_credential(self, identity_id: str, credential: az.FederatedCredential) -> None:
        self._call("put_federated_credential", identity_id, credential)
        self.credentials[identity_id.lower()][credential.name] = credential

    def delete_federated_credential(self, identity_id: str, name: str) -> None:
        self._call("delete_federated_credential", identity_id, name)
        self.credentials[identity_id.lower()].pop(name, None)

    def discover_issuer(self, issuer: str) -> az.IssuerAnswer:
        self._call("discover_issuer", issuer)
        return self.issuers.get(issuer, az.IssuerAnswer("publishing", "it publishes its keys"))

    # -- the cluster extension --------------------------------------------------------------------------
    def get_extension(self, cluster_id: str, name: str) -> az.ExtensionInfo | None:
        self._call("get_extension", cluster_id, name)
        return self.extensions.get((cluster_id.lower(), name))

    def _operation(self, cluster_id: str, name: str, settings: Mapping[str, str], create: bool) -> str | None:
        current = self.extensions.get((cluster_id.lower(), name))
        merged = dict(settings) if create or current is None else {**current.settings, **settings}
        unchanged = current is not None and not create and merged == current.settings
        state = "Succeeded" if self.extension_operations_finish else ("Creating" if create else "Updating")
        if unchanged and self.update_answers_without_url:
            return None  # 200, no operation: the extension stays as it was (Failed stays Failed)
        self.extensions[(cluster_id.lower(), name)] = az.ExtensionInfo(
            f"{cluster_id}/extensions/{name}", EXTENSION_TYPE, state, merged
        )
        url = f"https://operations/{len(self.operations)}"
        self.operations[url] = az.OperationState(done=self.extension_operations_finish, succeeded=True)
        return url

    def begin_create_extension(self, cluster_id: str, name: str, settings: Mapping[str, str]) -> str | None:
        self._call("begin_create_extension", cluster_id, name, dict(settings))
        return self._operation(cluster_id, name, settings, create=True)

    def begin_update_extension(self, cluster_id: str, name: str, settings: Mapping[str, str]) -> str | None:
        self._call("begin_update_extension", cluster_id, name, dict(settings))
        return self._operation(cluster_id, name, settings, create=False)

    def operation_state(self, subscription: str, url: str) -> az.OperationState:
        self._call("operation_state", subscription, url)
        return self.operations[url]

    def finish(self, url: str, succeeded: bool = True, error: str | None = None) -> None:
        """The long-running operation at `url` ends; its extension takes the outcome's state."""
        self.operations[url] = az.OperationState(done=True, succeeded=succeeded, error=error)
        for key, extension in self.extensions.items():
            if extension.provisioning_state in ("Creating", "Updating"):
                self.extensions[key] = replace(extension, provisioning_state="Succeeded" if succeeded else "Failed")

    # -- role assignments --------------------------------------------------------------------------------
    def list_role_assignments(self, scope: str, principal_id: str) -> list[az.RoleAssignment]:
        self._call("list_role_assignments", scope, principal_id)
        return [
            a
            for a in self.assignments
            if a.principal_id == principal_id
            and (
                scope.lower().startswith(a.scope.lower().rstrip("/"))  # at or above
                or a.scope.lower().startswith(scope.lower().rstrip("/") + "/")  # below: ARM lists those too
            )
        ]

    def create_role_assignment(
        self, scope: str, name: str, role_definition_id: str, principal_id: str, description: str = ""
    ) -> bool:
        self._call("create_role_assignment", scope, name, role_definition_id, principal_id, description)
        if any(a.name == name for a in self.assignments):
            return False
        self.assignments.append(az.RoleAssignment(name, scope, role_definition_id, principal_id, None))
        return True

    def delete_role_assignment(self, scope: str, name: str) -> None:
        self._call("delete_role_assignment", scope, name)
        before = len(self.assignments)
        self.assignments = [a for a in self.assignments if a.name != name]
        if len(self.assignments) == before:
            raise AzureNotFound(f"role assignment {name}: not found")

    # -- storage, workspace, compute ---------------------------------------------------------------------
    def get_storage_account(self, account_id: str) -> az.StorageInfo:
        self._call("get_storage_account", account_id)
        return _found(self.storage, account_id, f"storage account {account_id}")

    def get_workspace(self, workspace: az.WorkspaceRef) -> az.WorkspaceInfo:
        self._call("get_workspace", workspace)
        return _found(self.workspaces, workspace.id, f"workspace {workspace.name}")

    def get_compute(self, workspace: az.WorkspaceRef, name: str) -> az.ComputeInfo | None:
        self._call("get_compute", workspace, name)
        return self.computes.get((workspace.id.lower(), name))

    def begin_attach_compute(
        self, workspace: az.WorkspaceRef, attachment: az.ComputeAttachment
    ) -> az.ComputeInfo | None:
        self._call("begin_attach_compute", workspace, attachment)
        if workspace.id.lower() not in self.workspaces:
            raise AzureNotFound(f"workspace {workspace.name}: not found")
        a = attachment
        state = "Succeeded" if self.attach_finishes else "Creating"
        compute = az.ComputeInfo(
            f"{workspace.id}/computes/{a.name}",
            state,
            a.cluster_id,
            a.namespace,
            "UserAssigned",
            (a.identity_id,),
            dict(a.tags),
        )
        self.computes[(workspace.id.lower(), a.name)] = compute
        return compute if self.attach_finishes else None

    def begin_detach_compute(self, workspace: az.WorkspaceRef, name: str) -> None:
        self._call("begin_detach_compute", workspace, name)
        key = (workspace.id.lower(), name)
        if key in self.computes:
            self.computes[key] = replace(self.computes[key], provisioning_state="Deleting")

    def set_compute(self, name: str = "k8s-gpu", **changes: Any) -> None:
        key = (WORKSPACE.id.lower(), name)
        self.computes[key] = replace(self.computes[key], **changes)

    def drop_compute(self, name: str = "k8s-gpu") -> None:
        self.computes.pop((WORKSPACE.id.lower(), name), None)

    # -- jobs and models ------------------------------------------------------------------------------------
    def get_job(self, workspace: az.WorkspaceRef, name: str) -> JobSnapshot | None:
        self._call("get_job", workspace, name)
        return self.jobs.get((workspace.id.lower(), name))

    def submit_job(self, workspace: az.WorkspaceRef, request: JobRequest) -> JobSnapshot:
        self._call("submit_job", workspace, request)
        if request.model is not None:
            _, name, version = request.model.uri.split(":")
            if (name, version) not in self.models:  # AML refuses a job whose model input does not exist
                raise AzureError(
                    "AzureBadRequest", f"Model {name}:{version} was not found", retryable=False, status=400
                )
        self.submitted.append(request)
        snapshot = JobSnapshot(request.name, "NotStarted", f"https://ml.azure.com/runs/{request.name}")
        self.jobs[(workspace.id.lower(), request.name)] = snapshot
        return snapshot

    def list_jobs(self, workspace: az.WorkspaceRef, tag: str, wanted: set[str]) -> JobListing:
        self._call("list_jobs", workspace, tag)
        found = {name: job for (ws, name), job in self.jobs.items() if ws == workspace.id.lower()}
        return JobListing(found, reads=max(1, -(-len(found) // self.page_size)))

    def cancel_job(self, workspace: az.WorkspaceRef, name: str) -> None:
        self._call("cancel_job", workspace, name)
        key = (workspace.id.lower(), name)
        self.jobs[key] = replace(self.jobs[key], status="CancelRequested")

    def set_job(self, name: str, status: str) -> None:
        key = (WORKSPACE.id.lower(), name)
        self.jobs[key] = replace(self.jobs[key], status=status)

    def job_details(self, workspace: az.WorkspaceRef, name: str) -> JobDetails:
        self._call("job_details", workspace, name)
        return self.details.get(name, JobDetails("2026-11-26T10:00:00Z", "2026-11-26T10:05:00Z"))

    def job_results(self, workspace: az.WorkspaceRef, name: str) -> RunResults:
        self._call("job_results", workspace, name)
        start, end = self.run_times.get(name, (None, None))
        return RunResults(
            dict(self.metrics.get(name, {})),
            dict(self.params.get(name, {})),
            dict(self.tags.get(name, {})),
            start_time=start,
            end_time=end,
        )

    def model_exists(self, workspace: az.WorkspaceRef, name: str, version: str) -> bool:
        self._call("model_exists", workspace, name, version)
        return (name, version) in self.models

    def register_model(
        self, workspace: az.WorkspaceRef, model_name: str, model_type: str, job_name: str
    ) -> tuple[str, str]:
        self._call("register_model", workspace, model_name, model_type, job_name)
        version = str(1 + sum(1 for name, _ in self.models if name == model_name))
        self.models.add((model_name, version))
        return model_name, version


def _found(table: Mapping[str, T], resource_id: str, what: str) -> T:
    """What Azure answers for a resource: it, or 404 (ARM IDs compare without case)."""
    found = table.get(resource_id.lower())
    if found is None:
        raise AzureNotFound(f"{what}: not found")
    return found


def healthy_azure(**changes: Any) -> FakeAzure:
    """The example AttachedCompute's Azure: cluster, identity, extension, workspace, storage; nothing wired yet."""
    azure = FakeAzure(**changes)
    azure.clusters[CLUSTER_ID.lower()] = az.ClusterInfo(CLUSTER_ID, "eastus", True, ISSUER, True, False)
    azure.identities[IDENTITY_ID.lower()] = az.IdentityInfo(IDENTITY_ID, CLIENT_ID, PRINCIPAL, TENANT)
    azure.extensions[(CLUSTER_ID.lower(), "azureml")] = az.ExtensionInfo(
        f"{CLUSTER_ID}/extensions/azureml", EXTENSION_TYPE, "Succeeded", {"enableTraining": "True"}
    )
    azure.workspaces[WORKSPACE.id.lower()] = az.WorkspaceInfo(WORKSPACE.id, "eastus", STORAGE_ID, "identity", None)
    azure.storage[STORAGE_ID.lower()] = az.StorageInfo(STORAGE_ID, False)
    return azure


@dataclass
class FakeKube:
    """KubePort over dictionaries: service accounts, instance types, AmlJobs, events."""

    namespaces: set[str] = field(default_factory=lambda: {"azureml", "azureml-jobs", "robotics"})
    service_accounts: dict[tuple[str, str], ServiceAccountInfo] = field(default_factory=dict)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)  # field manager of the client-id annotation
    instance_types: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    crd_served: bool = True
    may_create_namespaces: bool = True
    terminating: set[str] = field(default_factory=set)
    aml_jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[ObjectRef, Event]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def get_service_account(self, namespace: str, name: str) -> ServiceAccountInfo | None:
        self.calls.append("get_service_account")
        return self.service_accounts.get((namespace, name))

    def apply_service_account(
        self, namespace: str, name: str, annotations: Mapping[str, str], labels: Mapping[str, str]
    ) -> None:
        self.calls.append("apply_service_account")
        if namespace not in self.namespaces:
            raise KubeNotFound(f"namespace {namespace} not found")
        current = self.service_accounts.get((namespace, name))
        manager = self.owners.get((namespace, name))
        if current is not None and manager and manager != "amlwire":
            differs = any(current.annotations.get(k) not in (None, v) for k, v in annotations.items())
            if differs:
                raise KubeConflict(f"conflict with {manager!r}", (manager,))
        have = dict(current.annotations) if current else {}
        self.service_accounts[(namespace, name)] = ServiceAccountInfo(
            namespace, name, {**have, **annotations}, {**(current.labels if current else {}), **labels}
        )

    def release_service_account(self, namespace: str, name: str) -> None:
        self.calls.append("release_service_account")
        current = self.service_accounts.get((namespace, name))
        if current is not None:
            self.service_accounts[(namespace, name)] = ServiceAccountInfo(namespace, name, {}, {})

    def namespace_phase(self, name: str) -> str | None:
        self.calls.append("namespace_phase")
        if name in self.terminating:
            return "Terminating"
        return "Active" if name in self.namespaces else None

    def apply_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        self.calls.append("apply_namespace")
        if not self.may_create_namespaces:
            raise KubeForbidden(f'create namespace {name}: namespaces "{name}" is forbidden')
        self.namespaces.add(name)

    def instance_types_supported(self) -> bool:
        return self.crd_served

    def apply_instance_type(self, manifest: Mapping[str, Any]) -> None:
        self.calls.append("apply_instance_type")
        self.instance_types[manifest["metadata"]["name"]] = manifest

    def list_instance_types(self, label_selector: str) -> list[str]:
        key, _, value = label_selector.partition("=")
        return [n for n, m in self.instance_types.items() if m["metadata"]["labels"].get(key) == value]

    def delete_instance_type(self, name: str) -> None:
        self.calls.append("delete_instance_type")
        self.instance_types.pop(name, None)

    def get_aml_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.aml_jobs.get((namespace, name))

    def running_aml_jobs(self) -> list[tuple[str, str]]:
        return [
            (f"{ns}/{name}", str(job.get("spec", {}).get("computeRef", "")))
            for (ns, name), job in self.aml_jobs.items()
            if runs_in_aml(job.get("status"))
        ]

    def count_attached_computes(self) -> int:
        return 0

    def patch_attached_compute_status(self, name: str, status: Mapping[str, Any]) -> None:
        self.calls.append("patch_attached_compute_status")

    def patch_aml_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.calls.append("patch_aml_job_status")
        job = self.aml_jobs[(namespace, name)]
        current = job.setdefault("status", {})
        for key, value in status.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value

    def request_reconcile(self, attached_compute: str, at: str) -> None:
        self.calls.append(f"request_reconcile {attached_compute}")

    def post_events(self, about: ObjectRef, events: Sequence[Event]) -> None:
        self.events += [(about, e) for e in events]


def at(minutes: float = 0.0) -> datetime:
    return datetime(2026, 11, 26, 10, 0, tzinfo=UTC) + timedelta(minutes=minutes)


def same(a: str, b: str) -> bool:
    return az.same_id(a, b)


def _fakes_implement_the_ports() -> tuple[AzurePort, KubePort]:
    """mypy checks each fake against its port (a method missing or of another signature is a type error)."""
    return FakeAzure(), FakeKube()
