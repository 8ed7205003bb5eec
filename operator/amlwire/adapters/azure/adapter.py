"""AzurePort over the official SDKs: SDK models in, domain types out, every error classified once."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from azure.core.exceptions import AzureError as SdkError
from azure.core.exceptions import ResourceExistsError

from amlwire.adapters.azure.clients import ML_API_VERSION, AzureClients
from amlwire.adapters.azure.datapath import DataPathReads
from amlwire.adapters.azure.errors import classified
from amlwire.api import reasons as r
from amlwire.domain.azure import (
    AUDIENCE,
    EXTENSION_RELEASE_NAMESPACE,
    EXTENSION_TYPE,
    ClusterInfo,
    ComputeAttachment,
    ComputeInfo,
    ExtensionInfo,
    FederatedCredential,
    IdentityInfo,
    IssuerAnswer,
    OperationState,
    ResourceId,
    RoleAssignment,
    StorageInfo,
    WorkspaceInfo,
    WorkspaceRef,
    subscription_of,
)
from amlwire.domain.errors import AzureError, AzureNotFound
from amlwire.domain.jobs import (
    CHECKPOINT_OUTPUT,
    RESUME_INPUT,
    JobDetails,
    JobListing,
    JobRequest,
    JobSnapshot,
    RunResults,
)

FIC_WRITE_ATTEMPTS = 4
ISSUER_TIMEOUT = 5.0
MAX_CONCURRENT_SUBMISSIONS = 8
CallObserver = Callable[[str, str, int], None]


def _names_keys(answer: Any) -> bool:
    try:
        return bool(answer.json().get("jwks_uri"))
    except ValueError:
        return False


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


class JobsAdapter:
    """AML jobs through azure-ai-ml's MLClient (mixed into AzureAdapter)."""

    clients: AzureClients
    _call: Callable[..., Any]
    _ml: Callable[[WorkspaceRef], Any]
    _environments: dict[tuple[str, str], str]
    _tracking: dict[str, str]  # workspace ID (lower case) -> its MLflow tracking server
    _lock: Callable[..., threading.Lock]
    _submissions: threading.BoundedSemaphore

    def get_job(self, workspace: WorkspaceRef, name: str) -> JobSnapshot | None:
        """One plain ARM GET of the job (MLClient.jobs.get costs several times the CPU for the same answer)."""
        try:
            with self._call("ml.job", "GET", f"get AML job {name}", workspace.subscription):
                body = self.clients.get(workspace.subscription, f"{workspace.id}/jobs/{name}")
        except AzureNotFound:
            return None
        return _snapshot_of(body, name)

    def submit_job(self, workspace: WorkspaceRef, request: JobRequest) -> JobSnapshot:
        """One ARM write per job: the image's anonymous environment is written by the first job that uses it
        (the others wait for it) and named by reference afterwards."""
        key = (workspace.id.lower(), request.image)
        with self._submissions:
            if key in self._environments:
                return self._submit(workspace, request, self._environments[key])
            with self._lock("environment", *key):
                return self._submit(workspace, request, self._environments.get(key))

    def _submit(self, workspace: WorkspaceRef, request: JobRequest, known_environment: str | None) -> JobSnapshot:
        from azure.ai.ml import Input, Output, command
        from azure.ai.ml.entities import Environment, ManagedIdentityConfiguration

        inputs: dict[str, Any] = dict(request.literal_inputs)
        if request.model is not None:
            inputs["model"] = Input(type=request.model.type, path=request.model.uri, mode=request.model.mode)
        if request.resume_from is not None:
            previous = self._output_path(workspace, request.resume_from, CHECKPOINT_OUTPUT)
            inputs[RESUME_INPUT] = Input(type="uri_folder", path=previous, mode="download")
        outputs = (
            {CHECKPOINT_OUTPUT: Output(type=request.checkpoint_output, mode=request.checkpoint_mode)}
            if request.checkpoint_output
            else None
        )
        job = command(
            name=request.name,
            display_name=request.display_name,
            experiment_name=request.experiment,
            command=request.command,
            environment=known_environment or Environment(image=request.image),
            compute=request.compute,
            inputs=inputs or None,
            outputs=outputs,
            environment_variables=request.environment or None,
            tags=request.tags,
            identity=ManagedIdentityConfiguration() if request.identity == "managed" else None,
        )
        if request.instance_type:
            job.resources = {"instance_type": request.instance_type}
        if request.timeout_seconds:
            job.set_limits(timeout=request.timeout_seconds)
        # amlwire validated the spec already (admission + models); AML validates again on submission.
        with self._call("ml.job", "PUT", f"submit AML job {request.name}", workspace.subscription):
            created = self._ml(workspace).jobs.create_or_update(job, skip_validation=True)
        if known_environment is None and isinstance(created.environment, str):
            # the SDK wrote the image's anonymous (content-addressed) environment version with this job
            self._environments[(workspace.id.lower(), request.image)] = created.environment
        return _snapshot(created)

    def list_jobs(self, workspace: WorkspaceRef, tag: str, wanted: set[str]) -> JobListing:
        """amlwire's jobs (by tag), newest first, paging only until every wanted job has been seen. Plain ARM GETs
        of the listing MLClient.jobs.list makes: it turns every job into an entity (and decodes a token per job
        for its studio URL), most of the job poller's CPU for a name and a status."""
        found: dict[str, JobSnapshot] = {}
        pages = 0
        query = urlencode({"api-version": ML_API_VERSION, "tag": tag, "listViewType": "ActiveOnly"})
        url: str | None = f"{self.clients.settings.arm_endpoint}{workspace.id}/jobs?{query}"
        with self._call("ml.job.list", "GET", f"list AML jobs in {workspace.name}", workspace.subscription):
            while url:
                page = self.clients.send(workspace.subscription, url)
                pages += 1
                found.update((s.name, s) for s in (_snapshot_of(body) for body in page.get("value") or []))
                url = None if wanted <= found.keys() else page.get("nextLink")
        return JobListing(found, reads=max(1, pages))

    def cancel_job(self, workspace: WorkspaceRef, name: str) -> None:
        with self._call("ml.job.cancel", "POST", f"cancel AML job {name}", workspace.subscription):
            self._ml(workspace).jobs.begin_cancel(name)

    def job_details(self, workspace: WorkspaceRef, name: str) -> JobDetails:
        # azure-ai-ml has no public call for a run's error; jobs.stream reads it from run history like this.
        with self._call("history.run.details", "GET", f"read run history of AML job {name}", workspace.subscription):
            details = self._ml(workspace).jobs._runs_operations.get_run_details(name)
            root = details.error.error if details.error else None
            return JobDetails(
                start_time=_iso(details.start_time_utc),
                end_time=_iso(details.end_time_utc),
                error=_error_tree(root) if root is not None else None,
            )

    def job_results(self, workspace: WorkspaceRef, name: str) -> RunResults:
        """Final metrics and the params beside them, from the workspace's MLflow tracking server (the REST API
        of mlflow runs/get)."""
        tracking = self._tracking_uri(workspace)
        url = f"{tracking}/api/2.0/mlflow/runs/get?run_id={name}"
        try:
            with self._call("mlflow.run", "GET", f"read metrics of AML job {name}", workspace.subscription):
                response = self.clients.send(workspace.subscription, url)
        except AzureError:
            self._tracking.pop(workspace.id.lower(), None)  # a workspace made again elsewhere: read it anew
            raise
        run = response.get("run", {})
        data, info = run.get("data", {}), run.get("info", {})
        latest: dict[str, tuple[tuple[int, int], float]] = {}
        for metric in data.get("metrics", []):
            when = (int(metric.get("timestamp") or 0), int(metric.get("step") or 0))
            if metric["key"] not in latest or when >= latest[metric["key"]][0]:
                latest[metric["key"]] = (when, float(metric["value"]))
        params = {str(p["key"]): str(p.get("value", "")) for p in data.get("params", []) if "key" in p}
        tags = {str(t["key"]): str(t.get("value", "")) for t in data.get("tags", []) if "key" in t}
        return RunResults(
            {k: v for k, (_, v) in latest.items()},
            params,
            tags,
            start_time=_from_epoch_ms(info.get("start_time")),
            end_time=_from_epoch_ms(info.get("end_time")),
        )

    def _tracking_uri(self, workspace: WorkspaceRef) -> str:
        """The workspace's MLflow tracking server, read once per workspace (it is the workspace's region's)."""
        key = workspace.id.lower()
        if key not in self._tracking:
            with self._call("ml.workspace", "GET", f"get AML workspace {workspace.name}", workspace.subscription):
                uri = str(self._ml(workspace).workspaces.get(workspace.name).mlflow_tracking_uri)
            self._tracking[key] = "https://" + uri.removeprefix("azureml://").removeprefix("https://").rstrip("/")
        return self._tracking[key]

    def _output_path(self, workspace: WorkspaceRef, job_name: str, output_name: str) -> str:
        """The datastore URI AML reports for a job's output (the documented job-output form when it reports none)."""
        with self._call("ml.job", "GET", f"read the outputs of AML job {job_name}", workspace.subscription):
            job = self._ml(workspace).jobs.get(job_name)
        output = (getattr(job, "outputs", None) or {}).get(output_name)
        path = getattr(output, "path", None)
        # the documented job-output form; its path part must not be empty
        return str(path) if path else f"azureml://jobs/{job_name}/outputs/{output_name}/paths/."

    def model_exists(self, workspace: WorkspaceRef, name: str, version: str) -> bool:
        try:
            with self._call(
                "ml.model.version", "GET", f"get model {name}:{version} in {workspace.name}", workspace.subscription
            ):
                self._ml(workspace).models.get(name=name, version=version)
        except AzureNotFound:
            return False
        return True

    def register_model(
        self, workspace: WorkspaceRef, model_name: str, model_type: str, job_name: str
    ) -> tuple[str, str]:
        """Register the job's checkpoint output; a version already registered from this job is reused."""
        from azure.ai.ml.entities import Model

        ml = self._ml(workspace)
        try:
            with self._call(
                "ml.model.version.list", "GET", f"list versions of model {model_name}", workspace.subscription
            ):
                existing = list(ml.models.list(name=model_name))
        except AzureNotFound:
            existing = []
        for version in existing:
            if (version.tags or {}).get("amlwire.io/job") == job_name:
                return version.name, str(version.version)
        path = self._output_path(workspace, job_name, CHECKPOINT_OUTPUT)
        model = Model(
            name=model_name,
            type=model_type,
            path=path,  # the datastore URI AML reports for the output
            tags={"amlwire.io/job": job_name},
            description=f"Registered by amlwire from {job_name}",
        )
        with self._call(
            "ml.model.version", "PUT", f"register model {model_name} from {job_name}", workspace.subscription
        ):
            created = ml.models.create_or_update(model)
        return created.name, str(created.version)


