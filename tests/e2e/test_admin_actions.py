"""What a real cluster admin does to amlwire, done as they do it, with Azure's state checked afterwards:
a second compute on a cluster, an identity change, computes deleted under running jobs, the extension's own
service accounts, failures that must point at the right link, and GitOps taking back what it granted."""

from __future__ import annotations

import time

import pytest

from amlwire.domain.permissions import PERMISSIONS
from amlwire_devenv.chaos import condition
from tests.conftest import GROUP, VERSION, wait_for
from tests.e2e.harness import (
    EXAMPLE_GRANTS,
    EXAMPLE_SUBJECTS,
    IDENTITY_ID,
    IDENTITY_PRINCIPAL,
    WORKSPACE_ID,
    compute_manifest,
)
from tests.e2e.test_doctor import failing, run_doctor

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
MODEL = {"name": "isaaclab-anymal-latest", "version": "2", "type": "custom_model"}
SECOND_IDENTITY = IDENTITY_ID.replace("id-ml", "id-second")
SECOND_PRINCIPAL = "4b1e2c3d-0000-4000-8000-0000000000bb"
IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"


def grant_identity_roles(harness, scope: str) -> None:
    """What the platform team does for an identity amlwire is to use: the table's identity rows on it."""
    for permission in PERMISSIONS:
        if permission.scope == "identity":
            harness.grant(scope, permission)


def create_identity(harness, resource_id: str = SECOND_IDENTITY, principal: str = SECOND_PRINCIPAL) -> None:
    grant_identity_roles(harness, resource_id)
    harness.ctl.create(
        resource_id,
        IDENTITY_TYPE,
        {
            "location": "eastus",
            "properties": {
                "clientId": "7d2e0c1b-0000-4000-8000-0000000000cc",
                "principalId": principal,
                "tenantId": harness.tenant,
            },
        },
    )


def extension_patches(harness, since: int) -> int:
    return sum(1 for c in harness.ctl.calls(since) if (c["method"], c["route"]) == ("PATCH", "ext.extension"))


def fics_of(harness, identity: str) -> dict[str, dict]:
    prefix = identity + "/federatedIdentityCredentials/"
    return {k.rsplit("/", 1)[-1]: v for k, v in harness.ctl.resources_under(prefix).items()}


def hold_jobs(harness) -> None:
    """AML keeps new jobs queued until `release` (the sandbox judges the wiring when a job starts)."""
    harness.ctl.timing(job={"queuedSeconds": 3600, "runningSeconds": 0.5})


def release(harness, job: str) -> None:
    aml_name = wait_for(lambda: (harness.job(job).get("status") or {}).get("amlJobName"), timeout=15)
    harness.ctl.patch(f"{WORKSPACE_ID}/jobs/{aml_name}", extra={"queued": 0.1})


# -- one cluster, one extension, several AttachedComputes ------------------------------------------------
def test_a_second_compute_on_the_cluster_never_takes_the_extension_over(harness):
    harness.start(drift_interval=1.0)
    first = harness.apply_compute("first-gpu")
    harness.wait_ready(first)
    mark = harness.ctl.mark()
    grant_identity_roles(harness, SECOND_IDENTITY.rsplit("/providers/", 1)[0])  # on the group: a 404, not a 403
    second = harness.apply_compute("second-gpu", identity={"resourceId": SECOND_IDENTITY}, compute__name="k8s-second")
    harness.wait_condition(second, "IdentityReady", "False", "IdentityNotFound")
    time.sleep(2)
    assert extension_patches(harness, mark) == 0  # never written while its identity is unresolved
    create_identity(harness)
    refused = harness.wait_condition(second, "ExtensionReady", "False", "ExtensionOwnedByAnotherCompute")
    assert "AttachedCompute first-gpu" in condition(refused, "ExtensionReady")["message"]
    assert condition(refused, "Stalled")["reason"] in (
        "ExtensionOwnedByAnotherCompute",
        "ServiceAccountOwnedByAnotherCompute",
    )
    time.sleep(3)  # several drift checks of both: no tug of war
    assert extension_patches(harness, mark) == 0
    assert harness.extension_settings()["userAssignedIdentityResourceId"].lower() == IDENTITY_ID.lower()
    assert harness.sandbox_compute("k8s-second") is None  # not attached under a foreign extension identity
    assert harness.compute(first)["status"]["ownsExtension"] is True
    assert condition(harness.compute(first), "Ready")["status"] == "True"
    annotation = harness.service_account("default").metadata.annotations["azure.workload.identity/client-id"]
    assert annotation == "3c5b0f0e-1d6e-4a7b-9c2d-5e6f7a8b9c01"  # still the first compute's identity


