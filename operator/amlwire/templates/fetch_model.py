"""Download a registered AML model inside the job, with the SDK, bypassing AML's data-capability sidecar.

Used by AmlJob `model.delivery: InContainer`, so a sidecar that cannot authenticate (certificate auth, a
missing extension identity) cannot fail the job. Runs in Isaac Sim's python (`./isaaclab.sh -p`).
Credential: the pod's workload identity when the webhook injected it (AZURE_FEDERATED_TOKEN_FILE), else
ManagedIdentityCredential() with no client id — what AML documents for job code on Kubernetes compute (the
compute's identity). Either identity needs a workspace role (reading the model version) and a Storage Blob
Data role. Needs: AMLWIRE_MODEL=azureml:NAME:VERSION, AMLWIRE_WORKSPACE=<workspace ARM ID>, AMLWIRE_MODEL_DIR.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from typing import Any

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


def credential() -> Any:
    from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential

    if os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
        return WorkloadIdentityCredential()
    return ManagedIdentityCredential()


def main() -> None:
    name, version = parse_model(os.environ["AMLWIRE_MODEL"])
    subscription, group, workspace = parse_workspace(os.environ["AMLWIRE_WORKSPACE"])
    target = os.environ.get("AMLWIRE_MODEL_DIR", "/tmp/amlwire-model")  # noqa: S108
    ensure_packages()
    from azure.ai.ml import MLClient

    used = credential()
    MLClient(used, subscription, group, workspace).models.download(name=name, version=version, download_path=target)
    print(f"amlwire: downloaded model {name}:{version} to {target} with {type(used).__name__}")


if __name__ == "__main__":
    main()
