"""AccessReady: the identity holds the data-plane roles in spec.access.grants, and they are effective."""

from __future__ import annotations

from datetime import timedelta

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import RoleAssignmentStatus
from amlwire.domain.access import created_status, plan_access
from amlwire.domain.azure import name_of, subscription_of
from amlwire.domain.conditions import StepResult, blocked, done, progressing, rfc3339
from amlwire.domain.failures import BY_ID
from amlwire.reconcile.attachedcompute.scope import Scope
from amlwire.reconcile.common import seconds_until
from amlwire.reconcile.runner import step


@step(r.ACCESS_READY, needs=(r.IDENTITY_READY,))
def assign_roles(scope: Scope) -> StepResult:
    access = scope.spec.access
    if not access.grants:
        scope.status.role_assignments = []
        return done(r.ACCESS_READY, r.NO_GRANTS_REQUESTED, "spec.access.grants is empty: no role assignments to check")
    principal = scope.identity.principal_id
    window = timedelta(seconds=scope.timings.role_propagation)
    scopes = sorted({g.scope for g in access.grants})
    assignments = {s: scope.azure.list_role_assignments(s, principal) for s in scopes}
    plan = plan_access(
        access.grants,
        principal,
        subscription_of(scope.target.identity_id),
        assignments,
        scope.previous.role_assignments,
        window,
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
        created = scope.azure.create_role_assignment(grant.scope, name, role_definition, principal)
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
