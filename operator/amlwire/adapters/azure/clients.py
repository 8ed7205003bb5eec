"""Azure SDK clients built from Settings: one per subscription (or workspace), shared across threads."""

from __future__ import annotations

import hashlib
import importlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from azure.core.credentials import TokenCredential
from azure.identity import DefaultAzureCredential

from amlwire import __version__
from amlwire.adapters.azure.pacing import PacingPolicy
from amlwire.adapters.azure.throttle import ArmPacer, BucketLimit
from amlwire.config import Settings

T = TypeVar("T")
USER_AGENT = f"amlwire/{__version__}"
ML_API_VERSION = "2024-04-01"  # AML's ARM API, for the reads made without MLClient


def build_credential(settings: Settings) -> TokenCredential:
    """DefaultAzureCredential: in a pod with workload identity it is the WorkloadIdentityCredential."""
    kwargs: dict[str, Any] = {"exclude_interactive_browser_credential": True}
    if settings.ca_bundle:
        kwargs["connection_verify"] = str(settings.ca_bundle)
    return DefaultAzureCredential(**kwargs)


class SingleFlightCredential:
    """One token request at a time per scope, however many handler threads ask at once.

    After a restart every worker asks for the same ARM token in the same instant, and each SDK client's policy
    asks the credential on its own: without this, one Entra request per worker. The first caller fetches (which
    fills the credential's own cache); the others wait for it and are answered from that cache."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, scopes: tuple[str, ...]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(scopes, threading.Lock())

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        with self._lock(scopes):
            return self.inner.get_token(*scopes, **kwargs)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        with self._lock(scopes):
            return self.inner.get_token_info(*scopes, options=options)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> SingleFlightCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Packages whose models are typespec-generated (`_utils/model_base.py`): see prepare_models.
TYPESPEC_PACKAGES = (
    "azure.mgmt.containerservice",
    "azure.mgmt.kubernetesconfiguration.extensions",
    "azure.mgmt.storage",
)
_PREPARED: set[str] = set()
_PREPARING = threading.Lock()


def prepare_models(package: str) -> None:
    """Compute every model class's fields of a typespec-generated SDK package, once, in one thread.

    Such a model class works out its fields (and their deserializers) on its first instantiation, with no lock;
    threads deserializing a class for the first time together can leave a nested field raw, a dict where a model
    belongs (`'dict' object has no attribute 'oidc_issuer_profile'`, seen after a restart when every handler
    reads its cluster at once; tests/unit/test_sdk_models.py reproduces it). Done before a client of the package
    is handed out, no first instantiation is ever concurrent."""
    import importlib

    with _PREPARING:
        if package in _PREPARED:
            return
        base: Any = importlib.import_module(f"{package}._utils.model_base").Model
        models = importlib.import_module(f"{package}.models._models")
        for value in list(vars(models).values()):
            if isinstance(value, type) and issubclass(value, base) and value is not base:
                base.__new__(value)  # Model.__new__ works the class's fields out, then makes a bare instance
        _PREPARED.add(package)


class AzureClients:
    """Builds and caches SDK clients pointed at settings.arm_endpoint."""

    def __init__(self, settings: Settings, credential: TokenCredential | None = None) -> None:
        self.settings = settings
        self.credential = SingleFlightCredential(credential or build_credential(settings))
        self._cache: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()
        self.pacer = ArmPacer(
            {kind: BucketLimit(size, refill) for kind, (size, refill) in settings.arm_budget().items()},
            share=settings.arm_share,
            max_hold=settings.max_retry_delay,
        )
        self.pacing = PacingPolicy(self.pacer, settings.arm_endpoint)

    def _session(self) -> Any:
        """A connection pool as large as the threads that share a client (requests keeps 10 and drops, then
        re-handshakes, every connection beyond them)."""
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        adapter = HTTPAdapter(pool_maxsize=self.settings.connection_pool_size)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def connection_kwargs(self) -> dict[str, Any]:
        """Timeouts and the CA bundle: what every request needs, also the bare pipeline's."""
        kwargs: dict[str, Any] = {
            "connection_timeout": min(30.0, self.settings.azure_timeout),
            "read_timeout": self.settings.azure_timeout,
        }
        if self.settings.ca_bundle:
            kwargs["connection_verify"] = str(self.settings.ca_bundle)
        return kwargs

    def common_kwargs(self) -> dict[str, Any]:
        """An SDK client's settings: its own connection pool, retries, the ARM pacing."""
        return {
            **self.connection_kwargs(),
            "retry_total": self.settings.azure_retry_total,
            "user_agent": USER_AGENT,
            "logging_enable": False,
            "per_retry_policies": [self.pacing],
            "session": self._session(),
            "session_owner": False,
        }

    def tls_verify(self) -> str | bool:
        """What `requests` verifies TLS against for URLs outside the SDKs: the configured CA bundle, else the
        system's."""
        return str(self.settings.ca_bundle) if self.settings.ca_bundle else True

    def mgmt_kwargs(self) -> dict[str, Any]:
        endpoint = self.settings.arm_endpoint
        return {"base_url": endpoint, "credential_scopes": [endpoint + "/.default"], **self.common_kwargs()}

    def _cached(self, key: tuple[str, ...], build: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def _management(self, subscription: str, module: str, client: str, typespec: bool = False) -> Any:
        """One management client per package and subscription, built on first use; a typespec-generated package's
        models are prepared first (prepare_models)."""
        if typespec:
            prepare_models(module)
        kind = getattr(importlib.import_module(module), client)
        return self._cached((client, subscription), lambda: kind(self.credential, subscription, **self.mgmt_kwargs()))

    def msi(self, subscription: str) -> Any:
        return self._management(subscription, "azure.mgmt.msi", "ManagedServiceIdentityClient")

    def containers(self, subscription: str) -> Any:
        return self._management(subscription, "azure.mgmt.containerservice", "ContainerServiceClient", typespec=True)

    def extensions(self, subscription: str) -> Any:
        module = "azure.mgmt.kubernetesconfiguration.extensions"
        return self._management(subscription, module, "KubernetesConfigurationExtensionsMgmtClient", typespec=True)

    def authorization(self, subscription: str) -> Any:
        return self._management(subscription, "azure.mgmt.authorization", "AuthorizationManagementClient")

    def storage(self, subscription: str) -> Any:
        return self._management(subscription, "azure.mgmt.storage", "StorageManagementClient", typespec=True)

    def pipeline(self) -> Any:
        """A bare ARM pipeline (auth, retries, user agent) for URLs no SDK method covers."""
        from azure.core import PipelineClient
        from azure.core.pipeline import policies
        from azure.core.pipeline.transport import RequestsTransport

        endpoint = self.settings.arm_endpoint
        return self._cached(
            ("pipeline",),
            lambda: PipelineClient(
                endpoint,
                transport=RequestsTransport(session=self._session(), session_owner=False),
                policies=[
                    policies.HeadersPolicy(),
                    policies.UserAgentPolicy(USER_AGENT),
                    policies.RetryPolicy(retry_total=self.settings.azure_retry_total),
                    self.pacing,
                    policies.BearerTokenCredentialPolicy(self.credential, endpoint + "/.default"),
                    policies.HttpLoggingPolicy(),
                ],
            ),
        )

    def get(self, subscription: str, path: str, api_version: str = ML_API_VERSION) -> dict[str, Any]:
        """GET an ARM resource by its path (/subscriptions/...)."""
        return self.send(subscription, f"{self.settings.arm_endpoint}{path}?api-version={api_version}")

    def send(self, subscription: str, url: str, method: str = "GET") -> dict[str, Any]:
        """GET (or POST, for a read-only action) an absolute Azure URL: JSON body, or InProgress for a 202."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        response = self.pipeline().send_request(HttpRequest(method, url), **self.connection_kwargs())
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        if response.status_code == 202:
            return {"status": "InProgress"}
        return orjson.loads(response.content) if response.content else {}

    def ml(self, subscription: str, group: str, workspace: str) -> Any:
        return self._cached(
            ("ml", subscription, group.lower(), workspace.lower()),
            lambda: self._ml_client(subscription, group, workspace),
        )

    def _ml_client(self, subscription: str, group: str, workspace: str) -> Any:
        from azure.ai.ml import MLClient

        without_git_stamp()
        kwargs: dict[str, Any] = {"enable_telemetry": False, "show_progress": False, **self.common_kwargs()}
        if not self.settings.is_public_cloud:
            endpoint = self.settings.arm_endpoint
            kwargs["cloud"] = "amlwire-" + hashlib.sha256(endpoint.encode()).hexdigest()[:8]
            kwargs["cloud_metadata"] = {
                "azure_portal": "https://portal.azure.com/",
                "resource_manager": endpoint + "/",
                "active_directory": endpoint + "/",
                "aml_resource_id": endpoint + "/",
                "storage_endpoint": "core.windows.net",
                "registry_discovery_endpoint": endpoint + "/",
            }
        return MLClient(self.credential, subscription, group, workspace, **kwargs)


def without_git_stamp() -> None:
    """azure-ai-ml stamps every job it submits with the caller's git metadata, running `git` in a subprocess per
    job (operations/_job_operations.py, get_git_properties). The operator is not the user's repository, so the
    stamp would say nothing true, and forking the operator per job is a cost bench/scale.py --profile shows."""
    from azure.ai.ml.operations import _job_operations

    if getattr(_job_operations, "get_git_properties", None) is not _no_git_properties:
        _job_operations.get_git_properties = _no_git_properties


def _no_git_properties() -> dict[str, str]:
    return {}
