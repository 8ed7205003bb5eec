"""Table tests of federation planning (pure)."""

from __future__ import annotations

import pytest

from amlwire.domain.azure import AUDIENCE, FederatedCredential
from amlwire.domain.federation import (
    FIC_LIMIT,
    NAME_RULE,
    credential_name,
    plan_federation,
    subject_of,
)

ISSUER = "https://eastus.oic.prod-aks.azure.com/tenant/cluster/"
ACCOUNTS = [("azureml", "default"), ("azureml", "training")]


def ours(namespace: str, name: str, issuer: str = ISSUER, audiences=(AUDIENCE,)) -> FederatedCredential:
    return FederatedCredential(
        credential_name(namespace, name, ISSUER), issuer, subject_of(namespace, name), tuple(audiences)
    )


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("azureml", "default"),
        ("a" * 63, "b" * 63),
        ("team-1", "sa.with.dots"),
    ],
)
def test_names_follow_azure_rules_and_are_deterministic(namespace, name):
    first = credential_name(namespace, name, ISSUER)
    assert NAME_RULE.match(first)
    assert len(first) <= 120
    assert first == credential_name(namespace, name, ISSUER)
    assert first != credential_name(namespace, name, ISSUER.rstrip("/"))


@pytest.mark.parametrize("cluster", ["aks-east", "c" * 63, "aks_with.odd"])
def test_names_say_which_cluster_they_belong_to_within_azure_rules(cluster):
    name = credential_name("azureml", "default", ISSUER, cluster)
    assert NAME_RULE.match(name)
    assert name.startswith(f"amlwire-{cluster.replace('.', '-').replace('_', '-')}-azureml-default"[:100])
    assert name != credential_name("azureml", "default", ISSUER)
    assert name != credential_name("azureml", "default", ISSUER, cluster + "x")


def test_a_new_cluster_writes_credentials_named_for_it():
    plan = plan_federation(ACCOUNTS, ISSUER, [], cluster="aks-east")
    assert sorted(w.credential.name for w in plan.writes) == sorted(
        credential_name(ns, sa, ISSUER, "aks-east") for ns, sa in ACCOUNTS
    )


def test_credentials_named_before_names_held_the_cluster_are_kept_not_rewritten():
    legacy = [ours(*a) for a in ACCOUNTS]
    plan = plan_federation(ACCOUNTS, ISSUER, legacy, previously_managed=[c.name for c in legacy], cluster="aks-east")
    assert (plan.writes, plan.deletes, plan.problems) == ((), (), ())
    assert sorted(n for n, _ in plan.managed) == sorted(c.name for c in legacy)


def test_an_amlwire_credential_that_federates_a_wanted_subject_under_another_name_is_not_deleted():
    other = FederatedCredential("amlwire-renamed-by-hand", ISSUER, subject_of("azureml", "default"), (AUDIENCE,))
    plan = plan_federation(ACCOUNTS, ISSUER, [other, ours("azureml", "training")], previously_managed=[other.name])
    assert plan.deletes == ()
    assert plan.satisfied[subject_of("azureml", "default")] == other.name


def test_nothing_exists_creates_one_per_service_account():
    plan = plan_federation(ACCOUNTS, ISSUER, [])
    assert [(w.credential.subject, w.reason) for w in plan.writes] == [
        ("system:serviceaccount:azureml:default", "FederatedCredentialMissing"),
        ("system:serviceaccount:azureml:training", "FederatedCredentialMissing"),
    ]
    assert all(w.credential.issuer == ISSUER and w.credential.audiences == (AUDIENCE,) for w in plan.writes)
    assert plan.deletes == ()
    assert plan.problems == ()


def test_everything_in_place_writes_nothing():
    plan = plan_federation(ACCOUNTS, ISSUER, [ours(*a) for a in ACCOUNTS])
    assert plan.writes == ()
    assert plan.deletes == ()
    assert plan.problems == ()


def test_a_foreign_credential_that_federates_counts_as_present():
    foreign = FederatedCredential("hand-made", ISSUER, subject_of("azureml", "default"))
    plan = plan_federation(ACCOUNTS, ISSUER, [foreign, ours("azureml", "training")])
    assert plan.writes == ()
    assert plan.satisfied[subject_of("azureml", "default")] == "hand-made"


@pytest.mark.parametrize(
    ("drift", "reason", "said"),
    [
        ({"issuer": "https://wrong/"}, "FederatedCredentialIssuerMismatch", "it is another issuer"),
        ({"issuer": ISSUER.rstrip("/")}, "FederatedCredentialIssuerMismatch", "only the trailing '/' differs"),
        ({"issuer": ISSUER.upper()}, "FederatedCredentialIssuerMismatch", "only the letter case differs"),
        ({"audiences": ("api://other",)}, "FederatedCredentialAudienceMismatch", "audiences were"),
    ],
)
def test_drift_on_its_own_credential_is_corrected(drift, reason, said):
    drifted = ours(
        "azureml", "default", issuer=drift.get("issuer", ISSUER), audiences=drift.get("audiences", (AUDIENCE,))
    )
    plan = plan_federation(ACCOUNTS, ISSUER, [drifted, ours("azureml", "training")])
    (write,) = plan.writes
    assert write.reason == reason
    assert said in write.detail
    assert write.credential.name == drifted.name
    assert write.credential.issuer == ISSUER


