"""The attach paths that fail most in the field (issue 26), against the sandbox answering as Azure does: what the
user sees (condition, the doctor's line, the fix) and that following the fix converges."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from amlwire.domain.compute import UAMI_CLUSTER_ROLES
from amlwire_sandbox import ids
from tests.conftest import wait_for
from tests.e2e import harness as e2e
from tests.e2e.harness import CLUSTER_ID, EXTENSION_ID, FIC_TYPE, IDENTITY_ID, SUB, Harness, condition, harness_over
from tests.e2e.test_admin_actions import SECOND_IDENTITY, create_identity, fics_of
from tests.e2e.test_doctor import result_of, run_doctor

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
WORKSPACE_UAMI_PRINCIPAL = "9a0c7a52-0000-4000-8000-00000000aa01"
ROLES = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions"
CLUSTER_ADMIN = UAMI_CLUSTER_ROLES["Azure Kubernetes Service Cluster Admin Role"]
TWO_ACCOUNTS = [{"namespace": "azureml", "name": "default"}, {"namespace": "azureml", "name": "training"}]


def grant_role(harness: Harness, principal: str, role_guid: str, scope: str, backdated: bool = True) -> None:
    name = ids.stable_uuid(scope.lower(), role_guid, principal)
    harness.ctl.create(
        f"{scope}/providers/{ids.ROLE_ASSIGNMENT}/{name}",
        ids.ROLE_ASSIGNMENT,
        {
            "properties": {
                "roleDefinitionId": f"{ROLES}/{role_guid}",
                "principalId": principal,
                "principalType": "ServicePrincipal",
                "scope": scope,
            }
        },
        {"backdated": backdated},
    )


def attach_puts(harness: Harness, since: int = 0) -> list[dict]:
    return [c for c in harness.ctl.calls(since) if c["route"] == "ml.compute" and c["method"] == "PUT"]


# -- a workspace with a user-assigned identity -------------------------------------------------------------
@pytest.fixture
def uami_workspace(control_plane, cluster, tmp_path) -> Iterator[Harness]:
    """The demo world, its workspace on a user-assigned identity that holds Reader and Kubernetes Extension
    Contributor on the cluster (what a team grants after reading only half of the attach article)."""
    world = e2e.test_world()
    world.workspaces[0].identity.type = "UserAssigned"
    yield from harness_over(world, control_plane, cluster, tmp_path)


def test_a_user_assigned_workspace_identity_without_cluster_admin_is_named_before_the_attach(
    uami_workspace, view_only_user, monkeypatch
):
    harness = uami_workspace
    harness.start()
    name = harness.apply_compute("robotics-gpu")
    obj = harness.wait_condition(name, "ComputeReady", "False", "WorkspaceIdentityLacksClusterRoles")
    message = condition(obj, "ComputeReady")["message"]
    assert "user-assigned identity" in message
    assert "it lacks Azure Kubernetes Service Cluster Admin Role" in message
    assert f'--role "Azure Kubernetes Service Cluster Admin Role" --scope {CLUSTER_ID}' in message
    assert attach_puts(harness) == []  # said before Azure's 400, not after it
    code, report = run_doctor(harness, monkeypatch, name)
    f18 = result_of(report, "F18")
    assert (code, f18["status"]) == (1, "fail")
    assert f18["evidence"]["missing"] == "Azure Kubernetes Service Cluster Admin Role"
    assert "Cluster Admin Role" in f18["fix"]
    assert "--role Reader" not in f18["fix"]
    grant_role(harness, WORKSPACE_UAMI_PRINCIPAL, CLUSTER_ADMIN, CLUSTER_ID)
    harness.wait_ready(name)
    assert len(attach_puts(harness)) == 1
    code, report = run_doctor(harness, monkeypatch, name)
    assert result_of(report, "F18")["status"] == "pass"


@pytest.fixture
def propagating(control_plane, cluster, tmp_path) -> Iterator[Harness]:
    """As above, and a new role assignment takes 3 s to be honoured (ARM lists it at once)."""
    world = e2e.test_world()
    world.workspaces[0].identity.type = "UserAssigned"
    world.timing.role_propagation_seconds = 3
    yield from harness_over(world, control_plane, cluster, tmp_path)


def test_azures_400_for_a_role_still_propagating_is_explained_and_the_attach_retried(propagating):
    harness = propagating
    harness.start()
    grant_role(
        harness, WORKSPACE_UAMI_PRINCIPAL, CLUSTER_ADMIN, CLUSTER_ID, backdated=False
    )  # listed, not yet honoured
    name = harness.apply_compute("robotics-gpu")
    obj = harness.wait_condition(name, "ComputeReady", "False", "WorkspaceIdentityLacksClusterRoles")
    message = condition(obj, "ComputeReady")["message"]
    assert "AKS role check failed for user assigned identity" in message
    assert "a new role may still be propagating" in message
    assert [c["status"] for c in attach_puts(harness)] == [400]
    harness.wait_ready(name, timeout=45)
    assert [c["status"] for c in attach_puts(harness)][-1] in (200, 201)


# -- local accounts disabled -------------------------------------------------------------------------------
def test_local_accounts_disabled_blocks_the_cluster_writes_nothing_and_says_how_to_enable_them(
    harness, view_only_user, monkeypatch
):
    harness.ctl.patch(CLUSTER_ID, {"properties": {"disableLocalAccounts": True}})
    harness.start()
    mark = harness.ctl.mark()
    name = harness.apply_compute("robotics-gpu")
    obj = harness.wait_condition(name, "ClusterReady", "False", "LocalAccountsDisabled")
    message = condition(obj, "ClusterReady")["message"]
    assert "az aks update -g rg-aks -n aks-robotics --enable-local-accounts" in message
    assert condition(obj, "Ready")["status"] == "False"
    time.sleep(1)
    assert "neither federates this cluster's service accounts nor attaches it" in message
    assert [
        c for c in harness.ctl.calls(mark) if c["route"] in ("ml.compute", "msi.fic") and c["method"] != "GET"
    ] == []
    assert harness.fics() == {}
    code, report = run_doctor(harness, monkeypatch, name)
    f19 = result_of(report, "F19")
    assert (code, f19["status"]) == (1, "fail")
    assert "--enable-local-accounts" in f19["fix"]
    harness.ctl.patch(CLUSTER_ID, {"properties": {"disableLocalAccounts": False}})  # the admin's fix
    harness.wait_ready(name)


# -- the namespace after the attach ------------------------------------------------------------------------
def finish_namespace_deletion(core: client.CoreV1Api, namespace: str) -> None:
    """What the namespace controller (kube-controller-manager, absent from this apiserver) does at the end."""
    found = core.read_namespace(namespace)
    assert found.spec is not None
    found.spec.finalizers = []
    core.replace_namespace_finalize(namespace, found)


def test_a_namespace_deleted_after_the_attach_holds_jobs_until_amlwire_creates_it_again(harness):
    name = harness.wired(drift_interval=2.0)
    harness.core.delete_namespace("azureml-jobs")
    try:
        obj = harness.wait_condition(name, "ComputeReady", "False", "ComputeNamespaceDeleting", timeout=15)
        assert "every AML job on compute k8s-gpu fails" in condition(obj, "ComputeReady")["message"]
        job = harness.apply_job("amljob-train.yaml")  # held by amlwire, not sent to fail on AML
        held = harness.wait_job(job, "Submitted", "False", "ComputeNotReady", timeout=15)
        assert "ComputeNamespaceDeleting" in condition(held, "Submitted")["message"]
        assert harness.aml_jobs() == []
    finally:
        finish_namespace_deletion(harness.core, "azureml-jobs")
    harness.wait_ready(name, timeout=20)
    labels = harness.core.read_namespace("azureml-jobs").metadata.labels
    assert labels["app.kubernetes.io/managed-by"] == "amlwire"
    assert any(e.reason == "NamespaceCreated" for e in harness.events(name))
    harness.wait_job(job)


# -- the federated-credential cap ----------------------------------------------------------------------------
def add_foreign_credentials(harness: Harness, count: int) -> None:
    for i in range(count):
        harness.ctl.create(
            f"{IDENTITY_ID}/federatedIdentityCredentials/platform-{i}",
            FIC_TYPE,
            {
                "properties": {
                    "issuer": "https://token.actions.githubusercontent.com",
                    "subject": f"repo:contoso/app-{i}:ref:refs/heads/main",
                    "audiences": ["api://AzureADTokenExchange"],
                }
            },
        )


def test_the_credential_budget_is_shown_and_the_compute_past_the_cap_names_the_way_out(
    harness, view_only_user, monkeypatch
):
    from amlwire_sandbox.ports import free_port
    from tests.e2e.test_metrics import scrape, value

    add_foreign_credentials(harness, 18)  # another team's GitHub deployments on the same identity
    port = free_port()
    harness.start(metrics_port=port)
    first = harness.apply_compute("first-gpu", serviceAccounts=TWO_ACCOUNTS)
    obj = harness.wait_ready(first)
    assert obj["status"]["credentialBudget"] == {"used": 20, "limit": 20, "perCluster": 2, "clustersRemaining": 0}
    samples = scrape(port)
    assert value(samples, "amlwire_identity_federated_credentials", identity="id-ml") == 20
    assert value(samples, "amlwire_identity_clusters_remaining", identity="id-ml") == 0
    cluster = harness.add_cluster("aks-next")
    second = harness.apply_compute(
        "second-gpu",
        serviceAccounts=TWO_ACCOUNTS,
        cluster={"resourceGroup": "rg-aks", "name": cluster},
        compute={"name": "k8s-next", "namespace": "azureml-jobs"},
    )
    refused = harness.wait_condition(second, "FederationReady", "False", "FederatedCredentialLimit")
    message = condition(refused, "FederationReady")["message"]
    assert "Azure allows 20 per identity" in message
    assert "one identity serves at most 10 clusters" in message
    assert "never deletes a credential it did not create" in message
    assert "Use another identity for this and the next clusters (spec.identity.resourceId)" in message
    time.sleep(1)
    names = set(fics_of(harness, IDENTITY_ID))
    assert len(names) == 20
    assert {f"platform-{i}" for i in range(18)} <= names
    code, report = run_doctor(harness, monkeypatch, second)
    f07 = result_of(report, "F07")
    assert (code, f07["status"]) == (1, "fail")
    # the way out, as the message says: another identity. (The harness's clusters share one apiserver, so the
    # second cluster's service accounts are the first's, which federate id-ml: the budget is what is checked.)
    create_identity(harness)
    harness.patch_compute(second, {"identity": {"resourceId": SECOND_IDENTITY}})
    wait_for(
        lambda: (harness.compute(second)["status"].get("credentialBudget") or {}).get("clustersRemaining") == 10,
        timeout=15,
        what="the new identity's budget",
    )
    assert condition(harness.compute(second), "FederationReady")["reason"] != "FederatedCredentialLimit"
    assert len(fics_of(harness, IDENTITY_ID)) == 20


# -- the extension as az k8s-extension create installs it --------------------------------------------------------
@pytest.fixture(params=["works", "jobsStayQueued"])
def bare_extension(request, control_plane, cluster, tmp_path) -> Iterator[tuple[Harness, str]]:
    """The demo world, whose extension was installed by a bare ARM PUT (no clusterId, jobSchedulerLocation, ...),
    under each answer to whether AML schedules jobs on it (rule ext.cli-settings)."""
    world = e2e.test_world()
    world.rules.bare_extension = request.param
    for h in harness_over(world, control_plane, cluster, tmp_path):
        yield h, request.param


def test_a_bare_extension_in_verify_mode_is_named_and_its_jobs_explained(bare_extension, view_only_user, monkeypatch):
    harness, answer = bare_extension
    settings = harness.extension_settings()
    harness.ctl.patch(  # wired by hand for the identity, as a team using Verify mode does; still a bare PUT's
        EXTENSION_ID,
        {
            "properties": {
                "configurationSettings": {
                    **settings,
                    "identityType": "UserAssigned",
                    "userAssignedIdentityResourceId": IDENTITY_ID,
                }
            }
        },
    )
    harness.start()
    name = harness.apply_compute("robotics-gpu", extension={"name": "azureml", "mode": "Verify"})
    obj = harness.wait_ready(name)
    extension = condition(obj, "ExtensionReady")
    assert extension["reason"] == "ExtensionLacksClusterSettings"
    assert "clusterId" in extension["message"]
    assert "az k8s-extension update" in extension["message"]
    assert "clusterId" not in harness.extension_settings()  # Verify: said, never written
    _, report = run_doctor(harness, monkeypatch, name)
    f12 = result_of(report, "F12")
    assert f12["status"] == "warn"
    assert "jobSchedulerLocation" in f12["evidence"]["lacks (set by az k8s-extension create)"]
    job = harness.apply_job("amljob-train.yaml")
    if answer == "works":
        harness.wait_job(job)
        return
    queued = harness.wait_job(job, "Finished", "False", "Queued", timeout=30)
    assert "lacks settings az k8s-extension create adds" in condition(queued, "Finished")["message"]
    time.sleep(2)
    assert harness.job(job)["status"]["amlStatus"] == "Queued"
    cli = dict(harness.extension_settings())
    cli.update(
        clusterId=CLUSTER_ID,
        cluster_name=CLUSTER_ID,
        location="eastus",
        jobSchedulerLocation="eastus",
        domain="eastus.cloudapp.azure.com",
    )
    harness.ctl.patch(EXTENSION_ID, {"properties": {"configurationSettings": cli}})  # the fix the message names
    harness.wait_job(job, timeout=60)


def test_amlwire_installs_and_completes_what_the_cli_installs(bare_extension):
    harness, _ = bare_extension
    harness.ctl.delete(EXTENSION_ID)
    harness.start()
    name = harness.apply_compute("robotics-gpu", extension={"name": "azureml", "mode": "Configure"})
    obj = harness.wait_ready(name)
    assert condition(obj, "ExtensionReady")["reason"] == "ExtensionConfigured"
    settings = harness.extension_settings()
    assert settings["clusterId"] == settings["cluster_name"] == CLUSTER_ID
    assert settings["prometheus.prometheusSpec.externalLabels.cluster_name"] == CLUSTER_ID
    assert (settings["location"], settings["jobSchedulerLocation"]) == ("eastus", "eastus")
    assert settings["domain"] == "eastus.cloudapp.azure.com"
    assert settings["cluster_name_friendly"] == "aks-robotics"
    assert (settings["servicebus.enabled"], settings["relayserver.enabled"]) == ("false", "false")
    assert "clusterPurpose" not in settings  # three nodes: not a small cluster
    harness.wait_job(harness.apply_job("amljob-train.yaml"))


# -- a Failed or Canceled extension ---------------------------------------------------------------------------------
def test_a_failed_extension_shows_azures_error_and_a_canceled_one_is_installed_again(harness):
    error = "Helm installation failed: admission webhook denied the request"
    harness.ctl.patch(
        EXTENSION_ID,
        {
            "properties": {
                "provisioningState": "Failed",
                "errorInfo": {"code": "ExtensionOperationFailed", "message": error},
            }
        },
    )
    harness.start()
    name = harness.apply_compute("robotics-gpu", extension={"name": "azureml", "mode": "Verify"})
    obj = harness.wait_condition(name, "ExtensionReady", "False", "ExtensionFailed")
    assert error in condition(obj, "ExtensionReady")["message"]
    harness.ctl.patch(EXTENSION_ID, {"properties": {"provisioningState": "Canceled"}})
    obj = harness.wait_condition(name, "ExtensionReady", "False", "ExtensionMissing")
    assert "was Canceled" in condition(obj, "ExtensionReady")["message"]
    harness.patch_compute(name, {"extension": {"name": "azureml", "mode": "Configure"}})
    harness.wait_ready(name)
    assert harness.ctl.resource(EXTENSION_ID)["properties"]["provisioningState"] == "Succeeded"


# -- the managed-identity provider's own limits --------------------------------------------------------------------
@pytest.fixture
def identity_limited(control_plane, cluster, tmp_path) -> Iterator[Harness]:
    """Per identity, two writes and then one every 4 s (rule msi.identity-throttling)."""
    world = e2e.test_world()
    world.arm_limits.identity.enabled = True
    world.arm_limits.identity.writes.size = 2
    yield from harness_over(world, control_plane, cluster, tmp_path)


def test_an_identitys_429_holds_that_identity_only_and_the_rest_of_the_wiring_goes_on(identity_limited):
    harness = identity_limited
    harness.start(max_retry_delay=10)  # Retry-After is honoured up to the operator's longest backoff
    name = harness.apply_compute("robotics-gpu")
    harness.wait_ready(name, timeout=60)
    calls = harness.ctl.calls()
    throttled = [c for c in calls if c["route"] == "msi.fic" and c["status"] == 429]
    assert throttled, "the third credential write met the identity's limit"
    first = throttled[0]
    after = [c for c in calls if c["seq"] > first["seq"]]
    others = [c for c in after if c["method"] in ("PUT", "PATCH") and c["route"] != "msi.fic"]
    next_fic = next(c for c in after if c["route"] == "msi.fic" and c["method"] == "PUT")
    assert any(c["seq"] < next_fic["seq"] for c in others), "other writes of the subscription went on meanwhile"
    assert len(throttled) == 1  # the identity's Retry-After was honoured: no write into its empty bucket again


# -- roles inherited from a management group, through an Entra group -----------------------------------------------
@pytest.fixture
def inherited_storage_role(control_plane, cluster, tmp_path) -> Iterator[Harness]:
    """The platform team grants Storage Blob Data Contributor to a group holding id-ml, at a management group
    above the subscription (as landing zones do)."""
    from amlwire.domain.access import ROLE_GUIDS
    from amlwire_sandbox.world import GroupWorld, ManagementGroupWorld, RoleAssignmentWorld
    from tests.e2e.harness import IDENTITY_PRINCIPAL

    world = e2e.test_world()
    world.management_groups = [ManagementGroupWorld(name="mg-ml", subscriptions=[SUB])]
    world.groups = [GroupWorld(id=PLATFORM_GROUP, members=[IDENTITY_PRINCIPAL])]
    world.role_assignments.append(
        RoleAssignmentWorld(
            scope="/providers/Microsoft.Management/managementGroups/mg-ml",
            role_definition_id=f"{ROLES}/{ROLE_GUIDS['Storage Blob Data Contributor']}",
            principal_id=PLATFORM_GROUP,
        )
    )
    yield from harness_over(world, control_plane, cluster, tmp_path)


PLATFORM_GROUP = "0c3b2a19-0000-4000-8000-00000000ab01"


def test_a_role_inherited_through_a_group_at_a_management_group_is_held_and_never_duplicated(
    inherited_storage_role, view_only_user, monkeypatch
):
    harness = inherited_storage_role
    harness.start()
    name = harness.apply_compute("robotics-gpu")
    obj = harness.wait_ready(name)
    (storage,) = [a for a in obj["status"]["roleAssignments"] if a["role"] == "Storage Blob Data Contributor"]
    assert storage["createdByAmlwire"] is False
    created = [
        c
        for c in harness.ctl.calls()
        if c["route"] == "authz.roleAssignment" and c["method"] == "PUT" and "storageAccounts" in c["path"]
    ]
    assert created == []  # no duplicate of what the group already holds
    _, report = run_doctor(harness, monkeypatch, name)
    assert result_of(report, "F15")["status"] == "pass"
    harness.wait_job(harness.apply_job("amljob-train.yaml"))  # the sidecar writes outputs with the inherited role


# -- issuer exactness ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("drift", ["slash", "case"])
def test_a_credential_whose_issuer_lost_its_slash_or_case_is_replaced_and_said(harness, drift):
    name = harness.wired(drift_interval=2.0)
    fic, body = next((n, f) for n, f in harness.fics().items() if f["subject"].endswith(":training"))
    exact = body["issuer"]
    broken = exact.rstrip("/") if drift == "slash" else exact.upper()
    harness.ctl.patch(f"{IDENTITY_ID}/federatedIdentityCredentials/{fic}", {"properties": {"issuer": broken}})
    wait_for(lambda: harness.fics()[fic]["issuer"] == exact, timeout=20, what="the exact issuer back")
    said = "only the trailing '/' differs" if drift == "slash" else "only the letter case differs"
    uid = harness.compute(name)["metadata"]["uid"]

    def told() -> list[str]:
        return [e.message for e in harness.events(name, uid) if e.reason == "FederatedCredentialIssuerMismatch"]

    wait_for(lambda: any(said in m for m in told()), timeout=10, what=f"an event saying {said}")


# -- images from the private registry ---------------------------------------------------------------------------------
def test_a_private_registry_image_needs_acrpull_on_the_compute_identity(harness):
    name = harness.wired()
    image = "crrobotics.azurecr.io/robotics/pytorch:24.10"
    harness.wait_job(harness.apply_job("amljob-command.yaml", image=image))  # the example grants AcrPull
    grants = [g for g in harness.compute(name)["spec"]["access"]["grants"] if g["role"] != "AcrPull"]
    harness.patch_compute(name, {"access": {"mode": "Ensure", "grants": grants}})
    wait_for(
        lambda: not any(a["role"] == "AcrPull" for a in harness.compute(name)["status"].get("roleAssignments", [])),
        timeout=20,
        what="AcrPull removed",
    )
    job = harness.apply_job("amljob-command.yaml", image=image)
    obj = harness.wait_job(job, "Stalled", "True", "ImagePullFailed", timeout=30)
    assert f'Failed to pull image "{image}"' in obj["status"]["failure"]["message"]
    assert "401 Unauthorized" in obj["status"]["failure"]["message"]
    assert "needs AcrPull there" in obj["status"]["failure"]["hint"]


# -- the words an operation status uses while it runs ----------------------------------------------------------------
@pytest.fixture(params=["specExamples", "inProgress", "other"])
def status_words(request, control_plane, cluster, tmp_path) -> Iterator[Harness]:
    world = e2e.test_world()
    world.rules.operation_status_words = request.param
    world.timing.lro_seconds = 1.0
    yield from harness_over(world, control_plane, cluster, tmp_path)


def test_long_operations_are_followed_whatever_word_azure_uses_while_they_run(status_words):
    harness = status_words
    harness.ctl.delete(EXTENSION_ID)
    harness.start()
    name = harness.apply_compute("robotics-gpu", extension={"name": "azureml", "mode": "Configure"})
    harness.wait_condition(name, "ExtensionReady", "False", "ExtensionInstalling", timeout=10)
    harness.wait_ready(name, timeout=30)
    polls = [c for c in harness.ctl.calls() if c["route"] == "arm.operation"]
    assert polls, "the install was followed through its operation-status URL"
    assert all(c["path"].startswith("/subscriptions/") for c in polls)  # an ARM path: metered and authorised