class AzureAdapter(JobsAdapter, DataPathReads):
    """The Azure side of amlwire. Thread-safe; clients are shared."""

    def __init__(self, clients: AzureClients, observe: CallObserver | None = None, lro_grace: float = 1.0) -> None:
        self.clients = clients
        self.lro_grace = lro_grace
        self._environments: dict[tuple[str, str], str] = {}
        self._tracking: dict[str, str] = {}
        self._locks: defaultdict[tuple[str, ...], threading.Lock] = defaultdict(threading.Lock)
        # A submission holds its built job (azure-ai-ml's entities, several MiB transient) while it waits for its
        # ARM write slot; more than a few at once only raise peak memory, not throughput (bench/scale.py).
        self._submissions = threading.BoundedSemaphore(MAX_CONCURRENT_SUBMISSIONS)
        self._locks_guard = threading.Lock()
        self._observe = observe or (lambda route, method, status: None)
        self.pacer = clients.pacer

    @contextmanager
    def _call(self, route: str, method: str, action: str, subscription: str) -> Iterator[None]:
        try:
            with classified(action):
                yield
        except AzureError as error:
            self._observe(route, method, error.status or 0)
            raise
        self._observe(route, method, 200)

    def _lock(self, *key: str) -> threading.Lock:
        """One lock per key (an identity's federated credentials, a workspace's environment for an image)."""
        with self._locks_guard:
            return self._locks[key]

    # -- AKS --------------------------------------------------------------------------------------
    def get_cluster(self, subscription: str, group: str, name: str) -> ClusterInfo:
        with self._call("aks.cluster", "GET", f"get AKS cluster {group}/{name}", subscription):
            cluster = self.clients.containers(subscription).managed_clusters.get(group, name)
        oidc = cluster.oidc_issuer_profile
        security = cluster.security_profile
        workload = security.workload_identity if security is not None else None
        return ClusterInfo(
            id=cluster.id,
            location=cluster.location,
            oidc_issuer_enabled=bool(oidc and oidc.enabled),
            issuer_url=oidc.issuer_url if oidc else None,
            workload_identity_enabled=bool(workload and workload.enabled),
            local_accounts_disabled=bool(cluster.disable_local_accounts),
            node_count=_node_count(cluster.agent_pool_profiles),
        )

    # -- managed identity and federated credentials ----------------------------------------------
    def get_identity(self, identity_id: str) -> IdentityInfo:
        rid = ResourceId.parse(identity_id)
        with self._call("msi.identity", "GET", f"get identity {rid.group}/{rid.name}", rid.subscription):
            identity = self.clients.msi(rid.subscription).user_assigned_identities.get(rid.group, rid.name)
        return IdentityInfo(
            id=identity.id,
            client_id=identity.client_id,
            principal_id=identity.principal_id,
            tenant_id=identity.tenant_id,
        )

    def list_federated_credentials(self, identity_id: str) -> list[FederatedCredential]:
        rid = ResourceId.parse(identity_id)
        with self._call("msi.fic.list", "GET", f"list federated credentials of {rid.name}", rid.subscription):
            found = list(self.clients.msi(rid.subscription).federated_identity_credentials.list(rid.group, rid.name))
        return [FederatedCredential(f.name, f.issuer, f.subject, tuple(f.audiences or ())) for f in found]

    def discover_issuer(self, issuer: str) -> IssuerAnswer:
        """Fetch the issuer's OpenID discovery document, as Entra does before it trusts a token of that issuer:
        AKS publishes it while the cluster exists (rule aks.issuer-discovery). 404 or 410 means no such issuer any
        more; anything else (unreachable, egress blocked, 5xx) is not evidence either way."""
        import requests

        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            answer = requests.get(url, timeout=ISSUER_TIMEOUT, verify=self.clients.tls_verify(), allow_redirects=False)
        except requests.RequestException as error:
            return IssuerAnswer("unknown", f"could not be asked ({type(error).__name__})")
        if answer.status_code in (404, 410):
            return IssuerAnswer("gone", f"its discovery document answers {answer.status_code}")
        if answer.status_code == 200 and _names_keys(answer):
            return IssuerAnswer("publishing", "it publishes its keys")
        return IssuerAnswer("unknown", f"its discovery document answered {answer.status_code}")

    def _fic_write(self, identity_id: str, action: str, method: str, write: Callable[[], Any]) -> None:
        """Serialize writes per identity; retry Azure's concurrent-write 409 (other writers) with backoff."""
        with self._lock("identity", identity_id.lower()):
            for attempt in range(1, FIC_WRITE_ATTEMPTS + 1):
                try:
                    with self._call("msi.fic", method, action, ResourceId.parse(identity_id).subscription):
                        write()
                    return
                except AzureError as error:
                    if error.reason != "FederatedCredentialWriteConflict" or attempt == FIC_WRITE_ATTEMPTS:
                        raise
                    time.sleep(min(4.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.5))  # noqa: S311

    def put_federated_credential(self, identity_id: str, credential: FederatedCredential) -> None:
        from azure.mgmt.msi.models import FederatedIdentityCredential

        rid = ResourceId.parse(identity_id)
        body = FederatedIdentityCredential(
            issuer=credential.issuer, subject=credential.subject, audiences=list(credential.audiences or (AUDIENCE,))
        )
        self._fic_write(
            identity_id,
            f"write federated credential {credential.name} on {rid.name}",
            "PUT",
            lambda: self.clients.msi(rid.subscription).federated_identity_credentials.create_or_update(
                rid.group, rid.name, credential.name, body
            ),
        )

    def delete_federated_credential(self, identity_id: str, name: str) -> None:
        rid = ResourceId.parse(identity_id)
        self._fic_write(
            identity_id,
            f"delete federated credential {name} on {rid.name}",
            "DELETE",
            lambda: self.clients.msi(rid.subscription).federated_identity_credentials.delete(rid.group, rid.name, name),
        )

    # -- cluster extension (long-running, never waited on) ---------------------------------------
    def get_extension(self, cluster_id: str, name: str) -> ExtensionInfo | None:
        rid = ResourceId.parse(cluster_id)
        try:
            with self._call("ext.extension", "GET", f"get extension {name} on {rid.name}", rid.subscription):
                extension = self.clients.extensions(rid.subscription).extensions.get(
                    rid.group, rid.namespace, rid.type, rid.name, name
                )
        except AzureNotFound:
            return None
        props = extension.properties
        return ExtensionInfo(
            id=extension.id,
            extension_type=props.extension_type or "",
            provisioning_state=_enum(props.provisioning_state),
            settings=dict(props.configuration_settings or {}),
            error=_extension_error(props),
        )

    def _begin(self, start: Callable[..., Any]) -> str | None:
        """Start an LRO without polling it; return Azure's operation status URL (not a token: no secrets)."""
        captured: dict[str, str] = {}

        def hook(response: Any) -> None:
            headers = response.http_response.headers
            url = headers.get("Azure-AsyncOperation") or headers.get("Location")
            if url and "url" not in captured:
                captured["url"] = url

        start(polling=False, raw_response_hook=hook)
        return captured.get("url")

    def begin_create_extension(self, cluster_id: str, name: str, settings: Mapping[str, str]) -> str | None:
        from azure.mgmt.kubernetesconfiguration.extensions import models

        rid = ResourceId.parse(cluster_id)
        body = models.Extension(
            properties=models.ExtensionProperties(
                extension_type=EXTENSION_TYPE,
                auto_upgrade_minor_version=True,
                release_train="stable",
                configuration_settings=dict(settings),
                # what `az k8s-extension create` forces for the AzureML extension
                scope=models.Scope(cluster=models.ScopeCluster(release_namespace=EXTENSION_RELEASE_NAMESPACE)),
            )
        )
        client = self.clients.extensions(rid.subscription).extensions
        with self._call("ext.extension", "PUT", f"install extension {name} on {rid.name}", rid.subscription):
            return self._begin(
                lambda **kw: client.begin_create(rid.group, rid.namespace, rid.type, rid.name, name, body, **kw)
            )

    def begin_update_extension(self, cluster_id: str, name: str, settings: Mapping[str, str]) -> str | None:
        from azure.mgmt.kubernetesconfiguration.extensions import models

        rid = ResourceId.parse(cluster_id)
        body = models.PatchExtension(properties=models.PatchExtensionProperties(configuration_settings=dict(settings)))
        client = self.clients.extensions(rid.subscription).extensions
        with self._call("ext.extension", "PATCH", f"update extension {name} on {rid.name}", rid.subscription):
            return self._begin(
                lambda **kw: client.begin_update(rid.group, rid.namespace, rid.type, rid.name, name, body, **kw)
            )

    def operation_state(self, subscription: str, url: str) -> OperationState:
        with self._call("operation", "GET", "check a long-running Azure operation", subscription):
            body = self.clients.send(subscription, url)
        return OperationState.of(body)

    # -- role assignments -------------------------------------------------------------------------
    def list_role_assignments(self, scope: str, principal_id: str) -> list[RoleAssignment]:
        subscription = subscription_of(scope)
        with self._call("authz.roleAssignment.list", "GET", f"list role assignments on {scope}", subscription):
            found = list(
                self.clients.authorization(subscription).role_assignments.list_for_scope(
                    scope, filter=f"assignedTo('{principal_id}')"
                )
            )
        return [
            RoleAssignment(a.name, a.scope or scope, a.role_definition_id, a.principal_id, _created_on(a), principal_id)
            for a in found
        ]

    def create_role_assignment(
        self, scope: str, name: str, role_definition_id: str, principal_id: str, description: str = ""
    ) -> bool:
        """Create it; True when created, False when Azure already had it (409 RoleAssignmentExists)."""
        # the client's default API version (2022-04-01): models.py re-exports older ones under the same name
        from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters

        subscription = subscription_of(scope)
        body = RoleAssignmentCreateParameters(
            role_definition_id=role_definition_id,
            principal_id=principal_id,
            principal_type="ServicePrincipal",
            description=description or None,
        )
        try:
            with self._call("authz.roleAssignment", "PUT", f"assign role on {scope}", subscription):
                try:
                    self.clients.authorization(subscription).role_assignments.create(scope, name, body)
                except ResourceExistsError as error:
                    if getattr(error.error, "code", None) == "RoleAssignmentExists":
                        return False
                    raise
        except AzureNotFound as error:
            raise AzureError(
                r.ACCESS_SCOPE_NOT_FOUND,
                f"{error.message}: the scope does not exist; fix spec.access.grants[].scope",
                retryable=False,
                status=404,
            ) from error
        return True

    def delete_role_assignment(self, scope: str, name: str) -> None:
        subscription = subscription_of(scope)
        with self._call("authz.roleAssignment", "DELETE", f"delete role assignment {name} on {scope}", subscription):
            self.clients.authorization(subscription).role_assignments.delete(scope, name)

    # -- storage ----------------------------------------------------------------------------------
    def get_storage_account(self, account_id: str) -> StorageInfo:
        rid = ResourceId.parse(account_id)
        with self._call("storage.account", "GET", f"get storage account {rid.name}", rid.subscription):
            account = self.clients.storage(rid.subscription).storage_accounts.get_properties(rid.group, rid.name)
        return StorageInfo(id=account.id, allow_shared_key_access=account.allow_shared_key_access)

    # -- AML workspace and compute ----------------------------------------------------------------
    def _ml(self, workspace: WorkspaceRef) -> Any:
        return self.clients.ml(workspace.subscription, workspace.group, workspace.name)

    def get_workspace(self, workspace: WorkspaceRef) -> WorkspaceInfo:
        with self._call(
            "ml.workspace", "GET", f"get AML workspace {workspace.group}/{workspace.name}", workspace.subscription
        ):
            found = self._ml(workspace).workspaces.get(workspace.name)
        identity = getattr(found, "identity", None)
        # a user-assigned identity's principal is only under user_assigned_identities (spec: principalId at the
        # top is the system-assigned identity's)
        assigned = list(getattr(identity, "user_assigned_identities", None) or [])
        principal = getattr(identity, "principal_id", None) or (_assigned_principal(assigned[0]) if assigned else None)
        return WorkspaceInfo(
            id=found.id,
            location=found.location,
            storage_account_id=getattr(found, "storage_account", None),
            system_datastores_auth_mode=getattr(found, "system_datastores_auth_mode", None),
            identity_principal_id=principal,
            identity_user_assigned="user" in str(getattr(identity, "type", "")).lower().replace("_", ""),
        )

    def get_compute(self, workspace: WorkspaceRef, name: str) -> ComputeInfo | None:
        try:
            with self._call("ml.compute", "GET", f"get compute {name} in {workspace.name}", workspace.subscription):
                compute = self._ml(workspace).compute.get(name)
        except AzureNotFound:
            return None
        info = _compute_info(compute)
        if getattr(compute, "provisioning_errors", None):
            info = replace(info, errors=self._provisioning_errors(workspace, info.id))
        return info

    def _provisioning_errors(self, workspace: WorkspaceRef, compute_id: str) -> tuple[str, ...]:
        """The text of a compute's provisioningErrors: azure-ai-ml keeps only the first error's code."""
        with self._call("ml.compute", "GET", "read the compute's provisioning errors", workspace.subscription):
            body = self.clients.get(workspace.subscription, compute_id)
        errors = (body.get("properties") or {}).get("provisioningErrors") or []
        return tuple(
            f"{(e.get('error') or {}).get('code', '')}: {(e.get('error') or {}).get('message', '')}".strip(": ")
            for e in errors
        )

    def begin_attach_compute(self, workspace: WorkspaceRef, attachment: ComputeAttachment) -> ComputeInfo | None:
        """Start the attach; return the compute if Azure finished within the short grace, else None.

        MLClient always polls in a daemon thread of its own. amlwire waits at most `lro_grace` seconds for
        it (never for the whole operation) and otherwise reads provisioningState on later reconciles.
        """
        from azure.ai.ml.entities import IdentityConfiguration, KubernetesCompute, ManagedIdentityConfiguration

        identity = ManagedIdentityConfiguration(resource_id=attachment.identity_id)
        compute = KubernetesCompute(
            name=attachment.name,
            resource_id=attachment.cluster_id,
            namespace=attachment.namespace,
            tags=dict(attachment.tags),
            identity=IdentityConfiguration(type="user_assigned", user_assigned_identities=[identity]),
        )
        action = f"attach compute {attachment.name} to {workspace.name}"
        with self._call("ml.compute", "PUT", action, workspace.subscription):
            poller = self._ml(workspace).compute.begin_create_or_update(compute)
        return _finished_within(poller, self.lro_grace)

    def begin_detach_compute(self, workspace: WorkspaceRef, name: str) -> None:
        with self._call("ml.compute", "DELETE", f"detach compute {name} from {workspace.name}", workspace.subscription):
            self._ml(workspace).compute.begin_delete(name, action="Detach")


