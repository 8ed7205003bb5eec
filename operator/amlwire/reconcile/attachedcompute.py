"""AttachedCompute: gather → plan (pure, in domain/) → apply → status, as ordered steps over the ports.

Level-based: the same `reconcile` runs on create, update, resume and the drift timer; it never looks at
what changed, only at what is and what should be. Each step owns one condition.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from amlwire.api.attachedcompute import (
    AttachedComputeSpec,
    AttachedComputeStatus,
    FederatedCredentialStatus,
    IdentityStatus,
    InstanceTypeSpec,
    OperationStatus,
    RoleAssignmentStatus,
)
from amlwire.domain.access import created_status, plan_access, role_guid
from amlwire.domain.azure import ClusterInfo, ComputeInfo, IdentityInfo, ResourceId, WorkspaceRef
from amlwire.domain.cluster import CLUSTER_READY, check_cluster
from amlwire.domain.compute import MAX_ATTACH_ATTEMPTS, OWNER_TAG, ComputeAction, decide_compute, owned_by
from amlwire.domain.conditions import (
    Outcome,
    StepResult,
    blocked,
    done,
    fold,
    progressing,
    rfc3339,
    summarize,
    waiting,
)
from amlwire.domain.errors import AzureNotFound, KubeConflict, KubeNotFound
from amlwire.domain.extension import Action, decide_extension, desired_settings
from amlwire.domain.federation import NAME_PREFIX, plan_federation, subject_of
from amlwire.reconcile.common import Event, KeyedLocks, Timings, earliest, guarded, seconds_until, transition_events
from amlwire.reconcile.ports import AzurePort, KubePort, ServiceAccountInfo

IDENTITY_READY = "IdentityReady"
FEDERATION_READY = "FederationReady"
SERVICE_ACCOUNTS_READY = "ServiceAccountsReady"
EXTENSION_READY = "ExtensionReady"
ACCESS_READY = "AccessReady"
INSTANCE_TYPES_READY = "InstanceTypesReady"
COMPUTE_READY = "ComputeReady"
STEP_TYPES = (
    CLUSTER_READY,
    IDENTITY_READY,
    FEDERATION_READY,
    SERVICE_ACCOUNTS_READY,
    EXTENSION_READY,
    ACCESS_READY,
    INSTANCE_TYPES_READY,
    COMPUTE_READY,
)

CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"
MANAGED_BY = {"app.kubernetes.io/managed-by": "amlwire"}
OWNER_LABEL = "amlwire.io/attached-compute"
MAX_EXTENSION_ATTEMPTS = 3
MAX_DETACH_ATTEMPTS = 3
GIVE_UP_AFTER = {
    "ComputeAttach": MAX_ATTACH_ATTEMPTS,
    "ComputeDetach": MAX_DETACH_ATTEMPTS,
    "ExtensionCreate": MAX_EXTENSION_ATTEMPTS,
    "ExtensionUpdate": MAX_EXTENSION_ATTEMPTS,
}
ATTACH_SETTLE_SECONDS = 60.0

# When several credentials were written at once, the condition names the most telling reason.
FEDERATION_REASON_ORDER = {
    "FederatedCredentialIssuerMismatch": 0,
    "FederatedCredentialAudienceMismatch": 1,
    "FederatedCredentialSubjectMismatch": 2,
    "FederatedCredentialMissing": 3,
}

# One lock per identity: federation lists, plans and writes under it, so AttachedComputes sharing an
# identity never race each other to Azure's concurrent-write 409 or past the 20-credential cap.
IDENTITY_LOCKS = KeyedLocks()


def operations_to_resume(previous: AttachedComputeStatus, generation: int | None) -> list[OperationStatus]:
    """The operations to go on following. A changed spec is the user's "try again": those that gave up go."""
    if generation is None or generation == previous.observed_generation:
        return list(previous.operations)
    return [op for op in previous.operations if op.attempt < GIVE_UP_AFTER.get(op.kind, MAX_EXTENSION_ATTEMPTS)]


