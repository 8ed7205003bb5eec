"""Each AttachedCompute step on fakes of the ports: given Azure, Kubernetes and the previous status, the
condition, the events, the operations and the writes it makes (the style of Flux's per-sub-reconciler tests).

The e2e tier checks the same behaviours between the real parts; these run in milliseconds.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import (
    AttachedComputeSpec,
    AttachedComputeStatus,
    FederatedCredentialStatus,
    OperationStatus,
)
from amlwire.domain.access import assignment_name, role_definition_id, role_guid
from amlwire.domain.azure import (
    ComputeInfo,
    ExtensionInfo,
    FederatedCredential,
    IssuerAnswer,
    OperationState,
    RoleAssignment,
)
from amlwire.domain.conditions import Outcome, StepResult, blocked, fold, kstatus
from amlwire.domain.errors import AzureError
from amlwire.domain.extension import cli_settings
from amlwire.domain.federation import credential_name
from amlwire.domain.view import ComputeView
from amlwire.reconcile.attachedcompute import STEPS, Neighbours, Scope, cleanup, introduce, reconcile
from amlwire.reconcile.attachedcompute.access import assign_roles
from amlwire.reconcile.attachedcompute.cluster import check_the_cluster, find_the_identity
from amlwire.reconcile.attachedcompute.compute import attach_the_compute
from amlwire.reconcile.attachedcompute.extension import configure_the_extension
from amlwire.reconcile.attachedcompute.federation import federate_service_accounts
from amlwire.reconcile.attachedcompute.instance_types import apply_instance_types
from amlwire.reconcile.attachedcompute.scope import EXTENSION_INSTALLED
from amlwire.reconcile.attachedcompute.service_accounts import CLIENT_ID_ANNOTATION, annotate_service_accounts
from amlwire.reconcile.common import Timings
from amlwire.reconcile.runner import Step, guard, run_steps
from amlwire.reconcile.runner import step as declare
from tests.conftest import example, table
from tests.fakes import (
    CLIENT_ID,
    CLUSTER_ID,
    IDENTITY_ID,
    ISSUER,
    PRINCIPAL,
    REGISTRY_ID,
    STORAGE_ID,
    WORKSPACE,
    FakeAzure,
    FakeKube,
    at,
    healthy_azure,
    rejected,
    throttled,
)

TIMINGS = Timings(
    retry_delay=1,
    max_retry_delay=30,
    lro_poll_delay=2,
    blocked_recheck=60,
    federation_propagation=0,
    role_propagation=0,
)
DETACH = "az ml compute detach --name k8s-gpu -g rg-ml -w mlw-robotics"


def spec(**changes: Any) -> AttachedComputeSpec:
    raw = example("attachedcompute.yaml")
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return AttachedComputeSpec.model_validate(raw)


def make(
    azure: FakeAzure | None = None,
    kube: FakeKube | None = None,
    previous: AttachedComputeStatus | None = None,
    minutes: float = 0,
    timings: Timings = TIMINGS,
    generation: int = 1,
    observe: bool = True,
    **spec_changes: Any,
) -> Scope:
    """A pass over fakes; with `observe`, the cluster and identity steps' facts are already read."""
    azure = azure or healthy_azure()
    scope = Scope(
        name="robotics-gpu",
        generation=generation,
        spec=spec(**spec_changes),
        previous=previous or AttachedComputeStatus(observed_generation=generation),
        now=at(minutes),
        timings=timings,
        azure=azure,
        kube=kube or FakeKube(),
    )
    if observe:
        scope.observed.cluster = azure.clusters.get(CLUSTER_ID.lower())
        scope.observed.identity = azure.identities.get(IDENTITY_ID.lower())
    return scope


def run(step: Step[Scope], scope: Scope) -> StepResult:
    return guard(step.condition, lambda: step.run(scope), scope.timings, scope.events)


def neighbour(name: str, identity: str = IDENTITY_ID, cluster: str = CLUSTER_ID, **fields: Any) -> ComputeView:
    """Another AttachedCompute as the operator's index holds it."""
    return ComputeView(name, WORKSPACE, cluster, identity, "other", "azureml-jobs", issuer=ISSUER, **fields)


def reasons(scope: Scope) -> list[str]:
    return [e.reason for e in scope.events]


# -- ClusterReady, IdentityReady --------------------------------------------------------------------------
def _cluster(azure: FakeAzure, **changes: Any) -> FakeAzure:
    azure.clusters[CLUSTER_ID.lower()] = replace(azure.clusters[CLUSTER_ID.lower()], **changes)
    return azure


CLUSTER_CASES = [
    ("healthy", {}, Outcome.DONE, r.WORKLOAD_IDENTITY_ENABLED, "are enabled"),
    (
        "no OIDC issuer",
        {"oidc_issuer_enabled": False},
        Outcome.BLOCKED,
        r.OIDC_ISSUER_DISABLED,
        "az aks update -g rg-aks -n aks-robotics --enable-oidc-issuer",
    ),
    (
        "no workload identity",
        {"workload_identity_enabled": False},
        Outcome.BLOCKED,
        r.WORKLOAD_IDENTITY_DISABLED,
        "--enable-workload-identity",
    ),
    (
        "local accounts off",
        {"local_accounts_disabled": True},
        Outcome.BLOCKED,
        r.LOCAL_ACCOUNTS_DISABLED,
        "az aks update -g rg-aks -n aks-robotics --enable-local-accounts",
    ),
]


@table(("case", "changes", "outcome", "reason", "says"), CLUSTER_CASES)
def test_cluster_step(case, changes, outcome, reason, says):
    scope = make(_cluster(healthy_azure(), **changes), observe=False)
    result = run(check_the_cluster, scope)
    assert (result.outcome, result.reason) == (outcome, reason)
    assert says in result.message
    assert scope.status.oidc_issuer == (None if changes.get("oidc_issuer_enabled") is False else ISSUER)


def test_a_missing_cluster_names_spec_cluster():
    azure = healthy_azure()
    azure.clusters.clear()
    result = run(check_the_cluster, make(azure, observe=False))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.CLUSTER_NOT_FOUND)
    assert "fix spec.cluster" in result.message


def test_throttling_is_retried_after_retry_after_not_stalled():
    azure = healthy_azure()
    azure.fail("get_cluster", throttled(7))
    result = run(check_the_cluster, make(azure, observe=False))
    assert (result.outcome, result.reason, result.requeue_after) == (Outcome.RETRYING, r.AZURE_THROTTLED, 7)


def test_a_retry_after_beyond_the_cap_is_capped_and_said():
    azure = healthy_azure()
    azure.fail("get_cluster", throttled(90))
    scope = make(azure, observe=False)
    result = run(check_the_cluster, scope)
    assert result.requeue_after == TIMINGS.max_retry_delay
    assert "Azure asked to wait 90s, capped at AMLWIRE_MAX_RETRY_DELAY (30s)" in scope.events[0].message


def test_identity_step():
    scope = make(observe=False)
    assert run(find_the_identity, scope).reason == r.IDENTITY_FOUND
    assert scope.status.identity is not None
    assert (scope.status.identity.client_id, scope.status.identity.resource_id) == (CLIENT_ID, IDENTITY_ID)
    azure = healthy_azure()
    azure.identities.clear()
    result = run(find_the_identity, make(azure, observe=False))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.IDENTITY_NOT_FOUND)
    assert "az identity create -g rg-id -n id-ml" in result.message


