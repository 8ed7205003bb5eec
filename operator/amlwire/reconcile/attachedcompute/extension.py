"""ExtensionReady: the AzureML extension is installed and uses the identity (long-running, never waited on)."""

from __future__ import annotations

from functools import partial

from amlwire.api import reasons as r
from amlwire.domain.conditions import StepResult, blocked, done, progressing
from amlwire.domain.extension import (
    ENABLE_TRAINING,
    Action,
    cli_settings,
    decide_extension,
    desired_settings,
    installed,
    observed,
    trains,
)
from amlwire.domain.operations import (
    Begin,
    GiveUp,
    Handling,
    Kind,
    Monitor,
    Observed,
    Progress,
    Retry,
    drive,
    failed,
    of_subject,
    recorded,
    started,
    without,
)
from amlwire.reconcile.attachedcompute.ownership import extension_refused
from amlwire.reconcile.attachedcompute.scope import EXTENSION_INSTALLED, Scope
from amlwire.reconcile.runner import step

SUBJECT = "Extension"


@step(r.EXTENSION_READY, needs=(r.IDENTITY_READY,))
def configure_the_extension(scope: Scope) -> StepResult:
    """Writes the extension only once the identity is known, and only as the owner of its identity."""
    spec = scope.spec.extension
    if spec.mode == "Configure":
        refused = _owned_by_another(scope)
        if refused is not None:
            return refused
    operation = of_subject(scope.status.operations, SUBJECT)
    seen: Observed | None = None
    read = operation is not None and not operation.url  # Azure gave no operation URL: the extension itself tells
    if operation is not None and operation.url:
        seen = _from_url(scope, operation.url)
    elif read:
        scope.observed.extension = scope.azure.get_extension(scope.target.cluster_id, spec.name)
        seen = observed(scope.observed.extension)

    def in_progress(decision: Monitor) -> StepResult:
        op = decision.operation
        message = f"{op.kind} of extension {spec.name} started at {op.started_at} is in progress"
        return progressing(r.EXTENSION_READY, r.EXTENSION_PROVISIONING, message, scope.timings.lro_poll_delay)

    def again(decision: Retry) -> StepResult:
        scope.warn(r.EXTENSION_OPERATION_FAILED, f"{operation.kind if operation else ''} failed: {decision.error}")
        return converge(decision)

    def converge(decision: Begin | Retry) -> StepResult:
        scope.status.operations = without(scope.status.operations, Kind.EXTENSION_CREATE, Kind.EXTENSION_UPDATE)
        if not read:  # read once per pass, even when it found no extension
            scope.observed.extension = scope.azure.get_extension(scope.target.cluster_id, spec.name)
        return _converge(scope, decision, installed(scope.observed.extension))

    handling = Handling(begin=converge, monitor=in_progress, retry=again, give_up=partial(_gave_up, scope))
    return drive(operation, seen, scope.now, scope.timings.lro_timeout, handling)


def _owned_by_another(scope: Scope) -> StepResult | None:
    """One extension serves one identity: refuse to set it when another AttachedCompute on the cluster owns it."""
    refused = extension_refused(scope, r.EXTENSION_READY)
    scope.status.owns_extension = refused is None
    return refused


