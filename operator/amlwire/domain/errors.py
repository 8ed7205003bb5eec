"""Error kinds, classified once at the adapters: retryable (with a delay) or terminal (with a reason)."""

from __future__ import annotations

from amlwire.api.reasons import AZURE_NOT_FOUND


class AzureError(Exception):
    """An Azure call failed. `reason` is CamelCase for conditions; `message` says what to do."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.code = code


class AzureNotFound(AzureError):
    """The resource does not exist (the caller decides whether that is a failure)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(AZURE_NOT_FOUND, message, retryable=False, status=404, code=code)


class KubeConflict(Exception):
    """Server-side apply found a field owned by another manager with another value."""

    def __init__(self, message: str, managers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.managers = managers


class KubeNotFound(Exception):
    """A Kubernetes object (or its namespace) does not exist."""


class KubeError(Exception):
    """Another Kubernetes API failure; retried."""


class KubeForbidden(KubeError):
    """RBAC refused amlwire a Kubernetes request: its ClusterRole lacks a permission."""
