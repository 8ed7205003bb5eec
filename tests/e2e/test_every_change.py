"""What a new cluster admin found in an hour with kubectl (issue 24), done as they did it, with conditions,
events and the sandbox's Azure state checked afterwards: every change acted on, every repair visible at once,
nothing leaked, nothing written by a refused compute."""

from __future__ import annotations

import time

import pytest
import yaml

from amlwire_devenv.chaos import condition
from tests.conftest import wait_for
from tests.e2e.harness import EXTENSION_ID, IDENTITY_ID, WORKSPACE_ID, compute_manifest

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
EXAMPLE_ACCOUNTS = compute_manifest("x")["spec"]["serviceAccounts"]


def observed(harness, name: str) -> tuple[int, int | None]:
    obj = harness.compute(name)
    return obj["metadata"]["generation"], (obj.get("status") or {}).get("observedGeneration")


def test_a_spec_reverted_while_stalled_is_reconciled_at_once(harness):
    name = harness.wired(blocked_recheck_delay=120.0)  # as in production: a stalled link is re-checked minutes later
    without_default = [a for a in EXAMPLE_ACCOUNTS if (a["namespace"], a["name"]) != ("azureml", "default")]
    harness.patch_compute(name, {"serviceAccounts": without_default})
    harness.wait_condition(name, "FederationReady", "False", "ExtensionServiceAccountNotFederated")
    assert not any(f["subject"] == "system:serviceaccount:azureml:default" for f in harness.fics().values())
    mark = harness.ctl.mark()
    harness.patch_compute(name, {"serviceAccounts": EXAMPLE_ACCOUNTS})  # back to what was handled before
    generation = harness.compute(name)["metadata"]["generation"]
    wait_for(lambda: observed(harness, name) == (generation, generation), timeout=10, what="the reverted spec handled")
    harness.wait_ready(name, timeout=10)
    assert any(f["subject"] == "system:serviceaccount:azureml:default" for f in harness.fics().values())
    assert any(c["method"] == "PUT" for c in harness.ctl.calls(mark))


def test_a_drift_repair_is_followed_up_as_soon_as_it_takes_effect(harness):
    name = harness.wired(drift_interval=12.0, federation_propagation_seconds=1)
    default = next(n for n, f in harness.fics().items() if f["subject"] == "system:serviceaccount:azureml:default")
    harness.ctl.delete(f"{IDENTITY_ID}/federatedIdentityCredentials/{default}")
    repairing = harness.wait_condition(name, "FederationReady", "False", "FederatedCredentialMissing", timeout=20)
    assert default in harness.fics()  # re-created by the drift check; Entra honours it within a second
    assert "Entra honours a new federated credential within ~1s" in condition(repairing, "FederationReady")["message"]
    repaired = time.monotonic()
    harness.wait_condition(name, "FederationReady", "True", timeout=15)
    assert time.monotonic() - repaired < 5  # the follow-up, not the next drift check 12 s later
    assert condition(harness.compute(name), "Ready")["status"] == "True"


def test_a_refused_compute_writes_no_trust_and_takes_over_when_the_owner_goes(harness):
    from tests.e2e.test_admin_actions import SECOND_IDENTITY, SECOND_PRINCIPAL, create_identity, fics_of

    harness.start(blocked_recheck_delay=120.0)  # as in production: a refusal is looked at again minutes later
    first = harness.apply_compute("first-gpu")
    harness.wait_ready(first)
    create_identity(harness)
    second = harness.apply_compute("second-gpu", identity={"resourceId": SECOND_IDENTITY}, compute__name="k8s-second")
    refused = harness.wait_condition(second, "FederationReady", "False", "ExtensionOwnedByAnotherCompute")
    assert (
        "writes no federated credential, role or extension setting" in condition(refused, "FederationReady")["message"]
    )
    harness.wait_condition(second, "AccessReady", "False", "ExtensionOwnedByAnotherCompute")
    time.sleep(2)
    assert fics_of(harness, SECOND_IDENTITY) == {}
    assert harness.role_assignments(SECOND_PRINCIPAL) == []
    # the owner goes: the refused compute takes the cluster over, at once (not at its next recheck) and completely
    harness.delete_compute(first)
    harness.wait_ready(second, timeout=20)
    second_client = "7d2e0c1b-0000-4000-8000-0000000000cc"
    for account in EXAMPLE_ACCOUNTS:
        annotations = harness.service_account(account["name"], account["namespace"]).metadata.annotations
        assert annotations["azure.workload.identity/client-id"] == second_client, account
    assert {f["properties"]["subject"] for f in fics_of(harness, SECOND_IDENTITY).values()} == {
        f"system:serviceaccount:{a['namespace']}:{a['name']}" for a in EXAMPLE_ACCOUNTS
    }
    assert fics_of(harness, IDENTITY_ID) == {}


