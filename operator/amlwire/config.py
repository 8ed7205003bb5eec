"""Operator settings, from the environment (the Helm chart's values become AMLWIRE_* variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PUBLIC_ARM_ENDPOINT = "https://management.azure.com"


class Settings(BaseSettings):
    """Everything the operator and the doctor read from their environment."""

    model_config = SettingsConfigDict(env_prefix="AMLWIRE_", extra="ignore")

    arm_endpoint: str = Field(
        default=PUBLIC_ARM_ENDPOINT,
        description="Azure Resource Manager endpoint. Public cloud by default; set it for sovereign or private "
        "clouds (and for the local sandbox).",
    )
    ca_bundle: Path | None = Field(
        default=None,
        description="CA bundle to verify ARM and Entra TLS with, when they use a private CA.",
    )
    kubeconfig: Path | None = Field(
        default=None, description="Kubeconfig to use outside a cluster (default: in-cluster, then KUBECONFIG)."
    )
    drift_interval: float = Field(
        default=600.0, gt=0, description="Seconds between drift checks of each AttachedCompute against Azure."
    )
    retry_delay: float = Field(default=15.0, gt=0, description="Seconds before retrying a transient failure.")
    max_retry_delay: float = Field(default=300.0, gt=0, description="Upper bound of retry backoff, in seconds.")
    lro_poll_delay: float = Field(
        default=10.0, gt=0, description="Seconds between checks of a long-running Azure operation in flight."
    )
    blocked_recheck_delay: float = Field(
        default=60.0,
        gt=0,
        description="Seconds before re-checking a link that needs someone to act (e.g. OIDC issuer disabled).",
    )
    federation_propagation_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long Entra may take to honour a new federated credential (AADSTS70021 meanwhile).",
    )
    role_propagation_seconds: float = Field(
        default=600.0, ge=0, description="How long Azure RBAC may take to make a new role assignment effective."
    )
    job_poll_interval: float = Field(default=30.0, gt=0, description="Seconds between AML job status polls.")
    azure_retry_total: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries the Azure SDK makes itself before amlwire requeues (keeps handlers from blocking).",
    )
    azure_timeout: float = Field(default=60.0, gt=0, description="Azure request timeout in seconds.")
    max_workers: int = Field(default=32, ge=1, le=256, description="Threads for handlers that call Azure.")
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Prometheus /metrics port (0: off).")
    liveness_endpoint: str | None = Field(
        default="http://0.0.0.0:8081/healthz", description="kopf liveness probe endpoint (empty: off)."
    )
    log_format: Literal["text", "json"] = Field(default="text", description="Log format.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    peering: str | None = Field(
        default=None,
        description="kopf peering name for running several replicas (one active); none: standalone.",
    )
    priority: int = Field(default=0, description="kopf peering priority of this replica.")
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch for AmlJobs (empty: all namespaces)."
    )

    @field_validator("arm_endpoint")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("AMLWIRE_ARM_ENDPOINT must be an https:// URL (Azure SDKs only send tokens over TLS)")
        return value.rstrip("/")

    @property
    def is_public_cloud(self) -> bool:
        return self.arm_endpoint == PUBLIC_ARM_ENDPOINT