@dataclass(frozen=True)
class Neighbours:
    """What other AttachedComputes using the same identity still need (so it is not deleted under them)."""

    federations: frozenset[tuple[str, str]] = frozenset()  # (issuer, subject)
    grants: frozenset[tuple[str, str]] = frozenset()  # (scope lower-case, role GUID)


@dataclass
class Scope:
    """Everything one reconcile of one AttachedCompute reads, decides and produces."""

    name: str
    generation: int | None
    spec: AttachedComputeSpec
    previous: AttachedComputeStatus
    now: datetime
    timings: Timings
    azure: AzurePort
    kube: KubePort
    neighbours: Neighbours = field(default_factory=Neighbours)
    status: AttachedComputeStatus = field(init=False)
    cluster: ClusterInfo | None = None
    identity: IdentityInfo | None = None
    extension_installed: bool = False  # present and healthy, even if its settings are still being changed
    results: dict[str, StepResult] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = copy.deepcopy(self.previous)
        self.status.operations = operations_to_resume(self.previous, self.generation)

    @property
    def cluster_id(self) -> str:
        c = self.spec.cluster
        return str(
            ResourceId(
                self.spec.cluster_subscription_id,
                c.resource_group,
                "Microsoft.ContainerService",
                "managedClusters",
                c.name,
            )
        )

    @property
    def workspace(self) -> WorkspaceRef:
        w = self.spec.workspace
        return WorkspaceRef(w.subscription_id, w.resource_group, w.name)

    def ok(self, condition: str) -> bool:
        result = self.results.get(condition)
        return result is not None and result.ok

    def other_operations(self, prefix: str) -> list[OperationStatus]:
        return [op for op in self.status.operations if not op.kind.startswith(prefix)]


@dataclass(frozen=True)
class Result:
    status: AttachedComputeStatus
    requeue_after: float | None
    events: list[Event]

    @property
    def ready(self) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)


def _timings(scope: Scope) -> Timings:
    return scope.timings


def step(condition: str) -> Callable[[Callable[[Scope], StepResult]], Callable[[Scope], StepResult]]:
    return guarded(condition, _timings)


# -- steps ----------------------------------------------------------------------------------------
@step(CLUSTER_READY)
def check_cluster_step(scope: Scope) -> StepResult:
    c = scope.spec.cluster
    try:
        scope.cluster = scope.azure.get_cluster(scope.spec.cluster_subscription_id, c.resource_group, c.name)
    except AzureNotFound:
        scope.status.oidc_issuer = None
        return blocked(
            CLUSTER_READY,
            "ClusterNotFound",
            f"AKS cluster {c.resource_group}/{c.name} does not exist in subscription "
            f"{scope.spec.cluster_subscription_id}; fix spec.cluster",
            scope.timings.blocked_recheck,
        )
    cluster = scope.cluster
    scope.status.oidc_issuer = cluster.issuer_url if cluster.oidc_issuer_enabled else None
    return check_cluster(cluster, c.resource_group, c.name, scope.timings.blocked_recheck)


@step(IDENTITY_READY)
def check_identity(scope: Scope) -> StepResult:
    identity_id = scope.spec.identity.resource_id
    try:
        identity = scope.azure.get_identity(identity_id)
    except AzureNotFound:
        rid = ResourceId.parse(identity_id)
        return blocked(
            IDENTITY_READY,
            "IdentityNotFound",
            f"user-assigned identity {rid.name} does not exist in resource group {rid.group} (subscription "
            f"{rid.subscription}); create it (az identity create -g {rid.group} -n {rid.name}) or fix "
            f"spec.identity.resourceId",
            scope.timings.blocked_recheck,
        )
    scope.identity = identity
    scope.status.identity = IdentityStatus(
        client_id=identity.client_id, principal_id=identity.principal_id, tenant_id=identity.tenant_id
    )
    return done(
        IDENTITY_READY, "IdentityFound", f"client ID {identity.client_id}, principal ID {identity.principal_id}"
    )


