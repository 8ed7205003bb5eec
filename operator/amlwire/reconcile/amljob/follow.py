"""Finished: follow AML's status of the job, and once it ends record times, failure and hint, metrics, verdict
and the registered model."""

from __future__ import annotations

from amlwire.api import reasons as r
from amlwire.api.amljob import RegisteredModelStatus
from amlwire.domain.azure import WorkspaceRef
from amlwire.domain.conditions import StepResult, blocked, done, progressing, rfc3339
from amlwire.domain.jobs import GONE, TERMINAL, JobSnapshot, failure, failure_code, verdict
from amlwire.domain.view import ComputeHealth
from amlwire.reconcile.amljob.scope import JobScope
from amlwire.reconcile.runner import step


@step(r.FINISHED, needs=(r.SUBMITTED,))
def follow_the_job(scope: JobScope) -> StepResult:
    name, workspace = scope.status.aml_job_name or "", scope.workspace
    assert workspace is not None  # submitted
    snapshot = scope.snapshot or _observe(scope, workspace, name)
    if snapshot is None:  # the poller follows it and has no news
        state = scope.status.aml_status or r.FOLLOWING
        return progressing(r.FINISHED, state, f"The AML job is {state}.", None)
    if snapshot.gone:
        return _gone(scope, name, workspace)
    if snapshot.status == "Running" and scope.status.start_time is None:
        scope.status.start_time = rfc3339(scope.now)
    if snapshot.terminal:
        _finish(scope, workspace, snapshot)
    before, scope.status.aml_status = scope.status.aml_status, snapshot.status
    if not snapshot.terminal:
        scope.watch.follow(scope.followed(workspace, name), snapshot)
        return progressing(r.FINISHED, snapshot.status, f"The AML job is {snapshot.status}.", None)
    scope.watch.unfollow(workspace.id, name)
    if before != snapshot.status and snapshot.status != "Failed":  # a failure has its own event
        kind = scope.warn if snapshot.status == "Canceled" else scope.note
        kind(snapshot.status, f"AML job {name} is {snapshot.status}")
    return done(r.FINISHED, r.RESULTS_RECORDED, f"The AML job ended {snapshot.status}; its results are in status.")


def _observe(scope: JobScope, workspace: WorkspaceRef, name: str) -> JobSnapshot | None:
    """AML's word on the job: the poller's latest listing; a running job it does not follow yet is handed to
    it (after a restart, say) rather than read on its own; anything else is read directly."""
    snapshot = scope.watch.get(workspace.id, name)
    if snapshot is not None:
        return snapshot
    known = scope.status.aml_status
    if known is not None and known not in TERMINAL:
        scope.watch.follow(scope.followed(workspace, name), JobSnapshot(name, known))
        return None
    return scope.azure.get_job(workspace, name) or JobSnapshot(name, GONE)


def _gone(scope: JobScope, name: str, workspace: WorkspaceRef) -> StepResult:
    """The AML job no longer exists: nothing more to follow (its compute gone with it, or deleted in AML)."""
    scope.watch.unfollow(workspace.id, name)
    if scope.compute is None:
        return blocked(
            r.FINISHED,
            r.COMPUTE_NOT_FOUND,
            f"AML job {name} no longer exists in workspace {workspace.name} and AttachedCompute "
            f"{scope.spec.compute_ref} is gone: there is nothing left to follow; delete this AmlJob",
        )
    return blocked(
        r.FINISHED,
        r.AML_JOB_NOT_FOUND,
        f"AML job {name} no longer exists in workspace {workspace.name} (deleted in AML?); delete and recreate "
        f"this AmlJob to run it again",
    )


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
            code = failure_code(details.error)
            status.failure = failure(
                code, str(details.error.get("message") or ""), health, spec.model.delivery if spec.model else None
            )
            scope.warn(r.JOB_FAILED, f"{code}: {status.failure.hint or status.failure.message}")
            if status.failure.hint and scope.compute is not None:
                scope.reverify = scope.compute.name  # its links may have broken since its last check
        status.metrics = metrics
        status.start_time = details.start_time or status.start_time
        status.end_time = details.end_time or rfc3339(scope.now)
    status.verdict = verdict(spec.gate, status.metrics) if snapshot.status == "Completed" else None
    registration = spec.registration
    if snapshot.status == "Completed" and status.verdict != "Failed" and registration and not status.registered_model:
        model, version = scope.azure.register_model(workspace, registration.model_name, registration.type, name)
        status.registered_model = RegisteredModelStatus(name=model, version=version)
        scope.note(r.MODEL_REGISTERED, f"registered {model}:{version} from {name}")
