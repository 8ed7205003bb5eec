"""Submitted: admit the job, then submit it once (or adopt the AML job a crash left behind)."""

from __future__ import annotations

from amlwire.api import reasons as r
from amlwire.domain.azure import WorkspaceRef
from amlwire.domain.conditions import StepResult, blocked, done
from amlwire.domain.errors import AzureError
from amlwire.domain.jobs import JobRequest, admit, aml_job_name, build_request
from amlwire.reconcile.amljob.scope import JobScope
from amlwire.reconcile.runner import step


@step(r.SUBMITTED)
def submit_the_job(scope: JobScope) -> StepResult:
    if scope.status.aml_job_name:
        return done(r.SUBMITTED, r.SUBMITTED_REASON, f"AML job {scope.status.aml_job_name}")
    refusal = admit(scope.spec, scope.namespace, scope.compute, scope.timings.blocked_recheck)
    if refusal is not None:
        return refusal
    assert scope.compute is not None  # admitted
    workspace = scope.compute.workspace
    name = aml_job_name(scope.name, scope.uid, len(scope.status.attempts) + 1)
    existing = scope.azure.get_job(workspace, name)
    if existing is not None:
        scope.note(r.ADOPTED, f"AML job {name} already exists; following it")
        scope.snapshot = existing
    else:
        missing = _missing_model(scope, workspace, waited_before=scope.was(r.SUBMITTED, r.MODEL_NOT_FOUND))
        if missing is not None:
            return missing
        try:
            scope.snapshot = scope.azure.submit_job(workspace, _request(scope))
        except AzureError as error:
            if error.retryable or error.reason in FIXED_IN_AZURE:
                raise  # Azure's side, not the spec: the runner reports it and the job is submitted once it is fixed
            return _missing_model(scope, workspace, waited_before=True) or _rejected(scope, error)
        scope.note(r.SUBMITTED_REASON, f"submitted AML job {name} to compute {scope.compute.compute_name}")
    scope.status.aml_job_name = name
    scope.status.workspace = workspace.id
    scope.status.studio_url = scope.snapshot.studio_url
    return done(r.SUBMITTED, r.SUBMITTED_REASON, f"AML job {name}")


def _request(scope: JobScope) -> JobRequest:
    compute = scope.compute
    assert compute is not None
    attempts = [a.aml_job_name for a in scope.status.attempts]
    return build_request(scope.spec, scope.namespace, scope.name, scope.uid, compute, attempts)


def _missing_model(scope: JobScope, workspace: WorkspaceRef, waited_before: bool) -> StepResult | None:
    """A model that is not registered, named in terms of the spec (AML's own words do not say which field).

    Looked up before submitting only while the job waits for it, so a waiting job never writes to AML.
    """
    model = scope.spec.model
    if not waited_before or model is None or scope.azure.model_exists(workspace, model.name, model.version):
        return None
    return blocked(
        r.SUBMITTED,
        r.MODEL_NOT_FOUND,
        f"spec.model: model {model.name} version {model.version} is not registered in workspace "
        f"{workspace.name}; register it (az ml model create --name {model.name} --version {model.version} "
        f"--path <checkpoint> -g {workspace.group} -w {workspace.name}); amlwire submits the job once it exists "
        f"(or delete and recreate this AmlJob naming another spec.model)",
        scope.timings.blocked_recheck,
    )


FIXED_IN_AZURE = frozenset({r.AZURE_PERMISSION_DENIED, r.AZURE_AUTHENTICATION_FAILED})


def _rejected(scope: JobScope, error: AzureError) -> StepResult:
    """AML refused the job for good: Stalled with AML's words; the spec must change (it cannot, in place)."""
    return blocked(
        r.SUBMITTED,
        r.SUBMISSION_REJECTED,
        f"AML refused the job: {error.message}. Check spec.command, spec.inputs, spec.image and "
        f"spec.instanceType; they cannot change after creation: delete and recreate the AmlJob with the fix",
    )