@step(FEDERATION_READY)
def reconcile_federation(scope: Scope) -> StepResult:
    issuer = scope.status.oidc_issuer
    if not issuer:
        return waiting(FEDERATION_READY, CLUSTER_READY)
    if scope.identity is None:
        return waiting(FEDERATION_READY, IDENTITY_READY)
    identity_id = scope.spec.identity.resource_id
    accounts = [(sa.namespace, sa.name) for sa in scope.spec.service_accounts]
    window = timedelta(seconds=scope.timings.federation_propagation)
    with IDENTITY_LOCKS.hold(identity_id):
        plan = plan_federation(
            accounts,
            issuer,
            scope.azure.list_federated_credentials(identity_id),
            previously_managed=[f.name for f in scope.previous.federated_credentials],
            wanted_elsewhere=scope.neighbours.federations,
            identity_name=ResourceId.parse(identity_id).name,
        )
        for name in plan.deletes:
            scope.azure.delete_federated_credential(identity_id, name)
            scope.events.append(Event("Normal", "FederatedCredentialDeleted", f"deleted stale {name}"))
        for write in plan.writes:
            scope.azure.put_federated_credential(identity_id, write.credential)
            scope.events.append(Event("Normal", write.reason, write.detail))
    scope.status.federated_credentials = _federation_records(
        scope, plan.managed, plan.satisfied, {w.credential.name: w.reason for w in plan.writes}, window
    )
    notes = " ".join(plan.notes)
    if plan.problems:
        message = "; ".join(p.message for p in plan.problems)
        return blocked(
            FEDERATION_READY, plan.problems[0].reason, f"{message} {notes}".strip(), scope.timings.blocked_recheck
        )
    pending = [
        r for r in scope.status.federated_credentials if r.effective_at and seconds_until(r.effective_at, scope.now) > 0
    ]
    if pending:
        last = max(pending, key=lambda r: r.effective_at or "")
        telling = min(pending, key=lambda r: FEDERATION_REASON_ORDER.get(r.reason or "", len(FEDERATION_REASON_ORDER)))
        names = ", ".join(r.name for r in pending)
        return progressing(
            FEDERATION_READY,
            telling.reason or "FederatedCredentialPropagating",
            f"amlwire wrote {names}; Entra honours a new federated credential within "
            f"~{scope.timings.federation_propagation:.0f}s (from {last.effective_at}). {notes}".strip(),
            seconds_until(last.effective_at or "", scope.now),
        )
    return done(
        FEDERATION_READY,
        "ServiceAccountsFederated",
        f"{len(accounts)} service account(s) federated with issuer {issuer}. {notes}".strip(),
    )


def _federation_records(
    scope: Scope,
    managed: tuple[tuple[str, str], ...],
    satisfied: dict[str, str],
    written: dict[str, str],
    window: timedelta,
) -> list[FederatedCredentialStatus]:
    previous = {f.name: f for f in scope.previous.federated_credentials}
    records = []
    for name, subject in managed:
        if name in written:
            records.append(
                FederatedCredentialStatus(
                    name=name, subject=subject, effective_at=rfc3339(scope.now + window), reason=written[name]
                )
            )
        elif satisfied.get(subject) == name:
            record = previous.get(name)
            still_propagating = record and record.effective_at and seconds_until(record.effective_at, scope.now) > 0
            records.append(record if still_propagating else FederatedCredentialStatus(name=name, subject=subject))
    return records


