"""The node tier: amlwire installed with Helm on a real node (kubelet + containerd) beside the test apiserver,
kube-controller-manager and kube-scheduler, talking to the Azure sandbox with the token the kubelet projects.

Skipped, with the command that enables it, where the machine cannot run a node (not root, no containerd...).
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from amlwire_devenv.cluster import ensure_namespace, install_crds, items_of
from amlwire_devenv.controlplane import ControlPlane, find_binaries
from amlwire_devenv.node import BASE_IMAGE, Images, Node, node_tier_missing
from amlwire_devenv.stack import INSTANCE_TYPE_CRD, NAMESPACES, OPERATOR_CLIENT_ID, OPERATOR_NAMESPACE, LocalStack
from amlwire_sandbox.ports import free_port
from tests.conftest import REPO, demo_world
from tests.sandbox.conftest import CLUSTER_ID

CHART = REPO / "charts" / "amlwire"
RELEASE = "amlwire"
FIGURES: dict[str, str] = {}  # measured here, printed at the end of the run (README: the node tier)


@dataclass
class NodeCluster:
    plane: ControlPlane
    node: Node
    stack: LocalStack
    image: str
    workdir: Path

    @property
    def kube(self) -> client.ApiClient:
        return self.stack.kube

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.plane.bin_dir / "helm"), *args, "--kubeconfig", str(self.plane.kubeconfig)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert not check or done.returncode == 0, done.stderr + done.stdout
        return done

    def kubectl(self, *args: str, check: bool = True) -> str:
        command = [str(self.plane.bin_dir / "kubectl"), "--kubeconfig", str(self.plane.kubeconfig), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert not check or done.returncode == 0, done.stderr + done.stdout
        return done.stdout + done.stderr

    def values(self, **overrides: Any) -> Path:
        """A user's values file for this cluster: the image imported into the node, amlwire's identity, and the
        sandbox as Azure (its CA in a ConfigMap, as for a private cloud)."""
        repository, tag = self.image.rsplit(":", 1)
        base = self.stack.sandbox.base_url
        values: dict[str, Any] = {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "azure": {
                "clientId": OPERATOR_CLIENT_ID,
                "tenantId": self.stack.tenant,
                "armEndpoint": base,
                "caBundle": {"configMap": "azure-ca", "key": "ca.crt"},
                "projectedToken": {"enabled": True, "authorityHost": base},
            },
            "operator": {
                "driftInterval": 600,
                "jobPollInterval": 1,
                "rolePropagationSeconds": 0,
                "federationPropagationSeconds": 0,
                "extraEnv": [
                    {"name": "AMLWIRE_RETRY_DELAY", "value": "0.3"},
                    {"name": "AMLWIRE_LRO_POLL_DELAY", "value": "0.2"},
                    {"name": "AMLWIRE_BLOCKED_RECHECK_DELAY", "value": "0.5"},
                    {"name": "AMLWIRE_AZURE_RETRY_TOTAL", "value": "0"},
                ],
            },
            # the host network: each replica's ports must be free on the machine
            "metrics": {"port": free_port()},
            "liveness": {"port": free_port()},
        }
        _merge(values, overrides)
        path = self.workdir / f"values-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def post_renderer(self, twin: bool = False) -> Path:
        """Pods on the host network (nothing leaves 127.0.0.1) reaching the apiserver on loopback: there is no
        kube-proxy behind the `kubernetes` Service's ClusterIP here. With `twin`, a second Deployment identical
        but for its ports: two replicas of one pod template cannot share a host network's ports on one node."""
        script = self.workdir / f"host-network{'-twin' if twin else ''}"
        port = self.plane.server.rsplit(":", 1)[1]
        twin_ports = (free_port(), free_port()) if twin else None
        script.write_text(
            f"#!{sys.executable}\n"
            "import copy, sys, yaml\n"
            f"port, twin = {port!r}, {twin_ports!r}\n"
            "docs = [d for d in yaml.safe_load_all(sys.stdin) if d]\n"
            "for d in list(docs):\n"
            "    if d.get('kind') != 'Deployment':\n"
            "        continue\n"
            "    pod = d['spec']['template']['spec']\n"
            "    pod['hostNetwork'] = True\n"
            "    pod['dnsPolicy'] = 'ClusterFirstWithHostNet'\n"
            "    for c in pod['containers']:\n"
            "        c.setdefault('env', []).extend([{'name': 'KUBERNETES_SERVICE_HOST', 'value': '127.0.0.1'},\n"
            "                                        {'name': 'KUBERNETES_SERVICE_PORT', 'value': port}])\n"
            "    if twin:\n"
            "        other = copy.deepcopy(d)\n"
            "        other['metadata']['name'] += '-twin'\n"
            "        c = other['spec']['template']['spec']['containers'][0]\n"
            "        for e in c['env']:\n"
            "            if e['name'] == 'AMLWIRE_METRICS_PORT':\n"
            "                e['value'] = str(twin[0])\n"
            "            if e['name'] == 'AMLWIRE_LIVENESS_ENDPOINT':\n"
            "                e['value'] = f'http://0.0.0.0:{twin[1]}/healthz'\n"
            "        for p, number in zip(c['ports'], twin):\n"
            "            p['containerPort'] = number\n"
            "        docs.append(other)\n"
            "yaml.safe_dump_all(docs, sys.stdout)\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        return script

    def install(
        self, *args: str, upgrade: bool = False, twin: bool = False, **values: Any
    ) -> subprocess.CompletedProcess[str]:
        verb = ("upgrade", "--install") if upgrade else ("install",)
        return self.helm(
            *verb,
            RELEASE,
            str(CHART),
            "-n",
            OPERATOR_NAMESPACE,
            "-f",
            str(self.values(**values)),
            "--post-renderer",
            str(self.post_renderer(twin)),
            *args,
        )

    def operator_pods(self) -> list[Any]:
        core = client.CoreV1Api(self.kube)
        selector = "app.kubernetes.io/name=amlwire"
        return list(core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=selector).items)

    def ready_pods(self) -> list[Any]:
        return [p for p in self.operator_pods() if p.metadata.deletion_timestamp is None and _ready(p)]

    def wait_rolled_out(self, replicas: int = 1, timeout: float = 180) -> list[Any]:
        def rolled_out() -> list[Any] | None:
            pods = [p for p in self.operator_pods() if p.metadata.deletion_timestamp is None]
            ready = [p for p in pods if _ready(p)]
            return ready if len(pods) == len(ready) == replicas else None

        found: list[Any] = self.until(rolled_out, timeout, f"{replicas} Ready operator pod(s)")
        return found

    def until(self, predicate: Any, timeout: float = 180, what: str = "") -> Any:
        """Poll `predicate` until truthy; else fail with what an admin would look at."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate()
            if found:
                return found
            time.sleep(1)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}:\n{self.diagnose()}")

    def diagnose(self) -> str:
        """What a user would look at when the operator pod is not Ready."""
        pods = [(p.metadata.name, p.status.phase, json.dumps(_statuses(p))[:600]) for p in self.operator_pods()]
        namespace = ("-n", OPERATOR_NAMESPACE)
        workloads = self.kubectl("get", "deploy,rs,pods", "-o", "wide", *namespace, check=False)
        workloads += self.kubectl("get", "pods", "-A", "-l", "sandbox.amlwire.io/job", "-o", "wide", check=False)
        workloads += self.kubectl("get", "attachedcomputes,amljobs", "-A", "-o", "wide", check=False)
        workloads += "\n".join(
            f"{o['metadata']['name']}: {json.dumps(o.get('status', {}).get('conditions'))[:700]}"
            for o in items_of(
                client.CustomObjectsApi(self.kube).list_cluster_custom_object("amlwire.io", "v1alpha1", "amljobs")
            )
        )
        workloads += "\nsandbox calls answered 404 or 5xx: " + str(
            [
                (c["method"], c["path"], c.get("status"))
                for c in self.stack.ctl.calls()
                if c.get("status") in (404,) or c.get("status", 0) >= 500
            ][-8:]
        )
        events = self.kubectl("get", "events", "--sort-by=.lastTimestamp", *namespace, check=False)[-3000:]
        logs = "\n".join(self.logs(p.metadata.name)[-2000:] for p in self.operator_pods())
        return (
            f"operator pods {pods}\n{workloads}\nevents:\n{events}\noperator logs:\n{logs}\n"
            f"kube-controller-manager:\n{self.plane.log_tail('kube-controller-manager', 10)}\n"
            f"kubelet:\n{self.node.log_tail('kubelet', 10)}"
        )

    def logs(self, pod: str) -> str:
        """The container's log as the kubelet wrote it (kubectl logs needs a node address the apiserver dials)."""
        folders = (self.node.workdir / "pods").glob(f"{OPERATOR_NAMESPACE}_{pod}_*/operator")
        return "".join(f.read_text(errors="replace") for folder in folders for f in sorted(folder.glob("*.log")))


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _statuses(pod: Any) -> list[dict[str, Any]]:
    return [client.ApiClient().sanitize_for_serialization(s) for s in pod.status.container_statuses or []]


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    bin_dir = find_binaries(REPO)
    missing = node_tier_missing(bin_dir)
    if missing:
        pytest.skip(missing)
    started = time.monotonic()
    images = Images((REPO / ".cache" / "node").resolve())
    image, archive = images.operator(REPO, Path(sys.executable))
    FIGURES["operator image"] = f"{images.size(image) / 1e6:.0f} MB ({image})"
    workdir = tmp_path_factory.mktemp("node")
    plane = ControlPlane(bin_dir, workdir=workdir / "kube", cluster=True).start()
    node = None
    stack = None
    try:
        node = Node(plane, bin_dir, [images.pause(), images.base_archive(), archive]).start()
        stack = LocalStack(
            plane, demo_world(lro=0.2, queued=0.2, running=0.5), workdir / "stack", project_operator_token=False
        )
        # the example's AKS cluster is this apiserver with its node: the AzureML sidecar logs in there for real
        stack.run_on_node(CLUSTER_ID, BASE_IMAGE)
        # what the AzureML extension and the admin set up; amlwire's own CRDs come with its chart
        install_crds(stack.kube, [yaml.safe_load(INSTANCE_TYPE_CRD.read_text())])
        for namespace in NAMESPACES:
            ensure_namespace(stack.kube, namespace)
        core = client.CoreV1Api(stack.kube)
        ca = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="azure-ca"), data={"ca.crt": Path(stack.sandbox.ca_file).read_text()}
        )
        core.create_namespaced_config_map(OPERATOR_NAMESPACE, ca)
        FIGURES["node tier set-up"] = (
            f"{time.monotonic() - started:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in images.timings.items())}"
            f"{', ' if images.timings else ''}node {node.timings['node start']:.0f} s)"
        )
        yield NodeCluster(plane, node, stack, image, workdir)
    finally:
        if stack is not None:
            stack.close()
        if node is not None:
            node.stop()
        plane.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("node tier figures")
        for name, figure in FIGURES.items():
            terminalreporter.write_line(f"{name}: {figure}")