# -- FederationReady --------------------------------------------------------------------------------------
def ours(namespace: str, name: str, issuer: str = ISSUER, audiences: tuple[str, ...] = ("api://AzureADTokenExchange",)):
    return FederatedCredential(
        credential_name(namespace, name, issuer), issuer, f"system:serviceaccount:{namespace}:{name}", audiences
    )


def test_missing_credentials_are_created_one_per_service_account():
    scope = make()
    result = run(federate_service_accounts, scope)
    assert result.outcome is Outcome.DONE
    assert scope.azure.count("put_federated_credential") == 3
    assert reasons(scope) == [r.FEDERATED_CREDENTIAL_CREATED] * 3  # the event names the action, not the lack
    assert {c.subject for c in scope.status.federated_credentials} == {
        "system:serviceaccount:azureml:default",
        "system:serviceaccount:azureml:training",
        "system:serviceaccount:azureml-jobs:default",
    }


def test_new_credentials_propagate_before_the_step_is_done():
    scope = make(timings=replace(TIMINGS, federation_propagation=60))
    result = run(federate_service_accounts, scope)
    assert (result.outcome, result.reason) == (Outcome.PROGRESSING, r.FEDERATED_CREDENTIAL_MISSING)
    assert result.requeue_after == 60
    assert "Entra honours a new federated credential" in result.message


def test_credentials_in_place_are_not_written_again():
    azure = healthy_azure()
    for namespace, name in (("azureml", "default"), ("azureml", "training"), ("azureml-jobs", "default")):
        credential = ours(namespace, name)
        azure.credentials[IDENTITY_ID.lower()][credential.name] = credential
    scope = make(azure)
    assert run(federate_service_accounts, scope).outcome is Outcome.DONE
    assert azure.writes() == []


def test_an_amlwire_credential_with_the_wrong_issuer_is_corrected():
    azure = healthy_azure()
    wrong = ours("azureml", "default")
    azure.credentials[IDENTITY_ID.lower()][wrong.name] = replace(wrong, issuer=ISSUER.rstrip("/"))
    scope = make(azure)
    run(federate_service_accounts, scope)
    assert r.FEDERATED_CREDENTIAL_ISSUER_MISMATCH in reasons(scope)  # the event says what was wrong and fixed
    assert azure.credentials[IDENTITY_ID.lower()][wrong.name].issuer == ISSUER


def test_a_foreign_credential_with_the_wrong_audience_blocks_with_the_delete_command():
    azure = healthy_azure()
    azure.credentials[IDENTITY_ID.lower()]["manual"] = FederatedCredential(
        "manual", ISSUER, "system:serviceaccount:azureml:default", ("api://Other",)
    )
    result = run(federate_service_accounts, make(azure))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.FEDERATED_CREDENTIAL_AUDIENCE_MISMATCH)
    assert "az identity federated-credential delete --identity-name id-ml -g rg-id -n manual" in result.message


def test_the_cap_of_twenty_blocks_before_writing():
    azure = healthy_azure()
    for i in range(20):
        azure.credentials[IDENTITY_ID.lower()][f"other-{i}"] = FederatedCredential(f"other-{i}", ISSUER, f"s{i}")
    result = run(federate_service_accounts, make(azure))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.FEDERATED_CREDENTIAL_LIMIT)
    assert azure.writes() == []


def test_at_the_cap_the_condition_names_the_other_clusters_holding_the_identity_and_those_that_are_gone():
    """An 11th cluster on one identity: ten others hold two credentials each. Nothing is written; the condition
    says whose the credentials are, and for a cluster that is gone, the commands that free its two."""
    azure = healthy_azure()
    issuers = [f"https://eastus.oic.prod-aks.azure.com/t/aks-{i}/" for i in range(10)]
    for issuer in issuers:
        for account in ("default", "training"):
            credential = ours("azureml", account, issuer=issuer)
            azure.credentials[IDENTITY_ID.lower()][credential.name] = credential
    azure.issuers[issuers[3]] = GONE
    result = run(federate_service_accounts, make(azure))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.FEDERATED_CREDENTIAL_LIMIT)
    assert azure.writes() == []
    assert all(issuer in result.message for issuer in issuers)
    gone = sorted(n for n, c in azure.credentials[IDENTITY_ID.lower()].items() if c.issuer == issuers[3])
    assert f"the cluster of issuer {issuers[3]} is gone" in result.message
    assert all(f"federated-credential delete --identity-name id-ml -g rg-id -n {n}" in result.message for n in gone)
    assert result.message.count("federated-credential delete") == 2  # only the gone cluster's, nothing on a guess
    assert "never worked" not in result.message  # other clusters' credentials are not near misses of this one's


def test_a_credential_no_longer_listed_is_deleted_unless_a_neighbour_needs_it():
    stale = ours("azureml", "old")
    previous = AttachedComputeStatus(
        observed_generation=1, federated_credentials=[FederatedCredentialStatus(name=stale.name, subject=stale.subject)]
    )
    azure = healthy_azure()
    azure.credentials[IDENTITY_ID.lower()][stale.name] = stale
    scope = make(azure, previous=previous)
    run(federate_service_accounts, scope)
    assert stale.name not in azure.credentials[IDENTITY_ID.lower()]
    assert r.FEDERATED_CREDENTIAL_DELETED in reasons(scope)

    azure.credentials[IDENTITY_ID.lower()][stale.name] = stale
    scope = make(azure, previous=previous)
    scope.neighbours = Neighbours((neighbour("other", subjects=(stale.subject,)),))
    run(federate_service_accounts, scope)
    assert stale.name in azure.credentials[IDENTITY_ID.lower()]


def test_a_concurrent_write_conflict_is_retried():
    azure = healthy_azure()
    azure.fail(
        "put_federated_credential",
        AzureError(r.FEDERATED_CREDENTIAL_WRITE_CONFLICT, "409 concurrent", retryable=True, retry_after=2.0),
    )
    result = run(federate_service_accounts, make(azure))
    assert (result.outcome, result.reason, result.requeue_after) == (
        Outcome.RETRYING,
        r.FEDERATED_CREDENTIAL_WRITE_CONFLICT,
        2.0,
    )


# -- ServiceAccountsReady ---------------------------------------------------------------------------------
def test_service_accounts_are_created_and_annotated():
    kube = FakeKube()
    scope = make(kube=kube)
    assert run(annotate_service_accounts, scope).reason == r.SERVICE_ACCOUNTS_ANNOTATED
    assert kube.service_accounts[("azureml", "training")].annotations[CLIENT_ID_ANNOTATION] == CLIENT_ID
    assert reasons(scope) == [r.SERVICE_ACCOUNT_ANNOTATED] * 3
    scope = make(kube=kube)
    run(annotate_service_accounts, scope)
    assert kube.calls.count("apply_service_account") == 3  # already right: not applied again


def test_an_account_the_extension_creates_is_reported_missing_not_created():
    kube = FakeKube()
    result = run(
        annotate_service_accounts,
        make(kube=kube, serviceAccounts=[{"namespace": "azureml", "name": "training", "create": False}]),
    )
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.SERVICE_ACCOUNT_MISSING)
    assert "azureml/training does not exist" in result.message
    assert kube.service_accounts == {}


