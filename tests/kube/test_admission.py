"""The CRDs as the real apiserver enforces them: malformed resources are refused, naming the field and the fix."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client

from amlwire_devenv.cluster import as_object, ensure_namespace
from tests.conftest import GROUP, REPO, VERSION, table

pytestmark = pytest.mark.kube

EXAMPLES = REPO / "examples"
Mutation = Callable[[dict[str, Any]], None]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def fresh(manifest: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(manifest)
    obj["metadata"]["name"] = f"{obj['metadata']['name']}-{uuid.uuid4().hex[:6]}"
    return obj


def create(custom: client.CustomObjectsApi, obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "AttachedCompute":
        return as_object(custom.create_cluster_custom_object(GROUP, VERSION, "attachedcomputes", obj))
    return as_object(
        custom.create_namespaced_custom_object(GROUP, VERSION, obj["metadata"]["namespace"], "amljobs", obj)
    )


def rejection(custom: client.CustomObjectsApi, obj: dict[str, Any]) -> str:
    with pytest.raises(client.ApiException) as caught:
        create(custom, obj)
    assert caught.value.status == 422, caught.value.body
    return str(json.loads(caught.value.body or "{}")["message"])


def set_path(path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]  # type: ignore[index]  # a list, then
        node[leaf] = value

    return mutate


def drop_path(path: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = obj
        for part in parents:
            node = node[part]
        del node[leaf]

    return mutate


GPU_IN_REQUESTS = {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 1}
COMPUTE_CASES = [
    (
        "subscription-not-uuid",
        set_path("spec.workspace.subscriptionId", "my-subscription"),
        "spec.workspace.subscriptionId",
        "subscription UUID",
    ),
    (
        "cluster-subscription-not-uuid",
        set_path("spec.cluster.subscriptionId", "1234"),
        "spec.cluster.subscriptionId",
        "subscription UUID",
    ),
    (
        "cluster-in-another-subscription",
        set_path("spec.cluster.subscriptionId", "0f1e2d3c-4b5a-4968-8776-655443322110"),
        "spec.cluster.subscriptionId",
        "AML does not attach a Kubernetes cluster from another subscription",
    ),
    (
        "identity-not-user-assigned",
        set_path(
            "spec.identity.resourceId",
            "/subscriptions/6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60/resourceGroups/rg/"
            "providers/Microsoft.Compute/virtualMachines/vm1",
        ),
        "spec.identity.resourceId",
        "userAssignedIdentities",
    ),
    (
        "identity-client-id-instead-of-resource-id",
        set_path("spec.identity.resourceId", "0b0e5a2c-1111-2222-3333-444455556666"),
        "spec.identity.resourceId",
        "az identity show",
    ),
    (
        "service-account-namespace-uppercase",
        set_path("spec.serviceAccounts.0.namespace", "AzureML"),
        "spec.serviceAccounts[0].namespace",
        "DNS-1123",
    ),
    (
        "service-account-name-underscore",
        set_path("spec.serviceAccounts.1.name", "aml_training"),
        "spec.serviceAccounts[1].name",
        "DNS-1123",
    ),
    (
        "service-account-in-kube-system",
        set_path("spec.serviceAccounts", [{"namespace": "kube-system", "name": "default"}]),
        "spec.serviceAccounts",
        "allowSystemNamespaces",
    ),
    (
        "duplicate-service-account",
        set_path("spec.serviceAccounts", [{"namespace": "azureml", "name": "default"}] * 2),
        "spec.serviceAccounts[1]",
        "Duplicate value",
    ),
    (
        "extension-mode-unknown",
        set_path("spec.extension.mode", "Repair"),
        "spec.extension.mode",
        '"Configure", "Verify"',
    ),
    (
        "extension-settings-identity",
        set_path("spec.extension.settings", {"identityType": "SystemAssigned"}),
        "spec.extension.settings",
        "amlwire sets them from spec.identity",
    ),
    ("access-mode-unknown", set_path("spec.access.mode", "Create"), "spec.access.mode", '"Ensure", "Verify"'),
    ("deletion-policy-unknown", set_path("spec.deletionPolicy", "Retain"), "spec.deletionPolicy", '"Delete", "Orphan"'),
    (
        "instance-type-no-memory-request",
        set_path("spec.compute.instanceTypes.0.resources.requests", {"cpu": "8"}),
        "spec.compute.instanceTypes[0].resources.requests",
        "both cpu and memory",
    ),
    (
        "instance-type-gpu-in-requests",
        set_path("spec.compute.instanceTypes.0.resources.requests", GPU_IN_REQUESTS),
        "spec.compute.instanceTypes[0].resources.requests",
        "nvidia.com/gpu in limits only",
    ),
    (
        "grant-role-unknown",
        set_path("spec.access.grants.0.role", "Owner"),
        "spec.access.grants[0].role",
        "Storage Blob Data Contributor",
    ),
    (
        "grant-scope-not-arm-id",
        set_path("spec.access.grants.0.scope", "stmlrobotics"),
        "spec.access.grants[0].scope",
        "/subscriptions/<uuid>/",
    ),
    (
        "compute-name-too-long",
        set_path("spec.compute.name", "k8s-gpu-cluster-number-one"),
        "spec.compute.name",
        "may not be more than 16",
    ),
    (
        "compute-namespace-system",
        set_path("spec.compute.namespace", "kube-system"),
        "spec.compute.namespace",
        "allowSystemNamespaces",
    ),
    ("compute-missing", drop_path("spec.compute"), "spec.compute", "Required value"),
    ("workspace-name-bad", set_path("spec.workspace.name", "ml"), "spec.workspace.name", "at least 3"),
]

JOB_CASES = [
    ("template-unknown", set_path("spec.template", "IsaacLabPlay"), "spec.template", '"IsaacLabTrain"'),
    (
        "validate-without-model",
        drop_path("spec.model"),
        "spec.model",
        "required when spec.template is IsaacLabValidate",
    ),
    (
        "command-without-command",
        set_path("spec.template", "Command"),
        "spec.command",
        "required when spec.template is Command",
    ),
    ("isaaclab-without-task", drop_path("spec.isaacLab"), "spec.isaacLab", "Isaac-Velocity-Rough-Anymal-C-v0"),
    (
        "input-empty-string",
        set_path("spec.inputs", {"seed": 42, "note": ""}),
        "spec.inputs",
        "Empty string is not allowed",
    ),
    (
        "input-typed-literal",
        set_path("spec.inputs", {"seed": {"type": "integer", "default": 42}}),
        "spec.inputs.seed",
        "integer,string",
    ),
    ("input-key-not-identifier", set_path("spec.inputs", {"num-envs": 64}), "spec.inputs", "identifiers"),
    (
        "model-type-mlflow-misspelt",
        set_path("spec.model.type", "mlflow"),
        "spec.model.type",
        '"custom_model", "mlflow_model"',
    ),
    (
        "model-delivery-unknown",
        set_path("spec.model.delivery", "Copy"),
        "spec.model.delivery",
        '"Mount", "Download", "InContainer"',
    ),
    ("gate-without-threshold", set_path("spec.gate", {"metric": "success_rate"}), "spec.gate", "min or max"),
    (
        "gate-on-a-metric-the-evaluator-never-logs",
        set_path("spec.gate", {"metric": "succes_rate", "min": 0.9}),
        "spec.gate.metric",
        "success_rate, success_rate_ci_low, success_rate_ci_high, mean_episode_reward, episodes",
    ),
    ("resume-a-validation", set_path("spec.resume", {}), "spec.resume", "for template IsaacLabTrain"),
    ("isaaclab-version-unknown", set_path("spec.isaacLab.version", "4"), "spec.isaacLab.version", '"2", "3"'),
    ("framework-unknown", set_path("spec.isaacLab.framework", "ppo"), "spec.isaacLab.framework", '"rsl_rl"'),
    ("num-envs-zero", set_path("spec.isaacLab.numEnvs", 0), "spec.isaacLab.numEnvs", "greater than or equal to 1"),
    (
        "env-var-name-bad",
        set_path("spec.environmentVariables", {"MY-VAR": "x"}),
        "spec.environmentVariables",
        "valid variable names",
    ),
]


COMMAND_CASES = [
    ("undeclared-input", {"command": "python train.py --lr ${{inputs.lr}}"}, "spec.command", "does not declare"),
    ("undeclared-output", {"command": "cp -r x ${{outputs.weights}}"}, "spec.command", "the only output"),
    (
        "checkpoint-output-without-register",
        {"command": "cp -r x ${{outputs.checkpoint}}"},
        "spec.command",
        "spec.register declares",
    ),
]


@table(("case", "spec", "field", "fix"), COMMAND_CASES)
def test_a_command_binding_nothing_is_refused_like_amlwire_lint_l08(custom, robotics, case, spec, field, fix):
    obj = fresh(load("amljob-command.yaml"))
    obj["spec"].update(spec)
    message = rejection(custom, obj)
    assert field in message, message
    assert fix in message, message


def test_a_command_binding_what_it_declares_is_admitted(custom, robotics):
    obj = fresh(load("amljob-command.yaml"))
    obj["spec"].update(
        command="python train.py --steps ${{ inputs.steps }} --lr ${{inputs.lr}} && cp -r out ${{outputs.checkpoint}}",
        inputs={"steps": 10, "lr": "3e-4"},
        register={"modelName": "smoke"},
    )
    assert create(custom, obj)["metadata"]["uid"]


@pytest.fixture(scope="module")
def robotics(kube: client.ApiClient) -> str:
    ensure_namespace(kube, "robotics")
    return "robotics"


@table(("case", "mutate", "field", "fix"), COMPUTE_CASES)
def test_malformed_attached_compute_is_refused(custom, case, mutate, field, fix):
    obj = fresh(load("attachedcompute.yaml"))
    mutate(obj)
    message = rejection(custom, obj)
    assert field in message, message
    assert fix in message, message


@table(("case", "mutate", "field", "fix"), JOB_CASES)
def test_malformed_aml_job_is_refused(custom, robotics, case, mutate, field, fix):
    obj = fresh(load("amljob-validate.yaml"))
    mutate(obj)
    message = rejection(custom, obj)
    assert field in message, message
    assert fix in message, message


def test_compute_ref_is_immutable(custom, robotics):
    job = create(custom, fresh(load("amljob-validate.yaml")))
    with pytest.raises(client.ApiException) as caught:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, robotics, "amljobs", job["metadata"]["name"], {"spec": {"computeRef": "other-gpu"}}
        )
    message = json.loads(caught.value.body)["message"]
    assert "spec.computeRef" in message
    assert "delete and recreate" in message


def test_gate_stays_mutable(custom, robotics):
    job = create(custom, fresh(load("amljob-validate.yaml")))
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, robotics, "amljobs", job["metadata"]["name"], {"spec": {"gate": {"min": 0.8}}}
    )
    assert patched["spec"]["gate"]["min"] == 0.8


def test_workspace_is_immutable(custom):
    compute = create(custom, fresh(load("attachedcompute.yaml")))
    with pytest.raises(client.ApiException) as caught:
        custom.patch_cluster_custom_object(
            GROUP, VERSION, "attachedcomputes", compute["metadata"]["name"], {"spec": {"workspace": {"name": "other"}}}
        )
    message = json.loads(caught.value.body)["message"]
    assert "spec.workspace and spec.cluster are immutable" in message


@pytest.mark.parametrize("path", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_are_accepted(custom, robotics, path):
    created = create(custom, fresh(load(path)))
    assert created["metadata"]["uid"]


def test_defaults_are_applied_by_the_apiserver(custom):
    obj = fresh(load("attachedcompute.yaml"))
    for optional in ("serviceAccounts", "extension", "access", "jobs", "deletionPolicy"):
        obj["spec"].pop(optional)
    created = create(custom, obj)
    assert created["spec"]["deletionPolicy"] == "Delete"
    assert created["spec"]["compute"]["namespace"] == "azureml-jobs"


def test_printer_columns_and_short_names(kube_get):
    resources = kube_get(f"/apis/{GROUP}/{VERSION}")
    by_kind = {r["kind"]: r for r in resources["resources"] if "/" not in r["name"]}
    assert by_kind["AttachedCompute"]["shortNames"] == ["amlc"]
    assert by_kind["AttachedCompute"]["namespaced"] is False
    assert by_kind["AmlJob"]["shortNames"] == ["amlj"]
    assert "amlwire" in by_kind["AmlJob"]["categories"]


def _published_schema(kube_get: Callable[[str], Any], kind: str) -> dict[str, Any]:
    document = kube_get(f"/openapi/v3/apis/{GROUP}/{VERSION}")
    return document["components"]["schemas"][f"io.amlwire.{VERSION}.{kind}"]


def _undescribed(schema: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, sub in schema.get("properties", {}).items():
        if name == "metadata" and path == "":
            continue
        here = f"{path}.{name}".lstrip(".")
        if not sub.get("description") and not sub.get("allOf"):
            missing.append(here)
        target = sub.get("items", sub)
        missing += _undescribed(target, here)
    return missing


@pytest.mark.parametrize("kind", ["AttachedCompute", "AmlJob"])
def test_published_openapi_describes_every_field(kube_get, kind):
    schema = _published_schema(kube_get, kind)
    assert _undescribed(schema, "") == []


def test_published_openapi_carries_model_descriptions(kube_get):
    from amlwire.api.attachedcompute import AttachedComputeSpec, IdentitySpec

    spec = _published_schema(kube_get, "AttachedCompute")["properties"]["spec"]
    identity = spec["properties"]["identity"]
    assert identity["description"] == AttachedComputeSpec.model_fields["identity"].description
    assert identity["properties"]["resourceId"]["description"] == IdentitySpec.model_fields["resource_id"].description


def _table(control_plane: Any, path: str) -> dict[str, Any]:
    """What `kubectl get` prints: the apiserver's Table rendering of the CRD's printer columns."""
    import requests

    response = requests.get(
        control_plane.server + path,
        headers={
            "Authorization": f"Bearer {control_plane.admin_token}",
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io",
        },
        verify=str(control_plane.ca_file),
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def test_a_refused_job_shows_ready_and_reason_and_wide_adds_the_message(custom, control_plane):
    ensure_namespace(custom.api_client, "robotics")
    obj = fresh(load("amljob-command.yaml"))
    obj["metadata"]["namespace"] = "robotics"
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", obj)
    name = created["metadata"]["name"]
    ready = {
        "type": "Ready",
        "status": "False",
        "reason": "ComputeNotFound",
        "message": "AttachedCompute robotics-gpu does not exist",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "robotics", "amljobs", name, {"status": {"conditions": [ready]}}
    )
    try:
        table = _table(control_plane, f"/apis/{GROUP}/{VERSION}/namespaces/robotics/amljobs/{name}")
        columns = [(c["name"], c.get("priority", 0)) for c in table["columnDefinitions"]]
        row = dict(zip([c for c, _ in columns], table["rows"][0]["cells"], strict=True))
        assert (row["Ready"], row["Reason"]) == ("False", "ComputeNotFound")
        assert ("Message", 1) in columns  # -o wide
        assert row["Message"] == ready["message"]
        assert [c for c, p in columns if p == 0][:4] == ["Name", "Compute", "Template", "Ready"]
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", name)


def test_wide_attached_compute_columns_name_the_cluster_and_identity(control_plane):
    table = _table(control_plane, f"/apis/{GROUP}/{VERSION}/attachedcomputes")
    wide = [c["name"] for c in table["columnDefinitions"] if c.get("priority") == 1]
    assert wide == ["Cluster", "Identity", "Message"]