def test_computes_sharing_one_identity_share_the_cluster(harness):
    harness.start()
    first = harness.apply_compute("first-gpu")
    second = harness.apply_compute("second-gpu", compute__name="k8s-second")
    harness.wait_ready(first)
    harness.wait_ready(second)
    assert harness.sandbox_compute("k8s-second") is not None


# -- changing spec.identity ---------------------------------------------------------------------------------
def test_changing_the_identity_moves_the_trust_and_leaves_none_on_the_former_one(harness):
    harness.start()
    name = harness.apply_compute()
    harness.wait_ready(name)
    assert len(fics_of(harness, IDENTITY_ID)) == len(EXAMPLE_SUBJECTS)
    assert len(harness.role_assignments(IDENTITY_PRINCIPAL)) == EXAMPLE_GRANTS
    create_identity(harness)
    harness.patch_compute(name, {"identity": {"resourceId": SECOND_IDENTITY}})
    harness.wait_reconciled(name)
    assert fics_of(harness, IDENTITY_ID) == {}
    assert harness.role_assignments(IDENTITY_PRINCIPAL) == []
    assert len(fics_of(harness, SECOND_IDENTITY)) == len(EXAMPLE_SUBJECTS)
    assert len(harness.role_assignments(SECOND_PRINCIPAL)) == EXAMPLE_GRANTS
    assert harness.extension_settings()["userAssignedIdentityResourceId"].lower() == SECOND_IDENTITY.lower()
    assert list(harness.sandbox_compute()["identity"]["userAssignedIdentities"]) == [SECOND_IDENTITY]
    reasons = [e.reason for e in harness.events(name)]
    assert "FederatedCredentialDeleted" in reasons
    assert "RoleAssignmentDeleted" in reasons


def identity_changed_under_a_running_job(harness, running_seconds: float) -> tuple[str, str]:
    """A compute with a job running on it for `running_seconds`, then spec.identity changed: (compute, job)."""
    compute = harness.wired()
    harness.ctl.timing(job={"queuedSeconds": 0.1, "runningSeconds": running_seconds})
    job = harness.apply_job("amljob-train.yaml")
    harness.wait_job(job, "Reconciling", "True", "Running")
    create_identity(harness)
    harness.patch_compute(compute, {"identity": {"resourceId": SECOND_IDENTITY}})
    return compute, job


def test_an_identity_change_waits_for_running_jobs_before_reattaching(harness):
    compute, job = identity_changed_under_a_running_job(harness, 6)
    waiting = harness.wait_condition(compute, "ComputeReady", "False", "ComputeDetachWaitsForJobs")
    assert f"robotics/{job}" in condition(waiting, "ComputeReady")["message"]
    assert list(harness.sandbox_compute()["identity"]["userAssignedIdentities"]) == [IDENTITY_ID]
    assert not any(c["route"] == "ml.compute" and c["method"] == "DELETE" for c in harness.ctl.calls())
    # its sidecar writes the outputs as the former identity at the end: nothing of that identity's wiring moves
    assert {f["properties"]["subject"] for f in fics_of(harness, IDENTITY_ID).values()} >= EXAMPLE_SUBJECTS
    assert harness.extension_settings()["userAssignedIdentityResourceId"] == IDENTITY_ID
    assert harness.role_assignments() != []
    harness.wait_job(job, timeout=30)  # the job ran to its end on the compute it started on
    harness.wait_reconciled(compute, timeout=30)
    assert list(harness.sandbox_compute()["identity"]["userAssignedIdentities"]) == [SECOND_IDENTITY]


def test_the_override_detaches_under_running_jobs_at_once(harness):
    compute, _ = identity_changed_under_a_running_job(harness, 60)
    harness.wait_condition(compute, "ComputeReady", "False", "ComputeDetachWaitsForJobs")
    harness.custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        "attachedcomputes",
        compute,
        {"metadata": {"annotations": {"amlwire.io/detach-under-running-jobs": "true"}}},
    )
    harness.wait_reconciled(compute, timeout=30)
    assert list(harness.sandbox_compute()["identity"]["userAssignedIdentities"]) == [SECOND_IDENTITY]


