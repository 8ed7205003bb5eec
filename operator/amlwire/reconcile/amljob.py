"""AmlJob: admit, submit once (or adopt), follow AML's status, and finish with metrics, verdict and hint.

Level-based like AttachedCompute: the same `reconcile_job` runs on create, update and resume, and when a
poller sees AML's status change. AML status comes from the workspace's shared listing (JobWatch).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from amlwire.api.amljob import AmlJobSpec, AmlJobStatus, RegisteredModelStatus
from amlwire.domain.azure import WorkspaceRef
from amlwire.domain.conditions import NOT_STALLED, Outcome, StepResult, Summary, blocked, done, fold, retrying, rfc3339
from amlwire.domain.errors import AzureError
from amlwire.domain.jobs import (
    TERMINAL,
    ComputeHealth,
    JobSnapshot,
    aml_job_name,
    build_request,
    failure,
    innermost_code,
    job_summary,
    verdict,
)
from amlwire.reconcile.common import Event, Timings
from amlwire.reconcile.jobwatch import JobWatch
from amlwire.reconcile.ports import AzurePort

SUBMITTED = "Submitted"


@dataclass(frozen=True)
class ComputeView:
    """The AttachedCompute a job names, as the operator's index holds it."""

    name: str
    ready: bool
    ready_message: str
    allowed_namespaces: tuple[str, ...]
    workspace: WorkspaceRef
    compute_name: str
    instance_types: tuple[str, ...]
    health: ComputeHealth
    identity_client_id: str | None = None


