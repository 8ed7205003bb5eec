"""AccessReady: the identity holds the data-plane roles in spec.access.grants, they are effective, and the
workspace's default datastore can be read with them at all (F17)."""

from __future__ import annotations

from datetime import timedelta

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import RoleAssignmentStatus
from amlwire.domain.access import created_status, plan_access, role_guid, shared_key_problem
from amlwire.domain.azure import IdentityInfo, ResourceId, name_of, subscription_of
from amlwire.domain.conditions import Outcome, StepResult, blocked, done, progressing, rfc3339
from amlwire.domain.errors import AzureError, AzureNotFound
from amlwire.domain.failures import BY_ID
from amlwire.domain.federation import OtherCluster, describe_gone, describe_holding
from amlwire.reconcile.attachedcompute.federation import other_clusters
from amlwire.reconcile.attachedcompute.ownership import extension_refused
from amlwire.reconcile.attachedcompute.scope import IDENTITY, Scope
from amlwire.reconcile.common import seconds_until
from amlwire.reconcile.runner import step


@step(r.ACCESS_READY, IDENTITY)
def assign_roles(scope: Scope, identity: IdentityInfo) -> StepResult:
    former = scope.former_identity
    if former is not None:
        remove_our_roles(scope, former, " of the former identity")  # spec.identity changed
    refused = extension_refused(scope, r.ACCESS_READY)
    if refused is not None:  # a refused compute holds no role (and gives back any it was given)
        if former is None:  # status records the roles of this identity (else of the former, handled above)
            remove_our_roles(scope, scope.target.identity_id)
        scope.status.role_assignments = []
        return refused
    try:
        result = _grants(scope, identity.principal_id, recorded=[] if former else scope.previous.role_assignments)
    except AzureError as error:
        return scope.denied_or_missing(r.ACCESS_READY, error, "spec.access.grants[].scope")
    if result.outcome in (Outcome.DONE, Outcome.PROGRESSING):
        return _datastore_readable(scope) or result
    return result


def remove_our_roles(
    scope: Scope,
    identity_id: str,
    whose: str = "",
    records: list[RoleAssignmentStatus] | None = None,
    keep: frozenset[tuple[str, str]] = frozenset(),
) -> None:
    """Delete the role assignments amlwire made for `identity_id` (as status recorded them), but those other
    AttachedComputes using it still need and those in `keep` ((scope lower-case, role GUID) pairs). This cluster's
    AttachedComputes say what they need; another cluster's are known from Azure only: while amlwire federates the
    identity on another cluster, its roles stay (the last AttachedCompute to go removes them). A cluster whose
    issuer answers that it no longer exists holds nothing: it is reported with what it left, never cleaned up
    here."""
    keep = keep | scope.neighbours.grants(identity_id)
    recorded = scope.previous.role_assignments if records is None else records
    going = [r for r in recorded if r.created_by_amlwire and (r.scope.lower(), role_guid(r.role)) not in keep]
    others = _other_clusters(scope, identity_id) if going else []
    identity = ResourceId.parse(identity_id)
    for gone in (o for o in others if o.gone):
        scope.warn(r.FEDERATED_CLUSTER_GONE, describe_gone(gone, identity.name, identity.group))
    holders = [o for o in others if not o.gone]
    for record in going:
        if holders:
            scope.note(
                r.ROLE_ASSIGNMENT_KEPT,
                f"kept {record.role} on {record.scope}{whose}: amlwire federates identity {identity.name} on "
                f"{len(holders)} other cluster(s) ({describe_holding(holders)}), whose AttachedComputes may need "
                f"it; the last to go removes it",
            )
            continue
        try:
            scope.azure.delete_role_assignment(record.scope, record.name)
        except AzureNotFound:
            continue
        scope.note(r.ROLE_ASSIGNMENT_DELETED, f"removed {record.role} on {record.scope}{whose}")


def owner(scope: Scope) -> str:
    """What a role assignment amlwire creates says of its creator, in a field Azure keeps (the description):
    any cluster's operator, and an admin in the portal, can tell who made it."""
    return f"Created by amlwire for AttachedCompute {scope.name} on cluster {scope.target.cluster_id}"