def test_an_annotation_owned_by_someone_else_is_a_conflict_naming_them():
    from amlwire.reconcile.ports import ServiceAccountInfo

    kube = FakeKube()
    kube.service_accounts[("azureml", "training")] = ServiceAccountInfo(
        "azureml", "training", {CLIENT_ID_ANNOTATION: "wrong"}
    )
    kube.owners[("azureml", "training")] = "argocd-controller"
    result = run(annotate_service_accounts, make(kube=kube))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.SERVICE_ACCOUNT_ANNOTATION_CONFLICT)
    assert "argocd-controller" in result.message
    assert f"kubectl annotate serviceaccount -n azureml training {CLIENT_ID_ANNOTATION}={CLIENT_ID}" in result.message


def test_a_missing_namespace_is_named():
    result = run(annotate_service_accounts, make(kube=FakeKube(namespaces=set())))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.NAMESPACE_NOT_FOUND)
    assert "kubectl create namespace azureml" in result.message


# -- ExtensionReady ---------------------------------------------------------------------------------------
EXT_KEY = (CLUSTER_ID.lower(), "azureml")


def operation(
    kind: str, attempt: int = 1, url: str | None = "https://operations/0", minutes: float = 0
) -> OperationStatus:
    return OperationStatus(kind=kind, url=url, started_at=at(minutes).strftime("%Y-%m-%dT%H:%M:%SZ"), attempt=attempt)


def with_operations(*operations: OperationStatus) -> AttachedComputeStatus:
    return AttachedComputeStatus(observed_generation=1, operations=list(operations))


def test_the_identity_settings_are_patched_and_only_they():
    azure = healthy_azure()
    scope = make(azure)
    result = run(configure_the_extension, scope)
    assert result.outcome is Outcome.DONE  # the fake finishes at once: no second pass needed
    ((_, (_, _, settings)),) = [c for c in azure.calls if c[0] == "begin_update_extension"]
    assert settings == {
        "identityType": "UserAssigned",
        "userAssignedIdentityResourceId": IDENTITY_ID,
        **cli_settings(CLUSTER_ID, "aks-robotics", "eastus", None),  # what the CLI adds, in the same write
    }
    assert EXTENSION_INSTALLED.name in result.provides


def test_a_slow_update_is_recorded_and_monitored_without_reading_the_extension_again():
    azure = healthy_azure(extension_operations_finish=False)
    scope = make(azure)
    result = run(configure_the_extension, scope)
    assert (result.outcome, result.reason) == (Outcome.PROGRESSING, r.EXTENSION_IDENTITY_MISMATCH)
    (op,) = scope.status.operations
    assert (op.kind, op.attempt) == ("ExtensionUpdate", 1)
    scope = make(azure, previous=with_operations(op))
    result = run(configure_the_extension, scope)
    assert (result.outcome, result.reason) == (Outcome.PROGRESSING, r.EXTENSION_PROVISIONING)
    assert azure.count("get_extension") == 1
    assert azure.count("begin_update_extension") == 1
    azure.finish(op.url or "")
    scope = make(azure, previous=with_operations(op))
    assert run(configure_the_extension, scope).reason == r.EXTENSION_CONFIGURED
    assert scope.status.operations == []


def test_a_missing_extension_is_installed_in_configure_mode_and_reported_in_verify_mode():
    azure = healthy_azure()
    azure.extensions.clear()
    scope = make(azure)
    run(configure_the_extension, scope)
    assert azure.count("begin_create_extension") == 1
    azure.extensions.clear()
    result = run(configure_the_extension, make(azure, extension__mode="Verify"))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.EXTENSION_MISSING)
    assert "az k8s-extension create --extension-type Microsoft.AzureML.Kubernetes --name azureml" in result.message
    assert EXTENSION_INSTALLED.name not in result.provides


def test_a_failed_operation_is_retried_then_given_up_after_three_attempts():
    azure = healthy_azure(extension_operations_finish=False)
    azure.operations["https://operations/0"] = OperationState(done=True, succeeded=False, error="Helm failed")
    azure.extensions[EXT_KEY] = replace(azure.extensions[EXT_KEY], provisioning_state="Failed")
    scope = make(azure, previous=with_operations(operation("ExtensionUpdate", 1)))
    result = run(configure_the_extension, scope)
    assert (result.reason, scope.status.operations[0].attempt) == (r.EXTENSION_REPAIRING, 2)
    assert r.EXTENSION_OPERATION_FAILED in reasons(scope)
    scope = make(azure, previous=with_operations(operation("ExtensionUpdate", 3)))
    result = run(configure_the_extension, scope)
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.EXTENSION_OPERATION_FAILED)
    assert "failed 3 times: Helm failed" in result.message


def test_a_patch_answered_without_an_operation_counts_as_an_attempt():
    """Azure answers 200 and no operation URL to a PATCH that changes nothing: a Failed extension stays
    Failed, and amlwire stops after the retry limit instead of PATCHing forever."""
    azure = healthy_azure(update_answers_without_url=True)
    azure.extensions[EXT_KEY] = ExtensionInfo(
        "id",
        "Microsoft.AzureML.Kubernetes",
        "Failed",
        {
            **cli_settings(CLUSTER_ID, "aks-robotics", "eastus", None),
            "enableTraining": "True",
            "identityType": "UserAssigned",
            "userAssignedIdentityResourceId": IDENTITY_ID,
        },
    )
    previous = AttachedComputeStatus(observed_generation=1)
    for _ in range(6):
        scope = make(azure, previous=previous)
        result = run(configure_the_extension, scope)
        previous = scope.status
    assert azure.count("begin_update_extension") == 3
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.EXTENSION_OPERATION_FAILED)


def test_an_operation_that_never_ends_times_out():
    azure = healthy_azure(extension_operations_finish=False)
    azure.operations["https://operations/0"] = OperationState(done=False, succeeded=False)
    scope = make(azure, previous=with_operations(operation("ExtensionUpdate", 1, minutes=-120)))
    result = run(configure_the_extension, scope)
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.EXTENSION_OPERATION_TIMED_OUT)


# -- AccessReady ------------------------------------------------------------------------------------------
def test_missing_roles_are_assigned_once_with_deterministic_names():
    azure = healthy_azure()
    scope = make(azure)
    assert run(assign_roles, scope).reason == r.ROLES_ASSIGNED
    assert azure.count("create_role_assignment") == 3
    assert reasons(scope) == [r.ROLE_ASSIGNMENT_CREATED] * 3
    assert all(s.created_by_amlwire for s in scope.status.role_assignments)
    scope = make(azure, previous=scope.status)
    run(assign_roles, scope)
    assert azure.count("create_role_assignment") == 3


def test_a_new_assignment_propagates_with_a_time_named():
    scope = make(timings=replace(TIMINGS, role_propagation=600))
    result = run(assign_roles, scope)
    assert (result.outcome, result.reason) == (Outcome.PROGRESSING, r.ROLE_ASSIGNMENT_PROPAGATING)
    assert "expected effective at 2026-11-26T10:10:00Z" in result.message


def test_verify_mode_reports_the_command_and_writes_nothing():
    azure = healthy_azure()
    result = run(assign_roles, make(azure, access__mode="Verify"))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.ROLE_ASSIGNMENT_MISSING)
    assert f"--assignee-object-id {PRINCIPAL}" in result.message
    assert f"--scope {STORAGE_ID}" in result.message
    assert azure.writes() == []


