"""amlwire doctor against the sandbox and the apiserver: each field failure alone makes exactly its id fail."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from amlwire.cli.main import cli
from tests.e2e import harness as ids

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]


def run_doctor(harness, monkeypatch, *args: str, propagation: int = 0, **env: str) -> tuple[int, dict[str, Any]]:
    for key, value in {
        **harness.azure_environment(),
        "AMLWIRE_ARM_ENDPOINT": harness.sandbox.base_url,
        "AMLWIRE_CA_BUNDLE": str(harness.sandbox.ca_file),
        "AMLWIRE_KUBECONFIG": str(harness.plane.viewer_kubeconfig),
        "AMLWIRE_ROLE_PROPAGATION_SECONDS": str(propagation),
        **env,
    }.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, ["doctor", *args, "--output", "json"], catch_exceptions=False)
    try:
        return result.exit_code, json.loads(result.output)
    except json.JSONDecodeError:
        return result.exit_code, {"output": result.output}


def failing(report: dict[str, Any]) -> set[str]:
    return {r["id"] for r in report["results"] if r["status"] == "fail"}


def result_of(report: dict[str, Any], id_: str) -> dict[str, Any]:
    return next(r for r in report["results"] if r["id"] == id_)


@pytest.fixture
def healthy(harness, view_only_user):
    """A wired compute with a finished job and a labelled job pod; the operator stopped so faults stay."""
    name = harness.wired()
    job = harness.apply_job("amljob-validate.yaml")
    harness.wait_job(job)
    harness.stop()
    harness.core.create_namespaced_pod("azureml-jobs", pod("job-pod-ok", labelled=True))
    return name


def pod(name: str, labelled: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "train", "image": "x", "env": [{"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/t"}]}],
        "volumes": [{"name": "azure-identity-token", "emptyDir": {}}],
    }
    if not labelled:
        spec = {"containers": [{"name": "train", "image": "x"}]}
    labels = {"azure.workload.identity/use": "true"} if labelled else {}
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


@pytest.fixture(autouse=True)
def _no_pods_left(harness):
    yield
    for item in harness.core.list_namespaced_pod("azureml-jobs").items:
        harness.core.delete_namespaced_pod(item.metadata.name, "azureml-jobs", grace_period_seconds=0)


def test_a_healthy_world_passes_every_check_and_the_doctor_writes_nothing(harness, healthy, monkeypatch):
    mark = harness.ctl.mark()
    code, report = run_doctor(harness, monkeypatch, healthy)
    assert code == 0, report
    statuses = {r["id"]: r["status"] for r in report["results"]}
    assert set(statuses.values()) == {"pass"}, statuses
    assert sorted(statuses) == [f"F{i:02d}" for i in range(1, 20)] + ["F23"]
    assert harness.ctl.writes(since=mark) == []
    assert report["schemaVersion"] == "amlwire.io/doctor/v1"
    assert report["summary"] == {"pass": 20, "fail": 0, "warn": 0, "skip": 0}


def _drop_our_fic(harness, subject_end: str) -> dict[str, Any]:
    name, fic = next((n, f) for n, f in harness.fics().items() if f["subject"].endswith(subject_end))
    harness.ctl.delete(f"{ids.IDENTITY_ID}/federatedIdentityCredentials/{name}")
    return {"name": name, **fic}


def _annotate(harness, value: str) -> None:
    harness.core.patch_namespaced_service_account(
        "training", "azureml", {"metadata": {"annotations": {"azure.workload.identity/client-id": value}}}
    )


def _conflict_event(harness, compute: str) -> None:
    obj = harness.compute(compute)
    harness.core.create_namespaced_event(
        "default",
        {
            "metadata": {"generateName": "conflict-"},
            "type": "Warning",
            "reason": "FederatedCredentialWriteConflict",
            "message": "FederationReady: 409 ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
            "involvedObject": {
                "kind": "AttachedCompute",
                "name": compute,
                "uid": obj["metadata"]["uid"],
                "apiVersion": "amlwire.io/v1alpha1",
            },
        },
    )


def _sidecar_failure(harness, compute: str) -> None:
    job = harness.apply_job("amljob-validate.yaml")
    harness.custom.patch_namespaced_custom_object_status(
        "amlwire.io",
        "v1alpha1",
        "robotics",
        "amljobs",
        job,
        {
            "status": {
                "failure": {
                    "code": "ScriptExecution.StreamAccess.Authentication",
                    "message": "permission denied. Reason: Some(data-capability: failed to load certificate "
                    "/var/run/secrets/azureml/identity/cert.pfx: no such file or directory)",
                }
            }
        },
    )


def _workspace_role_removed(harness, compute: str) -> None:
    for key, value in harness.ctl.state()["resources"].items():
        if "/roleAssignments/" in key and value["properties"]["principalId"] == "9a0c7a52-0000-4000-8000-00000000aa01":
            harness.ctl.delete(key)


FAULTS: list[tuple[str, Callable[[Any, str], object], dict[str, Any]]] = [
    (
        "F01",
        lambda h, c: h.ctl.patch(
            ids.CLUSTER_ID, {"properties": {"oidcIssuerProfile": {"enabled": False, "issuerURL": None}}}
        ),
        {},
    ),
    (
        "F02",
        lambda h, c: h.ctl.patch(
            ids.CLUSTER_ID, {"properties": {"securityProfile": {"workloadIdentity": {"enabled": False}}}}
        ),
        {},
    ),
    ("F03", lambda h, c: h.ctl.delete(ids.IDENTITY_ID), {}),
    ("F04", lambda h, c: _drop_our_fic(h, ":training"), {}),
    (
        "F05",
        lambda h, c: (
            lambda f: h.ctl.create(
                f"{ids.IDENTITY_ID}/federatedIdentityCredentials/hand-made",
                ids.FIC_TYPE,
                {
                    "properties": {
                        "issuer": f["issuer"].rstrip("/"),
                        "subject": f["subject"],
                        "audiences": f["audiences"],
                    }
                },
            )
        )(_drop_our_fic(h, ":training")),
        {},
    ),
    (
        "F06",
        lambda h, c: h.ctl.patch(
            f"{ids.IDENTITY_ID}/federatedIdentityCredentials/"
            + next(n for n, f in h.fics().items() if f["subject"].endswith(":default")),
            {"properties": {"audiences": ["api://wrong"]}},
        ),
        {},
    ),
    (
        "F07",
        lambda h, c: [
            _drop_our_fic(h, ":training"),
            *[
                h.ctl.create(
                    f"{ids.IDENTITY_ID}/federatedIdentityCredentials/other-{i}",
                    ids.FIC_TYPE,
                    {
                        "properties": {
                            "issuer": "https://other/",
                            "subject": f"system:serviceaccount:x:{i}",
                            "audiences": ["api://AzureADTokenExchange"],
                        }
                    },
                )
                for i in range(19)
            ],
        ],
        {},
    ),
    ("F08", lambda h, c: _conflict_event(h, c), {}),
    ("F09", lambda h, c: h.core.delete_namespaced_service_account("training", "azureml"), {}),
    ("F10", lambda h, c: _annotate(h, "not-the-client-id"), {}),
    ("F11", lambda h, c: h.core.create_namespaced_pod("azureml-jobs", pod("job-pod-bare", labelled=False)), {}),
    ("F12", lambda h, c: h.ctl.delete(ids.EXTENSION_ID), {}),
    (
        "F13",
        lambda h, c: h.ctl.patch(
            ids.EXTENSION_ID,
            {"properties": {"configurationSettings": {"identityType": None, "userAssignedIdentityResourceId": None}}},
        ),
        {},
    ),
    (
        "F14",
        lambda h, c: h.ctl.patch(
            f"{ids.WORKSPACE_ID}/computes/k8s-gpu",
            {"identity": {"type": "SystemAssigned", "userAssignedIdentities": None}},
        ),
        {},
    ),
    (
        "F15",
        lambda h, c: [
            h.ctl.delete(k)
            for k, v in h.ctl.state()["resources"].items()
            if k.lower().startswith(ids.STORAGE_ID.lower() + "/providers/microsoft.authorization")
            and v["properties"]["principalId"] == ids.IDENTITY_PRINCIPAL
        ],
        {},
    ),
    ("F16", lambda h, c: None, {"propagation": 3600}),
    ("F17", lambda h, c: h.ctl.patch(ids.WORKSPACE_ID, {"properties": {"systemDatastoresAuthMode": "accesskey"}}), {}),
    ("F18", _workspace_role_removed, {}),
    ("F19", lambda h, c: h.ctl.patch(ids.CLUSTER_ID, {"properties": {"disableLocalAccounts": True}}), {}),
    ("F23", lambda h, c: _sidecar_failure(h, c), {}),
]


@pytest.mark.parametrize(("failure", "inject", "options"), FAULTS, ids=[f[0] for f in FAULTS])
def test_each_field_failure_alone_fails_exactly_its_check(harness, healthy, monkeypatch, failure, inject, options):
    inject(harness, healthy)
    code, report = run_doctor(harness, monkeypatch, healthy, **options)
    assert code == 1, report
    assert failing(report) == {failure}, [
        (r["id"], r["status"], r["evidence"]) for r in report["results"] if r["status"] != "pass"
    ]
    failed = result_of(report, failure)
    assert failed["evidence"], failed
    assert failed["fix"], failed


def test_fixes_name_the_real_resources(harness, healthy, monkeypatch):
    harness.ctl.patch(ids.CLUSTER_ID, {"properties": {"oidcIssuerProfile": {"enabled": False, "issuerURL": None}}})
    _annotate(harness, "wrong")
    _, report = run_doctor(harness, monkeypatch, healthy)
    assert result_of(report, "F01")["fix"] == "az aks update -g rg-aks -n aks-robotics --enable-oidc-issuer"
    assert (
        "kubectl annotate serviceaccount -n azureml training azure.workload.identity/client-id="
        "3c5b0f0e-1d6e-4a7b-9c2d-5e6f7a8b9c01 --overwrite" in result_of(report, "F10")["fix"]
    )
    assert {r["id"] for r in report["results"] if r["status"] == "skip"} >= {"F04", "F05", "F06", "F07"}


def test_manifest_and_flag_inputs(harness, healthy, monkeypatch, tmp_path):
    import yaml

    from tests.e2e.harness import compute_manifest

    manifest = tmp_path / "compute.yaml"
    manifest.write_text(yaml.safe_dump(compute_manifest("robotics-gpu")))
    code, report = run_doctor(harness, monkeypatch, "-f", str(manifest))
    assert code == 0, report
    assert result_of(report, "F08")["status"] == "skip"  # events exist only for a live AttachedCompute
    code, report = run_doctor(
        harness,
        monkeypatch,
        "--subscription",
        "6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60",
        "--workspace-group",
        "rg-ml",
        "--workspace",
        "mlw-robotics",
        "--cluster-group",
        "rg-aks",
        "--cluster",
        "aks-robotics",
        "--identity",
        ids.IDENTITY_ID,
        "--compute",
        "k8s-gpu",
        "--compute-namespace",
        "azureml-jobs",
        "--service-account",
        "azureml/training",
    )
    assert code == 0, report
    assert report["target"]["compute"] == "k8s-gpu"


def test_cannot_run_without_credentials_says_which(harness, view_only_user, monkeypatch):
    harness.wired()
    harness.stop()
    code, report = run_doctor(
        harness, monkeypatch, "robotics-gpu", AZURE_CLIENT_ID="00000000-0000-0000-0000-000000000000"
    )
    assert code == 2
    assert "could not get an Azure token" in report["output"]
    code, report = run_doctor(harness, monkeypatch, "robotics-gpu", AMLWIRE_ARM_ENDPOINT="https://127.0.0.1:9")
    assert code == 2
    assert "could not reach Azure" in report["output"]


def test_a_target_that_does_not_exist_cannot_run(harness, view_only_user, monkeypatch):
    code, report = run_doctor(harness, monkeypatch, "no-such-compute")
    assert code == 2
    assert "AttachedCompute no-such-compute does not exist" in report["output"]


def test_table_output(harness, healthy, monkeypatch):
    for key, value in {
        **harness.azure_environment(),
        "AMLWIRE_ARM_ENDPOINT": harness.sandbox.base_url,
        "AMLWIRE_CA_BUNDLE": str(harness.sandbox.ca_file),
        "AMLWIRE_KUBECONFIG": str(harness.plane.viewer_kubeconfig),
        "AMLWIRE_ROLE_PROPAGATION_SECONDS": "0",
    }.items():
        monkeypatch.setenv(key, value)
    harness.ctl.delete(ids.EXTENSION_ID)
    result = CliRunner().invoke(cli, ["doctor", healthy])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    chain = next(line for line in lines if line.startswith("cluster "))
    assert "extension ✗" in chain
    assert "cluster ✓" in chain
    failing = next(i for i, line in enumerate(lines) if "F12" in line)
    assert lines[failing].startswith("✗ F12 AzureML extension installed and healthy")
    fix = lines[lines.index("  fix:", failing) + 1]
    assert "az k8s-extension create" in fix
    assert "--cluster-name aks-robotics" in fix  # the whole command on one line, not wrapped in a cell
    assert "checks passed" in result.output  # folded
    assert "AKS OIDC issuer" not in result.output
    assert "1 failing: F12" in result.output
    verbose = CliRunner().invoke(cli, ["doctor", healthy, "-v"])
    assert "AKS OIDC issuer enabled" in verbose.output  # a pass named by what it verified
    assert "AKS OIDC issuer disabled" not in verbose.output
