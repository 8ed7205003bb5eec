"""amlwire installed the way users install it: `helm install` on a real node, the operator's Azure login from the
token the kubelet projects, and what admins then do to it (delete its pod, upgrade, scale out, uninstall)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client

from amlwire_devenv.chaos import stack_problems
from amlwire_devenv.cluster import as_object
from amlwire_devenv.stack import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE
from tests.conftest import REPO, wait_for
from tests.node.conftest import FIGURES, NodeCluster
from tests.sandbox.conftest import IDENTITY_ID, IDENTITY_PRINCIPAL, WORKSPACE_ID

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.sandbox, pytest.mark.timeout(900)]
GROUP, VERSION = "amlwire.io", "v1alpha1"


def condition(cluster: NodeCluster, name: str, kind: str = "Ready") -> dict[str, Any] | None:
    custom = client.CustomObjectsApi(cluster.kube)
    found = as_object(custom.get_cluster_custom_object(GROUP, VERSION, "attachedcomputes", name))
    return next((c for c in found.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def ready(cluster: NodeCluster, name: str) -> bool:
    found = condition(cluster, name)
    return bool(found and found["status"] == "True")


def apply_compute(cluster: NodeCluster, name: str, compute: str) -> None:
    manifest = yaml.safe_load((REPO / "examples" / "attachedcompute.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["compute"]["name"] = compute
    path = cluster.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    cluster.kubectl("apply", "-f", str(path))


def process_of(cluster: NodeCluster, pod: Any) -> int:
    """The host PID of the pod's operator container, as containerd runs it."""
    container = pod.status.container_statuses[0].container_id.removeprefix("containerd://")
    for line in cluster.node.ctr("tasks", "list").splitlines()[1:]:
        task, pid, *_ = line.split()
        if task == container:
            return int(pid)
    raise AssertionError(f"no task for {container}")


@pytest.fixture(scope="module")
def installed(node_cluster: NodeCluster) -> NodeCluster:
    node_cluster.install()
    [pod] = node_cluster.wait_rolled_out()
    started = pod.status.start_time
    ready_at = next(c.last_transition_time for c in pod.status.conditions if c.type == "Ready")
    FIGURES["operator pod start to Ready"] = f"{(ready_at - started).total_seconds():.0f} s"
    return node_cluster


def test_helm_install_runs_the_operator_locked_down_from_an_image_of_the_operator_only(installed):
    [pod] = installed.ready_pods()
    pid = process_of(installed, pod)
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert status["Uid"].split()[:2] == ["10001", "10001"]
    root_mount = next(
        line.split() for line in Path(f"/proc/{pid}/mounts").read_text().splitlines() if line.split()[1] == "/"
    )
    assert "ro" in root_mount[3].split(",")
    package = next(Path(f"/proc/{pid}/root/venv/lib").glob("python3*/site-packages/amlwire"))
    modules = {p.name for p in package.iterdir()}
    assert "handlers" in modules
    site = {p.name.lower() for p in package.parent.iterdir()}  # the image holds the operator only
    assert not site & {"amlwire_sandbox", "amlwire_devenv", "trustme"}  # (PyJWT comes with msal)
    [metadata] = package.parent.glob("amlwire-*.dist-info/METADATA")
    requires = [line for line in metadata.read_text().splitlines() if line.startswith("Requires-Dist:")]
    runtime = [line for line in requires if "extra ==" not in line]
    assert not [line for line in runtime if any(n in line.lower() for n in ("trustme", "pyjwt"))]


def test_the_example_compute_becomes_ready_on_the_token_the_kubelet_projects(installed):
    apply_compute(installed, "robotics-gpu", "k8s-gpu")
    installed.until(lambda: ready(installed, "robotics-gpu"), what="robotics-gpu Ready")
    assert stack_problems(installed.stack, IDENTITY_ID, IDENTITY_PRINCIPAL) == []
    assert not installed.stack.token_file.exists()  # no test wrote a token: the kubelet projected it
    issuer = installed.plane.service_account_issuer
    jwks = requests.get(f"{issuer}/openid/v1/jwks", verify=str(installed.plane.ca_file), timeout=10).json()
    exchanges = installed.stack.ctl.exchanges()
    subject = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
    assert {(e["issuer"], e["subject"]) for e in exchanges} == {(issuer, subject)}
    assert {e["kid"] for e in exchanges} <= {key["kid"] for key in jwks["keys"]}


