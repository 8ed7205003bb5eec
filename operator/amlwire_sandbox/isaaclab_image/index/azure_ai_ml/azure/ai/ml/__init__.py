"""azure-ai-ml in the sandbox: MLClient.models.download, with the access the sandbox judged for this job.

The sandbox decides, before the job starts, whether the credential the job downloads with may read the model
(a workspace role to read the version, a storage data role, a federated credential for the pod's account):
AMLWIRE_SANDBOX_DOWNLOAD_DENIED holds Azure's words when it may not. The files come from the model's storage
(AMLWIRE_SANDBOX_MODELS/<name>/<version>), into download_path/<name>/, as the SDK lays them out.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from azure.core.exceptions import ClientAuthenticationError


class _Models:
    def __init__(self, client: MLClient) -> None:
        self.client = client

    def download(self, name: str, version: str, download_path: str = ".") -> None:
        denied = os.environ.get("AMLWIRE_SANDBOX_DOWNLOAD_DENIED")
        if denied:
            raise ClientAuthenticationError(denied)
        source = Path(os.environ["AMLWIRE_SANDBOX_MODELS"]) / name / version
        if not source.is_dir():
            raise ValueError(f"Model {name}:{version} has no files in the sandbox's storage")
        shutil.copytree(source, Path(download_path) / name, dirs_exist_ok=True)


class MLClient:
    def __init__(self, credential: Any, subscription_id: str, resource_group_name: str, workspace_name: str) -> None:
        self.credential = credential
        self.models = _Models(self)
