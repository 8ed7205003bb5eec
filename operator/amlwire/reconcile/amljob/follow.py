"""Finished: follow AML's status of the job, and once it ends record times, failure and hint, metrics, verdict
and the registered model."""

from __future__ import annotations

from dataclasses import replace

from amlwire.api import reasons as r
from amlwire.api.amljob import AmlJobStatus, AttemptStatus, RegisteredModelStatus
from amlwire.api.templates import BY_NAME as TEMPLATES
from amlwire.domain.azure import WorkspaceRef
from amlwire.domain.conditions import StepResult, blocked, done, progressing, rfc3339
from amlwire.domain.errors import AzureError
from amlwire.domain.jobs import (
    EVALUATION_FAILED_MARK,
    FAILURE_TAG,
    GONE,
    NOT_FEDERATED,
    TERMINAL,
    JobDetails,
    JobSnapshot,
    RunResults,
    evaluation_failure,
    evidence_of,
    failure,
    failure_code,
    missing_evidence,
    resumable,
    verdict,
)
from amlwire.domain.view import ComputeHealth, ComputeView
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
        if resumable(scope.spec, snapshot.status, scope.status.failure, len(scope.status.attempts)):
            return _resume(scope, workspace, snapshot)
    before, scope.status.aml_status = scope.status.aml_status, snapshot.status
    if not snapshot.terminal:
        scope.watch.follow(scope.followed(workspace, name), snapshot)
        return progressing(
            r.FINISHED, snapshot.status, f"The AML job is {snapshot.status}.{_queued_why(scope, snapshot.status)}", None
        )
    scope.watch.unfollow(workspace.id, name)
    if before != snapshot.status and snapshot.status != "Failed":  # a failure has its own event
        kind = scope.warn if snapshot.status == "Canceled" else scope.note
        kind(snapshot.status, f"AML job {name} is {snapshot.status}")
    return done(r.FINISHED, r.RESULTS_RECORDED, f"The AML job ended {snapshot.status}; its results are in status.")


def _queued_why(scope: JobScope, status: str) -> str:
    """A queued job on a compute whose extension lacks the CLI's settings: the one lead amlwire has."""
    if status != "Queued" or scope.compute is None:
        return ""
    _, reason, _ = scope.compute.health.conditions.get(r.EXTENSION_READY, ("", "", ""))
    if reason != r.EXTENSION_LACKS_CLI_SETTINGS:
        return ""
    return (
        f" AttachedCompute {scope.compute.name}'s AzureML extension lacks settings az k8s-extension create adds "
        f"(ExtensionReady {reason}): if the job stays Queued, add them as its message says"
    )


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
        results = scope.azure.job_results(workspace, name) if snapshot.status == "Completed" else None
        details = _run_times(results) or scope.azure.job_details(workspace, name)
        if snapshot.status == "Failed" and details.error:
            health = scope.compute.health if scope.compute else ComputeHealth(spec.compute_ref)
            code = failure_code(details.error)
            message = str(details.error.get("message") or "")
            if TEMPLATES[spec.template].evaluates:  # the evaluator's own words, whatever AML's error says
                told = scope.azure.job_results(workspace, name).tags.get(FAILURE_TAG)
                message = f"{EVALUATION_FAILED_MARK} {told}\n{message}" if told else message
            if NOT_FEDERATED in message and scope.compute is not None:  # evidence: the credentials there now
                health = replace(health, federated=_federated_now(scope, scope.compute))
            status.failure = failure(code, message, health, spec.model.delivery if spec.model else None)
            evaluator = evaluation_failure(status.failure.message)
            if evaluator:
                scope.warn(r.EVALUATION_FAILED, f"amlwire's evaluator failed: {evaluator}")
            else:
                scope.warn(r.JOB_FAILED, f"{code}: {status.failure.hint or status.failure.message}")
            if status.failure.hint and scope.compute is not None:
                scope.reverify = scope.compute.name  # its links may have broken since its last check
        status.metrics = results.metrics if results else {}
        status.evidence = evidence_of(results.params) if results else {}
        status.start_time = details.start_time or status.start_time
        status.end_time = details.end_time or rfc3339(scope.now)
    if snapshot.status == "Completed":  # again on every pass: the gate may change after the run
        status.failure = missing_evidence(spec, status.metrics, status.evidence)
        if status.failure is not None and scope.previous.failure != status.failure:
            scope.warn(status.failure.code, status.failure.message)
    completed = snapshot.status == "Completed" and status.failure is None
    status.verdict = verdict(spec.gate, status.metrics) if completed else None
    registration = spec.registration
    if completed and status.verdict != "Failed" and registration and not status.registered_model:
        model, version = scope.azure.register_model(workspace, registration.model_name, registration.type, name)
        status.registered_model = RegisteredModelStatus(name=model, version=version)
        scope.note(r.MODEL_REGISTERED, f"registered {model}:{version} from {name}")


def _run_times(results: RunResults | None) -> JobDetails | None:
    """A completed job's times as its MLflow run says them: run history (one read more) is read only for a job
    that did not complete (its error is there) or whose run does not say when it ended."""
    if results is None or results.end_time is None:
        return None
    return JobDetails(start_time=results.start_time, end_time=results.end_time)


def _resume(scope: JobScope, workspace: WorkspaceRef, snapshot: JobSnapshot) -> StepResult:
    """The attempt ended early: keep it in status.attempts and let the next pass submit the next attempt, which
    continues from this one's last checkpoint (its output was written while it ran)."""
    status = scope.status
    scope.watch.unfollow(workspace.id, snapshot.name)
    failed = f"{status.failure.code}: {status.failure.message[:300]}" if status.failure else None
    status.attempts.append(
        AttemptStatus(aml_job_name=snapshot.name, aml_status=snapshot.status, end_time=status.end_time, failure=failed)
    )
    attempt = len(status.attempts) + 1
    fresh = AmlJobStatus()
    for name in ("aml_job_name", "studio_url", "aml_status", "start_time", "end_time", "metrics", "failure"):
        setattr(status, name, getattr(fresh, name))
    message = (
        f"attempt {attempt - 1} (AML job {snapshot.name}) ended {snapshot.status}; attempt {attempt} of "
        f"{scope.spec.resume.max_attempts if scope.spec.resume else attempt} continues from its last checkpoint"
    )
    scope.warn(r.RESUMED, message)
    return progressing(r.FINISHED, r.RESUMED, message, 0.0)


def _federated_now(scope: JobScope, compute: ComputeView) -> tuple[str, ...] | None:
    """The subjects a credential on the compute's identity federates with its cluster's issuer, read now."""
    try:
        credentials = scope.azure.list_federated_credentials(compute.identity_id)
    except AzureError:
        return None  # no evidence: the hint says what the AttachedCompute's conditions say
    return tuple(c.subject for c in credentials if compute.issuer is None or c.federates(compute.issuer, c.subject))
