"""Malformed and hostile resources, with the operator running: each is refused at admission or Stalled with a
message that names the field, and the operator handles a good resource afterwards as if nothing happened."""

from __future__ import annotations

import copy
import json
import time
import uuid
from typing import Any

import pytest
from kubernetes import client

from tests.kube.test_admission import COMPUTE_CASES, JOB_CASES, create, load, set_path

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
OTHER_SUB = "0b0e5a2c-1111-4222-8333-444455556666"
SUB = "6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60"
RG = f"/subscriptions/{SUB}/resourceGroups"

# hostile rather than merely wrong: oversized, injected, mistyped (refused by the apiserver itself)
HOSTILE_ADMISSION = [
    ("compute", "name-300-chars", set_path("metadata.name", "a" * 300), "metadata.name"),
    ("compute", "compute-name-shell", set_path("spec.compute.name", "k8s;rm -rf /"), "spec.compute.name"),
    ("compute", "workspace-path-traversal", set_path("spec.workspace.name", "../../etc"), "spec.workspace.name"),
    ("compute", "workspace-not-an-object", set_path("spec.workspace", "mlw-robotics"), "spec.workspace"),
    (
        "compute",
        "identity-url-injection",
        set_path("spec.identity.resourceId", "https://evil/?x=/userAssignedIdentities/a"),
        "spec.identity.resourceId",
    ),
    (
        "compute",
        "service-accounts-1000",
        set_path("spec.serviceAccounts", [{"namespace": "azureml", "name": f"sa-{i}"} for i in range(1000)]),
        "spec.serviceAccounts",
    ),
    (
        "compute",
        "extension-setting-1mib",
        set_path("spec.extension.settings", {"enableTraining": "x" * (1 << 20)}),
        "spec.extension.settings",
    ),
    (
        "compute",
        "grants-200",
        set_path("spec.access.grants", [{"scope": f"{RG}/rg-{i}", "role": "AcrPull"} for i in range(200)]),
        "spec.access.grants",
    ),
    (
        "compute",
        "allowed-namespace-uppercase",
        set_path("spec.jobs.allowedNamespaces", ["Robotics"]),
        "spec.jobs.allowedNamespaces[0]",
    ),
    (
        "compute",
        "cpu-not-a-quantity",
        set_path("spec.compute.instanceTypes.0.resources.limits.cpu", "lots"),
        "spec.compute.instanceTypes[0].resources.limits",
    ),
    ("job", "command-1mib", set_path("spec.command", "echo " + "x" * (1 << 20)), "spec.command"),
    ("job", "inputs-500", set_path("spec.inputs", {f"in{i}": i for i in range(500)}), "spec.inputs"),
    (
        "job",
        "task-injection",
        set_path("spec.isaacLab.task", 'Isaac"; import os; os.system("id")'),
        "spec.isaacLab.task",
    ),
    ("job", "compute-ref-empty", set_path("spec.computeRef", ""), "spec.computeRef"),
    (
        "job",
        "env-var-name-injection",
        set_path("spec.environmentVariables", {"A=B; curl evil": "1"}),
        "spec.environmentVariables",
    ),
    ("job", "episodes-negative", set_path("spec.isaacLab.episodes", -5), "spec.isaacLab.episodes"),
]

# accepted by the schema, refused by what amlwire finds: Stalled (or not Ready) with the field in the message
SEMANTIC = [
    (
        "compute",
        "identity-in-another-subscription",
        set_path(
            "spec.identity.resourceId",
            f"/subscriptions/{OTHER_SUB}/resourceGroups/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-ml",
        ),
        "spec.identity.resourceId",
    ),
    (
        "compute",
        "identity-missing",
        set_path(
            "spec.identity.resourceId", f"{RG}/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-nope"
        ),
        "spec.identity.resourceId",
    ),
    ("compute", "workspace-missing", set_path("spec.workspace.name", "mlw-nope"), "spec.workspace"),
    ("compute", "cluster-missing", set_path("spec.cluster.name", "aks-nope"), "spec.cluster"),
    (
        "compute",
        "grant-scope-missing",
        set_path("spec.access.grants.0.scope", f"{RG}/rg-ml/providers/Microsoft.Storage/storageAccounts/stnope"),
        "spec.access.grants[].scope",
    ),
    ("job", "compute-unknown", set_path("spec.computeRef", "no-such-compute"), "spec.computeRef"),
    ("job", "instance-type-unknown", set_path("spec.instanceType", "gpu-9"), "spec.instanceType"),
    ("job", "model-not-registered", set_path("spec.model.version", "999"), "spec.model"),
]


def _manifest(kind: str) -> dict[str, Any]:
    obj = copy.deepcopy(load("attachedcompute.yaml" if kind == "compute" else "amljob-validate.yaml"))
    obj["metadata"]["name"] = f"{obj['metadata']['name']}-{uuid.uuid4().hex[:6]}"
    return obj


def _refused(custom: client.CustomObjectsApi, obj: dict[str, Any]) -> tuple[int, str]:
    """(HTTP status, message) of the apiserver's refusal; (201, "") if it accepted the object."""
    try:
        create(custom, obj)
    except client.ApiException as error:
        try:
            return error.status, str(json.loads(error.body or "{}").get("message", error.body))
        except ValueError:
            return error.status, str(error.body)
    return 201, ""


def _messages(harness, obj: dict[str, Any]) -> str:
    name = obj["metadata"]["name"]
    current = harness.compute(name) if obj["kind"] == "AttachedCompute" else harness.job(name)
    return " ".join(c["message"] for c in (current.get("status") or {}).get("conditions", []))


def _stalled_on(harness, obj: dict[str, Any], field: str) -> str:
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        text = _messages(harness, obj)
        if field in text:
            return text
        time.sleep(0.2)
    pytest.fail(f"{obj['metadata']['name']} never named {field}; its conditions say: {text}")


def test_hostile_and_malformed_resources_are_refused_and_the_operator_carries_on(harness):
    harness.wired()
    custom = harness.custom
    refused: dict[str, str] = {}
    cases = [("compute", *c) for c in COMPUTE_CASES] + [("job", *c) for c in JOB_CASES]
    for kind, case, mutate, field, *_ in cases + [(k, c, m, f) for k, c, m, f in HOSTILE_ADMISSION]:
        obj = _manifest(kind)
        mutate(obj)
        status, message = _refused(custom, obj)
        if status == 201:
            harness.created.append(_created(obj))
        refused[case] = message
        assert status in (413, 422), f"{case}: accepted ({status})"
        assert field in message, f"{case}: refusal does not name {field}: {message[:400]!r}"
    stalled: dict[str, str] = {}
    for kind, case, mutate, field in SEMANTIC:
        obj = _manifest(kind)
        mutate(obj)
        create(custom, obj)
        harness.created.append(_created(obj))
        stalled[case] = _stalled_on(harness, obj, field)
    assert len(refused) + len(stalled) >= 40
    assert harness.operator.error is None
    assert harness.operator._thread.is_alive()
    # the operator still handles new work (the hostile computes share the cluster, so the job may then fail)
    good = harness.apply_job("amljob-validate.yaml")
    harness.wait_job(good, "Submitted", "True", timeout=60)


def _created(obj: dict[str, Any]) -> tuple[str, str | None, str]:
    if obj["kind"] == "AttachedCompute":
        return ("attachedcomputes", None, obj["metadata"]["name"])
    return ("amljobs", obj["metadata"]["namespace"], obj["metadata"]["name"])