@step(SERVICE_ACCOUNTS_READY)
def reconcile_service_accounts(scope: Scope) -> StepResult:
    identity = scope.identity
    if identity is None:
        return waiting(SERVICE_ACCOUNTS_READY, IDENTITY_READY)
    wanted = {CLIENT_ID_ANNOTATION: identity.client_id, TENANT_ID_ANNOTATION: identity.tenant_id}
    problems: list[tuple[str, str]] = []
    for account in scope.spec.service_accounts:
        ns, name = account.namespace, account.name
        current = scope.kube.get_service_account(ns, name)
        if current is None and not account.create:
            problems.append(
                (
                    "ServiceAccountMissing",
                    f"service account {ns}/{name} does not exist and spec.serviceAccounts[].create is false; "
                    f"the AzureML extension creates it (check ExtensionReady), or set create: true",
                )
            )
            continue
        if current is not None and all(current.annotations.get(k) == v for k, v in wanted.items()):
            continue
        try:
            scope.kube.apply_service_account(ns, name, wanted, MANAGED_BY)
        except (KubeConflict, KubeNotFound) as error:  # each account reports its own; the others still run
            problems.append(_service_account_problem(error, ns, name, current, wanted))
            continue
        scope.events.append(
            Event("Normal", "ServiceAccountAnnotated", f"annotated {ns}/{name} with the identity's client ID")
        )
    if problems:
        messages = "; ".join(dict.fromkeys(m for _, m in problems))
        return blocked(SERVICE_ACCOUNTS_READY, problems[0][0], messages, scope.timings.blocked_recheck)
    return done(
        SERVICE_ACCOUNTS_READY,
        "ServiceAccountsAnnotated",
        f"{len(scope.spec.service_accounts)} service account(s) carry {CLIENT_ID_ANNOTATION}={identity.client_id}",
    )


def _service_account_problem(
    error: KubeConflict | KubeNotFound, ns: str, name: str, current: ServiceAccountInfo | None, wanted: dict[str, str]
) -> tuple[str, str]:
    if isinstance(error, KubeConflict):
        have = current.annotations if current else {}
        managers = (
            ", ".join(
                "a client that does not use server-side apply (e.g. kubectl annotate)"
                if m == "before-first-apply"
                else m
                for m in error.managers
            )
            or "another field manager"
        )
        differing = ", ".join(f"{k}={have[k]!r}" for k, v in wanted.items() if k in have and have[k] != v)
        fix = " ".join(f"{k}={v}" for k, v in wanted.items())
        return (
            "ServiceAccountAnnotationConflict",
            f"service account {ns}/{name} has {differing}, set by {managers}; it must match the identity. Fix "
            f"it where it is managed, or: kubectl annotate serviceaccount -n {ns} {name} {fix} --overwrite",
        )
    return (
        "NamespaceNotFound",
        f"namespace {ns} does not exist, so its service accounts cannot be created; the AzureML extension "
        f"creates it, or: kubectl create namespace {ns}",
    )