def test_the_original_manifest_applied_again_server_side_is_reconciled_at_once(harness):
    from tests.e2e.test_kubectl import kubectl

    name = harness.wired(blocked_recheck_delay=120.0)
    without_default = [a for a in EXAMPLE_ACCOUNTS if (a["namespace"], a["name"]) != ("azureml", "default")]
    harness.patch_compute(name, {"serviceAccounts": without_default})
    harness.wait_condition(name, "FederationReady", "False", "ExtensionServiceAccountNotFederated")
    manifest = harness.workdir / "robotics-gpu.yaml"
    manifest.write_text(yaml.safe_dump(compute_manifest(name)))
    applied = kubectl(harness, "apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    generation = harness.compute(name)["metadata"]["generation"]
    wait_for(lambda: observed(harness, name) == (generation, generation), timeout=10, what="the applied spec handled")
    harness.wait_ready(name, timeout=10)


def test_a_requested_reconcile_is_handled_at_once_while_a_link_is_stalled(harness):
    name = harness.wired(blocked_recheck_delay=120.0)
    harness.ctl.patch(
        EXTENSION_ID,
        {"properties": {"configurationSettings": {"identityType": None, "userAssignedIdentityResourceId": None}}},
    )
    harness.patch_compute(name, {"extension": {"mode": "Verify"}})
    harness.wait_condition(name, "ExtensionReady", "False", "ExtensionIdentityMismatch")
    harness.ctl.patch(
        EXTENSION_ID,
        {
            "properties": {
                "configurationSettings": {"identityType": "UserAssigned", "userAssignedIdentityResourceId": IDENTITY_ID}
            }
        },
    )
    harness.request_reconcile(name)
    obj = harness.wait_ready(name, timeout=10)  # not two minutes later, at the stalled link's recheck
    assert obj["status"]["lastHandledReconcileAt"] == "2026-12-03T00:00:00Z"


def test_after_a_restart_the_operator_asks_entra_once_per_scope_not_once_per_worker(harness):
    harness.start()
    names = [harness.apply_compute(f"gpu-{i}", compute__name=f"k8s-{i}") for i in range(6)]
    for name in names:
        harness.wait_ready(name)
    harness.stop()
    for name in names:  # work waiting for every worker at start
        harness.patch_compute(name, {"jobs": {"allowedNamespaces": ["robotics", "team-b"]}})
    mark = harness.ctl.mark()
    harness.start()
    for name in names:
        harness.wait_reconciled(name)
    tokens = [c for c in harness.ctl.calls(mark) if c["route"] == "entra.token"]
    assert len(tokens) == 1, tokens  # one for ARM's scope, never one per handler thread


def computes_tagged(harness) -> dict[str, str | None]:
    """The workspace's computes and the AttachedCompute their tag names."""
    found = harness.ctl.resources_under(f"{WORKSPACE_ID}/computes/")
    return {k.rsplit("/", 1)[-1]: (v.get("tags") or {}).get("amlwire-attached-compute") for k, v in found.items()}


def test_a_new_compute_name_detaches_the_old_compute(harness):
    name = harness.wired()
    assert computes_tagged(harness) == {"k8s-gpu": name}
    harness.patch_compute(name, {"compute": {"name": "k8s-gpu-b"}})
    harness.wait_reconciled(name, timeout=30)
    assert computes_tagged(harness) == {"k8s-gpu-b": name}  # the old one is detached, not leaked
    assert harness.compute(name)["status"]["computeId"].endswith("/computes/k8s-gpu-b")
    assert (
        "formerComputes" not in harness.compute(name)["status"] or not harness.compute(name)["status"]["formerComputes"]
    )
    assert any(e.reason == "ComputeDetaching" and "k8s-gpu" in e.message for e in harness.events(name))


def test_a_compute_left_by_an_orphaned_attached_compute_is_adopted_and_detached_with_its_adopter(harness):
    harness.start()
    first = harness.apply_compute("robotics-gpu2", deletionPolicy="Orphan")
    harness.wait_ready(first)
    harness.delete_compute(first)
    wait_for(lambda: not harness.exists(first), timeout=20, what="the orphaning deletion")
    assert computes_tagged(harness) == {"k8s-gpu": first}  # left attached, as Orphan says
    second = harness.apply_compute("robotics-gpu3")
    obj = harness.wait_ready(second)
    assert obj["status"]["computeAdoptedFrom"] == first
    assert any(e.reason == "ComputeAdopted" for e in harness.events(second))
    harness.delete_compute(second)
    wait_for(lambda: computes_tagged(harness) == {}, timeout=30, what="the adopted compute detached")


def test_deleting_a_compute_whose_identity_never_existed_finishes_and_its_events_aggregate(harness):
    harness.start()
    missing = IDENTITY_ID.replace("id-ml", "id-missing")
    name = harness.apply_compute("never-wired", identity={"resourceId": missing}, compute__name="k8s-never")
    harness.wait_condition(name, "IdentityReady", "False")
    time.sleep(3)  # the refusal repeats at every recheck
    repeated = [e for e in harness.events(name) if e.reason in ("IdentityNotFound", "AzurePermissionDenied")]
    assert len(repeated) == 1, [(e.reason, e.count) for e in repeated]  # one Event object, counted
    mark = harness.ctl.mark()
    harness.delete_compute(name)
    wait_for(lambda: not harness.exists(name), timeout=15, what="the deletion to finish")
    assert not [c for c in harness.ctl.calls(mark) if "federatedIdentityCredentials" in c["path"]]


def test_ready_is_not_true_for_a_generation_still_being_reconciled(harness):
    name = harness.wired()
    harness.ctl.add_fault(route="aks.cluster", latency=4, count=1)  # the reconcile of the change takes a while
    harness.patch_compute(name, {"jobs": {"allowedNamespaces": ["robotics", "team-b"]}})
    generation = harness.compute(name)["metadata"]["generation"]
    seen = harness.wait_condition(name, "Ready", "Unknown", "NewGeneration", timeout=3)
    ready = condition(seen, "Ready")
    assert ready["observedGeneration"] == generation
    assert f"generation {generation} is being reconciled" in ready["message"]
    assert condition(seen, "Reconciling")["status"] == "True"
    harness.wait_reconciled(name)


def test_detaching_the_compute_under_running_jobs_fails_them_as_aml_does(harness):
    harness.wired()
    harness.ctl.timing(job={"queuedSeconds": 0.2, "runningSeconds": 3600})
    jobs = [harness.apply_job("amljob-command.yaml") for _ in range(3)]
    for job in jobs:
        harness.wait_job(job, "Reconciling", "True", "Running", timeout=30)
    uid = harness.compute("robotics-gpu")["metadata"]["uid"]
    harness.delete_compute("robotics-gpu")  # deletionPolicy Delete: the compute is detached under them
    for job in jobs:
        obj = harness.wait_job(job, "Stalled", "True", timeout=30)
        assert obj["status"]["amlStatus"] == "Failed"
        assert "was detached while the job ran" in obj["status"]["failure"]["message"]
    told = [e for e in harness.events("robotics-gpu", uid) if e.reason == "JobsStillRunning"]
    assert told
    assert "makes AML fail them" in told[0].message


def test_a_credential_removed_while_a_job_runs_fails_it_when_its_outputs_are_written(harness):
    name = harness.wired()
    harness.ctl.timing(job={"queuedSeconds": 0.2, "runningSeconds": 3})
    job = harness.apply_job(
        "amljob-command.yaml",
        command="python train.py --steps ${{inputs.steps}} --out ${{outputs.checkpoint}}",
        register={"modelName": "smoke", "type": "custom_model"},
    )
    harness.wait_job(job, "Reconciling", "True", "Running", timeout=30)
    default = next(n for n, f in harness.fics().items() if f["subject"] == "system:serviceaccount:azureml:default")
    harness.ctl.delete(f"{IDENTITY_ID}/federatedIdentityCredentials/{default}")  # behind amlwire's back
    obj = harness.wait_job(job, "Stalled", "True", "ScriptExecutionStreamAccessAuthentication", timeout=30)
    assert obj["status"]["failure"]["code"] == "ScriptExecution.StreamAccess.Authentication"
    assert "registeredModel" not in obj["status"]
    harness.wait_ready(name)  # the job asked for a reconcile: the credential is back


def test_a_job_failing_on_a_deleted_credential_is_told_it_is_missing_not_propagating(harness):
    harness.wired()
    harness.ctl.timing(job={"queuedSeconds": 3600, "runningSeconds": 0.5})
    model = {"name": "isaaclab-anymal-latest", "version": "2", "type": "custom_model", "delivery": "InContainer"}
    job = harness.apply_job("amljob-validate.yaml", model=model)
    aml = wait_for(lambda: (harness.job(job).get("status") or {}).get("amlJobName"), timeout=15, what="submitted")
    pods = next(n for n, f in harness.fics().items() if f["subject"] == "system:serviceaccount:azureml-jobs:default")
    harness.ctl.delete(f"{IDENTITY_ID}/federatedIdentityCredentials/{pods}")  # behind amlwire's back
    harness.ctl.patch(f"{WORKSPACE_ID}/jobs/{aml}", extra={"queued": 0.1})
    failure = harness.wait_job(job, "Stalled", "True", timeout=60)["status"]["failure"]
    assert "AADSTS70021" in failure["message"]
    assert "federates system:serviceaccount:azureml-jobs:default now" in failure["hint"]
    assert "removed or changed behind amlwire's back" in failure["hint"]
    assert "propagating" not in failure["hint"]


def test_every_write_amlwire_makes_carries_its_field_manager(harness):
    name = harness.wired()
    harness.ctl.timing(job={"queuedSeconds": 3600, "runningSeconds": 0.5})
    job = harness.apply_job("amljob-validate.yaml", model={"name": "isaaclab-anymal-latest", "version": "2"})
    aml = wait_for(lambda: (harness.job(job).get("status") or {}).get("amlJobName"), timeout=15, what="submitted")
    default = next(n for n, f in harness.fics().items() if f["subject"] == "system:serviceaccount:azureml:default")
    harness.ctl.delete(f"{IDENTITY_ID}/federatedIdentityCredentials/{default}")
    harness.ctl.patch(f"{WORKSPACE_ID}/jobs/{aml}", extra={"queued": 0.1})
    harness.wait_job(job, "Stalled", "True", timeout=60)  # its status written by the poller; it asks for a reconcile
    wait_for(
        lambda: "amlwire.io/reconcile-requested-at" in (harness.compute(name)["metadata"].get("annotations") or {}),
        timeout=10,
        what="the requested reconcile",
    )

    def owner_of(obj: dict, *path: str) -> set[str]:
        """The managers of a field (fieldsV1 path), as the apiserver recorded them."""
        found = set()
        for entry in obj["metadata"]["managedFields"]:
            node = entry.get("fieldsV1") or {}
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                found.add(entry["manager"])
        return found

    compute, aml_job = harness.compute(name), harness.job(job)
    assert owner_of(compute, "f:metadata", "f:annotations", "f:amlwire.io/reconcile-requested-at") == {"amlwire"}
    assert owner_of(aml_job, "f:status", "f:failure") == {"amlwire"}  # the poller's status write
    # kopf's writes inside the operator too: its finalizer, its diff base, the handlers' status
    assert owner_of(aml_job, "f:metadata", "f:finalizers") == {"amlwire"}
    assert owner_of(aml_job, "f:status", "f:kopf") == {"amlwire"}
    status_entries = [e for e in aml_job["metadata"]["managedFields"] if e.get("subresource") == "status"]
    assert [e["manager"] for e in status_entries] == ["amlwire"], "one entry for the status, not one per client"
    events = [e for e in harness.core.list_event_for_all_namespaces().items if e.source.component == "amlwire"]
    assert {m.manager for e in events for m in e.metadata.managed_fields or []} == {"amlwire"}
