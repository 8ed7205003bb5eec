"""The Helm chart: lint clean, installs into the apiserver, and its RBAC is exactly what the operator uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.identity import WorkloadIdentityCredential
from kubernetes import client

from amlwire.handlers.operator import BackgroundOperator
from amlwire.main import build_services
from amlwire_devenv.controlplane import find_binaries
from amlwire_devenv.stack import FIC_TYPE, OPERATOR_CLIENT_ID, operator_environment
from tests.conftest import REPO, wait_for

pytestmark = [pytest.mark.kube, pytest.mark.sandbox]
CHART = REPO / "charts" / "amlwire"
NAMESPACE, RELEASE = "amlwire-chart", "amlwire"
CHART_USER = f"system:serviceaccount:{NAMESPACE}:amlwire"
VALUES = [
    "--set",
    f"azure.clientId={OPERATOR_CLIENT_ID}",
    "--set",
    "azure.tenantId=72f988bf-86f1-41af-91ab-2d7cd011db47",
]


def helm(*args: str, kubeconfig: Path | None = None) -> str:
    command = [str(find_binaries(REPO) / "helm"), *args, *(["--kubeconfig", str(kubeconfig)] if kubeconfig else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout + done.stderr


def rendered(*extra: str) -> list[dict[str, Any]]:
    out = helm("template", RELEASE, str(CHART), "-n", NAMESPACE, *VALUES, *extra)
    return [d for d in yaml.safe_load_all(out) if d]


def test_helm_lint_is_clean():
    out = helm("lint", str(CHART), "--strict", *VALUES)
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out
    assert "[INFO]" not in out


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (["operator.logFormat=xml"], "logFormat"),
        (["replicaCount=2"], "replicaCount"),  # without peering two replicas would both act
        (["operator.armShare=0"], "armShare"),
    ],
)
def test_values_schema_refuses_bad_values(values, named):
    sets = [arg for value in values for arg in ("--set", value)]
    done = subprocess.run(
        [str(find_binaries(REPO) / "helm"), "template", RELEASE, str(CHART), *VALUES, *sets],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert named in done.stderr


def test_two_replicas_with_peering_and_the_doctor_role_can_be_left_out():
    kinds = [d["kind"] for d in rendered("--set", "replicaCount=2", "--set", "peering.enabled=true")]
    assert kinds.count("ClusterRole") == 2  # the operator's and the doctor's
    assert [d["kind"] for d in rendered("--set", "doctor.rbac=false")].count("ClusterRole") == 1


def test_pod_runs_locked_down_with_workload_identity():
    deployment = next(d for d in rendered() if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two active replicas without peering
    account = next(d for d in rendered() if d["kind"] == "ServiceAccount")
    assert account["metadata"]["annotations"]["azure.workload.identity/client-id"] == OPERATOR_CLIENT_ID


def test_peering_makes_a_second_replica_safe():
    documents = rendered("--set", "peering.enabled=true", "--set", "replicaCount=2")
    kinds = {d["kind"] for d in documents}
    assert "ClusterKopfPeering" in kinds
    assert "CustomResourceDefinition" not in kinds  # the CRD is in crds/: Helm installs it before the object
    assert (CHART / "crds" / "clusterkopfpeerings.kopf.dev.yaml").is_file()
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AMLWIRE_PEERING"] == "amlwire"
    assert "strategy" not in deployment["spec"]
    role = next(d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"] == RELEASE)
    assert any("clusterkopfpeerings" in r["resources"] for r in role["rules"])


def test_helm_installs_and_upgrades_with_peering_on(harness):
    """Not only `helm template`: a real install and upgrade into the apiserver, with peering on."""
    kubeconfig = harness.plane.kubeconfig
    namespace, release = "amlwire-peering", "amlwire-peered"
    peering = [*VALUES, "--set", "peering.enabled=true", "--set", "replicaCount=2", "--set", "peering.name=fleet-a"]
    try:
        helm("install", release, str(CHART), "-n", namespace, "--create-namespace", *peering, kubeconfig=kubeconfig)
        custom = client.CustomObjectsApi(harness.kube)
        found = custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "fleet-a")
        assert found["metadata"]["name"] == "fleet-a"
        helm(
            "upgrade",
            release,
            str(CHART),
            "-n",
            namespace,
            *peering,
            "--set",
            "peering.priority=200",
            kubeconfig=kubeconfig,
        )
        apps = client.AppsV1Api(harness.kube)
        deployment = apps.read_namespaced_deployment(release, namespace)
        env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
        assert env["AMLWIRE_PRIORITY"] == "200"
        assert "revision: 2" in helm("status", release, "-n", namespace, kubeconfig=kubeconfig).lower()
    finally:
        subprocess.run(
            [str(find_binaries(REPO) / "helm"), "uninstall", release, "-n", namespace, "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            timeout=120,
            check=False,
        )


def test_crds_in_the_chart_are_the_generated_ones():
    for path in (CHART / "crds").glob("*.yaml"):
        assert path.read_text() == (REPO / "crds" / path.name).read_text()


def _granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _used(records: list[dict[str, Any]]) -> tuple[set[tuple[str, str, str]], list[str]]:
    used, forbidden = set(), []
    for record in records:
        if record["user"]["username"] != CHART_USER or "objectRef" not in record:
            continue
        ref = record["objectRef"]
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        if record.get("responseStatus", {}).get("code") == 403:
            forbidden.append(f"{record['verb']} {resource} {ref.get('name', '')}: {record['responseStatus']}")
        used.add((ref.get("apiGroup", ""), resource, record["verb"]))
        if record["verb"] == "patch" and record.get("responseStatus", {}).get("code") == 201:
            used.add((ref.get("apiGroup", ""), resource, "create"))  # server-side apply that created it
    return used, forbidden


def token_of(request: client.AuthenticationV1TokenRequest) -> str:
    assert request.status is not None
    return str(request.status.token)


def _tokens(core: client.CoreV1Api, tmp: Path, plane: Any) -> tuple[Path, Path]:
    api = core.create_namespaced_service_account_token(
        "amlwire",
        NAMESPACE,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)),
    )
    azure = core.create_namespaced_service_account_token(
        "amlwire",
        NAMESPACE,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=["api://AzureADTokenExchange"], expiration_seconds=3600)
        ),
    )
    kubeconfig = tmp / "chart-sa.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {"name": "local", "cluster": {"server": plane.server, "certificate-authority": str(plane.ca_file)}}
                ],
                "users": [{"name": "sa", "user": {"token": token_of(api)}}],
                "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
            }
        )
    )
    token_file = tmp / "chart-azure-token"
    token_file.write_text(token_of(azure))
    return kubeconfig, token_file


def test_installed_chart_runs_a_whole_lifecycle_with_exactly_its_permissions(harness, tmp_path):
    out = helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--create-namespace",
        *VALUES,
        kubeconfig=harness.plane.kubeconfig,
    )
    assert "STATUS: deployed" in out
    apps = client.AppsV1Api(harness.kube)
    assert apps.read_namespaced_deployment(RELEASE, NAMESPACE).spec.template.spec.service_account_name == "amlwire"
    rbac = client.RbacAuthorizationV1Api(harness.kube)
    role_doc, doctor_doc = (_rules(rbac.read_cluster_role(name)) for name in (RELEASE, f"{RELEASE}-doctor"))
    harness.ctl.create(
        f"{harness.operator_identity_id}/federatedIdentityCredentials/amlwire-chart",
        FIC_TYPE,
        {
            "properties": {
                "issuer": harness.plane.service_account_issuer,
                "subject": CHART_USER,
                "audiences": ["api://AzureADTokenExchange"],
            }
        },
        {"backdated": True},
    )
    kubeconfig, token_file = _tokens(harness.core, tmp_path, harness.plane)
    settings = harness.settings(kubeconfig=kubeconfig)
    credential = WorkloadIdentityCredential(
        tenant_id=harness.tenant,
        client_id=OPERATOR_CLIENT_ID,
        token_file_path=str(token_file),
        authority=harness.sandbox.base_url,
        connection_verify=str(harness.sandbox.ca_file),
    )
    harness.operator = BackgroundOperator(settings, build_services(settings, credential)).start()
    try:
        compute = harness.apply_compute("robotics-gpu", compute__namespace="aml-chart-jobs")  # created by amlwire
        harness.wait_ready(compute)
        job = harness.apply_job("amljob-train.yaml")
        harness.wait_job(job)
        doctor = _doctor_as_the_chart(harness, compute, kubeconfig, token_file)
        assert doctor.returncode in (0, 1), doctor.stderr  # 2 would be "could not run" (e.g. RBAC refused)
        assert json.loads(doctor.stdout)["target"]["attachedCompute"] == compute
        harness.delete_job(job)
        wait_for(
            lambda: (
                not any(
                    i["metadata"]["name"] == job
                    for i in harness.custom.list_namespaced_custom_object(
                        "amlwire.io", "v1alpha1", "robotics", "amljobs"
                    )["items"]
                )
            ),
            timeout=30,
            what="job deleted",
        )
        harness.delete_compute(compute)
        wait_for(
            lambda: (
                not harness.custom.list_cluster_custom_object("amlwire.io", "v1alpha1", "attachedcomputes")["items"]
            ),
            timeout=30,
            what="compute deleted",
        )
    finally:
        harness.stop()
        helm("uninstall", RELEASE, "-n", NAMESPACE, kubeconfig=harness.plane.kubeconfig)
    used, forbidden = _used(harness.plane.audit_records())
    assert forbidden == []
    unused = _granted(role_doc) - used
    assert unused == set(), f"the ClusterRole grants what amlwire never used: {sorted(unused)}"
    unused_by_doctor = _granted(doctor_doc) - used
    assert unused_by_doctor == set(), f"the doctor's role grants what it never used: {sorted(unused_by_doctor)}"


def _rules(role: Any) -> dict[str, Any]:
    return {"rules": [{"apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs} for r in role.rules]}


def _doctor_as_the_chart(harness: Any, compute: str, kubeconfig: Path, token_file: Path) -> Any:
    """`amlwire doctor` as the NOTES print it: in the pod, as its ServiceAccount, with its Azure identity.

    A pod of the AzureML extension's sidecar sits in the compute's namespace so the doctor reads its log
    (the test apiserver has no kubelet: the read is answered, not refused)."""
    namespace = harness.compute(compute)["spec"]["compute"]["namespace"]
    harness.core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "sidecar-probe"},
            "spec": {"containers": [{"name": "data-capability", "image": "mcr.microsoft.com/azureml/dc:1"}]},
        },
    )
    environment = operator_environment(harness, kubeconfig=kubeconfig)
    environment["AZURE_FEDERATED_TOKEN_FILE"] = str(token_file)
    try:
        return subprocess.run(
            [sys.executable, "-m", "amlwire.cli.main", "doctor", compute, "-o", "json"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        harness.core.delete_namespaced_pod("sidecar-probe", namespace)


def test_the_metrics_port_is_declared_only_when_metrics_are_on():
    def ports(*extra: str) -> list[str]:
        deployment = next(d for d in rendered(*extra) if d["kind"] == "Deployment")
        return [p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]]

    assert ports() == ["metrics", "health"]
    assert ports("--set", "metrics.enabled=false") == ["health"]


def test_without_the_webhook_the_chart_projects_the_token_and_sets_azures_variables_itself():
    default = next(d for d in rendered() if d["kind"] == "Deployment")["spec"]["template"]
    assert "azure-identity-token" not in {v["name"] for v in default["spec"]["volumes"]}  # the webhook's job
    deployment = next(d for d in rendered("--set", "azure.projectedToken.enabled=true") if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    assert "azure.workload.identity/use" not in pod["metadata"]["labels"]  # no webhook to inject it twice
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "azure-identity-token"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "api://AzureADTokenExchange"
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AZURE_CLIENT_ID"] == OPERATOR_CLIENT_ID
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == "/var/run/secrets/azure/tokens/azure-identity-token"
    assert env["AZURE_AUTHORITY_HOST"] == "https://login.microsoftonline.com/"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["azure-identity-token"]["readOnly"] is True