def apply_validation(cluster: NodeCluster, name: str) -> None:
    manifest = yaml.safe_load((REPO / "examples" / "amljob-validate.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"]["delivery"] = "Mount"  # read through the AzureML sidecar
    custom = client.CustomObjectsApi(cluster.kube)
    custom.create_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", manifest)


def job_status(cluster: NodeCluster, name: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(cluster.kube)
    found = as_object(custom.get_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", name))
    return found.get("status") or {}


def test_the_sidecar_reads_storage_through_the_real_exchange_and_fails_without_its_credential(installed):
    """The AzureML sidecar's login runs as pods on the node: kubelet-projected tokens, exchanged at Entra, the
    datastore read on the blob plane. With a credential deleted behind amlwire's back, Entra refuses it."""
    ctl = installed.stack.ctl
    before = len(ctl.exchanges())
    apply_validation(installed, "validate-through-the-sidecar")
    done = installed.until(
        lambda: job_status(installed, "validate-through-the-sidecar").get("amlStatus") in ("Completed", "Failed"),
        what="the validation finished",
    )
    assert done
    assert job_status(installed, "validate-through-the-sidecar")["amlStatus"] == "Completed"
    sidecar = [e for e in ctl.exchanges()[before:] if e["subject"].startswith("system:serviceaccount:azureml:")]
    assert {e["subject"] for e in sidecar} == {
        "system:serviceaccount:azureml:default",
        "system:serviceaccount:azureml:training",
    }
    assert {e["issuer"] for e in sidecar} == {installed.plane.service_account_issuer}

    fics = installed.stack.ctl.resources_under(f"{IDENTITY_ID}/federatedIdentityCredentials/")
    [default] = [i for i, f in fics.items() if f["properties"]["subject"] == "system:serviceaccount:azureml:default"]
    ctl.delete(default)  # behind amlwire's back
    apply_validation(installed, "validate-without-a-credential")

    def failed() -> dict[str, Any] | None:
        return job_status(installed, "validate-without-a-credential").get("failure")

    failure = installed.until(failed, what="the validation failed")
    assert failure["code"] == "ScriptExecution.StreamAccess.Authentication"
    assert "AADSTS70021" in failure["message"]
    assert "Assertion Audience: '['api://AzureADTokenExchange']'" in failure["message"]  # Entra's answer to the pod
    assert "azureml:default" in failure["message"] or "azureml:default" in failure["hint"], failure


def apply_command(cluster: NodeCluster, name: str, command: str) -> None:
    manifest = yaml.safe_load((REPO / "examples" / "amljob-command.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["command"] = command
    custom = client.CustomObjectsApi(cluster.kube)
    custom.create_namespaced_custom_object(GROUP, VERSION, "robotics", "amljobs", manifest)


def test_a_command_job_runs_as_a_pod_on_the_node_and_its_outputs_reach_storage(installed):
    code = "import sys; open('outputs/smoke.txt', 'w').write(' '.join(sys.argv[1:]))"
    write = f'python3 -c "{code}" --steps ${{{{inputs.steps}}}}'
    apply_command(installed, "command-on-the-node", write)
    apply_command(installed, "command-that-exits-3", "echo about to fail; exit 3 # ${{inputs.steps}}")

    def finished(name: str) -> dict[str, Any] | None:
        status = job_status(installed, name)
        return status if status.get("amlStatus") in ("Completed", "Failed") else None

    done = installed.until(lambda: finished("command-on-the-node"), what="the command job finished")
    assert done["amlStatus"] == "Completed", done
    artifacts = f"ExperimentRun/dcid.{done['amlJobName']}/outputs/smoke.txt"
    assert any(name.endswith(artifacts) for name in installed.stack.ctl.blob_names()), artifacts
    failed = installed.until(lambda: finished("command-that-exits-3"), what="the failing command finished")
    assert failed["amlStatus"] == "Failed"
    assert "exited with status code 3" in failed["failure"]["message"]
    assert "about to fail" in failed["failure"]["message"]  # the end of its log, as AML shows it


def test_a_new_pod_finishes_what_a_deleted_one_started_without_duplicates(installed):
    core = client.CoreV1Api(installed.kube)
    [pod] = installed.ready_pods()
    since = installed.stack.ctl.mark()
    apply_compute(installed, "robotics-gpu-b", "k8s-gpu-b")
    wait_for(
        lambda: any(c["method"] in ("PUT", "PATCH") for c in installed.stack.ctl.calls(since)),
        timeout=60,
        what="the first Azure write",
    )
    core.delete_namespaced_pod(pod.metadata.name, OPERATOR_NAMESPACE, grace_period_seconds=0)
    [replacement] = installed.wait_rolled_out()
    assert replacement.metadata.name != pod.metadata.name
    installed.until(lambda: ready(installed, "robotics-gpu-b"), what="robotics-gpu-b Ready")
    assert stack_problems(installed.stack, IDENTITY_ID, IDENTITY_PRINCIPAL) == []


def test_helm_upgrade_with_changed_values_rolls_out(installed):
    [before] = installed.ready_pods()
    installed.install(upgrade=True, operator={"logFormat": "json"})
    [after] = installed.wait_rolled_out()
    assert after.metadata.name != before.metadata.name
    lines = wait_for(lambda: installed.logs(after.metadata.name).splitlines(), timeout=60, what="its log")
    records = [json.loads(line.split(" ", 3)[-1]) for line in lines]  # CRI log lines: time stream tag message
    assert all(record["message"] for record in records)


def test_two_replicas_with_peering_keep_one_active(installed):
    """The chart's pod twice (one node's host network cannot hold two replicas' ports, so the twin differs in
    those): kopf pauses every peer of a tie, so each replica must take its own priority."""
    installed.install(upgrade=True, twin=True, peering={"enabled": True})
    pods = installed.wait_rolled_out(replicas=2)
    custom = client.CustomObjectsApi(installed.kube)

    def peers() -> dict[str, Any] | None:
        found = custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "amlwire")
        return found.get("status") if len(found.get("status") or {}) == 2 else None

    priorities = {peer["priority"] for peer in wait_for(peers, timeout=60, what="two peers").values()}
    assert len(priorities) == 2  # kopf pauses every operator of a tie

    def acting() -> list[str]:
        """kopf starts a mandatory peer paused: a replica acts when its last word on peering is that it resumed
        (one that resumed alone pauses again when a higher-priority peer appears)."""
        found = []
        for pod in pods:
            lines = [x for x in installed.logs(pod.metadata.name).splitlines() if "operations" in x]
            said = [x for x in lines if "Resuming operations" in x or "Pausing operations in favour of" in x]
            if said and "Resuming operations" in said[-1]:
                found.append(pod.metadata.name)
        return found if len(found) == 1 else []

    time.sleep(3)  # each has seen the other's record (kopf re-evaluates on every change of the peering object)
    [active] = installed.until(acting, timeout=60, what="one replica acting")
    assert not any("Pausing all operators" in installed.logs(p.metadata.name) for p in pods)
    seen = {p.metadata.name: len(installed.logs(p.metadata.name)) for p in pods}
    apply_compute(installed, "robotics-gpu-c", "k8s-gpu-c")
    installed.until(lambda: ready(installed, "robotics-gpu-c"), what="robotics-gpu-c Ready")
    since = {name: installed.logs(name)[offset:] for name, offset in seen.items()}
    handled = [name for name, log in since.items() if "'reconcile_attached_compute'" in log]
    assert handled == [active]  # the standby reconciled nothing


def test_deleting_a_namespace_with_running_jobs_cancels_them_and_the_namespace_goes(installed):
    """kube-controller-manager deletes the namespace's AmlJobs; amlwire's finalizer cancels each AML job first."""
    installed.stack.ctl.timing(job={"queuedSeconds": 0.2, "runningSeconds": 900})
    core = client.CoreV1Api(installed.kube)
    core.create_namespace({"metadata": {"name": "robotics-short-lived"}})
    manifest = yaml.safe_load((REPO / "examples" / "amljob-command.yaml").read_text())
    manifest["metadata"]["namespace"] = "robotics-short-lived"
    manifest["spec"]["command"] = "sleep 900 # ${{inputs.steps}}"  # a pod on the node that keeps running
    compute = "robotics-gpu"
    custom = client.CustomObjectsApi(installed.kube)
    found = custom.get_cluster_custom_object(GROUP, VERSION, "attachedcomputes", compute)
    found["spec"]["jobs"]["allowedNamespaces"].append("robotics-short-lived")
    custom.replace_cluster_custom_object(GROUP, VERSION, "attachedcomputes", compute, found)
    for name in ("smoke-1", "smoke-2"):
        manifest["metadata"]["name"] = name
        custom.create_namespaced_custom_object(GROUP, VERSION, "robotics-short-lived", "amljobs", manifest)

    def running() -> list[dict[str, Any]]:
        ours = [j for j in installed.stack.ctl.jobs() if "robotics-short-lived" in json.dumps(j["tags"])]
        return ours if len(ours) == 2 and all(j["status"] == "Running" for j in ours) else []

    jobs = installed.until(running, what="both AML jobs Running")
    core.delete_namespace("robotics-short-lived")

    def gone() -> bool:
        try:
            core.read_namespace("robotics-short-lived")
        except client.ApiException as error:
            return error.status == 404
        return False

    installed.until(gone, what="the namespace gone")
    statuses = {j["name"]: j["status"] for j in installed.stack.ctl.jobs() if j["id"] in {x["id"] for x in jobs}}
    assert set(statuses.values()) <= {"CancelRequested", "Canceled"}, statuses


def test_helm_uninstall_leaves_the_custom_resources_and_azure(installed):
    computes_before = sorted(installed.stack.ctl.resources_under(f"{WORKSPACE_ID}/computes/"))
    assert {"k8s-gpu", "k8s-gpu-b"} <= {c.rsplit("/", 1)[1] for c in computes_before}
    installed.helm("uninstall", "amlwire", "-n", OPERATOR_NAMESPACE, "--wait")
    wait_for(lambda: not installed.operator_pods(), timeout=120, what="the operator's pods gone")
    custom = client.CustomObjectsApi(installed.kube)
    names = {
        c["metadata"]["name"] for c in custom.list_cluster_custom_object(GROUP, VERSION, "attachedcomputes")["items"]
    }
    assert {"robotics-gpu", "robotics-gpu-b"} <= names
    assert ready(installed, "robotics-gpu")  # its status stays what it was
    computes_after = sorted(installed.stack.ctl.resources_under(f"{WORKSPACE_ID}/computes/"))
    assert computes_after == computes_before