def test_foreign_issuer_near_miss_is_noted_and_worked_around():
    foreign = FederatedCredential("manual", ISSUER.rstrip("/"), subject_of("azureml", "training"))
    plan = plan_federation(ACCOUNTS, ISSUER, [foreign, ours("azureml", "default")])
    (write,) = plan.writes
    assert write.reason == "FederatedCredentialIssuerMismatch"
    assert "only the trailing '/' differs" in plan.notes[0]
    assert plan.deletes == ()


def test_foreign_credential_with_wrong_audience_blocks():
    foreign = FederatedCredential("manual", ISSUER, subject_of("azureml", "default"), ("api://other",))
    plan = plan_federation(ACCOUNTS, ISSUER, [foreign, ours("azureml", "training")])
    assert [p.reason for p in plan.problems] == ["FederatedCredentialAudienceMismatch"]
    assert plan.writes == ()


def test_stale_credentials_it_created_are_deleted_unless_someone_else_needs_them():
    stale = ours("azureml", "old")
    shared = ours("azureml", "shared")
    plan = plan_federation(
        ACCOUNTS, ISSUER, [*(ours(*a) for a in ACCOUNTS), stale, shared], wanted_elsewhere=[(ISSUER, shared.subject)]
    )
    assert plan.deletes == (stale.name,)


def test_foreign_credentials_are_never_deleted():
    foreign = FederatedCredential("not-ours", ISSUER, subject_of("other", "thing"))
    plan = plan_federation(ACCOUNTS, ISSUER, [*(ours(*a) for a in ACCOUNTS), foreign], previously_managed=["x"])
    assert plan.deletes == ()


def test_credentials_of_an_old_issuer_it_managed_are_replaced():
    old = FederatedCredential(
        credential_name("azureml", "default", "https://old/"), "https://old/", subject_of("azureml", "default")
    )
    plan = plan_federation(ACCOUNTS, ISSUER, [old], previously_managed=[old.name])
    assert plan.deletes == (old.name,)
    assert len(plan.writes) == 2


def test_the_cap_is_checked_before_writing():
    full = [
        FederatedCredential(f"other-{i}", "https://other/", f"system:serviceaccount:ns:{i}")
        for i in range(FIC_LIMIT - 1)
    ]
    plan = plan_federation(ACCOUNTS, ISSUER, full)
    assert [p.reason for p in plan.problems] == ["FederatedCredentialLimit"]
    assert "amlwire needs 2 more" in plan.problems[0].message
    assert plan.writes == ()


def test_freed_slots_count_toward_the_cap():
    full = [FederatedCredential(f"other-{i}", "https://other/", f"system:serviceaccount:ns:{i}") for i in range(18)]
    stale = ours("azureml", "old")
    plan = plan_federation(ACCOUNTS, ISSUER, [*full, stale], previously_managed=[stale.name])
    assert plan.problems == ()
    assert len(plan.writes) == 2
    assert plan.deletes == (stale.name,)


def others(count: int) -> list[FederatedCredential]:
    return [FederatedCredential(f"other-{i}", "https://other/", f"system:serviceaccount:ns:{i}") for i in range(count)]


BUDGET_CASES = [
    # (case, foreign credentials, per_cluster, used after the plan, clusters remaining)
    ("an empty identity: ten clusters of two", 0, None, 2, 9),
    ("others' credentials count", 15, None, 17, 1),
    ("exactly full", 18, None, 20, 0),
    ("refused: nothing written, nothing left", 19, None, 19, 0),
    ("three accounts per cluster", 0, 3, 2, 6),
]


@pytest.mark.parametrize(("case", "foreign", "per_cluster", "used", "remaining"), BUDGET_CASES)
def test_the_budget_counts_every_credential_and_the_clusters_left(case, foreign, per_cluster, used, remaining):
    plan = plan_federation(ACCOUNTS, ISSUER, others(foreign), per_cluster=per_cluster)
    assert (plan.budget.used, plan.budget.clusters_remaining) == (used, remaining), case
    assert plan.budget.limit == FIC_LIMIT


def test_the_refusal_names_the_cap_per_cluster_and_another_identity_and_deletes_nothing():
    plan = plan_federation(ACCOUNTS, ISSUER, others(19))
    message = plan.problems[0].message
    assert "one identity serves at most 10 clusters" in message
    assert "Use another identity for this and the next clusters (spec.identity.resourceId)" in message
    assert plan.deletes == ()


def test_another_clusters_amlwire_credential_for_the_same_subject_is_not_a_near_miss():
    east = "https://eastus.oic.prod-aks.azure.com/tenant/east/"
    theirs = FederatedCredential(
        credential_name("azureml", "default", east, "aks-east"), east, subject_of("azureml", "default")
    )
    plan = plan_federation(ACCOUNTS, ISSUER, [theirs], cluster="aks-west")
    assert plan.notes == ()
    assert {w.reason for w in plan.writes} == {"FederatedCredentialMissing"}
    assert plan.deletes == ()
