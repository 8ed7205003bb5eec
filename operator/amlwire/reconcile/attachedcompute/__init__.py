"""AttachedCompute: gather → plan (pure, in domain/) → apply → status, as ordered steps over the ports.

Level-based: the same `reconcile` runs on create, update, resume and the drift timer; it never looks at
what changed, only at what is and what should be. Each step owns one condition and declares the links it
needs (runner.py); one module per step:

  cluster.py           ClusterReady, IdentityReady
  federation.py        FederationReady
  service_accounts.py  ServiceAccountsReady
  extension.py         ExtensionReady
  access.py            AccessReady
  instance_types.py    InstanceTypesReady
  compute.py           ComputeReady
  cleanup.py           deletion
"""

from __future__ import annotations

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import AttachedComputeStatus
from amlwire.domain.conditions import first_visit, fold, summarize
from amlwire.reconcile.attachedcompute.access import assign_roles
from amlwire.reconcile.attachedcompute.cleanup import Cleanup, cleanup
from amlwire.reconcile.attachedcompute.cluster import check_the_cluster, find_the_identity
from amlwire.reconcile.attachedcompute.compute import attach_the_compute
from amlwire.reconcile.attachedcompute.extension import configure_the_extension
from amlwire.reconcile.attachedcompute.federation import federate_service_accounts
from amlwire.reconcile.attachedcompute.instance_types import apply_instance_types
from amlwire.reconcile.attachedcompute.scope import MANAGED_BY, OWNER_LABEL, Neighbours, Observed, Scope
from amlwire.reconcile.attachedcompute.service_accounts import annotate_service_accounts
from amlwire.reconcile.common import transition_events
from amlwire.reconcile.runner import Step, earliest, run_steps
from amlwire.reconcile.scope import PassResult

STEPS: tuple[Step[Scope], ...] = (
    check_the_cluster,
    find_the_identity,
    federate_service_accounts,
    annotate_service_accounts,
    configure_the_extension,
    assign_roles,
    apply_instance_types,
    attach_the_compute,
)
STEP_TYPES = tuple(s.condition for s in STEPS)
assert STEP_TYPES == r.COMPUTE_STEP_TYPES, "STEPS must run in the order the conditions are documented"


Result = PassResult[AttachedComputeStatus]


def reconcile(scope: Scope) -> Result:
    """Run every step in order, then fold the results into status (conditions, summaries, observedGeneration)."""
    results = run_steps(STEPS, scope, scope.timings, scope.events)
    conditions = fold(scope.previous.conditions, [*results, *summarize(results)], scope.generation, scope.now)
    scope.status.conditions = conditions
    scope.status.observed_generation = scope.generation
    scope.status.last_handled_reconcile_at = scope.requested_at or scope.previous.last_handled_reconcile_at
    acted = {e.reason for e in scope.events}
    outcomes = {result.type: result.outcome for result in results}
    events = scope.events + [
        e for e in transition_events(scope.previous.conditions, conditions, outcomes) if e.reason not in acted
    ]
    return Result(scope.status, earliest(results), events)


def introduce(scope: Scope) -> Result | None:
    """The first visit of an AttachedCompute only says that amlwire has started (every link Unknown,
    Reconciling) and comes straight back: a user sees that before Azure has answered anything. None once it has
    a status."""
    if scope.previous.conditions:
        return None
    scope.status.conditions = first_visit(STEP_TYPES, scope.generation, scope.now)
    scope.status.observed_generation = scope.generation
    return Result(scope.status, 0.0, [])


__all__ = [
    "MANAGED_BY",
    "OWNER_LABEL",
    "STEPS",
    "STEP_TYPES",
    "Cleanup",
    "Neighbours",
    "Observed",
    "Result",
    "Scope",
    "cleanup",
    "introduce",
    "reconcile",
]