@step(EXTENSION_READY)
def reconcile_extension(scope: Scope) -> StepResult:
    spec = scope.spec.extension
    cluster = scope.spec.cluster
    desired = desired_settings(spec.settings, scope.spec.identity.resource_id)
    pending = [op for op in scope.status.operations if op.kind.startswith("Extension")]
    attempt = 1
    if pending:
        op = pending[0]
        if op.url:
            state = scope.azure.operation_state(scope.spec.cluster_subscription_id, op.url)
            age = -seconds_until(op.started_at, scope.now)
            if not state.done:
                if age > scope.timings.lro_timeout:
                    return blocked(
                        EXTENSION_READY,
                        "ExtensionOperationTimedOut",
                        f"the extension {op.kind} started at {op.started_at} has not finished after "
                        f"{age:.0f}s; check the extension in the portal",
                        scope.timings.blocked_recheck,
                    )
                return progressing(
                    EXTENSION_READY,
                    "ExtensionProvisioning",
                    f"{op.kind} of extension {spec.name} started at {op.started_at} is in progress",
                    scope.timings.lro_poll_delay,
                )
            if not state.succeeded:
                if op.attempt >= MAX_EXTENSION_ATTEMPTS:
                    return blocked(
                        EXTENSION_READY,
                        "ExtensionOperationFailed",
                        f"{op.kind} of extension {spec.name} failed {op.attempt} times: {state.error}; fix "
                        f"the cause, then change any field of the AttachedCompute to retry",
                        scope.timings.blocked_recheck,
                    )
                attempt = op.attempt + 1
                scope.events.append(Event("Warning", "ExtensionOperationFailed", f"{op.kind} failed: {state.error}"))
        scope.status.operations = scope.other_operations("Extension")
    found = scope.azure.get_extension(scope.cluster_id, spec.name)
    scope.extension_installed = found is not None and found.provisioning_state.lower() in ("succeeded", "updating")
    decision = decide_extension(
        found, desired, spec.mode == "Configure", cluster.resource_group, cluster.name, spec.name
    )
    if decision.action in (Action.CREATE, Action.UPDATE):
        begin = (
            scope.azure.begin_create_extension
            if decision.action is Action.CREATE
            else scope.azure.begin_update_extension
        )
        url = begin(scope.cluster_id, spec.name, decision.settings)
        kind = "ExtensionCreate" if decision.action is Action.CREATE else "ExtensionUpdate"
        scope.events.append(Event("Normal", decision.reason, decision.message))
        state = scope.azure.operation_state(scope.spec.cluster_subscription_id, url) if url else None
        if state is not None and state.done and state.succeeded:  # a quick operation needs no second pass
            scope.extension_installed = True
            return done(
                EXTENSION_READY, "ExtensionConfigured", f"extension {spec.name} uses the identity for storage access"
            )
        scope.status.operations.append(
            OperationStatus(kind=kind, url=url, started_at=rfc3339(scope.now), attempt=attempt)
        )
        return progressing(EXTENSION_READY, decision.reason, decision.message, scope.timings.lro_poll_delay)
    if decision.action is Action.WAIT:
        return progressing(EXTENSION_READY, decision.reason, decision.message, scope.timings.lro_poll_delay)
    if decision.action is Action.REPORT:
        return blocked(EXTENSION_READY, decision.reason, decision.message, scope.timings.blocked_recheck)
    return done(EXTENSION_READY, decision.reason, decision.message)


@step(ACCESS_READY)
def reconcile_access(scope: Scope) -> StepResult:
    access = scope.spec.access
    if not access.grants:
        scope.status.role_assignments = []
        return done(ACCESS_READY, "NoGrantsRequested", "spec.access.grants is empty: no role assignments to check")
    if scope.identity is None:
        return waiting(ACCESS_READY, IDENTITY_READY)
    principal = scope.identity.principal_id
    window = timedelta(seconds=scope.timings.role_propagation)
    scopes = sorted({g.scope for g in access.grants})
    assignments = {s: scope.azure.list_role_assignments(s, principal) for s in scopes}
    plan = plan_access(
        access.grants,
        principal,
        scope.spec.identity.resource_id.split("/")[2],
        assignments,
        scope.previous.role_assignments,
        window,
    )
    statuses = plan.statuses()
    if plan.to_create and access.mode == "Verify":
        scope.status.role_assignments = statuses
        missing = "; ".join(
            f"{g.role} on {g.scope} (az role assignment create --assignee-object-id {principal} "
            f'--assignee-principal-type ServicePrincipal --role "{g.role}" --scope {g.scope})'
            for g, _, _ in plan.to_create
        )
        return blocked(
            ACCESS_READY,
            "RoleAssignmentMissing",
            f"the identity lacks {missing}; or set spec.access.mode: Ensure",
            scope.timings.blocked_recheck,
        )
    for grant, name, role_definition in plan.to_create:
        created = scope.azure.create_role_assignment(grant.scope, name, role_definition, principal)
        statuses.append(
            created_status(grant, name, scope.now, window)
            if created
            else RoleAssignmentStatus(
                scope=grant.scope, role=grant.role, name=name, effective_at=rfc3339(scope.now + window)
            )
        )
        scope.events.append(Event("Normal", "RoleAssignmentCreated", f"assigned {grant.role} on {grant.scope}"))
    scope.status.role_assignments = statuses
    pending = [s for s in statuses if s.effective_at and seconds_until(s.effective_at, scope.now) > 0]
    if pending:
        last = max(pending, key=lambda s: s.effective_at or "")
        roles = ", ".join(f"{s.role} on {s.scope.rsplit('/', 1)[-1]}" for s in pending)
        return progressing(
            ACCESS_READY,
            "RoleAssignmentPropagating",
            f"{roles} assigned; Azure RBAC can take up to {scope.timings.role_propagation:.0f}s to "
            f"apply a new assignment: expected effective at {last.effective_at}",
            seconds_until(last.effective_at or "", scope.now),
        )
    return done(
        ACCESS_READY,
        "RolesAssigned",
        "the identity holds " + ", ".join(f"{g.role} on {g.scope.rsplit('/', 1)[-1]}" for g in access.grants),
    )


