"""Deletion of an AttachedCompute: undo what amlwire created (deletionPolicy Delete), or leave it (Orphan)."""

from __future__ import annotations

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import AttachedComputeStatus
from amlwire.domain.azure import name_of
from amlwire.domain.compute import ours, tagged_owner
from amlwire.domain.errors import AzureError, AzureNotFound, KubeError
from amlwire.domain.federation import NAME_PREFIX, subject_of
from amlwire.reconcile.attachedcompute.access import remove_our_roles
from amlwire.reconcile.attachedcompute.compute import Detaching, detach_followed, forget_detach, together
from amlwire.reconcile.attachedcompute.federation import IDENTITY_LOCKS
from amlwire.reconcile.attachedcompute.scope import OWNER_LABEL, Scope
from amlwire.reconcile.attachedcompute.service_accounts import in_use_elsewhere
from amlwire.reconcile.common import Event
from amlwire.reconcile.runner import classify
from amlwire.reconcile.scope import Deletion

Cleanup = Deletion[AttachedComputeStatus]


def cleanup(scope: Scope) -> Cleanup:
    """Undo what amlwire created; classified errors say what deletion waits for, never raise."""
    if scope.spec.deletion_policy == "Orphan":
        orphaned = Event("Normal", r.ORPHANED, "left Azure and the cluster untouched (deletionPolicy: Orphan)")
        jobs = _running_jobs_told(scope, "the compute stays attached: they run to their end and amlwire follows them")
        left = "deletionPolicy Orphan: Azure and the cluster left as they are"
        return scope.deleted(left, [orphaned, *jobs], _waiting_on_me(scope))
    scope.events += _running_jobs_told(
        scope, "detaching the compute under them makes AML fail them (deletionPolicy Orphan would let them finish)"
    )
    try:
        return _undo(scope)
    except (AzureError, KubeError) as error:
        failure = classify(error, scope.timings, scope.events)
        if failure is None:
            raise
        message = (
            f"deletion waits: {failure.message}; to let go without cleaning up Azure, set spec.deletionPolicy: Orphan"
        )
        return scope.deletion_waits(failure.reason, message, failure.delay, stuck=not failure.transient)


def _running_jobs_told(scope: Scope, what: str) -> list[Event]:
    """What deleting this AttachedCompute does to the AmlJobs still running on it."""
    jobs = scope.neighbours.running_jobs
    if not jobs:
        return []
    message = f"{len(jobs)} AmlJob(s) still run on compute {scope.target.compute_name} ({', '.join(jobs)}): {what}"
    if scope.spec.deletion_policy == "Orphan":
        return [Event("Normal", r.JOBS_STILL_RUNNING, message)]
    return [Event("Warning", r.JOBS_STILL_RUNNING, message)]


def _undo(scope: Scope) -> Cleanup:
    for item in scope.kube.list_instance_types(f"{OWNER_LABEL}={scope.name}"):
        scope.kube.delete_instance_type(item)
    for account in scope.spec.service_accounts:
        if not in_use_elsewhere(scope, subject_of(account.namespace, account.name)):
            scope.kube.release_service_account(account.namespace, account.name)
    _delete_federated_credentials(scope)
    remove_our_roles(scope, scope.target.identity_id)
    detaching = _detach_compute(scope)
    if detaching is None:
        return scope.deleted("removed what amlwire created", wake=_waiting_on_me(scope))
    if detaching.stuck:
        message = f"deletion waits: {detaching.message}; or set spec.deletionPolicy: Orphan to leave it attached"
        return scope.deletion_waits(r.COMPUTE_DETACH_FAILED, message, scope.timings.blocked_recheck, stuck=True)
    return scope.deletion_waits(r.DELETING, f"deletion waits: {detaching.message}", scope.timings.lro_poll_delay)


def _waiting_on_me(scope: Scope) -> tuple[str, ...]:
    """The AttachedComputes this one may have kept from the extension or a service account: on its cluster, or
    listing an account it listed."""
    mine = {subject_of(sa.namespace, sa.name) for sa in scope.spec.service_accounts}
    siblings = {v.name for v in scope.neighbours.siblings(scope.target.cluster_id)}
    sharing = {v.name for v in scope.neighbours.others if mine & set(v.subjects)}
    return tuple(sorted(siblings | sharing))


def _delete_federated_credentials(scope: Scope) -> None:
    identity_id = scope.target.identity_id
    if scope.previous.identity is None and not scope.previous.federated_credentials:
        return  # amlwire never found the identity, so it wrote nothing on it (and Azure may refuse to list it)
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
            if ours and (credential.issuer, credential.subject) not in scope.neighbours.federations(identity_id):
                scope.azure.delete_federated_credential(identity_id, credential.name)
                scope.note(r.FEDERATED_CREDENTIAL_DELETED, f"deleted {credential.name}")


def _detach_compute(scope: Scope) -> Detaching | None:
    """Detach the compute (and any attached under an earlier spec.compute.name) when it is this AttachedCompute's,
    through the ledger; say so when one is left attached because it is not."""
    target = scope.target
    names = dict.fromkeys([target.compute_name, *(name_of(c) for c in scope.previous.former_computes)])
    waiting = []
    for name in names:
        try:
            found = scope.azure.get_compute(target.workspace, name)
        except AzureNotFound:
            found = None
        if found is None:
            forget_detach(scope, name)
            continue
        if not ours(found, scope.name, scope.previous.compute_adopted_from):
            owner = tagged_owner(found)
            scope.note(
                r.COMPUTE_LEFT_ATTACHED,
                f"left compute {name} attached: "
                + (f"AttachedCompute {owner} attached it" if owner else "it was not attached by amlwire"),
            )
            continue
        waiting.append(detach_followed(scope, name, found))
    return together(waiting)