def _finished_within(poller: Any, grace: float) -> ComputeInfo | None:
    """The attach's result if Azure finished it within `grace`, else None.

    Azure accepted the attach, so a failure now is the operation's (or its polling's), not the request's:
    the compute's provisioningState and errors tell on the next pass, which counts it as an attempt.
    """
    try:
        poller.wait(timeout=grace)
        return _compute_info(poller.result()) if poller.done() else None
    except SdkError:
        return None


def _compute_info(compute: Any) -> ComputeInfo:
    identity = getattr(compute, "identity", None)
    identity_ids = tuple(
        i.resource_id for i in (getattr(identity, "user_assigned_identities", None) or []) if i.resource_id
    )
    code = getattr(compute, "provisioning_errors", None)  # a string: the first error's code (azure-ai-ml)
    errors = (str(code),) if code else ()
    return ComputeInfo(
        id=compute.id,
        provisioning_state=_enum(compute.provisioning_state),
        cluster_id=getattr(compute, "resource_id", None),
        namespace=getattr(compute, "namespace", None),
        identity_type=_enum(getattr(identity, "type", None)) or "None",
        identity_ids=identity_ids,
        tags=dict(compute.tags or {}),
        errors=errors,
    )


def _created_on(assignment: Any) -> datetime | None:
    value = getattr(assignment, "created_on", None)
    return value if isinstance(value, datetime) else None