def test_an_inherited_assignment_satisfies_a_grant():
    azure = healthy_azure()
    group = STORAGE_ID.split("/providers/")[0]
    azure.assignments.append(
        RoleAssignment(
            "inherited",
            group,
            role_definition_id(WORKSPACE.subscription, "Storage Blob Data Contributor"),
            PRINCIPAL,
            at(-60),
        )
    )
    scope = make(azure, access__grants=[{"scope": STORAGE_ID, "role": "Storage Blob Data Contributor"}])
    assert run(assign_roles, scope).reason == r.ROLES_ASSIGNED
    assert azure.count("create_role_assignment") == 0
    assert scope.status.role_assignments[0].created_by_amlwire is False
    assert assignment_name(STORAGE_ID, "Storage Blob Data Contributor", PRINCIPAL) != "inherited"


# -- InstanceTypesReady -----------------------------------------------------------------------------------
def test_instance_types_are_applied_and_stale_ones_removed():
    kube = FakeKube()
    kube.instance_types["old"] = {
        "metadata": {"name": "old", "labels": {"amlwire.io/attached-compute": "robotics-gpu"}}
    }
    kube.instance_types["foreign"] = {"metadata": {"name": "foreign", "labels": {}}}
    result = run(apply_instance_types, make(kube=kube))
    assert result.reason == r.INSTANCE_TYPES_APPLIED
    assert set(kube.instance_types) == {"gpu-1", "foreign"}


def test_instance_types_without_the_crd_are_blocked_naming_the_extension():
    result = run(apply_instance_types, make(kube=FakeKube(crd_served=False)))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.INSTANCE_TYPE_CRD_MISSING)
    result = run(apply_instance_types, make(kube=FakeKube(crd_served=False), compute__instanceTypes=[]))
    assert result.reason == r.NO_INSTANCE_TYPES_REQUESTED


# -- ComputeReady -----------------------------------------------------------------------------------------
def attached(state: str = "Succeeded", owner: str | None = "robotics-gpu", **changes: Any) -> ComputeInfo:
    tags = {"amlwire-attached-compute": owner} if owner else {}
    base = ComputeInfo(
        f"{WORKSPACE.id}/computes/k8s-gpu", state, CLUSTER_ID, "azureml-jobs", "UserAssigned", (IDENTITY_ID,), tags
    )
    return replace(base, **changes)


def with_compute(compute: ComputeInfo | None, **changes: Any) -> FakeAzure:
    azure = healthy_azure(**changes)
    if compute is not None:
        azure.computes[(WORKSPACE.id.lower(), "k8s-gpu")] = compute
    return azure


COMPUTE_CASES = [
    # (case, compute in the workspace, operations before, outcome, reason, calls it begins, operations after)
    ("absent: attached at once", None, [], Outcome.DONE, r.COMPUTE_ATTACHED, ["begin_attach_compute"], []),
    ("attached already", attached(), [], Outcome.DONE, r.COMPUTE_ATTACHED, [], []),
    ("adopted, not ours", attached(owner=None), [], Outcome.DONE, r.COMPUTE_ATTACHED, [], []),
    (
        "creating",
        attached("Creating"),
        [operation("ComputeAttach", 1, None)],
        Outcome.PROGRESSING,
        r.COMPUTE_PROVISIONING,
        [],
        ["ComputeAttach"],
    ),
    (
        "attach not visible yet",
        None,
        [operation("ComputeAttach", 1, None, minutes=-0.5)],
        Outcome.PROGRESSING,
        r.COMPUTE_PROVISIONING,
        [],
        ["ComputeAttach"],
    ),
    (
        "attach failed once: detach first",
        attached("Failed", errors=("quota",)),
        [operation("ComputeAttach", 1, None)],
        Outcome.PROGRESSING,
        r.COMPUTE_ATTACH_FAILED,
        ["begin_detach_compute"],
        ["ComputeAttach", "ComputeDetach"],
    ),
    (
        "detached after a failure: attach again",
        None,
        [operation("ComputeAttach", 1, None), operation("ComputeDetach", 1, None)],
        Outcome.DONE,
        r.COMPUTE_ATTACHED,
        ["begin_attach_compute"],
        [],
    ),
    (
        "attach failed three times",
        attached("Failed", errors=("quota",)),
        [operation("ComputeAttach", 3, None)],
        Outcome.BLOCKED,
        r.COMPUTE_ATTACH_FAILED,
        [],
        ["ComputeAttach"],
    ),
    (
        "attach left nothing after the settle time",
        None,
        [operation("ComputeAttach", 1, None, minutes=-5)],
        Outcome.DONE,
        r.COMPUTE_ATTACHED,
        ["begin_attach_compute"],
        [],
    ),
    (
        "failed, ours, no record: detach to attach again",
        attached("Failed"),
        [],
        Outcome.PROGRESSING,
        r.COMPUTE_ATTACH_FAILED,
        ["begin_detach_compute"],
        ["ComputeDetach"],
    ),
    ("failed, not ours", attached("Failed", owner=None), [], Outcome.BLOCKED, r.COMPUTE_ATTACH_FAILED, [], []),
    (
        "another identity, ours: detach",
        attached(identity_ids=(IDENTITY_ID + "2",)),
        [],
        Outcome.PROGRESSING,
        r.COMPUTE_IDENTITY_MISMATCH,
        ["begin_detach_compute"],
        ["ComputeDetach"],
    ),
    (
        "another identity, not ours",
        attached(owner=None, identity_type="SystemAssigned", identity_ids=()),
        [],
        Outcome.BLOCKED,
        r.COMPUTE_IDENTITY_MISMATCH,
        [],
        [],
    ),
    ("another cluster", attached(cluster_id=CLUSTER_ID + "x"), [], Outcome.BLOCKED, r.COMPUTE_NAME_CONFLICT, [], []),
    (
        "detaching",
        attached("Deleting"),
        [operation("ComputeDetach", 1, None)],
        Outcome.PROGRESSING,
        r.COMPUTE_PROVISIONING,
        [],
        ["ComputeDetach"],
    ),
    (
        "detach failed: again",
        attached("Failed"),
        [operation("ComputeDetach", 1, None)],
        Outcome.PROGRESSING,
        r.COMPUTE_DETACH_FAILED,
        ["begin_detach_compute"],
        ["ComputeDetach"],
    ),
    (
        "detach failed three times",
        attached("Failed"),
        [operation("ComputeDetach", 3, None)],
        Outcome.BLOCKED,
        r.COMPUTE_DETACH_FAILED,
        [],
        ["ComputeDetach"],
    ),
]


@table(("case", "compute", "before", "outcome", "reason", "begins", "after"), COMPUTE_CASES)
def test_compute_step(case, compute, before, outcome, reason, begins, after):
    azure = with_compute(compute)
    scope = make(azure, previous=with_operations(*before))
    result = run(attach_the_compute, scope)
    assert (result.outcome, result.reason) == (outcome, reason), result.message
    assert list(azure.writes()) == begins
    assert [op.kind for op in scope.status.operations] == after


def test_a_given_up_attach_names_the_detach_command_and_a_spec_change_retries():
    azure = with_compute(attached("Failed", errors=("quota",)))
    result = run(attach_the_compute, make(azure, previous=with_operations(operation("ComputeAttach", 3, None))))
    assert DETACH in result.message
    retried = make(azure, previous=with_operations(operation("ComputeAttach", 3, None)), generation=2)
    assert retried.status.operations == []  # a changed spec is the user's "try again"


