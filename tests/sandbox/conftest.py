"""Fixtures for driving the Azure sandbox with the real Azure SDK clients over verified HTTPS."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo

from amlwire_sandbox.blobs import STORAGE_SUFFIX
from amlwire_sandbox.client import SandboxClient
from amlwire_sandbox.server import SandboxServer
from amlwire_sandbox.world import World
from tests.conftest import OWNER_PRINCIPAL, OWNER_ROLE_GUID, demo_world

SUB = "6f1c2b1e-5c1a-4f5e-9a51-1b2c3d4e5f60"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
RG_ML = f"/subscriptions/{SUB}/resourceGroups/rg-ml"
CLUSTER_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks-robotics"
)
CLUSTER_ARGS = ("rg-aks", "Microsoft.ContainerService", "managedClusters", "aks-robotics")  # extension calls
IDENTITY_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-ml"
)
IDENTITY_PRINCIPAL = "8e2d4c6a-0b1f-4e3d-a5c7-9b8a7f6e5d02"
STORAGE_ID = f"{RG_ML}/providers/Microsoft.Storage/storageAccounts/stmlrobotics"
WORKSPACE_ID = f"{RG_ML}/providers/Microsoft.MachineLearningServices/workspaces/mlw-robotics"
BLOB_CONTRIBUTOR = (
    f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/ba92f5b4-2d11-453d-a403-e96b0029c9fe"
)
AUDIENCE = "api://AzureADTokenExchange"


OWNER_ROLE = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{OWNER_ROLE_GUID}"


class StaticCredential:
    """A signed-in principal's credential for tests of the sandbox itself (not of amlwire's auth): tokens the
    sandbox's Entra signs for the audience asked for, or for `audience` whatever is asked (a token sent to the
    wrong service)."""

    def __init__(self, sandbox: Any, principal: str = OWNER_PRINCIPAL, audience: str | None = None) -> None:
        self.ctl = SandboxClient(sandbox.base_url, Path(sandbox.ca_file))
        self.principal = principal
        self.audience = audience
        self._issued: dict[str | None, str] = {}

    def _token(self, scopes: tuple[str, ...]) -> str:
        audience = self.audience or (scopes[0].removesuffix("/.default") if scopes else None)
        if audience not in self._issued:
            self._issued[audience] = self.ctl.access_token(self.principal, audience)
        return self._issued[audience]

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token(scopes), int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> AccessTokenInfo:
        return AccessTokenInfo(self._token(scopes), int(time.time()) + 3600)


def fast_world() -> World:
    return demo_world(lro=0.2, queued=0.1, running=0.3)


def running(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    """A sandbox serving `world` for one test."""
    server = SandboxServer(world, tmp_path / "sandbox-ca.pem").start()
    # Some azure-ai-ml paths use `requests` directly; the environment may already point elsewhere.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    yield from running(fast_world(), tmp_path, monkeypatch)


@pytest.fixture
def ctl(sandbox: SandboxServer) -> SandboxClient:
    return SandboxClient(sandbox.base_url, sandbox.ca_file)


@pytest.fixture
def credential(sandbox: SandboxServer) -> StaticCredential:
    return StaticCredential(sandbox)


@pytest.fixture
def arm(sandbox: SandboxServer) -> dict[str, Any]:
    """Keyword arguments that point an azure-mgmt-* client at the sandbox, verifying its certificate."""
    return arm_kwargs(sandbox)


def arm_kwargs(sandbox: SandboxServer) -> dict[str, Any]:
    return {
        "base_url": sandbox.base_url,
        "credential_scopes": [sandbox.base_url + "/.default"],
        "connection_verify": str(sandbox.ca_file),
        "retry_total": 0,
    }


def sandbox_cloud(base_url: str, storage_endpoint: str = "core.windows.net") -> dict[str, str]:
    return {
        "azure_portal": "https://portal.azure.com/",
        "resource_manager": base_url + "/",
        "active_directory": base_url + "/",
        "aml_resource_id": base_url + "/",
        "storage_endpoint": storage_endpoint,
        "registry_discovery_endpoint": base_url + "/",
    }


def ml_client(sandbox: SandboxServer, cloud: str, credential: Any | None = None, storage: bool = False) -> Any:
    """azure-ai-ml's MLClient on the example workspace in `sandbox` (a cloud name per caller: the SDK caches
    clouds by name for the whole process); with `storage`, blob endpoints are the sandbox's (see blob_dns)."""
    from azure.ai.ml import MLClient

    endpoint = sandbox.storage_endpoint if storage else "core.windows.net"
    return MLClient(
        credential or StaticCredential(sandbox),
        SUB,
        "rg-ml",
        "mlw-robotics",
        cloud=f"{cloud}{sandbox.port}",
        cloud_metadata=sandbox_cloud(sandbox.base_url, endpoint),
        connection_verify=str(sandbox.ca_file),
        retry_total=0,
        enable_telemetry=False,
        show_progress=False,
    )


@pytest.fixture
def ml(sandbox: SandboxServer, credential: StaticCredential) -> Any:
    return ml_client(sandbox, "Sandbox", credential)


@pytest.fixture
def blob_dns(monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer) -> None:
    """Storage account hosts (<account>.blob.sandbox.localtest) resolve to 127.0.0.1, where the sandbox serves
    their data plane: nothing leaves the machine."""
    resolve = socket.getaddrinfo

    def loopback(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.lower().endswith("." + STORAGE_SUFFIX):
            if not sandbox.sandbox.blobs.resolves(host.split(".", 1)[0]):  # as DNS answers for a missing account
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback)