def _snapshot(job: Any) -> JobSnapshot:
    return JobSnapshot(name=job.name, status=_enum(job.status), studio_url=getattr(job, "studio_url", None))


def _snapshot_of(body: dict[str, Any], name: str = "") -> JobSnapshot:
    """A job as ARM returns it (GET or a listing's item)."""
    props = body.get("properties") or {}
    studio = ((props.get("services") or {}).get("Studio") or {}).get("endpoint")
    return JobSnapshot(name=body.get("name", name), status=str(props.get("status") or "NotStarted"), studio_url=studio)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _from_epoch_ms(value: Any) -> str | None:
    """MLflow's times (milliseconds since the epoch) as status says times."""
    if not value:
        return None
    return _iso(datetime.fromtimestamp(int(value) / 1000, UTC))


def _error_tree(error: Any) -> dict[str, Any]:
    """AML's nested error ({code, message, innerError: {code, ...}}) from the SDK's models."""
    tree: dict[str, Any] = {"code": getattr(error, "code", None), "message": getattr(error, "message", None)}
    inner = getattr(error, "inner_error", None)
    if inner is not None and getattr(inner, "code", None):
        tree["innerError"] = _error_tree(inner)
    return tree


def _assigned_principal(assigned: Any) -> str | None:
    """azure-ai-ml (1.x) copies a workspace's user-assigned identity with the REST model's as_dict(), whose keys
    are the wire's camelCase: its principal_id attribute stays None and the value sits under principalId."""
    return getattr(assigned, "principal_id", None) or vars(assigned).get("principalId")


def _node_count(pools: Any) -> int | None:
    counts = [p.count for p in pools or [] if p.count is not None]
    return sum(counts) if counts else None


def _extension_error(props: Any) -> str | None:
    """What the agent said went wrong: errorInfo, then the Error-level statuses (spec: Extension)."""
    said = []
    info = getattr(props, "error_info", None)
    if info is not None and (info.code or info.message):
        said.append(": ".join(p for p in (info.code, info.message) if p))
    for status in getattr(props, "statuses", None) or []:
        if str(status.level or "").lower() == "error" and status.message:
            said.append(status.message)
    return "; ".join(dict.fromkeys(said)) or None