def test_retry_counts_the_attach_attempt_across_the_detach():
    azure = with_compute(None, attach_finishes=False)
    before = with_operations(operation("ComputeAttach", 2, None), operation("ComputeDetach", 1, None))
    scope = make(azure, previous=before)
    run(attach_the_compute, scope)
    assert [(op.kind, op.attempt) for op in scope.status.operations] == [("ComputeAttach", 3)]


def test_a_missing_workspace_is_named():
    azure = healthy_azure()
    azure.workspaces.clear()
    result = run(attach_the_compute, make(azure))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.WORKSPACE_NOT_FOUND)


# -- the runner and the whole pass ------------------------------------------------------------------------
def test_a_step_whose_needs_do_not_hold_waits_naming_the_link():
    calls = []

    @declare("B", needs=("A",))
    def b(scope: Any) -> StepResult:
        calls.append("b")
        raise AssertionError("must not run")

    @declare("A")
    def a(scope: Any) -> StepResult:
        return blocked("A", "Broken", "A is broken")

    results = run_steps([a, b], None, TIMINGS, [])
    assert [(x.type, x.outcome, x.reason) for x in results] == [
        ("A", Outcome.BLOCKED, "Broken"),
        ("B", Outcome.WAITING, "WaitingA"),
    ]
    assert calls == []


def test_a_fresh_compute_converges_in_one_pass_on_fakes_and_a_resync_writes_nothing():
    azure, kube = healthy_azure(), FakeKube()
    scope = make(azure, kube, observe=False)
    result = reconcile(scope)
    assert result.ready, [(c.type, c.reason, c.message) for c in result.status.conditions]
    assert [s.condition for s in STEPS] == list(r.COMPUTE_STEP_TYPES)
    writes = len(azure.writes())
    again = reconcile(make(azure, kube, previous=result.status, observe=False))
    assert again.ready
    assert len(azure.writes()) == writes
    assert again.requeue_after is None


def test_the_extension_not_installed_holds_the_compute_and_instance_types():
    azure = healthy_azure()
    azure.extensions.clear()
    result = reconcile(make(azure, observe=False, extension__mode="Verify"))
    conditions = {c.type: (c.status, c.reason) for c in result.status.conditions}
    assert conditions[r.COMPUTE_READY] == ("Unknown", "WaitingExtensionReady")
    assert conditions[r.INSTANCE_TYPES_READY] == ("Unknown", "WaitingExtensionReady")
    assert conditions[r.STALLED] == ("True", r.EXTENSION_MISSING)
    assert azure.count("begin_attach_compute") == 0


def test_an_oidc_issuer_off_blocks_federation_and_stalls():
    result = reconcile(make(_cluster(healthy_azure(), oidc_issuer_enabled=False), observe=False))
    conditions = {c.type: (c.status, c.reason) for c in result.status.conditions}
    assert conditions[r.FEDERATION_READY] == ("Unknown", "WaitingClusterReady")
    assert conditions[r.STALLED] == ("True", r.OIDC_ISSUER_DISABLED)


def test_a_rejected_request_is_blocked_with_azures_words():
    azure = healthy_azure()
    azure.fail("list_role_assignments", rejected("the scope is malformed"))
    result = run(assign_roles, make(azure))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, "AzureBadRequest")
    assert "the scope is malformed" in result.message


# -- what a cluster admin does: shared clusters, identity changes, running jobs ---------------------------
OTHER_IDENTITY = IDENTITY_ID.replace("id-ml", "id-other")


def sibling(**fields: Any) -> Neighbours:
    """Another AttachedCompute on the same cluster, with another identity, created before this one."""
    return Neighbours((neighbour("first", identity=OTHER_IDENTITY, created="2026-11-26T09:00:00Z", **fields),))


def test_an_extension_owned_for_another_identity_is_not_written():
    azure = healthy_azure()
    scope = make(azure)
    scope.created, scope.neighbours = "2026-11-26T09:30:00Z", sibling(owns_extension=True)
    result = run(configure_the_extension, scope)
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.EXTENSION_OWNED_BY_ANOTHER)
    assert "AttachedCompute first" in result.message
    assert "id-other" in result.message
    assert azure.writes() == []
    assert scope.status.owns_extension is False
    assert EXTENSION_INSTALLED.name not in result.provides  # its compute is not attached under a foreign identity


OWNER_CASES = [
    # (case, the other compute, this one created, this one owned it before, refused)
    ("an earlier compute that set it", {"owns_extension": True}, "2026-11-26T09:30:00Z", False, True),
    ("an earlier compute not Ready yet", {}, "2026-11-26T09:30:00Z", False, True),
    (
        "an earlier compute whose identity is missing",
        {"conditions": {"IdentityReady": ("False", "IdentityNotFound", "")}},
        "2026-11-26T09:30:00Z",
        False,
        False,
    ),
    ("a later compute", {}, "2026-11-26T08:00:00Z", False, False),
    ("this one set it first", {"owns_extension": False}, "2026-11-26T09:30:00Z", True, False),
    ("another identity in Verify mode", {"configures_extension": False}, "2026-11-26T09:30:00Z", False, False),
]


@table(("case", "other", "created", "owned", "refused"), OWNER_CASES)
def test_who_sets_a_shared_extensions_identity(case, other, created, owned, refused):
    scope = make(previous=AttachedComputeStatus(observed_generation=1, owns_extension=owned))
    scope.created, scope.neighbours = created, sibling(**other)
    result = run(configure_the_extension, scope)
    assert (result.reason == r.EXTENSION_OWNED_BY_ANOTHER) is refused


def test_computes_sharing_an_identity_share_the_extension():
    scope = make()
    scope.created = "2026-11-26T09:30:00Z"
    scope.neighbours = Neighbours((neighbour("first", owns_extension=True, created="2026-11-26T09:00:00Z"),))
    assert run(configure_the_extension, scope).reason == r.EXTENSION_CONFIGURED


def changed_identity(azure: FakeAzure) -> AttachedComputeStatus:
    """The status of a compute wired with OTHER_IDENTITY, whose spec now names IDENTITY_ID."""
    from amlwire.api.attachedcompute import IdentityStatus, RoleAssignmentStatus

    azure.identities[OTHER_IDENTITY.lower()] = replace(azure.identities[IDENTITY_ID.lower()], id=OTHER_IDENTITY)
    old = ours("azureml", "default")
    azure.credentials[OTHER_IDENTITY.lower()][old.name] = old
    azure.assignments.append(RoleAssignment("old-ra", STORAGE_ID, "role", "old-principal"))
    return AttachedComputeStatus(
        observed_generation=1,
        identity=IdentityStatus(resource_id=OTHER_IDENTITY, client_id="c", principal_id="old-principal"),
        federated_credentials=[FederatedCredentialStatus(name=old.name, subject=old.subject)],
        role_assignments=[
            RoleAssignmentStatus(
                scope=STORAGE_ID, role="Storage Blob Data Contributor", name="old-ra", created_by_amlwire=True
            )
        ],
    )