def _other_clusters(scope: Scope, identity_id: str) -> list[OtherCluster]:
    try:
        credentials = scope.azure.list_federated_credentials(identity_id)
    except AzureNotFound:
        return []
    cluster = scope.observed.cluster
    return other_clusters(scope, credentials, cluster.issuer_url if cluster is not None else scope.previous.oidc_issuer)


def _drop_ungranted(scope: Scope, recorded: list[RoleAssignmentStatus]) -> None:
    """A grant taken out of spec.access.grants: the assignment amlwire made for it goes, so no access outlives
    the spec that asked for it."""
    wanted = frozenset((g.scope.lower(), role_guid(g.role)) for g in scope.spec.access.grants)
    remove_our_roles(scope, scope.target.identity_id, ": not in spec.access.grants", recorded, wanted)


def _datastore_readable(scope: Scope) -> StepResult | None:
    """F17: a key-based default datastore on an account with shared keys off cannot be read by any role."""
    workspace = scope.workspace_info()
    if not workspace.storage_account_id:
        return None
    problem = shared_key_problem(workspace, scope.azure.get_storage_account(workspace.storage_account_id))
    if problem is None:
        return None
    return blocked(
        r.ACCESS_READY, r.SHARED_KEY_ACCESS_DISABLED, f"{problem}; {BY_ID['F17'].fix()}", scope.timings.blocked_recheck
    )


def _grants(scope: Scope, principal: str, recorded: list[RoleAssignmentStatus]) -> StepResult:
    access = scope.spec.access
    _drop_ungranted(scope, recorded)
    if not access.grants:
        scope.status.role_assignments = []
        return done(r.ACCESS_READY, r.NO_GRANTS_REQUESTED, "spec.access.grants is empty: no role assignments to check")
    window = timedelta(seconds=scope.timings.role_propagation)
    scopes = sorted({g.scope for g in access.grants})
    assignments = {s: scope.azure.list_role_assignments(s, principal) for s in scopes}
    plan = plan_access(
        access.grants, principal, subscription_of(scope.target.identity_id), assignments, recorded, window
    )
    statuses = plan.statuses()
    if plan.to_create and access.mode == "Verify":
        scope.status.role_assignments = statuses
        missing = "; ".join(
            f"{g.role} on {g.scope} ({BY_ID['F15'].fix(principal=principal, role=g.role, scope=g.scope)})"
            for g, _, _ in plan.to_create
        )
        return blocked(
            r.ACCESS_READY,
            r.ROLE_ASSIGNMENT_MISSING,
            f"the identity lacks {missing}; or set spec.access.mode: Ensure",
            scope.timings.blocked_recheck,
        )
    for grant, name, role_definition in plan.to_create:
        created = scope.azure.create_role_assignment(grant.scope, name, role_definition, principal, owner(scope))
        statuses.append(
            created_status(grant, name, scope.now, window)
            if created
            else RoleAssignmentStatus(
                scope=grant.scope, role=grant.role, name=name, effective_at=rfc3339(scope.now + window)
            )
        )
        scope.note(r.ROLE_ASSIGNMENT_CREATED, f"assigned {grant.role} on {grant.scope}")
    scope.status.role_assignments = statuses
    pending = [s for s in statuses if s.effective_at and seconds_until(s.effective_at, scope.now) > 0]
    if pending:
        last = max(pending, key=lambda s: s.effective_at or "")
        roles = ", ".join(f"{s.role} on {name_of(s.scope)}" for s in pending)
        return progressing(
            r.ACCESS_READY,
            r.ROLE_ASSIGNMENT_PROPAGATING,
            f"{roles} assigned; Azure RBAC can take up to {scope.timings.role_propagation:.0f}s to "
            f"apply a new assignment: expected effective at {last.effective_at}",
            seconds_until(last.effective_at or "", scope.now),
        )
    return done(
        r.ACCESS_READY,
        r.ROLES_ASSIGNED,
        "the identity holds " + ", ".join(f"{g.role} on {name_of(g.scope)}" for g in access.grants),
    )