def instance_type_manifest(owner: str, item: InstanceTypeSpec) -> dict[str, object]:
    return {
        "apiVersion": "amlarc.azureml.com/v1alpha1",
        "kind": "InstanceType",
        "metadata": {"name": item.name, "labels": {**MANAGED_BY, OWNER_LABEL: owner}},
        "spec": {
            "nodeSelector": dict(item.node_selector),
            "resources": {"requests": dict(item.resources.requests), "limits": dict(item.resources.limits)},
        },
    }


@step(INSTANCE_TYPES_READY)
def reconcile_instance_types(scope: Scope) -> StepResult:
    wanted = scope.spec.compute.instance_types
    if not scope.kube.instance_types_supported():
        if not wanted:
            return done(INSTANCE_TYPES_READY, "NoInstanceTypesRequested", "spec.compute.instanceTypes is empty")
        if not scope.ok(EXTENSION_READY):
            return waiting(INSTANCE_TYPES_READY, EXTENSION_READY)
        return blocked(
            INSTANCE_TYPES_READY,
            "InstanceTypeCRDMissing",
            "the InstanceType CRD (instancetypes.amlarc.azureml.com) is not installed on this cluster; the "
            "AzureML extension installs it: check its pods (kubectl get pods -n azureml)",
            scope.timings.blocked_recheck,
        )
    for item in wanted:
        scope.kube.apply_instance_type(instance_type_manifest(scope.name, item))
    stale = set(scope.kube.list_instance_types(f"{OWNER_LABEL}={scope.name}")) - {i.name for i in wanted}
    for name in sorted(stale):
        scope.kube.delete_instance_type(name)
    if not wanted:
        return done(INSTANCE_TYPES_READY, "NoInstanceTypesRequested", "spec.compute.instanceTypes is empty")
    return done(
        INSTANCE_TYPES_READY,
        "InstanceTypesApplied",
        "instance types " + ", ".join(i.name for i in wanted) + " are on the cluster",
    )