def test_changing_the_identity_removes_what_amlwire_made_on_the_former_one():
    azure = healthy_azure()
    scope = make(azure, previous=changed_identity(azure), generation=2)
    run(federate_service_accounts, scope)
    run(assign_roles, scope)
    assert azure.credentials[OTHER_IDENTITY.lower()] == {}
    assert len(azure.credentials[IDENTITY_ID.lower()]) == 3
    assert not any(a.name == "old-ra" for a in azure.assignments)
    assert "deleted amlwire-azureml-default" in " ".join(e.message for e in scope.events)
    assert "of the former identity" in " ".join(e.message for e in scope.events)


def test_what_a_neighbour_still_uses_on_the_former_identity_stays():
    azure = healthy_azure()
    scope = make(azure, previous=changed_identity(azure), generation=2)
    still = ("system:serviceaccount:azureml:default",)
    scope.neighbours = Neighbours(
        (
            neighbour(
                "other",
                identity=OTHER_IDENTITY,
                subjects=still,
                grants=((STORAGE_ID.lower(), role_guid("Storage Blob Data Contributor")),),
            ),
        )
    )
    run(federate_service_accounts, scope)
    run(assign_roles, scope)
    assert len(azure.credentials[OTHER_IDENTITY.lower()]) == 1
    assert any(a.name == "old-ra" for a in azure.assignments)


def test_a_compute_to_reattach_waits_for_running_jobs_unless_told_otherwise():
    azure = with_compute(attached(identity_ids=(OTHER_IDENTITY,)))
    scope = make(azure)
    scope.neighbours = Neighbours(running_jobs=("robotics/train-1",))
    result = run(attach_the_compute, scope)
    assert (result.outcome, result.reason) == (Outcome.PROGRESSING, r.COMPUTE_DETACH_WAITS_FOR_JOBS)
    assert "robotics/train-1" in result.message
    assert "amlwire.io/detach-under-running-jobs=true" in result.message
    assert azure.writes() == []
    scope = make(azure)
    scope.neighbours, scope.detach_under_jobs = Neighbours(running_jobs=("robotics/train-1",)), True
    run(attach_the_compute, scope)
    assert azure.writes() == ["begin_detach_compute"]


def test_an_extension_service_account_left_out_holds_federation():
    azure = healthy_azure()
    scope = make(azure, serviceAccounts=[{"namespace": "azureml", "name": "training"}])
    result = run(federate_service_accounts, scope)
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.EXTENSION_SERVICE_ACCOUNT_NOT_FEDERATED)
    assert "{namespace: azureml, name: default}" in result.message
    foreign = FederatedCredential("manual", ISSUER, "system:serviceaccount:azureml:default")
    azure.credentials[IDENTITY_ID.lower()]["manual"] = foreign
    scope = make(azure, serviceAccounts=[{"namespace": "azureml", "name": "training"}])
    assert run(federate_service_accounts, scope).outcome is Outcome.DONE  # federated by someone else: fine


def test_an_account_no_longer_listed_loses_amlwires_annotation():
    kube = FakeKube()
    previous = AttachedComputeStatus(
        observed_generation=1,
        federated_credentials=[FederatedCredentialStatus(name="x", subject="system:serviceaccount:robotics:old")],
    )
    scope = make(kube=kube, previous=previous)
    run(annotate_service_accounts, scope)
    assert kube.calls.count("release_service_account") == 1
    assert r.SERVICE_ACCOUNT_RELEASED in reasons(scope)
    scope = make(kube=kube, previous=previous)
    scope.neighbours = Neighbours((neighbour("other", subjects=("system:serviceaccount:robotics:old",)),))
    run(annotate_service_accounts, scope)
    assert kube.calls.count("release_service_account") == 1  # another AttachedCompute still lists it


def test_a_key_based_datastore_with_shared_keys_off_holds_access():
    azure = healthy_azure()
    workspace = azure.workspaces[WORKSPACE.id.lower()]
    azure.workspaces[WORKSPACE.id.lower()] = replace(workspace, system_datastores_auth_mode="accesskey")
    result = run(assign_roles, make(azure))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.SHARED_KEY_ACCESS_DISABLED)
    assert "KeyBasedAuthenticationNotPermitted" in result.message
    assert "new workspace" in result.message


# -- Azure truth: what real Azure and AML need (docs/sandbox.md) --------------------------------------------
def test_a_missing_compute_namespace_is_created_before_the_attach_and_labelled_as_amlwires():
    azure, kube = with_compute(None), FakeKube(namespaces={"azureml"})
    result = run(attach_the_compute, make(azure, kube))
    assert result.outcome is Outcome.DONE
    assert kube.calls[:2] == ["namespace_phase", "apply_namespace"]
    assert "azureml-jobs" in kube.namespaces
    assert azure.writes() == ["begin_attach_compute"]


def test_a_namespace_deleted_after_the_attach_is_created_again():
    azure, kube = with_compute(attached()), FakeKube(namespaces={"azureml"})
    result = run(attach_the_compute, make(azure, kube))
    assert result.outcome is Outcome.DONE
    assert "azureml-jobs" in kube.namespaces
    assert azure.writes() == []


def test_a_namespace_being_deleted_holds_compute_ready_and_says_jobs_fail():
    azure, kube = with_compute(attached()), FakeKube(terminating={"azureml-jobs"})
    result = run(attach_the_compute, make(azure, kube))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.COMPUTE_NAMESPACE_DELETING)
    assert "every AML job on compute" in result.message
    assert "apply_namespace" not in kube.calls


def test_a_namespace_amlwire_may_not_create_holds_the_attach_and_says_how_to_fix_it():
    azure, kube = with_compute(None), FakeKube(namespaces={"azureml"}, may_create_namespaces=False)
    result = run(attach_the_compute, make(azure, kube))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.COMPUTE_NAMESPACE_MISSING)
    assert "kubectl create namespace azureml-jobs" in result.message
    assert "spec.compute.namespace" in result.message
    assert azure.writes() == []


def test_the_compute_is_tagged_with_an_arm_tag_name_and_the_former_tag_still_means_owned():
    azure = with_compute(None)
    run(attach_the_compute, make(azure))
    ((_, (_, attachment)),) = [c for c in azure.calls if c[0] == "begin_attach_compute"]
    assert attachment.tags == {"amlwire-attached-compute": "robotics-gpu"}
    assert not set("<>%&\\?/") & set("".join(attachment.tags))
    former = with_compute(
        attached(identity_type="SystemAssigned", tags={"amlwire.io/attached-compute": "robotics-gpu"})
    )
    result = run(attach_the_compute, make(former))
    assert result.reason == r.COMPUTE_IDENTITY_MISMATCH  # owned: amlwire re-attaches it rather than refusing
    assert former.writes() == ["begin_detach_compute"]


def test_a_failed_attach_shows_the_provisioning_error_text():
    azure = with_compute(attached("Failed", errors=("BadArgument: Namespace 'x' does not exist in the cluster",)))
    result = run(attach_the_compute, make(azure, previous=with_operations(operation("ComputeAttach", 3, None))))
    assert "BadArgument: Namespace 'x' does not exist in the cluster" in result.message


def test_an_extension_amlwire_installs_can_train_unless_the_spec_says_otherwise():
    azure = healthy_azure()
    azure.extensions.clear()
    run(configure_the_extension, make(azure, extension__settings={}))
    ((_, (_, _, settings)),) = [c for c in azure.calls if c[0] == "begin_create_extension"]
    assert settings["enableTraining"] == "True"
    azure.extensions.clear()
    run(
        configure_the_extension,
        make(azure, extension__settings={"enableTraining": "False"}, jobs__allowedNamespaces=[]),
    )
    created = [c for c in azure.calls if c[0] == "begin_create_extension"][-1]
    assert created[1][2]["enableTraining"] == "False"


