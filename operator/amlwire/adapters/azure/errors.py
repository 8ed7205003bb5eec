"""Every Azure failure classified once: retryable (with a delay) or terminal (with a reason and a fix)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    AzureError as SdkError,
)
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from amlwire.api import reasons as r
from amlwire.domain.errors import AzureError, AzureNotFound
from amlwire.domain.permissions import read_denial


@dataclass(frozen=True)
class Rule:
    reason: str
    retryable: bool
    delay: float | None = None  # default delay when Azure sends no Retry-After
    advice: str = ""


# By error code first (Azure's own words), then by HTTP status.
BY_CODE: dict[str, Rule] = {
    "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity": Rule(
        r.FEDERATED_CREDENTIAL_WRITE_CONFLICT,
        True,
        2.0,
        "another writer is changing federated credentials of the same identity; amlwire retries",
    ),
    "TooManyRequests": Rule(r.AZURE_THROTTLED, True, 10.0, "Azure is throttling requests; amlwire retries"),
    "RetryableError": Rule(r.AZURE_UNAVAILABLE, True, 10.0),
    "AnotherOperationInProgress": Rule(r.AZURE_OPERATION_IN_PROGRESS, True, 15.0),
    "OperationNotAllowed": Rule(r.AZURE_OPERATION_NOT_ALLOWED, False),
    "AuthorizationFailed": Rule(r.AZURE_PERMISSION_DENIED, False),
    "LinkedAuthorizationFailed": Rule(r.AZURE_PERMISSION_DENIED, False),
    "InvalidAuthenticationToken": Rule(r.AZURE_AUTHENTICATION_FAILED, False),
    "SubscriptionNotFound": Rule(r.SUBSCRIPTION_NOT_FOUND, False, None, "check the subscription ID in the spec"),
    "ResourceGroupNotFound": Rule(r.RESOURCE_GROUP_NOT_FOUND, False, None, "check the resource group in the spec"),
}
BY_STATUS: dict[int, Rule] = {
    400: Rule(r.AZURE_BAD_REQUEST, False),
    401: Rule(
        r.AZURE_AUTHENTICATION_FAILED,
        False,
        None,
        "check amlwire's own workload identity (AZURE_CLIENT_ID, AZURE_TENANT_ID, its federated credential)",
    ),
    403: Rule(
        r.AZURE_PERMISSION_DENIED,
        False,
        None,
        "grant amlwire's identity the role this action needs on that scope (see the chart's README)",
    ),
    408: Rule(r.AZURE_TIMEOUT, True, 5.0),
    409: Rule(r.AZURE_CONFLICT, True, 5.0),
    429: Rule(r.AZURE_THROTTLED, True, 10.0),
    500: Rule(r.AZURE_UNAVAILABLE, True, 5.0),
    502: Rule(r.AZURE_UNAVAILABLE, True, 5.0),
    503: Rule(r.AZURE_UNAVAILABLE, True, 10.0),
    504: Rule(r.AZURE_TIMEOUT, True, 5.0),
}


def retry_after(error: HttpResponseError) -> float | None:
    response: Any = error.response
    return None if response is None else retry_after_seconds(response.headers)


def retry_after_seconds(raw_headers: Any) -> float | None:
    """Azure's Retry-After (seconds or HTTP date) or retry-after-ms, in seconds."""
    headers = {k.lower(): v for k, v in raw_headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        if name in headers:
            try:
                return float(headers[name]) / 1000
            except ValueError:
                pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _code(error: HttpResponseError) -> str | None:
    inner = getattr(error, "error", None)
    return getattr(inner, "code", None) if inner is not None else None


def _message(error: HttpResponseError) -> str:
    inner = getattr(error, "error", None)
    return str(getattr(inner, "message", None) or error.message or error.reason or error)


def classify(error: Exception, action: str) -> AzureError:
    """The domain error for an SDK exception raised while doing `action` (e.g. "get identity X")."""
    if isinstance(error, AzureError):
        return error
    if isinstance(error, ResourceNotFoundError):
        return AzureNotFound(f"{action}: not found ({_message(error)})", code=_code(error))
    if isinstance(error, ClientAuthenticationError) and getattr(error, "status_code", None) is None:
        return AzureError(
            r.AZURE_AUTHENTICATION_FAILED,
            f"{action}: amlwire could not get an Azure token: {error.message}; check the operator's "
            f"workload identity (service account annotation, AZURE_CLIENT_ID, federated credential)",
            retryable=False,
        )
    if isinstance(error, HttpResponseError):
        code, status = _code(error), error.status_code
        if status == 404:
            return AzureNotFound(f"{action}: not found ({_message(error)})", code=code)
        rule = (
            BY_CODE.get(code or "") or BY_STATUS.get(status or 0) or Rule(r.AZURE_REQUEST_FAILED, (status or 0) >= 500)
        )
        delay = retry_after(error) or rule.delay
        denial = read_denial(_message(error)) if rule.reason == r.AZURE_PERMISSION_DENIED else None
        if denial is not None:
            return AzureError(
                rule.reason,
                f"{action}: {status} {code}: {denial.advice()}",
                retryable=False,
                status=status,
                code=code,
            )
        advice = f"; {rule.advice}" if rule.advice else ""
        return AzureError(
            rule.reason,
            f"{action}: {status} {code or ''}: {_message(error)}{advice}".replace("  ", " "),
            retryable=rule.retryable,
            retry_after=delay,
            status=status,
            code=code,
        )
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return AzureError(
            r.AZURE_UNREACHABLE, f"{action}: could not reach Azure: {error}", retryable=True, retry_after=5.0
        )
    if isinstance(error, SdkError):
        return AzureError(r.AZURE_REQUEST_FAILED, f"{action}: {error}", retryable=True, retry_after=10.0)
    return AzureError(r.AZURE_REQUEST_REJECTED, f"{action}: {type(error).__name__}: {error}", retryable=False)


@contextmanager
def classified(action: str) -> Iterator[None]:
    """Re-raise any exception from the block as a classified domain AzureError."""
    try:
        yield
    except AzureError:
        raise
    except Exception as error:
        raise classify(error, action) from error
