"""Download a registered AML model inside the job, with the pod's own workload identity.

Used by AmlJob `model.delivery: InContainer`: the AzureML data-capability sidecar is not involved, so a
sidecar that cannot authenticate (certificate auth, missing extension identity) cannot fail the job.
Needs: AMLWIRE_MODEL=azureml:NAME:VERSION, AMLWIRE_WORKSPACE=<workspace ARM ID>, AMLWIRE_MODEL_DIR, and the
workload identity environment (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE) that the
workload identity webhook injects into pods labelled azure.workload.identity/use=true.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

MODEL_REF = re.compile(r"^azureml:(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<version>[A-Za-z0-9_.-]+)$")
WORKSPACE_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<workspace>[^/]+)$",
    re.IGNORECASE,
)


def parse_model(reference: str) -> tuple[str, str]:
    match = MODEL_REF.match(reference)
    if match is None:
        raise SystemExit(f"AMLWIRE_MODEL must look like azureml:NAME:VERSION, got {reference!r}")
    return match["name"], match["version"]


def parse_workspace(workspace_id: str) -> tuple[str, str, str]:
    match = WORKSPACE_ID.match(workspace_id)
    if match is None:
        raise SystemExit(f"AMLWIRE_WORKSPACE must be a workspace resource ID, got {workspace_id!r}")
    return match["subscription"], match["group"], match["workspace"]


def ensure_packages() -> None:
    missing = [
        p
        for p, m in (("azure-ai-ml", "azure.ai.ml"), ("azure-identity", "azure.identity"))
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


def main() -> None:
    name, version = parse_model(os.environ["AMLWIRE_MODEL"])
    subscription, group, workspace = parse_workspace(os.environ["AMLWIRE_WORKSPACE"])
    target = os.environ.get("AMLWIRE_MODEL_DIR", "/tmp/amlwire-model")  # noqa: S108
    if not os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
        raise SystemExit(
            "no workload identity token in this pod: label the job pods "
            "azure.workload.identity/use=true (see `amlwire doctor`, F11)"
        )
    ensure_packages()
    from azure.ai.ml import MLClient
    from azure.identity import WorkloadIdentityCredential

    client = MLClient(WorkloadIdentityCredential(), subscription, group, workspace)
    client.models.download(name=name, version=version, download_path=target)
    print(f"amlwire: downloaded model {name}:{version} to {target} with the pod's workload identity")


if __name__ == "__main__":
    main()