def test_training_turned_off_while_jobs_are_allowed_is_a_condition():
    azure = healthy_azure()
    result = run(configure_the_extension, make(azure, extension__settings={"enableTraining": "False"}))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.TRAINING_DISABLED)
    assert "spec.jobs.allowedNamespaces" in result.message
    assert EXTENSION_INSTALLED.name in result.provides  # the compute may still be attached
    quiet = run(
        configure_the_extension,
        make(azure, extension__settings={"enableTraining": "False"}, jobs__allowedNamespaces=[]),
    )
    assert (quiet.outcome, quiet.reason) == (Outcome.DONE, r.EXTENSION_CONFIGURED)


def test_an_extension_without_training_is_repaired_in_configure_mode_and_named_in_verify_mode():
    azure = healthy_azure()
    identity = {"identityType": "UserAssigned", "userAssignedIdentityResourceId": IDENTITY_ID}
    azure.extensions[EXT_KEY] = replace(azure.extensions[EXT_KEY], settings=identity)
    result = run(configure_the_extension, make(azure, extension__mode="Verify"))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.EXTENSION_SETTINGS_DIFFER)
    assert "enableTraining=True" in result.message
    run(configure_the_extension, make(azure))
    assert azure.extensions[EXT_KEY].settings["enableTraining"] == "True"


def test_the_undocumented_identity_settings_can_be_left_alone():
    azure = healthy_azure()
    result = run(configure_the_extension, make(azure, extension__setIdentitySettings=False))
    assert (result.outcome, result.reason) == (Outcome.DONE, r.EXTENSION_CONFIGURED)
    ((_, (_, _, written)),) = [c for c in azure.calls if c[0] == "begin_update_extension"]
    assert written == cli_settings(CLUSTER_ID, "aks-robotics", "eastus", None)  # what the CLI adds; no identity
    assert "identity settings left alone" in result.message


def test_a_grant_taken_out_of_the_spec_removes_the_assignment_amlwire_made_and_only_that():
    from amlwire.api.attachedcompute import RoleAssignmentStatus

    key_vault = REGISTRY_ID.replace("ContainerRegistry/registries/crrobotics", "KeyVault/vaults/kv-robotics")
    azure = healthy_azure()
    azure.assignments += [
        RoleAssignment("made", REGISTRY_ID, "acrpull", PRINCIPAL),
        RoleAssignment("found", key_vault, "kv", PRINCIPAL),
    ]
    previous = AttachedComputeStatus(
        observed_generation=1,
        role_assignments=[
            RoleAssignmentStatus(scope=REGISTRY_ID, role="AcrPull", name="made", created_by_amlwire=True),
            RoleAssignmentStatus(scope=key_vault, role="Key Vault Secrets User", name="found"),
        ],
    )
    grants = [{"scope": STORAGE_ID, "role": "Storage Blob Data Contributor"}]
    scope = make(azure, previous=previous, generation=2, access__grants=grants)
    run(assign_roles, scope)
    assert [a.name for a in azure.assignments if a.name in ("made", "found")] == ["found"]
    assert "removed AcrPull" in " ".join(e.message for e in scope.events)


EAST = "https://eastus.oic.prod-aks.azure.com/t/aks-east-2/"
GONE = IssuerAnswer("gone", "its discovery document answers 404")
UNASKED = IssuerAnswer("unknown", "could not be asked (ConnectionError)")


@pytest.mark.parametrize(
    ("foreign", "answer", "kept", "gone"),
    [
        (None, None, False, False),
        (
            FederatedCredential("platform-0", "https://token.actions.githubusercontent.com", "repo:c/a:ref:main"),
            None,
            False,
            False,
        ),
        (ours("azureml", "default", issuer=EAST), None, True, False),
        (ours("azureml", "default", issuer=EAST), UNASKED, True, False),
        (ours("azureml", "default", issuer=EAST), GONE, False, True),
    ],
    ids=[
        "no other cluster",
        "a credential amlwire did not write",
        "amlwire on another cluster",
        "another cluster whose issuer cannot be asked",
        "another cluster that is gone",
    ],
)
def test_a_role_another_clusters_compute_may_need_stays_while_amlwire_federates_the_identity_there(
    foreign, answer, kept, gone
):
    """Another cluster's AttachedComputes are not neighbours: only Azure shows that amlwire uses the identity there
    (its credentials with that cluster's issuer). A cluster whose issuer no longer exists holds nothing: its roles
    go, and what it left is reported with the command that removes it, never deleted on a guess."""
    from amlwire.api.attachedcompute import RoleAssignmentStatus

    azure = healthy_azure()
    azure.assignments.append(RoleAssignment("made", REGISTRY_ID, "acrpull", PRINCIPAL))
    if foreign is not None:
        azure.credentials[IDENTITY_ID.lower()][foreign.name] = foreign
    if answer is not None:
        azure.issuers[EAST] = answer
    previous = AttachedComputeStatus(
        observed_generation=1,
        oidc_issuer=ISSUER,
        role_assignments=[
            RoleAssignmentStatus(scope=REGISTRY_ID, role="AcrPull", name="made", created_by_amlwire=True)
        ],
    )
    grants = [{"scope": STORAGE_ID, "role": "Storage Blob Data Contributor"}]
    scope = make(azure, previous=previous, generation=2, access__grants=grants)
    run(assign_roles, scope)
    assert any(a.name == "made" for a in azure.assignments) is kept
    reasons = {e.reason for e in scope.events}
    assert (r.ROLE_ASSIGNMENT_KEPT in reasons, r.ROLE_ASSIGNMENT_DELETED in reasons) == (kept, not kept)
    assert (r.FEDERATED_CLUSTER_GONE in reasons) is gone
    messages = " ".join(e.message for e in scope.events)
    if kept:
        assert "aks-east-2" in messages
        assert (answer or IssuerAnswer("publishing", "it publishes its keys")).detail in messages
    if gone:
        warning = next(e for e in scope.events if e.reason == r.FEDERATED_CLUSTER_GONE)
        assert warning.type == "Warning"
        assert f"az identity federated-credential delete --identity-name id-ml -g rg-id -n {foreign.name}" in messages
        assert foreign.name in azure.credentials[IDENTITY_ID.lower()]  # reported, left in place


# -- deletion: the detach through the ledger --------------------------------------------------------------
def deleting(azure: FakeAzure, *operations: OperationStatus, stalled: str | None = None, **changes: Any) -> Scope:
    """A deletion pass with deletionPolicy Delete, after the passes that recorded `operations`."""
    previous = with_operations(*operations)
    if stalled is not None:
        previous.conditions = fold([], kstatus("stalled", stalled, "deletion waits"), 1, at(0))
    return make(azure, previous=previous, **changes)


def ledger(scope: Scope) -> list[tuple[str, int, str | None]]:
    return [(op.kind, op.attempt, op.target) for op in scope.status.operations]


def stalled_of(status: AttachedComputeStatus | None) -> tuple[str, str] | None:
    assert status is not None
    found = next((c for c in status.conditions if c.type == r.STALLED), None)
    return (found.status, found.reason) if found else None


