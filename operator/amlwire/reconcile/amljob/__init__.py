"""AmlJob: admit, submit once (or adopt), follow AML's status, and finish with metrics, verdict and hint.

Level-based like AttachedCompute, through the same step runner: the same `reconcile_job` runs on create,
update and resume, and when the poller sees AML's status change. Steps (one module each):

  submit.py   Submitted   admission, then one submission (or adoption) per AmlJob
  follow.py   Finished    AML's status, then times, failure and hint, metrics, verdict, registration
"""

from __future__ import annotations

from amlwire.api import reasons as r
from amlwire.api.amljob import AmlJobStatus
from amlwire.domain.conditions import Outcome, StepResult, Summary, fold, kstatus
from amlwire.domain.errors import AzureError
from amlwire.domain.jobs import job_summary
from amlwire.reconcile.amljob.follow import follow_the_job
from amlwire.reconcile.amljob.scope import JobScope
from amlwire.reconcile.amljob.submit import submit_the_job
from amlwire.reconcile.common import Event, transition_events
from amlwire.reconcile.runner import Step, azure_failure, earliest, run_steps
from amlwire.reconcile.scope import Deletion, PassResult

STEPS: tuple[Step[JobScope], ...] = (submit_the_job, follow_the_job)
assert tuple(s.condition for s in STEPS) == r.JOB_STEP_TYPES


JobResult = PassResult[AmlJobStatus]


def summarize_job(submitted: StepResult, finished: StepResult, status: AmlJobStatus) -> list[Summary]:
    """Before submission the Submitted step speaks for the job; after it AML's status and the verdict do,
    unless following the job needs someone to act (the AML job is gone, amlwire may not read it)."""
    if submitted.ok and finished.outcome is not Outcome.BLOCKED:
        return job_summary(status.aml_status, status.verdict, status.failure)
    step = submitted if not submitted.ok else finished
    if step.outcome is Outcome.BLOCKED:
        return kstatus("stalled", step.reason, step.message)
    return kstatus("reconciling", step.reason, step.message)


def reconcile_job(scope: JobScope) -> JobResult:
    results = run_steps(STEPS, scope, scope.timings, scope.events)
    if results[1].reason == r.RESUMED:  # the next attempt is submitted in the same pass, from whichever path
        scope.snapshot = None
        results = run_steps(STEPS, scope, scope.timings, scope.events)
    status, before = scope.status, scope.previous.conditions
    status.conditions = fold(
        before, [*results, *summarize_job(results[0], results[1], status)], scope.generation, scope.now
    )
    status.observed_generation = scope.generation
    # AML's status walk (Queued, Running, ...) is in status already; the follow step tells the end itself
    outcomes = {
        result.type: result.outcome
        for result in results
        if result.type == r.FINISHED and result.outcome in (Outcome.BLOCKED, Outcome.RETRYING)
    }
    events = [*scope.events, *transition_events(before, status.conditions, outcomes)]
    stalled = next(c for c in status.conditions if c.type == r.STALLED)
    was = next(((c.status, c.reason) for c in before if c.type == r.STALLED), None)
    told = any(e.reason in (stalled.reason, r.JOB_FAILED) for e in events)
    if stalled.status == "True" and was != (stalled.status, stalled.reason) and not told:
        events.append(Event("Warning", stalled.reason, stalled.message))
    return JobResult(status, earliest(results), events, scope.reverify)


Cancellation = Deletion[AmlJobStatus]


def cancel_job(scope: JobScope) -> Cancellation:
    """On deletion: cancel the AML job unless it already ended, then let go (a refusal is reported, not retried)."""
    name, workspace = scope.status.aml_job_name, scope.workspace
    if not name or workspace is None:
        return scope.deleted("no AML job was submitted")
    scope.watch.unfollow(workspace.id, name)
    try:
        snapshot = scope.azure.get_job(workspace, name)
        if snapshot is None or snapshot.terminal:
            return scope.deleted(f"AML job {name} had ended")
        scope.azure.cancel_job(workspace, name)
    except AzureError as error:
        failure = azure_failure(error, scope.timings, scope.events)
        if failure.transient:
            message = f"deletion waits: cancelling AML job {name}: {failure.message}"
            return scope.deletion_waits(failure.reason, message, failure.delay)
        scope.warn(failure.reason, f"could not cancel: {failure.message}")
        return scope.deleted(f"AML job {name} could not be canceled")
    scope.note(r.CANCELED, f"canceled AML job {name} because the AmlJob was deleted")
    return scope.deleted(f"canceled AML job {name}")


__all__ = ["STEPS", "Cancellation", "JobResult", "JobScope", "cancel_job", "reconcile_job"]
