"""Operator settings, from the environment (the Helm chart's values become AMLWIRE_* variables)."""

from __future__ import annotations

import hashlib
import socket
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
    arm_share: float = Field(
        default=1.0, gt=0, le=1, description="Share of ARM's request budget amlwire may spend (less: other tools)."
    )
    arm_read_budget: str = Field(
        default="250/25", description="ARM's read bucket for one principal: SIZE/REFILL-PER-SECOND (Learn)."
    )
    arm_write_budget: str = Field(default="200/10", description="ARM's write bucket: SIZE/REFILL-PER-SECOND.")
    arm_delete_budget: str = Field(default="200/10", description="ARM's delete bucket: SIZE/REFILL-PER-SECOND.")
    job_poll_read_share: float = Field(
        default=0.2, gt=0, le=1, description="Share of amlwire's ARM read refill that following AML jobs may take."
    )
    azure_timeout: float = Field(default=60.0, gt=0, description="Azure request timeout in seconds.")
    max_workers: int = Field(default=32, ge=1, le=256, description="Threads for handlers that call Azure.")
    job_update_threads: int = Field(
        default=8,
        ge=1,
        le=64,
        description="AmlJobs the job poller updates at once when AML's listing shows many changed (a batch "
        "ending together, or a restart catching up).",
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Prometheus /metrics port (0: off).")
    metrics_address: str = Field(
        default="0.0.0.0",  # noqa: S104 - in a pod, Prometheus scrapes the pod IP
        description="Address the /metrics endpoint listens on (127.0.0.1 outside a pod).",
    )
    liveness_endpoint: str | None = Field(
        default="http://0.0.0.0:8081/healthz", description="kopf liveness probe endpoint (empty: off)."
    )
    log_format: Literal["text", "json"] = Field(default="text", description="Log format.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    peering: str | None = Field(
        default=None,
        description="kopf peering name for running several replicas (one active); none: standalone.",
    )
    priority: int | None = Field(
        default=None,
        description="kopf peering priority of this replica; none: one derived from pod_name, so replicas of one "
        "Deployment never tie (kopf pauses every operator of a tie).",
    )
    pod_name: str = Field(
        default_factory=socket.gethostname, description="This replica's pod name (the chart sets it from the pod)."
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch for AmlJobs (empty: all namespaces)."
    )

    @field_validator("arm_endpoint")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL (Azure SDKs only send tokens over TLS)")
        return value.rstrip("/")

    @field_validator("arm_read_budget", "arm_write_budget", "arm_delete_budget")
    @classmethod
    def _size_and_refill(cls, value: str) -> str:
        size, _, refill = value.partition("/")
        try:
            if float(size) >= 1 and float(refill) > 0:
                return value
        except ValueError:
            pass
        raise ValueError(f"{value!r} is not SIZE/REFILL-PER-SECOND (e.g. 200/10, as Learn documents ARM's buckets)")

    def peering_priority(self) -> int:
        """This replica's kopf peering priority: the configured one, else one from its pod name (replicas of one
        Deployment differ, so exactly one acts)."""
        if self.priority is not None:
            return self.priority
        return int.from_bytes(hashlib.sha256(self.pod_name.encode()).digest()[:4], "big") >> 1

    def arm_budget(self) -> dict[str, tuple[float, float]]:
        """ARM's buckets by operation type: (size, refill per second)."""
        budgets = {"reads": self.arm_read_budget, "writes": self.arm_write_budget, "deletes": self.arm_delete_budget}
        return {kind: (float(v.partition("/")[0]), float(v.partition("/")[2])) for kind, v in budgets.items()}

    @property
    def connection_pool_size(self) -> int:
        """Connections a client to Azure or Kubernetes keeps open: one per thread that calls through it (the
        handlers, the job poller's updaters) and a few spare."""
        return self.max_workers + self.job_update_threads + 4

    @property
    def job_poll_read_rate(self) -> float:
        """ARM reads per second the job poller may take: its share of amlwire's share of the read refill."""
        return self.job_poll_read_share * self.arm_share * self.arm_budget()["reads"][1]

    @property
    def is_public_cloud(self) -> bool:
        return self.arm_endpoint == PUBLIC_ARM_ENDPOINT