def compute_view(name: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> ComputeView:
    """The view of an AttachedCompute from its raw spec and status (as kopf's index holds them)."""
    conditions = {
        c["type"]: (c["status"], c.get("reason", ""), c.get("message", "")) for c in status.get("conditions") or []
    }
    ready = conditions.get("Ready", ("Unknown", "", "it has not been reconciled yet"))
    workspace = spec.get("workspace") or {}
    compute = spec.get("compute") or {}
    return ComputeView(
        name=name,
        ready=ready[0] == "True",
        ready_message=f"{ready[1]}: {ready[2]}".strip(": "),
        allowed_namespaces=tuple((spec.get("jobs") or {}).get("allowedNamespaces") or ()),
        workspace=WorkspaceRef(
            workspace.get("subscriptionId", ""), workspace.get("resourceGroup", ""), workspace.get("name", "")
        ),
        compute_name=str(compute.get("name", "")),
        instance_types=tuple(str(i.get("name")) for i in compute.get("instanceTypes") or ()),
        health=ComputeHealth(name, conditions),
        identity_client_id=(status.get("identity") or {}).get("clientId"),
    )


@dataclass
class JobScope:
    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: AmlJobSpec
    previous: AmlJobStatus
    now: datetime
    timings: Timings
    azure: AzurePort
    watch: JobWatch
    compute: ComputeView | None
    poll_interval: float = 30.0
    status: AmlJobStatus = field(init=False)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = copy.deepcopy(self.previous)

    @property
    def workspace(self) -> WorkspaceRef | None:
        if self.status.workspace:
            parts = self.status.workspace.strip("/").split("/")
            return WorkspaceRef(parts[1], parts[3], parts[7])
        return self.compute.workspace if self.compute else None


@dataclass(frozen=True)
class JobResult:
    status: AmlJobStatus
    requeue_after: float | None
    events: list[Event]


def admit(scope: JobScope) -> StepResult | None:
    """Why the job cannot be submitted yet (re-checked later), or None when it can."""
    compute, recheck = scope.compute, scope.timings.blocked_recheck
    if compute is None:
        return blocked(
            SUBMITTED,
            "ComputeNotFound",
            f"AttachedCompute {scope.spec.compute_ref} does not exist "
            f"(kubectl get amlc); create it or fix spec.computeRef",
            recheck,
        )
    if scope.namespace not in compute.allowed_namespaces:
        return blocked(
            SUBMITTED,
            "NamespaceNotAllowed",
            f"namespace {scope.namespace} may not run jobs on AttachedCompute {compute.name}; a cluster "
            f"admin adds it to spec.jobs.allowedNamespaces of that AttachedCompute",
            recheck,
        )
    if scope.spec.instance_type and compute.instance_types and scope.spec.instance_type not in compute.instance_types:
        return blocked(
            SUBMITTED,
            "InstanceTypeNotFound",
            f"spec.instanceType {scope.spec.instance_type} is not one of AttachedCompute {compute.name}'s "
            f"instance types ({', '.join(compute.instance_types)})",
            recheck,
        )
    if not compute.ready:
        return blocked(
            SUBMITTED,
            "ComputeNotReady",
            f"AttachedCompute {compute.name} is not Ready: {compute.ready_message}",
            recheck,
        )
    return None


def _submit(scope: JobScope) -> JobSnapshot:
    compute = scope.compute
    assert compute is not None
    name = aml_job_name(scope.name, scope.uid)
    existing = scope.azure.get_job(compute.workspace, name)
    if existing is not None:
        scope.events.append(Event("Normal", "Adopted", f"AML job {name} already exists; following it"))
        snapshot = existing
    else:
        request = build_request(
            scope.spec,
            scope.namespace,
            scope.name,
            scope.uid,
            compute.compute_name,
            compute.name,
            compute.workspace.id,
            compute.identity_client_id,
        )
        try:
            snapshot = scope.azure.submit_job(compute.workspace, request)
        except AzureError as error:
            raise _explained(scope, compute.workspace, error) from error
        scope.events.append(Event("Normal", "Submitted", f"submitted AML job {name} to compute {compute.compute_name}"))
    scope.status.aml_job_name = name
    scope.status.workspace = compute.workspace.id
    scope.status.studio_url = snapshot.studio_url
    return snapshot


def _explained(scope: JobScope, workspace: WorkspaceRef, error: AzureError) -> AzureError:
    """A rejected submission in terms of the spec: AML's own words do not say which field is wrong."""
    model = scope.spec.model
    if error.retryable or model is None or scope.azure.model_exists(workspace, model.name, model.version):
        return error
    return AzureError(
        "ModelNotFound",
        f"spec.model: model {model.name} version {model.version} is not registered in workspace "
        f"{workspace.name}; register it (az ml model create --name {model.name} --version {model.version} "
        f"--path <checkpoint> -g {workspace.group} -w {workspace.name}) or fix spec.model.name and "
        f"spec.model.version; amlwire submits the job once it exists",
        retryable=False,
        status=error.status,
    )


def _observe(scope: JobScope, workspace: WorkspaceRef, name: str) -> JobSnapshot | None:
    """AML's word on the job: the shared listing when a poller covers the workspace, else a GET."""
    snapshot = scope.watch.get(workspace.id, name)
    if snapshot is not None or scope.watch.polled(workspace.id):
        return snapshot
    return scope.azure.get_job(workspace, name)


def _finish(scope: JobScope, workspace: WorkspaceRef, snapshot: JobSnapshot) -> None:
    """Once per finished job: times, failure and hint, metrics, verdict, model registration.

    Everything is read first and recorded together, so an Azure error part-way leaves the job unfinished
    in status and the next reconcile tries again.
    """
    status, spec = scope.status, scope.spec
    name = snapshot.name
    if status.end_time is None:
        details = scope.azure.job_details(workspace, name)
        metrics = scope.azure.job_metrics(workspace, name) if snapshot.status == "Completed" else {}
        if snapshot.status == "Failed" and details.error:
            health = scope.compute.health if scope.compute else ComputeHealth(spec.compute_ref)
            code = innermost_code(details.error)
            status.failure = failure(
                code, str(details.error.get("message") or ""), health, spec.model.delivery if spec.model else None
            )
            scope.events.append(
                Event("Warning", "JobFailed", f"{code}: {status.failure.hint or status.failure.message}")
            )
        status.metrics = metrics
        status.start_time = details.start_time or status.start_time
        status.end_time = details.end_time or rfc3339(scope.now)
    status.verdict = verdict(spec.gate, status.metrics) if snapshot.status == "Completed" else None
    registration = spec.registration
    if (
        snapshot.status == "Completed"
        and status.verdict != "Failed"
        and registration
        and status.registered_model is None
    ):
        model, version = scope.azure.register_model(workspace, registration.model_name, registration.type, name)
        status.registered_model = RegisteredModelStatus(name=model, version=version)
        scope.events.append(Event("Normal", "ModelRegistered", f"registered {model}:{version} from {name}"))


def reconcile_job(scope: JobScope) -> JobResult:
    previous_status = scope.previous.aml_status
    requeue: float | None = None
    try:
        if not scope.status.aml_job_name:
            refusal = admit(scope)
            if refusal is not None:
                return _result(scope, refusal, refusal.requeue_after)
            snapshot: JobSnapshot | None = _submit(scope)
        else:
            workspace = scope.workspace
            assert workspace is not None
            snapshot = _observe(scope, workspace, scope.status.aml_job_name)
        workspace = scope.workspace
        assert workspace is not None
        if snapshot is not None:
            if snapshot.status == "Running" and scope.status.start_time is None:
                scope.status.start_time = rfc3339(scope.now)
            if snapshot.terminal:
                _finish(scope, workspace, snapshot)
            scope.status.aml_status = snapshot.status
        ended = scope.status.aml_status
        if ended != previous_status and ended in TERMINAL and ended != "Failed":  # Failed has its own event
            kind = "Warning" if ended == "Canceled" else "Normal"
            scope.events.append(Event(kind, ended, f"AML job {scope.status.aml_job_name} is {ended}"))
        if not (snapshot and snapshot.terminal) and not scope.watch.polled(workspace.id):
            requeue = scope.poll_interval  # no poller covers the workspace (its AttachedCompute is gone)
    except AzureError as error:
        result = (
            retrying(SUBMITTED, error.reason, error.message, error.retry_after or scope.timings.retry_delay)
            if error.retryable
            else blocked(SUBMITTED, *_rejection(scope, error))
        )
        if scope.status.aml_job_name:  # submitted already: keep following; the condition says what failed
            return _result(
                scope,
                done(SUBMITTED, "Submitted", f"AML job {scope.status.aml_job_name}"),
                result.requeue_after or scope.timings.blocked_recheck,
                warning=error.message,
            )
        return _result(scope, result, result.requeue_after)
    return _result(scope, done(SUBMITTED, "Submitted", f"AML job {scope.status.aml_job_name}"), requeue)


def _rejection(scope: JobScope, error: AzureError) -> tuple[str, str, float | None]:
    """Reason, message, recheck: a missing model may be registered later; other rejections wait for a fix."""
    if error.reason == "ModelNotFound":
        return error.reason, error.message, scope.timings.blocked_recheck
    return "SubmissionRejected", error.message, None


def _refusal_summary(step: StepResult) -> list[Summary]:
    """Summaries while the job cannot be submitted: stalled when someone must act, else still reconciling."""
    if step.outcome is Outcome.BLOCKED:
        return [
            Summary("Ready", "False", step.reason, step.message),
            Summary("Reconciling", "False", step.reason, "Waiting for the fix named in Stalled."),
            Summary("Stalled", "True", step.reason, step.message),
        ]
    return [
        Summary("Ready", "False", step.reason, step.message),
        Summary("Reconciling", "True", step.reason, step.message),
        NOT_STALLED,
    ]


def _result(scope: JobScope, submitted: StepResult, requeue: float | None, warning: str | None = None) -> JobResult:
    status = scope.status
    if submitted.ok:
        summary = job_summary(True, status.aml_status, status.verdict, status.failure)
    else:
        summary = _refusal_summary(submitted)
    before = scope.previous.conditions
    status.conditions = fold(before, [submitted, *summary], scope.generation, scope.now)
    status.observed_generation = scope.generation
    events = list(scope.events)
    if warning:
        events.append(Event("Warning", "AzureRequestFailed", warning))
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    was = next(((c.status, c.reason) for c in before if c.type == "Stalled"), None)
    if (
        stalled.status == "True"
        and was != (stalled.status, stalled.reason)
        and not any(e.reason == stalled.reason for e in events)
    ):
        events.append(Event("Warning", stalled.reason, stalled.message))
    return JobResult(status, requeue, events)


def cancel_job(scope: JobScope) -> list[Event]:
    """On deletion: cancel the AML job unless it already ended, then let go."""
    name, workspace = scope.status.aml_job_name, scope.workspace
    if not name or workspace is None:
        return []
    snapshot = scope.azure.get_job(workspace, name)
    if snapshot is None or snapshot.terminal:
        return []
    scope.azure.cancel_job(workspace, name)
    scope.watch.forget(workspace.id, name)
    return [Event("Normal", "Canceled", f"canceled AML job {name} because the AmlJob was deleted")]