@step(COMPUTE_READY)
def reconcile_compute(scope: Scope) -> StepResult:
    if scope.cluster is None:
        return waiting(COMPUTE_READY, CLUSTER_READY)
    if scope.identity is None:
        return waiting(COMPUTE_READY, IDENTITY_READY)
    if not scope.extension_installed:  # Azure attaches only to a cluster with a healthy AzureML extension
        return waiting(COMPUTE_READY, EXTENSION_READY)
    compute = scope.spec.compute
    ws = scope.workspace
    ops = [op for op in scope.status.operations if op.kind.startswith("Compute")]
    attach = next((op for op in ops if op.kind == "ComputeAttach"), None)
    detach = next((op for op in ops if op.kind == "ComputeDetach"), None)
    found = scope.azure.get_compute(ws, compute.name)
    detach_command = f"az ml compute detach --name {compute.name} -g {ws.group} -w {ws.name}"
    if detach is not None and found is not None:
        return _follow_detach(scope, found, attach, detach, detach_command)
    settling = attach is not None and -seconds_until(attach.started_at, scope.now) < ATTACH_SETTLE_SECONDS
    if found is None and settling and detach is None:
        return progressing(
            COMPUTE_READY, "ComputeProvisioning", f"compute {compute.name} is attaching", scope.timings.lro_poll_delay
        )
    decision = decide_compute(
        found,
        compute.name,
        scope.cluster_id,
        scope.spec.identity.resource_id,
        compute.namespace,
        scope.name,
        attach.attempt if attach else 0,
        detach_command,
    )
    keep = scope.other_operations("Compute")
    if decision.action is ComputeAction.ATTACH:
        try:
            attached = scope.azure.begin_attach_compute(
                ws,
                compute.name,
                scope.cluster_id,
                compute.namespace,
                scope.spec.identity.resource_id,
                {OWNER_TAG: scope.name},
            )
        except AzureNotFound:
            return blocked(
                COMPUTE_READY,
                "WorkspaceNotFound",
                f"workspace {ws.name} does not exist in resource group {ws.group} (subscription "
                f"{ws.subscription}): fix spec.workspace.name or spec.workspace.resourceGroup",
                scope.timings.blocked_recheck,
            )
        if attached is not None and attached.provisioning_state.lower() == "succeeded":
            scope.events.append(Event("Normal", decision.reason, decision.message))
            scope.status.operations = keep
            scope.status.compute_id = attached.id
            return done(
                COMPUTE_READY, "ComputeAttached", f"compute {compute.name} is attached with the user-assigned identity"
            )
        scope.status.operations = [
            *keep,
            OperationStatus(
                kind="ComputeAttach", started_at=rfc3339(scope.now), attempt=(attach.attempt + 1) if attach else 1
            ),
        ]
        scope.events.append(Event("Normal", decision.reason, decision.message))
        return progressing(COMPUTE_READY, decision.reason, decision.message, scope.timings.lro_poll_delay)
    if decision.action is ComputeAction.DETACH:
        return _detach_to_reattach(scope, attach, 1, decision.reason, decision.message)
    if decision.action is ComputeAction.WAIT:
        return progressing(COMPUTE_READY, decision.reason, decision.message, scope.timings.lro_poll_delay)
    if decision.action is ComputeAction.REPORT:
        return blocked(COMPUTE_READY, decision.reason, decision.message, scope.timings.blocked_recheck)
    scope.status.operations = keep
    scope.status.compute_id = found.id if found else None
    return done(COMPUTE_READY, decision.reason, decision.message)


def _follow_detach(
    scope: Scope, found: ComputeInfo, attach: OperationStatus | None, detach: OperationStatus, detach_command: str
) -> StepResult:
    """A detach amlwire started: still running, or over with the compute still there (the detach failed)."""
    name = scope.spec.compute.name
    if found.provisioning_state.lower() == "deleting":
        return progressing(
            COMPUTE_READY, "ComputeProvisioning", f"compute {name} is detaching", scope.timings.lro_poll_delay
        )
    errors = "; ".join(found.errors) or f"the compute is {found.provisioning_state}"
    if detach.attempt >= MAX_DETACH_ATTEMPTS:
        return blocked(
            COMPUTE_READY,
            "ComputeDetachFailed",
            f"detaching compute {name} failed {detach.attempt} times ({errors}); detach it by hand "
            f"({detach_command}) and amlwire attaches it again",
            scope.timings.blocked_recheck,
        )
    message = f"detaching compute {name} failed ({errors}); detaching it again"
    return _detach_to_reattach(scope, attach, detach.attempt + 1, "ComputeDetachFailed", message)


def _detach_to_reattach(
    scope: Scope, attach: OperationStatus | None, attempt: int, reason: str, message: str
) -> StepResult:
    scope.azure.begin_detach_compute(scope.workspace, scope.spec.compute.name)
    scope.status.operations = [
        *scope.other_operations("Compute"),
        *([attach] if attach else []),
        OperationStatus(kind="ComputeDetach", started_at=rfc3339(scope.now), attempt=attempt),
    ]
    scope.events.append(Event("Warning", reason, message))
    return progressing(COMPUTE_READY, reason, message, scope.timings.lro_poll_delay)


STEPS = (
    check_cluster_step,
    check_identity,
    reconcile_federation,
    reconcile_service_accounts,
    reconcile_extension,
    reconcile_access,
    reconcile_instance_types,
    reconcile_compute,
)