def _configured(scope: Scope, desired: dict[str, str], lacks: str = "") -> StepResult:
    """The extension has the desired settings; AML refuses training jobs when those turn training off. `lacks`
    says which of the CLI's settings it has not (Verify mode: said, not written)."""
    spec, installed_ = scope.spec.extension, (EXTENSION_INSTALLED.name,)
    if not trains(desired) and scope.spec.jobs.allowed_namespaces:
        return blocked(
            r.EXTENSION_READY,
            r.TRAINING_DISABLED,
            f"spec.extension.settings.enableTraining is {desired.get(ENABLE_TRAINING)!r} while spec.jobs."
            f"allowedNamespaces lets AmlJobs use this compute: AML refuses training jobs on it. Remove the "
            f'setting (amlwire sets enableTraining: "True"), or empty spec.jobs.allowedNamespaces',
            scope.timings.blocked_recheck,
            provides=installed_,
        )
    if lacks:
        return done(r.EXTENSION_READY, r.EXTENSION_LACKS_CLI_SETTINGS, lacks, provides=installed_)
    if not spec.set_identity_settings:
        message = f"extension {spec.name} has the settings of spec.extension (identity settings left alone)"
        return done(r.EXTENSION_READY, r.EXTENSION_CONFIGURED, message, provides=installed_)
    message = f"extension {spec.name} uses the identity for storage access"
    return done(r.EXTENSION_READY, r.EXTENSION_CONFIGURED, message, provides=installed_)


def _from_url(scope: Scope, url: str) -> Observed:
    state = scope.azure.operation_state(scope.spec.cluster_subscription_id, url)
    if not state.done:
        return Observed(Progress.RUNNING)
    return Observed(Progress.SUCCEEDED) if state.succeeded else failed(state.error)


def _gave_up(scope: Scope, decision: GiveUp) -> StepResult:
    op, name = decision.operation, scope.spec.extension.name
    if decision.timed_out:
        return blocked(
            r.EXTENSION_READY,
            r.EXTENSION_OPERATION_TIMED_OUT,
            f"the extension {op.kind} started at {op.started_at}: {decision.error}; check the extension in the portal",
            scope.timings.blocked_recheck,
        )
    return blocked(
        r.EXTENSION_READY,
        r.EXTENSION_OPERATION_FAILED,
        f"{op.kind} of extension {name} failed {op.attempt} times: {decision.error}; fix the cause, then change "
        f"any field of the AttachedCompute to retry",
        scope.timings.blocked_recheck,
    )


def _converge(scope: Scope, decision: Begin | Retry, was_installed: bool) -> StepResult:
    spec, target = scope.spec.extension, scope.target
    provides = (EXTENSION_INSTALLED.name,) if was_installed else ()
    desired = desired_settings(spec.settings, target.identity_id, spec.set_identity_settings)
    cluster = scope.observed.cluster
    defaults = cli_settings(cluster.id, target.cluster_name, cluster.location, cluster.node_count) if cluster else None
    choice = decide_extension(
        scope.observed.extension,
        desired,
        spec.mode == "Configure",
        target.cluster_group,
        target.cluster_name,
        spec.name,
        defaults,
    )
    if choice.action is Action.WAIT:
        return progressing(
            r.EXTENSION_READY, choice.reason, choice.message, scope.timings.lro_poll_delay, provides=provides
        )
    if choice.action is Action.REPORT:
        return blocked(
            r.EXTENSION_READY, choice.reason, choice.message, scope.timings.blocked_recheck, provides=provides
        )
    if choice.action is Action.NONE:
        return _configured(scope, desired, choice.message if choice.reason == r.EXTENSION_LACKS_CLI_SETTINGS else "")
    kind = Kind.EXTENSION_CREATE if choice.action is Action.CREATE else Kind.EXTENSION_UPDATE
    begin = scope.azure.begin_create_extension if kind is Kind.EXTENSION_CREATE else scope.azure.begin_update_extension
    url = begin(target.cluster_id, spec.name, choice.settings)
    tell = scope.warn if choice.reason == r.EXTENSION_REPAIRING else scope.note  # a Failed extension is news
    tell(choice.reason, choice.message)
    if url and _from_url(scope, url).progress is Progress.SUCCEEDED:  # a quick operation needs no second pass
        return _configured(scope, desired)
    operation = started(kind, scope.now, attempt=decision.attempt, url=url)
    scope.status.operations = recorded(scope.status.operations, operation)
    return progressing(r.EXTENSION_READY, choice.reason, choice.message, scope.timings.lro_poll_delay, provides)
