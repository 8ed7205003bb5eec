"""Table tests of condition folding and the kstatus summary (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from amlwire.domain.conditions import (
    blocked,
    condition,
    done,
    first_visit,
    fold,
    kstatus,
    new_generation,
    progressing,
    retrying,
    summarize,
    waiting,
)
from tests.conftest import table

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_transition_time_kept_while_status_is_unchanged():
    before = fold([], [done("ClusterReady", "Ready", "ok")], 1, T0)
    after = fold(before, [done("ClusterReady", "StillReady", "still ok")], 2, T1)
    (only,) = after
    assert only.last_transition_time == "2026-11-22T08:00:00Z"
    assert only.reason == "StillReady"
    assert only.observed_generation == 2


def test_transition_time_moves_when_status_changes():
    before = fold([], [done("ClusterReady", "Ready", "ok")], 1, T0)
    after = fold(before, [blocked("ClusterReady", "OIDCIssuerDisabled", "enable it")], 1, T1)
    assert after[0].last_transition_time == "2026-11-22T08:05:00Z"
    assert after[0].status == "False"


def test_conditions_not_reported_are_kept_in_order():
    before = fold([], [done("A", "Ok", ""), done("B", "Ok", "")], 1, T0)
    after = fold(before, [blocked("B", "Broken", "fix"), done("C", "Ok", "")], 1, T1)
    assert [c.type for c in after] == ["A", "B", "C"]
    assert condition(after, "A") == before[0]


SUMMARY_CASES = [
    (
        "all done",
        [done("ClusterReady", "Ok", ""), done("IdentityReady", "Ok", "")],
        {"Ready": ("True", "Ready"), "Reconciling": ("False", "Reconciled"), "Stalled": ("False", "NotStalled")},
    ),
    (
        "a blocker stalls and names itself",
        [
            done("ClusterReady", "Ok", ""),
            blocked("IdentityReady", "IdentityNotFound", "create it"),
            progressing("AccessReady", "RoleAssignmentPropagating", "wait", 30),
        ],
        {
            "Ready": ("False", "IdentityNotFound"),
            "Reconciling": ("False", "Stalled"),
            "Stalled": ("True", "IdentityNotFound"),
        },
    ),
    (
        "progress without blockers is reconciling",
        [done("ClusterReady", "Ok", ""), progressing("AccessReady", "RoleAssignmentPropagating", "wait", 30)],
        {
            "Ready": ("False", "RoleAssignmentPropagating"),
            "Reconciling": ("True", "RoleAssignmentPropagating"),
            "Stalled": ("False", "NotStalled"),
        },
    ),
    (
        "waiting steps are not named when another step explains them",
        [waiting("FederationReady", "IdentityReady"), retrying("IdentityReady", "AzureThrottled", "429", 5)],
        {
            "Ready": ("False", "AzureThrottled"),
            "Reconciling": ("True", "AzureThrottled"),
            "Stalled": ("False", "NotStalled"),
        },
    ),
]


@table(("case", "steps", "expected"), SUMMARY_CASES)
def test_summary(case, steps, expected):
    summary = {s.type: (s.status, s.reason) for s in summarize(steps)}
    assert summary == expected


def test_summary_message_names_the_failing_step_and_its_fix():
    ready = summarize([blocked("ClusterReady", "OIDCIssuerDisabled", "run az aks update --enable-oidc-issuer")])[0]
    assert ready.message == "ClusterReady: run az aks update --enable-oidc-issuer"


def test_first_visit_sets_every_step_unknown_and_reconciling():
    conditions = first_visit(["ClusterReady", "ComputeReady"], 3, T0)
    statuses = {c.type: c.status for c in conditions}
    assert statuses == {
        "ClusterReady": "Unknown",
        "ComputeReady": "Unknown",
        "Ready": "Unknown",
        "Reconciling": "True",
        "Stalled": "False",
    }
    assert {c.observed_generation for c in conditions} == {3}


def test_a_new_generation_is_not_ready_until_it_is_reconciled():
    now = datetime(2026, 12, 3, tzinfo=UTC)
    ready = fold([], kstatus("ready", "Ready", "All links are in place."), 1, now)
    marked = new_generation(ready, 2, 1, now)
    assert marked is not None
    by_type = {c.type: c for c in marked}
    assert (by_type["Ready"].status, by_type["Ready"].reason) == ("Unknown", "NewGeneration")
    assert (by_type["Reconciling"].status, by_type["Stalled"].status) == ("True", "False")
    assert "generation 2 is being reconciled; the other conditions are from generation 1" in by_type["Ready"].message
    assert new_generation(ready, 1, 1, now) is None
    assert new_generation([], 2, None, now) is None  # the first visit says so itself
