"""FederationReady: one federated credential per service account, with the cluster's exact issuer."""

from __future__ import annotations

from datetime import timedelta

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import CredentialBudgetStatus, FederatedCredentialStatus
from amlwire.domain.azure import ClusterInfo, FederatedCredential, ResourceId
from amlwire.domain.conditions import StepResult, blocked, done, progressing, rfc3339
from amlwire.domain.errors import AzureNotFound
from amlwire.domain.federation import (
    EXTENSION_SERVICE_ACCOUNTS,
    FederationPlan,
    OtherCluster,
    describe_gone,
    describe_holding,
    issuers_elsewhere,
    plan_federation,
    subject_of,
)
from amlwire.reconcile.attachedcompute.ownership import (
    annotated_for_another_identity,
    extension_refused,
    owned_elsewhere,
)
from amlwire.reconcile.attachedcompute.scope import CLUSTER, Scope
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


@step(r.FEDERATION_READY, CLUSTER, needs=(r.IDENTITY_READY,))
def federate_service_accounts(scope: Scope, cluster: ClusterInfo) -> StepResult:
    issuer = cluster.issuer_url or ""
    identity_id = scope.target.identity_id
    refused = extension_refused(scope, r.FEDERATION_READY)
    listed = [] if refused else [(sa.namespace, sa.name) for sa in scope.spec.service_accounts]
    # a refused compute trusts nothing: no credential for an account another identity's compute annotated
    owned = {
        (ns, name): holder
        for ns, name in listed
        if (holder := annotated_for_another_identity(scope, subject_of(ns, name)))
    }
    accounts = [account for account in listed if account not in owned]
    former = scope.former_identity
    if former is not None:
        forget_former_credentials(scope, former)
    with IDENTITY_LOCKS.hold(identity_id):
        existing = scope.azure.list_federated_credentials(identity_id)
        plan = plan_federation(
            accounts,
            issuer,
            existing,
            previously_managed=[] if former else [f.name for f in scope.previous.federated_credentials],
            wanted_elsewhere=scope.neighbours.federations(identity_id),
            identity_name=scope.target.identity.name,
            identity_group=scope.target.identity.group,
            per_cluster=len(scope.spec.service_accounts),
            cluster=scope.target.cluster_name,
        )
        for name in plan.deletes:
            scope.azure.delete_federated_credential(identity_id, name)
            scope.note(r.FEDERATED_CREDENTIAL_DELETED, f"deleted stale {name}")
        for write in plan.writes:
            scope.azure.put_federated_credential(identity_id, write.credential)
            # a missing credential's event names the action; a corrected one names what was wrong with it
            missing = write.reason == r.FEDERATED_CREDENTIAL_MISSING
            scope.note(r.FEDERATED_CREDENTIAL_CREATED if missing else write.reason, write.detail)
    scope.status.federated_credentials = _records(scope, plan)
    budget = plan.budget
    scope.status.credential_budget = CredentialBudgetStatus(
        used=budget.used,
        limit=budget.limit,
        per_cluster=budget.per_cluster,
        clusters_remaining=budget.clusters_remaining,
    )
    if refused is not None:
        return refused
    if owned:
        message = "; ".join(owned_elsewhere(ns, name, holder) for (ns, name), holder in owned.items())
        return scope.blocked(r.FEDERATION_READY, r.SERVICE_ACCOUNT_OWNED_BY_ANOTHER, f"not federated: {message}")
    unfederated = [
        (ns, name)
        for ns, name in EXTENSION_SERVICE_ACCOUNTS
        if (ns, name) not in accounts
        and not any(c.federates(issuer, subject_of(ns, name)) for c in existing if c.name not in plan.deletes)
    ]
    if unfederated and not plan.problems:
        return _extension_accounts_missing(scope, unfederated)
    return _condition(scope, plan, len(accounts), issuer, _at_the_cap(scope, plan, existing))


def other_clusters(scope: Scope, credentials: list[FederatedCredential], issuer: str | None) -> list[OtherCluster]:
    """The other clusters on which amlwire federates the identity, read from Azure (the one place every cluster's
    operator sees), each with what its issuer answers: a cluster that is gone no longer publishes its keys."""
    return [
        OtherCluster(other, names, scope.azure.discover_issuer(other))
        for other, names in issuers_elsewhere(credentials, issuer).items()
    ]


def _at_the_cap(scope: Scope, plan: FederationPlan, credentials: list[FederatedCredential]) -> str:
    """At the 20-credential cap: which other clusters hold the identity's credentials, and which are gone."""
    if not any(p.reason == r.FEDERATED_CREDENTIAL_LIMIT for p in plan.problems):
        return ""
    others = other_clusters(scope, credentials, plan.issuer)
    identity = scope.target.identity
    holding = describe_holding(others)
    parts = [f"amlwire's credentials of other clusters on the identity: {holding}"] if holding else []
    parts += [describe_gone(o, identity.name, identity.group) for o in others if o.gone]
    return ". ".join(parts)


def forget_former_credentials(scope: Scope, former: str) -> None:
    """spec.identity changed: the credentials amlwire wrote on the former identity go (unless other
    AttachedComputes using it still need them), so no stale trust is left behind."""
    needed = scope.neighbours.federations(former)
    name = ResourceId.parse(former).name
    with IDENTITY_LOCKS.hold(former):
        try:
            existing = {c.name: c for c in scope.azure.list_federated_credentials(former)}
        except AzureNotFound:
            return
        for record in scope.previous.federated_credentials:
            credential = existing.get(record.name)
            if credential is None or (credential.issuer, credential.subject) in needed:
                continue
            scope.azure.delete_federated_credential(former, record.name)
            scope.note(r.FEDERATED_CREDENTIAL_DELETED, f"deleted {record.name} from the former identity {name}")


def _extension_accounts_missing(scope: Scope, accounts: list[tuple[str, str]]) -> StepResult:
    names = ", ".join(f"{ns}/{name}" for ns, name in accounts)
    entries = ", ".join(f"{{namespace: {ns}, name: {name}}}" for ns, name in accounts)
    return blocked(
        r.FEDERATION_READY,
        r.EXTENSION_SERVICE_ACCOUNT_NOT_FEDERATED,
        f"the AzureML extension's data-capability sidecar authenticates as {names}, which spec.serviceAccounts "
        f"does not list and no federated credential on the identity federates; jobs would fail with AADSTS70021. "
        f"Add {entries} to spec.serviceAccounts",
        scope.timings.blocked_recheck,
    )


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


def _condition(scope: Scope, plan: FederationPlan, accounts: int, issuer: str, holders: str) -> StepResult:
    notes = " ".join([*plan.notes, *([holders] if holders else [])])
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
