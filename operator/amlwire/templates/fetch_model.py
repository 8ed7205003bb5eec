"""Download a registered AML model inside the job, with the SDK, bypassing AML's data-capability sidecar.

Used by AmlJob `model.delivery: InContainer`, so a sidecar that cannot authenticate (certificate auth, a
missing extension identity) cannot fail the job. Runs in Isaac Sim's python (`./isaaclab.sh -p`); the command
installs pinned azure-ai-ml and azure-identity first unless the image carries them (spec.isaacLab.imageHasAzureSdk).
Credential: the pod's workload identity when the webhook injected it (AZURE_FEDERATED_TOKEN_FILE), else
ManagedIdentityCredential() with no client id — what AML documents for job code on Kubernetes compute (the
compute's identity). Either identity needs a workspace role (reading the model version) and a Storage Blob
Data role. Needs: AMLWIRE_MODEL=azureml:NAME:VERSION, AMLWIRE_WORKSPACE=<workspace ARM ID>, AMLWIRE_MODEL_DIR.
Ends through jobkit: a failure prints its traceback and fails the job.
"""

from __future__ import annotations

import os
import re
from typing import Any

try:
    from jobkit import StepFailed, Watchdog, run_step  # in the job, beside this script
except ImportError:  # imported from the amlwire package (its tests)
    from amlwire.templates.jobkit import StepFailed, Watchdog, run_step

MODEL_REF = re.compile(r"^azureml:(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<version>[A-Za-z0-9_.-]+)$")
WORKSPACE_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<workspace>[^/]+)$",
    re.IGNORECASE,
)
DOWNLOAD_GRACE_SECONDS = 3600.0  # one call downloads the whole model: no beat until it returns


def parse_model(reference: str) -> tuple[str, str]:
    match = MODEL_REF.match(reference)
    if match is None:
        raise StepFailed(f"AMLWIRE_MODEL must look like azureml:NAME:VERSION, got {reference!r}")
    return match["name"], match["version"]


def parse_workspace(workspace_id: str) -> tuple[str, str, str]:
    match = WORKSPACE_ID.match(workspace_id)
    if match is None:
        raise StepFailed(f"AMLWIRE_WORKSPACE must be a workspace resource ID, got {workspace_id!r}")
    return match["subscription"], match["group"], match["workspace"]


def credential() -> Any:
    from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential

    if os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
        return WorkloadIdentityCredential()
    return ManagedIdentityCredential()


def download(watchdog: Watchdog) -> dict[str, Any]:
    name, version = parse_model(os.environ.get("AMLWIRE_MODEL", ""))
    subscription, group, workspace = parse_workspace(os.environ.get("AMLWIRE_WORKSPACE", ""))
    target = os.environ.get("AMLWIRE_MODEL_DIR", "/tmp/amlwire-model")  # noqa: S108
    from azure.ai.ml import MLClient

    used = credential()
    watchdog.beat(f"downloading {name}:{version}")
    MLClient(used, subscription, group, workspace).models.download(name=name, version=version, download_path=target)
    print(f"amlwire: downloaded model {name}:{version} to {target} with {type(used).__name__}")
    return {"model": f"{name}:{version}", "path": target, "credential": type(used).__name__}


if __name__ == "__main__":
    run_step("model download", download, grace=DOWNLOAD_GRACE_SECONDS)
