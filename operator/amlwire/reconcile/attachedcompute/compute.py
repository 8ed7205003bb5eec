"""ComputeReady: the AML compute is attached to the workspace with the identity (long-running, never waited on).

The ledger (domain/operations.py) follows the attach and the detach; this step says what to begin and how
success looks: the compute in the workspace, Succeeded, on this cluster, with the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from amlwire.api import reasons as r
from amlwire.domain.azure import ComputeAttachment, ComputeInfo, name_of
from amlwire.domain.compute import (
    OWNER_TAG,
    UAMI_ROLE_CHECK,
    ComputeAction,
    cluster_role_command,
    decide_compute,
    errors_of,
    missing_uami_cluster_roles,
    observed_attach,
    observed_detach,
    ours,
    tagged_owner,
)
from amlwire.domain.conditions import Outcome, StepResult, blocked, done, progressing
from amlwire.domain.errors import AzureError, AzureNotFound, KubeForbidden
from amlwire.domain.failures import BY_ID
from amlwire.domain.operations import (
    Begin,
    GiveUp,
    Handling,
    Kind,
    Retry,
    age_of,
    drive,
    find,
    recorded,
    started,
    without,
)
from amlwire.reconcile.attachedcompute.scope import (
    DETACH_UNDER_JOBS,
    EXTENSION_INSTALLED,
    MANAGED_BY,
    OWNER_LABEL,
    Scope,
)
from amlwire.reconcile.runner import step


def detach_command(scope: Scope, name: str | None = None) -> str:
    values = scope.target.detach_command_values
    return BY_ID["F14"].command("detach", **{**values, "compute": name or values["compute"]})


@dataclass(frozen=True)
class Detaching:
    """Where a detach amlwire follows stands: what to say, and whether someone must act."""

    message: str
    reason: str = r.COMPUTE_PROVISIONING
    stuck: bool = False


def detach_followed(scope: Scope, name: str, found: ComputeInfo, why: str = "") -> Detaching:
    """Detach compute `name` (which is there, and this AttachedCompute's) through the ledger: begun once, followed,
    begun again after a failure, and given up with the command to detach it by hand once it failed as often as a
    detach may or never finished. A detach someone else started is followed the same way."""
    target = _ledger_target(scope, name)
    operation = find(scope.status.operations, Kind.COMPUTE_DETACH, target=target)
    seen = observed_detach(found) if operation is not None else None
    begun_elsewhere = found.provisioning_state.lower() == "deleting"  # followed, not begun again

    def start(attempt: int, said: Detaching) -> Detaching:
        if not begun_elsewhere:
            scope.azure.begin_detach_compute(scope.target.workspace, name)
        operation = started(Kind.COMPUTE_DETACH, scope.now, attempt, target=target)
        scope.status.operations = recorded(scope.status.operations, operation)
        return said

    def first(decision: Begin) -> Detaching:
        if not begun_elsewhere:
            scope.note(r.COMPUTE_DETACHING, f"detaching compute {name}{why}")
        return start(decision.attempt, Detaching(f"compute {name} is detaching", r.COMPUTE_DETACHING))

    def again(decision: Retry) -> Detaching:
        message = (
            f"detaching compute {name} failed ({decision.error}); detaching it again (attempt {decision.attempt} of "
            f"{Kind.COMPUTE_DETACH.give_up_after})"
        )
        scope.warn(r.COMPUTE_DETACH_FAILED, message)
        return start(decision.attempt, Detaching(message, r.COMPUTE_DETACH_FAILED))

    handling = Handling(
        begin=first,
        monitor=lambda decision: Detaching(f"compute {name} is detaching (since {decision.operation.started_at})"),
        retry=again,
        give_up=lambda decision: Detaching(_detach_gave_up(scope, name, decision), r.COMPUTE_DETACH_FAILED, True),
    )
    return drive(operation, seen, scope.now, scope.timings.lro_timeout, handling)


def together(detaching: list[Detaching]) -> Detaching | None:
    """Several detaches as one: stuck when any is."""
    if not detaching:
        return None
    worst = next((d for d in detaching if d.stuck), detaching[0])
    return Detaching("; ".join(d.message for d in detaching), worst.reason, worst.stuck)


def _detaching(scope: Scope, detaching: Detaching, then: str) -> StepResult:
    """ComputeReady while a compute of this AttachedCompute detaches: progressing, or blocked once it is stuck."""
    if detaching.stuck:
        return scope.blocked(r.COMPUTE_READY, r.COMPUTE_DETACH_FAILED, f"{detaching.message}, then amlwire {then}")
    return progressing(r.COMPUTE_READY, detaching.reason, detaching.message, scope.timings.lro_poll_delay)


def forget_detach(scope: Scope, name: str) -> None:
    """The compute is gone: no detach of it is followed any more."""
    scope.status.operations = without(scope.status.operations, Kind.COMPUTE_DETACH, target=_ledger_target(scope, name))


def _ledger_target(scope: Scope, name: str) -> str | None:
    """How the ledger names a compute: None for the one spec.compute.name names now, else its name."""
    return None if name.lower() == scope.target.compute_name.lower() else name


def _detach_gave_up(scope: Scope, name: str, decision: GiveUp) -> str:
    what = (
        f"the detach of compute {name} started at {decision.operation.started_at} {decision.error}"
        if decision.timed_out
        else f"detaching compute {name} failed {decision.operation.attempt} times ({decision.error})"
    )
    return f"{what}; detach it by hand: {detach_command(scope, name)}"


@step(r.COMPUTE_READY, needs=(r.CLUSTER_READY, r.IDENTITY_READY, EXTENSION_INSTALLED))
def attach_the_compute(scope: Scope) -> StepResult:
    """Azure attaches only to a cluster with a healthy AzureML extension, hence the needs."""
    try:
        found = scope.azure.get_compute(scope.target.workspace, scope.target.compute_name)
        former = detach_former_computes(scope)
    except AzureError as error:
        return scope.denied_or_missing(r.COMPUTE_READY, error, "spec.workspace")
    result = _attached(scope, found)
    if former and result.outcome is Outcome.DONE:  # the new one is attached; the old one is still going
        if former.stuck:
            return scope.blocked(r.COMPUTE_READY, r.COMPUTE_DETACH_FAILED, former.message)
        return progressing(r.COMPUTE_READY, r.FORMER_COMPUTE_DETACHING, former.message, scope.timings.lro_poll_delay)
    held = scope.held_identity
    if held and result.outcome is Outcome.DONE:
        return _wait_for_jobs(
            scope,
            f"spec.identity is {name_of(scope.spec.identity.resource_id)}, and compute {scope.target.compute_name} "
            f"with its federated credentials, roles and extension settings stays on {name_of(held)}",
            scope.neighbours.running_jobs,
            "switches the identity",
        )
    return result


def detach_former_computes(scope: Scope) -> Detaching | None:
    """Computes attached under an earlier spec.compute.name: detached (once no AmlJob runs on them), so a new
    name never leaves the old compute behind. What is still in progress, or None."""
    target = scope.target
    earlier = list(scope.previous.former_computes)
    if scope.previous.compute_id and name_of(scope.previous.compute_id).lower() != target.compute_name.lower():
        earlier.append(scope.previous.compute_id)
    left: list[str] = []
    waiting: list[Detaching] = []
    for compute_id in dict.fromkeys(earlier):
        name = name_of(compute_id)
        found = scope.azure.get_compute(target.workspace, name)
        if found is None:
            forget_detach(scope, name)
            continue
        if not ours(found, scope.name, scope.previous.compute_adopted_from):
            scope.warn(r.COMPUTE_LEFT_ATTACHED, f"compute {name} was not attached by {scope.name}: left attached")
            continue
        left.append(compute_id)
        jobs = scope.neighbours.running_jobs
        if found.provisioning_state.lower() != "deleting" and jobs and not scope.detach_under_jobs:
            message = (
                f"compute {name} (the former spec.compute.name) stays attached while {len(jobs)} AmlJob(s) run on "
                f"it ({', '.join(jobs[:5])}); kubectl annotate amlc {scope.name} {DETACH_UNDER_JOBS}=true detaches "
                f"it now (AML fails those jobs)"
            )
            waiting.append(Detaching(message))
        else:
            waiting.append(detach_followed(scope, name, found, f": spec.compute.name is {target.compute_name}"))
    scope.status.former_computes = left
    return together(waiting)


def _attached(scope: Scope, found: ComputeInfo | None) -> StepResult:
    detached_since = False
    if find(scope.status.operations, Kind.COMPUTE_DETACH) is not None:
        if found is not None:
            return _detaching(scope, detach_followed(scope, scope.target.compute_name, found), "attaches it again")
        forget_detach(scope, scope.target.compute_name)
        detached_since = True
    attach = find(scope.status.operations, Kind.COMPUTE_ATTACH)
    seen = observed_attach(found, age_of(attach, scope.now), detached_since) if attach is not None else None
    name = scope.target.compute_name

    def converge(_: Begin) -> StepResult:
        scope.status.operations = without(scope.status.operations, Kind.COMPUTE_ATTACH)
        return _converge(scope, found)

    handling = Handling(
        begin=converge,
        monitor=lambda _: progressing(
            r.COMPUTE_READY, r.COMPUTE_PROVISIONING, f"compute {name} is attaching", scope.timings.lro_poll_delay
        ),
        retry=lambda decision: _attach_again(scope, found, decision.attempt),
        give_up=lambda decision: _attach_gave_up(scope, found, decision),
    )
    return drive(attach, seen, scope.now, scope.timings.lro_timeout, handling)


def _attach_gave_up(scope: Scope, found: ComputeInfo | None, decision: GiveUp) -> StepResult:
    name, attempts = scope.target.compute_name, decision.operation.attempt
    if found is not None:
        message = (
            f"compute {name} is Failed ({errors_of(found)}) after {attempts} attempts; a Failed compute must be "
            f"detached before it can be attached again: {detach_command(scope)}; then change any field of the "
            f"AttachedCompute to retry"
        )
    else:
        message = (
            f"attaching compute {name} failed {attempts} times ({decision.error}); see the workspace's activity "
            f"log, fix the cause, then change any field of the AttachedCompute to retry"
        )
    return blocked(r.COMPUTE_READY, r.COMPUTE_ATTACH_FAILED, message, scope.timings.blocked_recheck)


def _attach_again(scope: Scope, found: ComputeInfo | None, attempt: int) -> StepResult:
    """A failed attach is retried: a Failed compute is detached first (Azure refuses to attach over it)."""
    if found is not None:
        message = f"compute {scope.target.compute_name} is Failed ({errors_of(found)}); detaching it to attach again"
        return _detach(scope, r.COMPUTE_ATTACH_FAILED, message)
    return _attach(scope, attempt)


def _converge(scope: Scope, found: ComputeInfo | None) -> StepResult:
    target = scope.target
    decision = decide_compute(
        found,
        target.compute_name,
        target.cluster_id,
        target.identity_id,
        target.compute_namespace,
        scope.name,
        detach_command(scope),
    )
    if decision.action is ComputeAction.ATTACH:
        return _attach(scope, 1)
    if decision.action is ComputeAction.DETACH:
        jobs = scope.neighbours.running_jobs
        if decision.reason == r.COMPUTE_IDENTITY_MISMATCH and jobs and not scope.detach_under_jobs:
            return _wait_for_jobs(scope, decision.message, jobs)
        return _detach(scope, decision.reason, decision.message)
    if decision.action is ComputeAction.WAIT:
        return progressing(r.COMPUTE_READY, decision.reason, decision.message, scope.timings.lro_poll_delay)
    if decision.action is ComputeAction.REPORT:
        return blocked(r.COMPUTE_READY, decision.reason, decision.message, scope.timings.blocked_recheck)
    scope.status.compute_id = found.id if found else None
    if found is not None:
        _adopt(scope, found)
    # AML neither creates nor checks the namespace, and every job there fails without it: kept, as at the attach
    refused = _namespace_refused(scope)
    return refused or done(r.COMPUTE_READY, decision.reason, decision.message)


def _adopt(scope: Scope, found: ComputeInfo) -> None:
    """A compute tagged for an AttachedCompute that is gone (deleted with Orphan) becomes this one's: recorded in
    status (AML cannot re-tag an attached Kubernetes compute), so deletion with Delete detaches it."""
    owner = tagged_owner(found)
    alive = any(other.name == owner for other in scope.neighbours.others)
    if owner is None or owner == scope.name or alive:
        scope.status.compute_adopted_from = None  # not amlwire's, ours, or a live AttachedCompute's to detach
        return
    if scope.previous.compute_adopted_from == owner:
        return
    scope.status.compute_adopted_from = owner
    scope.note(
        r.COMPUTE_ADOPTED,
        f"compute {scope.target.compute_name} was attached by AttachedCompute {owner}, which no longer exists; "
        f"{scope.name} adopted it (status.computeAdoptedFrom) and detaches it on deletion with deletionPolicy "
        f"Delete",
    )


def _wait_for_jobs(scope: Scope, why: str, jobs: tuple[str, ...], then: str = "detaches it") -> StepResult:
    """Detaching under running jobs fails them: wait for them to end, unless the user says otherwise."""
    shown = ", ".join(jobs[:5]) + (f" and {len(jobs) - 5} more" if len(jobs) > 5 else "")
    return progressing(
        r.COMPUTE_READY,
        r.COMPUTE_DETACH_WAITS_FOR_JOBS,
        f"{why.split(';')[0]}, while {len(jobs)} AmlJob(s) run on it ({shown}); amlwire {then} once they end. "
        f"To do it now (AML fails those jobs): kubectl annotate amlc {scope.name} {DETACH_UNDER_JOBS}=true",
        scope.timings.blocked_recheck,
    )


def _namespace_refused(scope: Scope) -> StepResult | None:
    """AML's jobs run in the compute's namespace, which the attach neither creates nor checks: create it
    (labelled as amlwire's) before the attach, and again if it is deleted afterwards."""
    namespace = scope.target.compute_namespace
    phase = scope.kube.namespace_phase(namespace)
    if phase == "Terminating":
        return blocked(
            r.COMPUTE_READY,
            r.COMPUTE_NAMESPACE_DELETING,
            f"namespace {namespace} (spec.compute.namespace) is being deleted, and every AML job on compute "
            f"{scope.target.compute_name} fails while it is (pods cannot be created there); amlwire creates it again "
            f"once it is gone (kubectl get namespace {namespace} -o yaml shows what holds the deletion)",
            scope.timings.blocked_recheck,
        )
    if phase is not None:
        return None
    try:
        scope.kube.apply_namespace(namespace, {**MANAGED_BY, OWNER_LABEL: scope.name})
    except KubeForbidden as error:
        return blocked(
            r.COMPUTE_READY,
            r.COMPUTE_NAMESPACE_MISSING,
            f"namespace {namespace} (spec.compute.namespace) does not exist in the cluster and amlwire may not "
            f"create it ({error}); create it (kubectl create namespace {namespace}) or grant amlwire's ClusterRole "
            f"create and patch on namespaces (the chart does)",
            scope.timings.blocked_recheck,
        )
    scope.note(r.NAMESPACE_CREATED, f"created namespace {namespace} for compute {scope.target.compute_name}")
    return None


def _workspace_identity_refused(scope: Scope, rejected: str = "") -> StepResult | None:
    """A workspace with a user-assigned identity attaches only when that identity holds Reader, Kubernetes
    Extension Contributor and AKS Cluster Admin Role on the cluster: said before the attach, not after Azure's 400."""
    try:
        workspace = scope.workspace_info()
    except AzureNotFound:
        return _workspace_not_found(scope)
    principal = workspace.identity_principal_id
    if not workspace.identity_user_assigned or not principal:
        return None
    cluster = scope.target.cluster_id
    missing = missing_uami_cluster_roles(scope.azure.list_role_assignments(cluster, principal), principal, cluster)
    if not missing and not rejected:
        return None
    commands = "; ".join(cluster_role_command(principal, role, cluster) for role in missing)
    return blocked(
        r.COMPUTE_READY,
        r.WORKSPACE_IDENTITY_LACKS_CLUSTER_ROLES,
        f"workspace {scope.target.workspace.name} has a user-assigned identity ({principal}), and AML attaches a "
        f"cluster only when it holds Reader, Kubernetes Extension Contributor and Azure Kubernetes Service Cluster "
        f"Admin Role on the cluster"
        + (
            f"; it lacks {', '.join(missing)}: {commands}"
            if missing
            else f" (Azure said: {rejected}; a new role may still be propagating)"
        ),
        scope.timings.blocked_recheck,
    )


def _workspace_not_found(scope: Scope) -> StepResult:
    ws = scope.target.workspace
    return blocked(
        r.COMPUTE_READY,
        r.WORKSPACE_NOT_FOUND,
        f"workspace {ws.name} does not exist in resource group {ws.group} (subscription "
        f"{ws.subscription}): fix spec.workspace.name or spec.workspace.resourceGroup",
        scope.timings.blocked_recheck,
    )


def _attach(scope: Scope, attempt: int) -> StepResult:
    target = scope.target
    ws, name = target.workspace, target.compute_name
    refused = _namespace_refused(scope) or _workspace_identity_refused(scope)
    if refused is not None:
        return refused
    try:
        attachment = ComputeAttachment(
            name, target.cluster_id, target.compute_namespace, target.identity_id, {OWNER_TAG: scope.name}
        )
        attached = scope.azure.begin_attach_compute(ws, attachment)
    except AzureNotFound:
        return _workspace_not_found(scope)
    except AzureError as error:
        if UAMI_ROLE_CHECK not in error.message:
            raise
        return _workspace_identity_refused(scope, error.message) or scope.blocked(
            r.COMPUTE_READY, r.WORKSPACE_IDENTITY_LACKS_CLUSTER_ROLES, error.message
        )
    message = f"attaching compute {name}"
    scope.note(r.COMPUTE_ATTACHING, message)
    scope.status.operations = without(scope.status.operations, Kind.COMPUTE_ATTACH)
    if attached is not None and attached.provisioning_state.lower() == "succeeded":
        scope.status.compute_id = attached.id
        return done(r.COMPUTE_READY, r.COMPUTE_ATTACHED, f"compute {name} is attached with the user-assigned identity")
    scope.status.operations = recorded(scope.status.operations, started(Kind.COMPUTE_ATTACH, scope.now, attempt))
    return progressing(r.COMPUTE_READY, r.COMPUTE_ATTACHING, message, scope.timings.lro_poll_delay)


def _detach(scope: Scope, reason: str, message: str) -> StepResult:
    scope.azure.begin_detach_compute(scope.target.workspace, scope.target.compute_name)
    scope.status.operations = recorded(scope.status.operations, started(Kind.COMPUTE_DETACH, scope.now))
    scope.warn(reason, message)
    return progressing(r.COMPUTE_READY, reason, message, scope.timings.lro_poll_delay)