# -- a compute deleted under running jobs ---------------------------------------------------------------------
def test_jobs_keep_being_followed_after_their_compute_is_deleted_with_orphan(harness):
    compute = harness.wired()
    harness.ctl.timing(job={"queuedSeconds": 0.1, "runningSeconds": 4})
    job = harness.apply_job("amljob-train.yaml")
    harness.wait_job(job, "Reconciling", "True", "Running")
    harness.patch_compute(compute, {"deletionPolicy": "Orphan"})
    uid = harness.wait_reconciled(compute)["metadata"]["uid"]
    harness.delete_compute(compute)
    wait_for(
        lambda: not harness.custom.list_cluster_custom_object(GROUP, VERSION, "attachedcomputes")["items"],
        timeout=15,
        what="the AttachedCompute deleted",
    )
    told = [e for e in harness.events(compute, uid) if e.reason == "JobsStillRunning"]  # this one's, not a namesake's
    assert told
    assert f"robotics/{job}" in told[0].message
    assert "run to their end" in told[0].message
    obj = harness.wait_job(job, timeout=30)
    assert obj["status"]["amlStatus"] == "Completed"


def test_a_job_whose_aml_job_is_gone_with_its_compute_is_stalled_not_running_forever(harness):
    compute = harness.wired()
    harness.ctl.timing(job={"queuedSeconds": 0.1, "runningSeconds": 60})
    job = harness.apply_job("amljob-train.yaml")
    aml_name = harness.wait_job(job, "Reconciling", "True", "Running")["status"]["amlJobName"]
    harness.patch_compute(compute, {"deletionPolicy": "Orphan"})
    harness.wait_reconciled(compute)
    harness.delete_compute(compute)
    harness.ctl.delete(f"{WORKSPACE_ID}/jobs/{aml_name}")  # the workspace lost it (deleted by someone)
    obj = harness.wait_job(job, "Stalled", "True", "ComputeNotFound", timeout=30)
    assert "nothing left to follow" in condition(obj, "Stalled")["message"]


# -- the extension's own service accounts --------------------------------------------------------------------
def test_leaving_out_an_extension_account_holds_federation_and_releases_the_account(
    harness, monkeypatch, view_only_user
):
    name = harness.wired()
    assert harness.service_account("default").metadata.labels.get("app.kubernetes.io/managed-by") == "amlwire"
    harness.patch_compute(name, {"serviceAccounts": [{"namespace": "azureml", "name": "training"}]})
    obj = harness.wait_condition(name, "FederationReady", "False", "ExtensionServiceAccountNotFederated")
    assert "{namespace: azureml, name: default}" in condition(obj, "FederationReady")["message"]
    assert condition(obj, "Ready")["status"] == "False"
    account = harness.service_account("default")
    assert "azure.workload.identity/client-id" not in (account.metadata.annotations or {})
    assert "app.kubernetes.io/managed-by" not in (account.metadata.labels or {})
    harness.stop()
    code, report = run_doctor(harness, monkeypatch, name)
    assert code == 1
    assert "F04" in failing(report)


# -- hints that point the right way; asking for a reconcile ---------------------------------------------------
def test_a_token_exchange_failure_names_the_account_it_was_for(harness):
    name = harness.wired()
    hold_jobs(harness)
    job = harness.apply_job("amljob-validate.yaml", model={**MODEL, "delivery": "Mount"})
    aml_name = wait_for(lambda: (harness.job(job).get("status") or {}).get("amlJobName"), timeout=15)
    # the data-capability sidecar's account loses its credential behind amlwire's back
    default = next(n for n, f in harness.fics().items() if f["subject"] == "system:serviceaccount:azureml:default")
    harness.ctl.delete(f"{IDENTITY_ID}/federatedIdentityCredentials/{default}")
    harness.ctl.patch(f"{WORKSPACE_ID}/jobs/{aml_name}", extra={"queued": 0.1})
    failure = harness.wait_job(job, "Stalled", "True", timeout=30)["status"]["failure"]
    assert "system:serviceaccount:azureml:default" in failure["hint"]
    assert "F04" in failure["hint"]
    assert "F23" not in failure["hint"]
    harness.wait_condition(name, "Ready", "True")  # re-verified at once: the credential is back


