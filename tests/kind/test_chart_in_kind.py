"""The chart installed into a kind cluster, operator running as a pod (needs a container engine and kind).

Skipped, with the reason, where no container engine runs. The in-cluster operator is pointed at an ARM
endpoint on the pod's own loopback, so no test traffic leaves 127.0.0.1: it must come up, report on the
example AttachedCompute that it cannot get to Azure, and never crash-loop.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.conftest import REPO

IMAGE = "ghcr.io/amlwire/amlwire:kind-test"
# kind has no workload identity webhook, so the token fails first; with one, the loopback ARM endpoint does
OFFLINE_REASONS = ("AzureAuthenticationFailed", "AzureUnreachable")


def _engine_problem() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no container engine: docker is not installed"
    done = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return f"no container engine: `docker info` failed ({done.stderr.strip().splitlines()[-1][:200]})"
    return None


PROBLEM = _engine_problem()
pytestmark = [pytest.mark.kind, pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]


def run(*command: str, timeout: float = 600) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


@pytest.fixture(scope="module")
def image() -> str:
    run("docker", "build", "-t", IMAGE, str(REPO), timeout=1800)
    return IMAGE


def test_operator_pod_from_the_chart(kind_cluster, image):
    kind_cluster.load_docker_image(image)
    kubeconfig = str(kind_cluster.kubeconfig_path)
    helm = shutil.which("helm") or str(next((REPO / ".cache" / "testenv").glob("*/bin/helm")))
    repository, tag = image.rsplit(":", 1)
    run(
        helm,
        "install",
        "amlwire",
        str(REPO / "charts" / "amlwire"),
        "-n",
        "amlwire-system",
        "--create-namespace",
        "--kubeconfig",
        kubeconfig,
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "azure.clientId=5d0c9e3f-7a41-4b8e-9f2a-0c1d2e3f4a55",
        "--set",
        "azure.tenantId=72f988bf-86f1-41af-91ab-2d7cd011db47",
        "--set",
        "azure.armEndpoint=https://127.0.0.1:1",
        "--wait",
        "--timeout",
        "5m",
    )
    kind_cluster.kubectl("create", "namespace", "azureml")
    kind_cluster.kubectl("apply", "-f", str(REPO / "examples" / "attachedcompute.yaml"))
    deadline = time.monotonic() + 120
    reason = ""
    while time.monotonic() < deadline:
        reason = kind_cluster.kubectl(
            "get", "amlc", "robotics-gpu", "-o", "jsonpath={.status.conditions[?(@.type=='ClusterReady')].reason}"
        )
        if reason in OFFLINE_REASONS:
            break
        time.sleep(2)
    assert reason in OFFLINE_REASONS
    restarts = kind_cluster.kubectl(
        "get", "pods", "-n", "amlwire-system", "-o", "jsonpath={.items[0].status.containerStatuses[0].restartCount}"
    )
    assert restarts == "0"
