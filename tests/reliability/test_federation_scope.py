"""Federation reaches only the service accounts an AttachedCompute lists; system namespaces only when allowed."""

from __future__ import annotations

import pytest
from kubernetes import client

from amlwire_devenv.chaos import condition

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
LISTED = [
    {"namespace": "azureml", "name": "default"},
    {"namespace": "azureml", "name": "training"},
    {"namespace": "azureml-jobs", "name": "default"},
]  # the example's


def _subjects(harness) -> set[str]:
    return {fic["subject"] for fic in harness.fics().values()}


def test_federation_only_into_listed_service_accounts_and_system_namespaces_only_when_allowed(harness):
    compute = harness.wired()
    assert _subjects(harness) == {f"system:serviceaccount:{a['namespace']}:{a['name']}" for a in LISTED}

    system = [*LISTED, {"namespace": "kube-system", "name": "metrics"}]
    with pytest.raises(client.ApiException) as refused:
        harness.custom.patch_cluster_custom_object(
            "amlwire.io", "v1alpha1", "attachedcomputes", compute, {"spec": {"serviceAccounts": system}}
        )
    assert refused.value.status == 422
    assert "allowSystemNamespaces" in refused.value.body
    assert "system:serviceaccount:kube-system:metrics" not in _subjects(harness)

    harness.patch_compute(compute, {"serviceAccounts": system, "allowSystemNamespaces": True})
    harness.wait_reconciled(compute)
    assert "system:serviceaccount:kube-system:metrics" in _subjects(harness)

    harness.patch_compute(compute, {"serviceAccounts": LISTED, "allowSystemNamespaces": False})
    harness.wait_reconciled(compute)
    assert _subjects(harness) == {f"system:serviceaccount:{a['namespace']}:{a['name']}" for a in LISTED}


def test_jobs_from_system_or_unlisted_namespaces_are_refused(harness):
    harness.wired()
    name = harness.apply_job("amljob-validate.yaml", namespace="kube-system")
    obj = harness.wait_job(name, "Stalled", "True", "NamespaceNotAllowed", namespace="kube-system")
    assert "spec.jobs.allowedNamespaces" in condition(obj, "Stalled")["message"]
    assert harness.aml_jobs() == []
