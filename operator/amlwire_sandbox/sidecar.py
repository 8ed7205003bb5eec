"""The AzureML data-capability sidecar's storage login, run for real where the compute's cluster has a node
(rule data.sidecar-pod).

For each service account the extension's sidecar uses, a pod runs in its namespace as that account: the kubelet
projects its token for api://AzureADTokenExchange, the pod exchanges it at the sandbox's Entra for a Storage
token as the extension's identity, and lists the workspace's default datastore container on the sandbox's blob
plane. A pod that fails ends the job with StreamAccess.Authentication and the pod's own error (its termination
message), exactly when the exchange or the read fails.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from amlwire_sandbox.nodepods import core, create, delete_pod, node_pod

CA_CONFIG_MAP = "amlwire-sandbox-ca"
LABEL = "sandbox.amlwire.io/data-capability"

# stdlib only: it runs on the node's base image
SCRIPT = r"""
import json, os, ssl, sys, http.client, urllib.error, urllib.parse, urllib.request

def fail(message):
    with open("/dev/termination-log", "w") as log:
        log.write(message)
    print(message, file=sys.stderr)
    sys.exit(1)

context = ssl.create_default_context(cafile="/etc/sandbox-ca/ca.crt")
with open(os.environ["AZURE_FEDERATED_TOKEN_FILE"]) as f:
    assertion = f.read().strip()
form = urllib.parse.urlencode({
    "client_id": os.environ["AZURE_CLIENT_ID"],
    "grant_type": "client_credentials",
    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    "client_assertion": assertion,
    "scope": "https://storage.azure.com/.default",
}).encode()
url = f"{os.environ['AZURE_AUTHORITY_HOST'].rstrip('/')}/{os.environ['AZURE_TENANT_ID']}/oauth2/v2.0/token"
try:
    with urllib.request.urlopen(url, form, context=context, timeout=20) as answer:
        token = json.load(answer)["access_token"]
except urllib.error.HTTPError as error:
    fail(json.load(error).get("error_description", str(error)))
except OSError as error:
    fail(f"token exchange at {url} failed: {error}")
connection = http.client.HTTPSConnection("127.0.0.1", int(os.environ["BLOB_PORT"]), context=context, timeout=20)
connection.request(
    "GET",
    f"/{os.environ['BLOB_CONTAINER']}?restype=container&comp=list&maxresults=1",
    headers={
        "Host": os.environ["BLOB_HOST"],
        "Authorization": f"Bearer {token}",
        "x-ms-version": "2021-08-06",
    },
)
answer = connection.getresponse()
body = answer.read().decode(errors="replace")
if answer.status != 200:
    code = answer.getheader("x-ms-error-code") or str(answer.status)
    fail(f"{code}: reading container {os.environ['BLOB_CONTAINER']} failed ({answer.status})")
print("data-capability: storage reachable as the extension's identity")
"""


@dataclass(frozen=True)
class SidecarTarget:
    """Who the sidecar logs in as and what it reads."""

    client_id: str
    tenant: str
    authority: str
    blob_host: str  # <account>.blob.<suffix>:<port>
    blob_port: int
    container: str
    ca_pem: str
    image: str


def pod_name(job: str, account: str) -> str:
    digest = hashlib.sha256(f"{job}/{account}".encode()).hexdigest()[:10]
    return f"data-capability-{digest}"


def start(kubeconfig: str, job: str, accounts: list[str], target: SidecarTarget) -> list[list[str]]:
    """One pod per NAMESPACE:NAME service account; [[namespace, pod], ...]. Idempotent."""
    api = core(kubeconfig)
    started = []
    for account in accounts:
        namespace, name = account.split(":", 1)
        create(api.create_namespaced_service_account, namespace, {"metadata": {"name": name}})
        ca = {"metadata": {"name": CA_CONFIG_MAP}, "data": {"ca.crt": target.ca_pem}}
        create(api.create_namespaced_config_map, namespace, ca)
        pod = pod_name(job, account)
        create(api.create_namespaced_pod, namespace, _pod(pod, name, target))
        started.append([namespace, pod])
    return started


def outcome(kubeconfig: str, pods: list[list[str]]) -> tuple[bool, str | None]:
    """(finished, the first failure's message) of the sidecar pods."""
    api = core(kubeconfig)
    problems = []
    for namespace, name in pods:
        try:
            pod = api.read_namespaced_pod(name, namespace, _request_timeout=5)
        except client.ApiException as error:
            if error.status == 404:
                problems.append(f"the data-capability pod {namespace}/{name} was deleted")
                continue
            raise
        phase = pod.status.phase if pod.status else None
        if phase not in ("Succeeded", "Failed"):
            return False, None
        if phase == "Failed":
            problems.append(_termination_message(pod) or f"the data-capability pod {namespace}/{name} failed")
    return True, (problems[0] if problems else None)


def remove(kubeconfig: str, pods: list[list[str]]) -> None:
    for namespace, name in pods:
        delete_pod(kubeconfig, namespace, name)


def _termination_message(pod: Any) -> str | None:
    for status in pod.status.container_statuses or []:
        terminated = status.state.terminated if status.state else None
        if terminated is not None and terminated.message:
            return str(terminated.message).strip()
    return None


def _pod(name: str, service_account: str, target: SidecarTarget) -> dict[str, Any]:
    env = {
        "AZURE_CLIENT_ID": target.client_id,
        "AZURE_TENANT_ID": target.tenant,
        "AZURE_AUTHORITY_HOST": target.authority,
        "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
        "BLOB_HOST": target.blob_host,
        "BLOB_PORT": str(target.blob_port),
        "BLOB_CONTAINER": target.container,
    }
    container = {
        "name": "data-capability",
        "image": target.image,
        "command": ["python3", "-c", SCRIPT],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "volumeMounts": [
            {"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": True},
            {"name": "ca", "mountPath": "/etc/sandbox-ca", "readOnly": True},
        ],
    }
    token = {"audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}
    volumes = [
        {"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": token}]}},
        {"name": "ca", "configMap": {"name": CA_CONFIG_MAP}},
    ]
    return node_pod(name, {LABEL: "true"}, service_account, container, volumes)
