"""FederationReady: one federated credential per service account, with the cluster's exact issuer."""

from __future__ import annotations

from datetime import timedelta

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import FederatedCredentialStatus
from amlwire.domain.conditions import StepResult, blocked, done, progressing, rfc3339
from amlwire.domain.federation import FederationPlan, plan_federation
from amlwire.reconcile.attachedcompute.scope import Scope
from amlwire.reconcile.common import KeyedLocks, seconds_until
from amlwire.reconcile.runner import step

# When several credentials were written at once, the condition names the most telling reason.
REASON_ORDER = {
    r.FEDERATED_CREDENTIAL_ISSUER_MISMATCH: 0,
    r.FEDERATED_CREDENTIAL_AUDIENCE_MISMATCH: 1,
    r.FEDERATED_CREDENTIAL_SUBJECT_MISMATCH: 2,
    r.FEDERATED_CREDENTIAL_MISSING: 3,
}

# One lock per identity: federation lists, plans and writes under it, so AttachedComputes sharing an
# identity never race each other to Azure's concurrent-write 409 or past the 20-credential cap.
IDENTITY_LOCKS = KeyedLocks()


@step(r.FEDERATION_READY, needs=(r.CLUSTER_READY, r.IDENTITY_READY))
def federate_service_accounts(scope: Scope) -> StepResult:
    issuer = scope.cluster.issuer_url or ""
    identity_id = scope.target.identity_id
    accounts = [(sa.namespace, sa.name) for sa in scope.spec.service_accounts]
    with IDENTITY_LOCKS.hold(identity_id):
        plan = plan_federation(
            accounts,
            issuer,
            scope.azure.list_federated_credentials(identity_id),
            previously_managed=[f.name for f in scope.previous.federated_credentials],
            wanted_elsewhere=scope.neighbours.federations,
            identity_name=scope.target.identity.name,
            identity_group=scope.target.identity.group,
        )
        for name in plan.deletes:
            scope.azure.delete_federated_credential(identity_id, name)
            scope.note(r.FEDERATED_CREDENTIAL_DELETED, f"deleted stale {name}")
        for write in plan.writes:
            scope.azure.put_federated_credential(identity_id, write.credential)
            scope.note(write.reason, write.detail)
    scope.status.federated_credentials = _records(scope, plan)
    return _condition(scope, plan, len(accounts), issuer)


def _records(scope: Scope, plan: FederationPlan) -> list[FederatedCredentialStatus]:
    """What status keeps of each credential amlwire manages: when a new one becomes effective, and why."""
    window = timedelta(seconds=scope.timings.federation_propagation)
    written = {w.credential.name: w.reason for w in plan.writes}
    previous = {f.name: f for f in scope.previous.federated_credentials}
    records = []
    for name, subject in plan.managed:
        if name in written:
            effective = rfc3339(scope.now + window)
            records.append(
                FederatedCredentialStatus(name=name, subject=subject, effective_at=effective, reason=written[name])
            )
        elif plan.satisfied.get(subject) == name:
            record = previous.get(name)
            if record is not None and record.effective_at and seconds_until(record.effective_at, scope.now) > 0:
                records.append(record)  # still propagating
            else:
                records.append(FederatedCredentialStatus(name=name, subject=subject))
    return records


def _condition(scope: Scope, plan: FederationPlan, accounts: int, issuer: str) -> StepResult:
    notes = " ".join(plan.notes)
    if plan.problems:
        message = "; ".join(p.message for p in plan.problems)
        return blocked(
            r.FEDERATION_READY, plan.problems[0].reason, f"{message} {notes}".strip(), scope.timings.blocked_recheck
        )
    pending = [
        c for c in scope.status.federated_credentials if c.effective_at and seconds_until(c.effective_at, scope.now) > 0
    ]
    if pending:
        last = max(pending, key=lambda c: c.effective_at or "")
        telling = min(pending, key=lambda c: REASON_ORDER.get(c.reason or "", len(REASON_ORDER)))
        names = ", ".join(c.name for c in pending)
        return progressing(
            r.FEDERATION_READY,
            telling.reason or r.FEDERATED_CREDENTIAL_PROPAGATING,
            f"amlwire wrote {names}; Entra honours a new federated credential within "
            f"~{scope.timings.federation_propagation:.0f}s (from {last.effective_at}). {notes}".strip(),
            seconds_until(last.effective_at or "", scope.now),
        )
    return done(
        r.FEDERATION_READY,
        r.SERVICE_ACCOUNTS_FEDERATED,
        f"{accounts} service account(s) federated with issuer {issuer}. {notes}".strip(),
    )
