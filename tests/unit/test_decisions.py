"""Table tests of access planning, the extension and compute decisions, and retry bookkeeping (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from amlwire.api import reasons as r
from amlwire.api.attachedcompute import AccessGrant, AttachedComputeStatus, OperationStatus, RoleAssignmentStatus
from amlwire.domain.access import ROLE_GUIDS, assignment_name, plan_access, role_definition_id, role_guid
from amlwire.domain.azure import ComputeInfo, ExtensionInfo, RoleAssignment
from amlwire.domain.compute import OWNER_TAG, ComputeAction, decide_compute
from amlwire.domain.extension import Action, cli_settings, decide_extension, desired_settings
from amlwire.domain.operations import RUNNING as IN_PROGRESS
from amlwire.domain.operations import SUCCEEDED as WORKED
from amlwire.domain.operations import (
    Begin,
    GiveUp,
    Handling,
    Monitor,
    Retry,
    drive,
    failed,
    follow,
    resume,
)
from tests.conftest import table

SUB = "6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60"
CLUSTER_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks-robotics"
)
IDENTITY_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-ml"
)
PRINCIPAL = "8e2d4c6a-0b1f-4e3d-a5c7-9b8a7f6e5d02"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"
IDENTITY = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"
CLUSTER = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks"
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=10)
GRANT = AccessGrant(scope=ACCOUNT, role="Storage Blob Data Contributor")


def assignment(scope: str = ACCOUNT, role: str = "Storage Blob Data Contributor", created=None, name="n"):
    return RoleAssignment(name, scope, role_definition_id(SUB, role), PRINCIPAL, created)


@pytest.mark.parametrize(
    ("role", "guid"),
    [
        ("Storage Blob Data Reader", ROLE_GUIDS["Storage Blob Data Reader"]),
        ("BA92F5B4-2D11-453D-A403-E96B0029C9FE", "ba92f5b4-2d11-453d-a403-e96b0029c9fe"),
        (
            f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/7f951dda-4ed3-4680-a7ca-43fe172d538d",
            ROLE_GUIDS["AcrPull"],
        ),
    ],
)
def test_role_guid(role, guid):
    assert role_guid(role) == guid


def test_assignment_names_are_deterministic_guids():
    first = assignment_name(ACCOUNT, "AcrPull", PRINCIPAL)
    assert first == assignment_name(ACCOUNT.upper(), "AcrPull", PRINCIPAL)
    assert first != assignment_name(ACCOUNT, "Reader", PRINCIPAL)


def test_missing_grant_is_planned():
    plan = plan_access([GRANT], PRINCIPAL, SUB, {ACCOUNT: []}, [], WINDOW)
    ((_grant, name, definition),) = plan.to_create
    assert name == assignment_name(ACCOUNT, GRANT.role, PRINCIPAL)
    assert definition.endswith(ROLE_GUIDS["Storage Blob Data Contributor"])


GROUP = "0c3b2a19-0000-4000-8000-00000000ab01"  # an Entra group the identity is in
INHERITED = [
    # (case, assignment scope, assignee, listed for the identity with assignedTo, satisfies the grant)
    ("at the account", ACCOUNT, PRINCIPAL, True, True),
    ("at its resource group", ACCOUNT.split("/providers/")[0], PRINCIPAL, True, True),
    (
        "at a management group above the subscription",
        "/providers/Microsoft.Management/managementGroups/mg-ml",
        PRINCIPAL,
        True,
        True,
    ),
    ("at the tenant root", "/", PRINCIPAL, True, True),
    ("to a group the identity is in", ACCOUNT, GROUP, True, True),
    ("to a group, listed for someone else", ACCOUNT, GROUP, False, False),
    ("below the account (a container)", f"{ACCOUNT}/blobServices/default/containers/c", PRINCIPAL, True, False),
]


@table(("case", "scope", "assignee", "listed", "satisfies"), INHERITED)
def test_assignments_inherited_from_above_or_through_a_group_satisfy_the_grant(
    case, scope, assignee, listed, satisfies
):
    found = RoleAssignment(
        "n", scope, role_definition_id(SUB, GRANT.role), assignee, NOW - WINDOW * 2, PRINCIPAL if listed else None
    )
    plan = plan_access([GRANT], PRINCIPAL, SUB, {ACCOUNT: [found]}, [], WINDOW)
    assert (plan.to_create == ()) is satisfies, case  # never a duplicate of what already applies


def test_inherited_assignment_satisfies_the_grant():
    group_scope = ACCOUNT.split("/providers/")[0]
    plan = plan_access(
        [GRANT], PRINCIPAL, SUB, {ACCOUNT: [assignment(scope=group_scope, created=NOW - WINDOW * 2)]}, [], WINDOW
    )
    assert plan.to_create == ()
    (status,) = plan.statuses()
    assert status.created_by_amlwire is False


def test_other_roles_do_not_satisfy_the_grant():
    plan = plan_access([GRANT], PRINCIPAL, SUB, {ACCOUNT: [assignment(role="Reader")]}, [], WINDOW)
    assert len(plan.to_create) == 1


def test_effective_time_comes_from_the_record_or_azures_created_on():
    recorded = RoleAssignmentStatus(scope=ACCOUNT, role=GRANT.role, name="n", effective_at="2026-11-22T09:05:00Z")
    plan = plan_access([GRANT], PRINCIPAL, SUB, {ACCOUNT: [assignment(created=NOW)]}, [recorded], WINDOW)
    assert plan.statuses()[0].effective_at == "2026-11-22T09:05:00Z"
    plan = plan_access([GRANT], PRINCIPAL, SUB, {ACCOUNT: [assignment(created=NOW)]}, [], WINDOW)
    assert plan.statuses()[0].effective_at == "2026-11-22T09:10:00Z"


DESIRED = desired_settings({"enableTraining": "True"}, IDENTITY)


def extension(state="Succeeded", settings=None, type_="Microsoft.AzureML.Kubernetes"):
    return ExtensionInfo("id", type_, state, settings if settings is not None else dict(DESIRED))


EXTENSION_CASES = [
    ("missing, configure", None, True, Action.CREATE, "ExtensionInstalling"),
    ("missing, verify", None, False, Action.REPORT, "ExtensionMissing"),
    ("other type", extension(type_="Microsoft.Flux"), True, Action.REPORT, "ExtensionTypeMismatch"),
    ("updating", extension("Updating"), True, Action.WAIT, "ExtensionProvisioning"),
    ("failed, configure", extension("Failed"), True, Action.UPDATE, "ExtensionRepairing"),
    ("failed, verify", extension("Failed"), False, Action.REPORT, "ExtensionFailed"),
    (
        "no identity, configure",
        extension(settings={"enableTraining": "True"}),
        True,
        Action.UPDATE,
        "ExtensionIdentityMismatch",
    ),
    ("no identity, verify", extension(settings={}), False, Action.REPORT, "ExtensionIdentityMismatch"),
    (
        "id differs only in case",
        extension(settings={**DESIRED, "userAssignedIdentityResourceId": IDENTITY.upper()}),
        False,
        Action.NONE,
        "ExtensionConfigured",
    ),
    ("all set", extension(), False, Action.NONE, "ExtensionConfigured"),
]


@table(("case", "found", "configure", "action", "reason"), EXTENSION_CASES)
def test_extension_decision(case, found, configure, action, reason):
    decision = decide_extension(found, DESIRED, configure, "rg", "aks", "azureml")
    assert (decision.action, decision.reason) == (action, reason)


def test_extension_update_only_sends_what_differs():
    decision = decide_extension(
        extension(settings={"enableTraining": "True", "identityType": "UserAssigned"}),
        DESIRED,
        True,
        "rg",
        "aks",
        "azureml",
    )
    assert decision.settings == {"userAssignedIdentityResourceId": IDENTITY}


def compute(
    state="Succeeded",
    cluster=CLUSTER,
    identity_type="UserAssigned",
    identities=(IDENTITY,),
    namespace="jobs",
    owner="mine",
):
    return ComputeInfo("id", state, cluster, namespace, identity_type, identities, {OWNER_TAG: owner} if owner else {})


COMPUTE_CASES = [
    ("missing", None, 0, ComputeAction.ATTACH, "ComputeAttaching"),
    ("another cluster", compute(cluster=CLUSTER + "2"), 0, ComputeAction.REPORT, "ComputeNameConflict"),
    ("creating", compute("Creating"), 1, ComputeAction.WAIT, "ComputeProvisioning"),
    ("failed, ours", compute("Failed"), 1, ComputeAction.DETACH, "ComputeAttachFailed"),
    ("failed, not ours", compute("Failed", owner=None), 0, ComputeAction.REPORT, "ComputeAttachFailed"),
    (
        "system assigned, ours",
        compute(identity_type="SystemAssigned", identities=()),
        0,
        ComputeAction.DETACH,
        "ComputeIdentityMismatch",
    ),
    (
        "other identity, not ours",
        compute(identities=(IDENTITY + "2",), owner=None),
        0,
        ComputeAction.REPORT,
        "ComputeIdentityMismatch",
    ),
    ("right, not ours: adopted", compute(owner=None), 0, ComputeAction.NONE, "ComputeAttached"),
    ("right, ours", compute(), 0, ComputeAction.NONE, "ComputeAttached"),
    ("sdk spelling user_assigned", compute(identity_type="user_assigned"), 0, ComputeAction.NONE, "ComputeAttached"),
]


@table(("case", "found", "attempts", "action", "reason"), COMPUTE_CASES)
def test_compute_decision(case, found, attempts, action, reason):
    decision = decide_compute(found, "k8s-gpu", CLUSTER, IDENTITY, "jobs", "mine", "az ml compute detach")
    assert (decision.action, decision.reason) == (action, reason)


def operation(kind: str, attempt: int) -> OperationStatus:
    return OperationStatus(kind=kind, started_at="2026-11-22T09:00:00Z", attempt=attempt)


RESUME_CASES = [
    # (case, observed generation, generation, operations before, kinds kept)
    ("same generation keeps a spent attach", 2, 2, [operation("ComputeAttach", 3)], ["ComputeAttach"]),
    ("new generation drops a spent attach", 1, 2, [operation("ComputeAttach", 3)], []),
    ("new generation drops a spent detach", 1, 2, [operation("ComputeDetach", 3)], []),
    ("new generation drops a spent extension update", 1, 2, [operation("ExtensionUpdate", 3)], []),
    ("new generation keeps one with tries left", 1, 2, [operation("ComputeAttach", 2)], ["ComputeAttach"]),
    (
        "only the spent one goes",
        1,
        2,
        [operation("ExtensionCreate", 1), operation("ComputeAttach", 3)],
        ["ExtensionCreate"],
    ),
    ("no generation (never seen) keeps all", None, None, [operation("ComputeAttach", 3)], ["ComputeAttach"]),
]


@table(("case", "observed", "generation", "before", "kept"), RESUME_CASES)
def test_a_changed_spec_gives_spent_operations_a_fresh_start(case, observed, generation, before, kept):
    previous = AttachedComputeStatus(observed_generation=observed, operations=before)
    assert [op.kind for op in resume(previous.operations, generation, previous.observed_generation)] == kept


FOLLOW_CASES = [
    # (case, operation, observed, decision)
    ("nothing recorded: begin", None, None, Begin()),
    ("in progress: monitor", operation("ExtensionUpdate", 1), IN_PROGRESS, Monitor(operation("ExtensionUpdate", 1))),
    ("succeeded: begin afresh if needed", operation("ComputeAttach", 2), WORKED, Begin()),
    ("failed with tries left: retry", operation("ComputeAttach", 1), failed("boom"), Retry(2, "boom")),
    ("failed a second time", operation("ComputeDetach", 2), failed(None), Retry(3, "no error details")),
    (
        "failed as often as allowed: give up",
        operation("ExtensionCreate", 3),
        failed("quota"),
        GiveUp(operation("ExtensionCreate", 3), "quota"),
    ),
]


@table(("case", "op", "seen", "decision"), FOLLOW_CASES)
def test_the_ledger_follows_an_operation(case, op, seen, decision):
    assert follow(op, seen, NOW) == decision


@table(("case", "op", "seen", "decision"), FOLLOW_CASES)
def test_drive_hands_each_decision_to_the_steps_handling_of_it(case, op, seen, decision):
    handling = Handling(
        begin=lambda d: ("begin", d),
        monitor=lambda d: ("monitor", d),
        retry=lambda d: ("retry", d),
        give_up=lambda d: ("give up", d),
    )
    kind = {Begin: "begin", Monitor: "monitor", Retry: "retry", GiveUp: "give up"}[type(decision)]
    assert drive(op, seen, NOW, 3600, handling) == (kind, decision)


def test_an_operation_that_never_finishes_is_given_up():
    started = operation("ExtensionUpdate", 1)
    assert follow(started, IN_PROGRESS, NOW + timedelta(hours=2), timeout=3600) == GiveUp(
        started, "it has not finished after 7200s", timed_out=True
    )


@pytest.mark.parametrize(
    ("body", "done", "succeeded"),
    [
        ({"status": "Succeeded"}, True, True),
        ({"status": "Failed", "error": {"code": "X", "message": "y"}}, True, False),
        ({"status": "Canceled"}, True, False),
        ({"status": "InProgress"}, False, False),
        ({"status": "Creating"}, False, False),  # the specs' examples use these words
        ({"status": "Deleting"}, False, False),
        ({"status": "Updating"}, False, False),
        ({"status": "Provisioning"}, False, False),  # any other word: still running, as azure-core reads it
        ({}, False, False),  # no status yet: not a success
    ],
)
def test_operation_status_words_are_read_as_azure_core_reads_them(body, done, succeeded):
    from amlwire.domain.azure import OperationState

    state = OperationState.of(body)
    assert (state.done, state.succeeded) == (done, succeeded)
    assert (state.error is not None) == (done and not succeeded)


CLI_CASES = [
    # (case, settings the extension has, mode, action, reason, keys written or said)
    ("a bare PUT's extension, Configure: the CLI's settings added", {}, True, "update", "lacks", "all"),
    ("a bare PUT's extension, Verify: said, not written", {}, False, "none", "lacks", "all"),
    ("installed by the CLI: nothing to do", "cli", True, "none", "configured", ""),
    ("a value someone set is theirs", "cli+location=westus", True, "none", "configured", ""),
    ("one missing key is added alone", "cli-jobSchedulerLocation", True, "update", "lacks", "jobSchedulerLocation"),
]


@pytest.mark.parametrize(("case", "have", "configure", "action", "reason", "keys"), CLI_CASES)
def test_the_settings_the_cli_adds_are_added_when_absent_and_never_overwritten(
    case, have, configure, action, reason, keys
):
    cli = cli_settings(CLUSTER_ID, "aks", "eastus", 2)
    settings = {"enableTraining": "True", "identityType": "UserAssigned", "userAssignedIdentityResourceId": IDENTITY_ID}
    if have == "cli":
        settings |= cli
    elif have == "cli+location=westus":
        settings |= {**cli, "location": "westus"}
    elif have == "cli-jobSchedulerLocation":
        settings |= {k: v for k, v in cli.items() if k != "jobSchedulerLocation"}
    found = ExtensionInfo("id", "Microsoft.AzureML.Kubernetes", "Succeeded", settings)
    decision = decide_extension(found, settings, configure, "rg-aks", "aks-robotics", "azureml", cli)
    expected_reason = r.EXTENSION_LACKS_CLI_SETTINGS if reason == "lacks" else r.EXTENSION_CONFIGURED
    assert (decision.action.value, decision.reason) == (action, expected_reason), case
    wanted = sorted(cli) if keys == "all" else [k for k in keys.split(",") if k]
    if action == "update":
        assert sorted(decision.settings) == wanted
    elif reason == "lacks":
        assert list(decision.lacks) == wanted
        assert "az k8s-extension update" in decision.message
    assert {"clusterPurpose", "inferenceRouterHA"} <= set(cli)  # two nodes: a small cluster, as the CLI decides


def test_a_canceled_install_is_not_installed_and_says_what_azure_said():
    found = ExtensionInfo("id", "Microsoft.AzureML.Kubernetes", "Canceled", {}, error="InstallTimedOut: helm timed out")
    configure = decide_extension(found, {"enableTraining": "True"}, True, "rg-aks", "aks-robotics", "azureml", {})
    assert (configure.action, configure.reason) == (Action.CREATE, r.EXTENSION_INSTALLING)
    assert "InstallTimedOut: helm timed out" in configure.message
    verify = decide_extension(found, {"enableTraining": "True"}, False, "rg-aks", "aks-robotics", "azureml", {})
    assert (verify.action, verify.reason) == (Action.REPORT, r.EXTENSION_MISSING)
    assert "was Canceled (Azure said: InstallTimedOut: helm timed out)" in verify.message