def test_deletion_detaches_the_compute_and_says_so_in_status():
    azure = with_compute(attached())
    scope = deleting(azure)
    result = cleanup(scope)
    assert not result.finished
    assert result.requeue_after == TIMINGS.lro_poll_delay
    assert azure.writes()[-1] == "begin_detach_compute"
    assert ledger(scope) == [("ComputeDetach", 1, None)]
    assert result.status is not None
    ready = next(c for c in result.status.conditions if c.type == r.READY)
    assert (ready.status, ready.reason) == ("False", r.DELETING)
    assert "compute k8s-gpu is detaching" in ready.message
    assert stalled_of(result.status) == ("False", r.NOT_STALLED)


def test_deletion_follows_a_detach_in_progress_without_starting_another():
    azure = with_compute(attached("Deleting"))
    scope = deleting(azure, operation("ComputeDetach", 1, None, minutes=-2))
    result = cleanup(scope)
    assert "begin_detach_compute" not in azure.writes()
    assert not result.finished
    assert "detaching (since" in result.message
    assert ledger(scope) == [("ComputeDetach", 1, None)]


def test_deletion_finishes_once_the_compute_is_gone_and_forgets_the_detach():
    azure = with_compute(None)
    result = cleanup(deleting(azure, operation("ComputeDetach", 2, None)))
    assert result.finished
    assert result.status is None


def test_a_failed_detach_on_deletion_is_begun_again_counting_the_attempt():
    azure = with_compute(attached("Failed", errors=("InternalError",)))
    scope = deleting(azure, operation("ComputeDetach", 1, None))
    result = cleanup(scope)
    assert azure.writes()[-1] == "begin_detach_compute"
    assert ledger(scope) == [("ComputeDetach", 2, None)]
    assert "failed (the compute is Failed: InternalError); detaching it again (attempt 2 of 3)" in result.message
    assert [e.type for e in scope.events if e.reason == r.COMPUTE_DETACH_FAILED] == ["Warning"]


def test_deletion_gives_up_after_three_failed_detaches_naming_both_ways_out_once():
    azure = with_compute(attached("Failed"))
    scope = deleting(azure, operation("ComputeDetach", 3, None))
    result = cleanup(scope)
    assert "begin_detach_compute" not in azure.writes()
    assert not result.finished
    assert result.requeue_after == TIMINGS.blocked_recheck
    assert stalled_of(result.status) == ("True", r.COMPUTE_DETACH_FAILED)
    assert "failed 3 times" in result.message
    assert DETACH in result.message
    assert "spec.deletionPolicy: Orphan" in result.message
    assert [e.reason for e in scope.events if e.type == "Warning"] == [r.COMPUTE_DETACH_FAILED]
    again = deleting(azure, operation("ComputeDetach", 3, None), stalled=r.COMPUTE_DETACH_FAILED)
    cleanup(again)
    assert [e for e in again.events if e.type == "Warning"] == []  # said once, not on every recheck


def test_a_detach_that_never_finishes_is_given_up_after_the_operation_timeout():
    azure = with_compute(attached("Deleting"))
    hour = TIMINGS.lro_timeout / 60
    result = cleanup(deleting(azure, operation("ComputeDetach", 1, None, minutes=-hour - 1)))
    assert stalled_of(result.status) == ("True", r.COMPUTE_DETACH_FAILED)
    assert "has not finished after" in result.message
    assert DETACH in result.message


def test_a_compute_detached_by_hand_after_giving_up_lets_deletion_finish():
    azure = with_compute(None)
    result = cleanup(deleting(azure, operation("ComputeDetach", 3, None), stalled=r.COMPUTE_DETACH_FAILED))
    assert result.finished


def test_a_former_compute_is_detached_through_the_ledger_under_its_own_name():
    azure = with_compute(attached())
    azure.computes[(WORKSPACE.id.lower(), "k8s-old")] = attached(id=f"{WORKSPACE.id}/computes/k8s-old")
    previous = with_operations()
    previous.former_computes = [f"{WORKSPACE.id}/computes/k8s-old"]
    scope = make(azure, previous=previous)
    result = run(attach_the_compute, scope)
    assert (result.outcome, result.reason) == (Outcome.PROGRESSING, r.FORMER_COMPUTE_DETACHING)
    assert ledger(scope) == [("ComputeDetach", 1, "k8s-old")]
    azure.set_compute("k8s-old", provisioning_state="Failed")
    given_up = with_operations(scope.status.operations[0].model_copy(update={"attempt": 3}))
    given_up.former_computes = previous.former_computes
    result = run(attach_the_compute, make(azure, previous=given_up))
    assert (result.outcome, result.reason) == (Outcome.BLOCKED, r.COMPUTE_DETACH_FAILED)
    assert "az ml compute detach --name k8s-old -g rg-ml -w mlw-robotics" in result.message


def test_the_attempts_survive_the_generation_that_deletion_bumps():
    azure = with_compute(attached("Failed"))
    first = deleting(azure, operation("ComputeDetach", 2, None), generation=2)  # deletionTimestamp bumped it
    cleanup(first)
    assert ledger(first) == [("ComputeDetach", 3, None)]
    azure.set_compute(provisioning_state="Failed")
    result = cleanup(make(azure, previous=first.status, generation=2))
    assert stalled_of(result.status) == ("True", r.COMPUTE_DETACH_FAILED)
    assert azure.writes().count("begin_detach_compute") == 1


def test_the_first_visit_only_introduces_the_compute_and_comes_straight_back():
    azure = healthy_azure()
    scope = make(azure, previous=AttachedComputeStatus(), generation=3)
    first = introduce(scope)
    assert first is not None
    assert azure.calls == []  # before Azure has answered anything
    assert first.requeue_after == 0
    assert first.status.observed_generation == 3
    by_type = {c.type: (c.status, c.reason) for c in first.status.conditions}
    assert by_type[r.RECONCILING] == ("True", r.FIRST_VISIT)
    assert {by_type[t] for t in r.COMPUTE_STEP_TYPES} == {("Unknown", r.NOT_YET_CHECKED)}
    assert introduce(make(azure, previous=first.status)) is None


def test_an_azure_error_during_deletion_is_classified_as_a_steps_would_be():
    azure = with_compute(attached())
    azure.fail("get_compute", throttled(7))
    waits = cleanup(deleting(azure))
    assert (waits.finished, waits.requeue_after) == (False, 7)
    assert stalled_of(waits.status) == ("False", r.NOT_STALLED)
    azure.fail("get_compute", rejected("the caller may not read computes", 403))
    scope = deleting(azure)
    refused = cleanup(scope)
    assert refused.requeue_after == TIMINGS.blocked_recheck
    assert stalled_of(refused.status) == ("True", "AzureBadRequest")
    assert "set spec.deletionPolicy: Orphan" in refused.message
    assert [e.type for e in scope.events] == ["Warning"]


def test_an_extension_read_for_an_operation_without_url_is_not_read_again_in_the_pass():
    azure = healthy_azure()
    azure.extensions.clear()  # gone since the operation Azure answered without a status URL
    scope = make(azure, previous=with_operations(operation("ExtensionUpdate", 1, None)))
    run(configure_the_extension, scope)
    assert azure.writes() == ["begin_create_extension"]  # found missing: installed again
    assert azure.count("get_extension") == 1