def reconcile(scope: Scope) -> Result:
    """Run every step in order, then fold the results into status (conditions, summaries, observedGeneration)."""
    results = []
    for run in STEPS:
        result = run(scope)
        scope.results[result.type] = result
        results.append(result)
    conditions = fold(scope.previous.conditions, [*results, *summarize(results)], scope.generation, scope.now)
    scope.status.conditions = conditions
    scope.status.observed_generation = scope.generation
    outcomes = {r.type: r.outcome for r in results}
    acted = {e.reason for e in scope.events}
    events = scope.events + [
        e for e in transition_events(scope.previous.conditions, conditions, outcomes) if e.reason not in acted
    ]
    requeue = earliest(r.requeue_after for r in results if r.outcome is not Outcome.DONE)
    return Result(scope.status, requeue, events)


# -- deletion ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cleanup:
    finished: bool
    message: str
    requeue_after: float | None
    events: list[Event]


def cleanup(scope: Scope) -> Cleanup:
    """Undo what amlwire created (deletionPolicy Delete) or leave Azure as it is (Orphan)."""
    if scope.spec.deletion_policy == "Orphan":
        return Cleanup(
            True,
            "deletionPolicy Orphan: Azure and the cluster left as they are",
            None,
            [Event("Normal", "Orphaned", "left Azure and the cluster untouched (deletionPolicy: Orphan)")],
        )
    events: list[Event] = []
    for item in scope.kube.list_instance_types(f"{OWNER_LABEL}={scope.name}"):
        scope.kube.delete_instance_type(item)
    for account in scope.spec.service_accounts:
        scope.kube.release_service_account(account.namespace, account.name)
    _delete_federated_credentials(scope, events)
    _delete_role_assignments(scope, events)
    remaining = _detach_compute(scope, events)
    if remaining:
        return Cleanup(False, remaining, scope.timings.lro_poll_delay, events)
    return Cleanup(True, "removed what amlwire created", None, events)


def _delete_federated_credentials(scope: Scope, events: list[Event]) -> None:
    identity_id = scope.spec.identity.resource_id
    try:
        existing = scope.azure.list_federated_credentials(identity_id)
    except AzureNotFound:
        return
    recorded = {f.name for f in scope.previous.federated_credentials}
    issuer = scope.previous.oidc_issuer
    subjects = {subject_of(sa.namespace, sa.name) for sa in scope.spec.service_accounts}
    with IDENTITY_LOCKS.hold(identity_id):
        for credential in existing:
            ours = credential.name in recorded or (
                credential.name.startswith(NAME_PREFIX)
                and credential.issuer == issuer
                and credential.subject in subjects
            )
            if ours and (credential.issuer, credential.subject) not in scope.neighbours.federations:
                scope.azure.delete_federated_credential(identity_id, credential.name)
                events.append(Event("Normal", "FederatedCredentialDeleted", f"deleted {credential.name}"))


def _delete_role_assignments(scope: Scope, events: list[Event]) -> None:
    for record in scope.previous.role_assignments:
        if not record.created_by_amlwire or (record.scope.lower(), role_guid(record.role)) in scope.neighbours.grants:
            continue
        try:
            scope.azure.delete_role_assignment(record.scope, record.name)
        except AzureNotFound:
            continue
        events.append(Event("Normal", "RoleAssignmentDeleted", f"removed {record.role} on {record.scope}"))


def _detach_compute(scope: Scope, events: list[Event]) -> str | None:
    compute = scope.spec.compute
    try:
        found = scope.azure.get_compute(scope.workspace, compute.name)
    except AzureNotFound:
        return None
    if found is None or not owned_by(found, scope.name):
        return None
    if found.provisioning_state.lower() != "deleting":
        scope.azure.begin_detach_compute(scope.workspace, compute.name)
        events.append(Event("Normal", "ComputeDetaching", f"detaching compute {compute.name}"))
    return f"waiting for compute {compute.name} to detach"