def test_shared_keys_off_with_a_key_based_datastore_is_a_condition_and_the_job_hint(harness):
    name = harness.wired()
    hold_jobs(harness)
    job = harness.apply_job("amljob-validate.yaml", model={**MODEL, "delivery": "Mount"})
    aml_name = wait_for(lambda: (harness.job(job).get("status") or {}).get("amlJobName"), timeout=15)
    harness.ctl.patch(WORKSPACE_ID, {"properties": {"systemDatastoresAuthMode": "accesskey"}})
    harness.ctl.patch(f"{WORKSPACE_ID}/jobs/{aml_name}", extra={"queued": 0.1})
    failure = harness.wait_job(job, "Stalled", "True", timeout=30)["status"]["failure"]
    assert "F17" in failure["hint"]
    assert "F23" not in failure["hint"]
    # the failed job asked its compute to look again now, not at the next drift check (10 minutes away)
    obj = harness.wait_condition(name, "AccessReady", "False", "SharedKeyAccessDisabled", timeout=15)
    assert obj["metadata"]["annotations"]["amlwire.io/reconcile-requested-at"]
    assert "new workspace" in condition(obj, "AccessReady")["message"]


def test_a_reconcile_can_be_requested_with_an_annotation(harness):
    name = harness.wired()
    victim = sorted(harness.fics())[0]
    harness.ctl.delete(f"{IDENTITY_ID}/federatedIdentityCredentials/{victim}")
    harness.request_reconcile(name, "2026-11-26T12:00:00Z")
    wait_for(lambda: victim in harness.fics(), timeout=10, what="the credential restored at once")
    wait_for(
        lambda: harness.compute(name)["status"].get("lastHandledReconcileAt") == "2026-11-26T12:00:00Z",
        timeout=10,
        what="lastHandledReconcileAt",
    )


# -- permanent errors are permanent, transient ones are not -----------------------------------------------------
def test_a_rejected_job_is_stalled_naming_the_fields(harness):
    harness.wired()
    harness.ctl.add_fault(route="ml.job", method="PUT", status=400, count=1)
    job = harness.apply_job("amljob-command.yaml")
    obj = harness.wait_job(job, "Stalled", "True", "SubmissionRejected")
    message = condition(obj, "Stalled")["message"]
    assert "spec.command" in message
    assert "delete and recreate the AmlJob" in message


def test_throttling_never_makes_a_new_job_stalled(harness):
    harness.start()
    harness.ctl.add_fault(route="msi.identity", status=429, retryAfter=1, count=3)
    compute = harness.apply_compute("robotics-gpu")
    job = harness.apply_job("amljob-command.yaml")
    seen = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stalled = condition(harness.job(job), "Stalled")
        seen.add(stalled["status"] if stalled else None)
        if condition(harness.job(job), "Ready") and condition(harness.job(job), "Ready")["status"] == "True":
            break
        time.sleep(0.1)
    assert "True" not in seen
    harness.wait_ready(compute)
    harness.wait_job(job)


# -- GitOps can take back what it granted ------------------------------------------------------------------------
APPLY = "application/apply-patch+yaml"


def test_a_namespace_patched_into_the_allow_list_goes_when_gitops_applies_again(harness):
    manifest = compute_manifest("gitops-gpu")

    def gitops_applies() -> None:
        harness.custom.patch_cluster_custom_object(
            GROUP,
            VERSION,
            "attachedcomputes",
            "gitops-gpu",
            manifest,
            field_manager="argocd-controller",
            force=True,
            _content_type=APPLY,
        )

    gitops_applies()
    harness.created.append(("attachedcomputes", None, "gitops-gpu"))
    harness.patch_compute("gitops-gpu", {"jobs": {"allowedNamespaces": ["robotics", "team-x"]}})
    assert harness.compute("gitops-gpu")["spec"]["jobs"]["allowedNamespaces"] == ["robotics", "team-x"]
    gitops_applies()
    assert harness.compute("gitops-gpu")["spec"]["jobs"]["allowedNamespaces"] == ["robotics"]


# -- waiting for a model without writing --------------------------------------------------------------------------
def test_a_job_waiting_for_its_model_reads_instead_of_writing(harness):
    harness.wired()
    job = harness.apply_job("amljob-validate.yaml", model={**MODEL, "version": "7"})
    harness.wait_job(job, "Stalled", "True", "ModelNotFound")
    mark = harness.ctl.mark()
    time.sleep(3)  # several re-checks (blocked_recheck_delay 0.5 s)
    calls = harness.ctl.calls(mark)
    assert [c for c in calls if (c["method"], c["route"]) == ("PUT", "ml.job")] == []
    assert [c for c in calls if (c["method"], c["route"]) == ("GET", "ml.model.version")]
    harness.register_model_version(MODEL["name"], "7")
    harness.wait_job(job, "Submitted", "True", timeout=30)
