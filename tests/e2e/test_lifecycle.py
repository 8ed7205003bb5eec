"""Drift repair, shared identities, deletion policies, and restarts mid-reconcile."""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_for
from tests.e2e.harness import EXAMPLE_GRANTS, EXAMPLE_SUBJECTS, IDENTITY_ID, RG, WORKSPACE_ID

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]


def test_drift_timer_restores_a_deleted_credential_and_otherwise_writes_nothing(harness):
    harness.start(drift_interval=1.0)
    name = harness.apply_compute()
    harness.wait_ready(name)
    time.sleep(1.5)  # let any in-flight reconcile finish
    mark = harness.ctl.mark()
    time.sleep(2.5)  # at least two drift checks
    calls = harness.ctl.calls(since=mark)
    assert any(c["route"] == "aks.cluster" for c in calls), "the timer re-reads Azure"
    assert harness.ctl.writes(since=mark) == []
    victim = sorted(harness.fics())[0]
    harness.ctl.delete(f"{IDENTITY_ID}/federatedIdentityCredentials/{victim}")
    wait_for(lambda: victim in harness.fics(), timeout=10, what=f"{victim} restored")
    writes = [(c["method"], c["route"]) for c in harness.ctl.writes(since=mark)]
    assert writes == [("PUT", "msi.fic")]


def test_ten_computes_sharing_one_identity_converge_without_a_409_in_status(harness):
    harness.ctl.timing(ficWriteWindowSeconds=0.2)
    # other writers hit the identity too: Azure answers some of amlwire's writes with the concurrency 409
    harness.ctl.add_fault(
        route="msi.fic",
        method="PUT",
        status=409,
        count=3,
        code="ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
    )
    harness.start()
    names = []
    for index in range(10):
        cluster = harness.add_cluster(f"aks-{index}")
        names.append(
            harness.apply_compute(
                f"shared-{index}",
                cluster={"resourceGroup": "rg-aks", "name": cluster},
                compute={"name": f"gpu-{index}", "namespace": "azureml-jobs"},
                serviceAccounts=[
                    {"namespace": "azureml", "name": "default"},
                    {"namespace": "azureml", "name": "training"},
                ],
            )
        )
    seen_reasons: set[str] = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready = 0
        for name in names:
            for condition in (harness.compute(name).get("status") or {}).get("conditions", []):
                seen_reasons.add(condition["reason"])
                ready += condition["type"] == "Ready" and condition["status"] == "True"
        if ready == len(names):
            break
        time.sleep(0.2)
    assert ready == len(names), f"{ready}/10 ready"
    assert "FederatedCredentialWriteConflict" not in seen_reasons
    assert len(harness.fics()) == 20
    conflicts = [c for c in harness.ctl.calls() if c["route"] == "msi.fic" and c["status"] == 409]
    assert len(conflicts) == 3, "the injected 409s were retried inside the adapter"


def test_delete_policy_removes_what_amlwire_created_and_only_that(harness):
    foreign = f"{IDENTITY_ID}/federatedIdentityCredentials/someone-elses"
    harness.ctl.create(
        foreign,
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        {
            "properties": {
                "issuer": "https://other/",
                "subject": "system:serviceaccount:x:y",
                "audiences": ["api://AzureADTokenExchange"],
            }
        },
    )
    harness.start()
    name = harness.apply_compute()
    harness.wait_ready(name)
    assert harness.service_account("default").metadata.annotations
    harness.delete_compute(name)
    wait_for(lambda: not harness.exists(name), timeout=30, what="finalizer released")
    assert list(harness.fics()) == ["someone-elses"]
    assert harness.role_assignments() == []
    assert harness.sandbox_compute() is None
    annotations = harness.service_account("default").metadata.annotations or {}
    assert "azure.workload.identity/client-id" not in annotations
    assert harness.service_account("default") is not None  # the account itself stays
    extension = harness.extension_settings()
    assert extension["identityType"] == "UserAssigned", "the extension is shared infrastructure: left as it is"


def test_orphan_policy_leaves_azure_untouched(harness):
    harness.start()
    name = harness.apply_compute(deletionPolicy="Orphan")
    harness.wait_ready(name)
    before = harness.ctl.state()["resources"]
    mark = harness.ctl.mark()
    harness.delete_compute(name)
    wait_for(lambda: not harness.exists(name), timeout=30, what="finalizer released")
    assert harness.ctl.writes(since=mark) == []
    assert harness.ctl.state()["resources"].keys() == before.keys()


def test_a_compute_it_did_not_attach_is_adopted_and_never_detached(harness):
    harness.start()
    name = harness.apply_compute()
    harness.wait_ready(name)
    harness.ctl.patch(f"{WORKSPACE_ID}/computes/k8s-gpu", {"tags": None})
    harness.delete_compute(name)
    wait_for(lambda: not harness.exists(name), timeout=30, what="finalizer released")
    assert harness.sandbox_compute() is not None


def test_shared_credentials_survive_the_deletion_of_one_user(harness):
    harness.start()
    first = harness.apply_compute("first", compute={"name": "gpu-a", "namespace": "azureml-jobs"})
    second = harness.apply_compute("second", compute={"name": "gpu-b", "namespace": "azureml-jobs"})
    harness.wait_ready(first)
    harness.wait_ready(second)
    shared = len(EXAMPLE_SUBJECTS)
    assert len(harness.fics()) == shared, "both use the same service accounts on the same cluster: shared"
    harness.delete_compute(first)
    wait_for(lambda: not harness.exists(first), timeout=30, what="first deleted")
    assert len(harness.fics()) == shared
    assert len(harness.role_assignments()) == EXAMPLE_GRANTS
    assert harness.condition(second, "Ready")["status"] == "True"


def test_restart_mid_operation_converges_without_duplicates(harness):
    harness.ctl.timing(lroSeconds=1.5)
    harness.start()
    name = harness.apply_compute()
    harness.wait_condition(name, "ExtensionReady", "False", "ExtensionIdentityMismatch")
    harness.stop()
    time.sleep(0.5)
    harness.start()
    harness.wait_ready(name)
    assert len(harness.fics()) == len(EXAMPLE_SUBJECTS)
    assert len(harness.role_assignments()) == EXAMPLE_GRANTS
    computes = harness.ctl.resources_under(f"{WORKSPACE_ID}/computes/")
    assert len(computes) == 1
    patches = [c for c in harness.ctl.calls() if c["method"] == "PATCH" and c["route"] == "ext.extension"]
    assert len(patches) == 1, "the extension update in flight was followed, not started again"


def test_status_names_the_compute_id(harness):
    harness.start()
    name = harness.apply_compute()
    obj = harness.wait_ready(name)
    assert obj["status"]["computeId"].lower() == f"{WORKSPACE_ID}/computes/k8s-gpu".lower()
    assert RG
