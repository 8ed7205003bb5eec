"""ServiceAccountsReady: each service account exists and carries the identity's client ID."""

from __future__ import annotations

from amlwire.api import reasons as r
from amlwire.domain.azure import IdentityInfo
from amlwire.domain.conditions import StepResult, blocked, done
from amlwire.domain.errors import KubeConflict, KubeNotFound
from amlwire.domain.failures import BY_ID
from amlwire.domain.federation import subject_of
from amlwire.reconcile.attachedcompute.ownership import annotated_for_another_identity, owned_elsewhere
from amlwire.reconcile.attachedcompute.scope import IDENTITY, MANAGED_BY, Scope
from amlwire.reconcile.ports import ServiceAccountInfo
from amlwire.reconcile.runner import step

CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"


@step(r.SERVICE_ACCOUNTS_READY, IDENTITY)
def annotate_service_accounts(scope: Scope, identity: IdentityInfo) -> StepResult:
    wanted = {CLIENT_ID_ANNOTATION: identity.client_id, TENANT_ID_ANNOTATION: identity.tenant_id}
    problems: list[tuple[str, str]] = []
    for account in scope.spec.service_accounts:
        ns, name = account.namespace, account.name
        holder = annotated_for_another_identity(scope, subject_of(ns, name))
        if holder is not None:
            problems.append((r.SERVICE_ACCOUNT_OWNED_BY_ANOTHER, owned_elsewhere(ns, name, holder)))
            continue
        current = scope.kube.get_service_account(ns, name)
        if current is None and not account.create:
            problems.append(
                (
                    r.SERVICE_ACCOUNT_MISSING,
                    f"service account {ns}/{name} does not exist and spec.serviceAccounts[].create is false; "
                    + BY_ID["F09"].command("extension-owned", namespace=ns, name=name),
                )
            )
            continue
        if current is not None and all(current.annotations.get(k) == v for k, v in wanted.items()):
            continue
        try:
            scope.kube.apply_service_account(ns, name, wanted, MANAGED_BY)
        except (KubeConflict, KubeNotFound) as error:  # each account reports its own; the others still run
            problems.append(_problem(error, ns, name, current, wanted))
            continue
        scope.note(r.SERVICE_ACCOUNT_ANNOTATED, f"annotated {ns}/{name} with the identity's client ID")
    release_unlisted(scope)
    if problems:
        messages = "; ".join(dict.fromkeys(m for _, m in problems))
        return blocked(r.SERVICE_ACCOUNTS_READY, problems[0][0], messages, scope.timings.blocked_recheck)
    return done(
        r.SERVICE_ACCOUNTS_READY,
        r.SERVICE_ACCOUNTS_ANNOTATED,
        f"{len(scope.spec.service_accounts)} service account(s) carry {CLIENT_ID_ANNOTATION}={identity.client_id}",
    )


def release_unlisted(scope: Scope) -> None:
    """Take amlwire's annotation and label off service accounts it federated before but the spec no longer
    lists (unless another AttachedCompute lists them too)."""
    listed = {subject_of(sa.namespace, sa.name) for sa in scope.spec.service_accounts}
    for subject in sorted({c.subject for c in scope.previous.federated_credentials} - listed):
        if not in_use_elsewhere(scope, subject):
            namespace, name = subject.removeprefix("system:serviceaccount:").split(":", 1)
            scope.kube.release_service_account(namespace, name)
            scope.note(r.SERVICE_ACCOUNT_RELEASED, f"removed amlwire's annotation and label from {namespace}/{name}")


def in_use_elsewhere(scope: Scope, subject: str) -> bool:
    return any(subject in other.subjects for other in scope.neighbours.others)


def _problem(
    error: KubeConflict | KubeNotFound, ns: str, name: str, current: ServiceAccountInfo | None, wanted: dict[str, str]
) -> tuple[str, str]:
    if isinstance(error, KubeConflict):
        have = current.annotations if current else {}
        managers = (
            ", ".join(
                "a client that does not use server-side apply (e.g. kubectl annotate)"
                if m == "before-first-apply"
                else m
                for m in error.managers
            )
            or "another field manager"
        )
        differing = ", ".join(f"{k}={have[k]!r}" for k, v in wanted.items() if k in have and have[k] != v)
        fix = BY_ID["F10"].fix(namespace=ns, name=name, client_id=wanted[CLIENT_ID_ANNOTATION])
        return (
            r.SERVICE_ACCOUNT_ANNOTATION_CONFLICT,
            f"service account {ns}/{name} has {differing}, set by {managers}; it must match the identity. Fix "
            f"it where it is managed, or: {fix}",
        )
    return (
        r.NAMESPACE_NOT_FOUND,
        f"namespace {ns} does not exist, so its service accounts cannot be created; the AzureML extension "
        f"creates it, or: {BY_ID['F09'].command('namespace', namespace=ns)}",
    )
