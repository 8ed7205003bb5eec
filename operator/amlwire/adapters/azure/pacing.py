"""The pipeline policy that puts every ARM request through amlwire's ArmPacer (one slot per attempt)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

from amlwire.adapters.azure.errors import retry_after_seconds
from amlwire.adapters.azure.throttle import ArmPacer, kind_of


def arm_subscription(url: str, arm_host: str) -> str | None:
    """The subscription an ARM request is charged to; None for Entra, run history, MLflow and other hosts."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    if parts.netloc.lower() != arm_host or len(segments) < 3 or segments[1].lower() != "subscriptions":
        return None
    return segments[2]


def top_level_resource(url: str) -> str | None:
    """The resource a provider throttles on its own: /subscriptions/S/resourceGroups/G/providers/NS/TYPE/NAME."""
    segments = urlsplit(url).path.split("/")
    lowered = [s.lower() for s in segments]
    if "providers" not in lowered:
        return None
    at = lowered.index("providers")
    if len(segments) < at + 4 or "resourcegroups" not in lowered[:at]:
        return None
    return "/".join(segments[: at + 4])


def throttled_by_provider(headers: Any, method: str) -> bool:
    """A 429 that left ARM's budget untouched (ARM reports tokens left) came from the resource provider."""
    left = remaining_tokens(headers, method)
    return left is not None and left > 0


def service_of(url: str) -> str:
    """Another service's throttling scope (run history, MLflow): its host and first path segment."""
    parts = urlsplit(url)
    return f"{parts.netloc.lower()}/{parts.path.split('/')[1] if '/' in parts.path else ''}"


def remaining_tokens(headers: Any, method: str) -> int | None:
    """The smaller of what Azure reports left in the principal's and the subscription's bucket."""
    kind = kind_of(method)
    found = []
    for scope in ("", "global-"):
        value = headers.get(f"x-ms-ratelimit-remaining-subscription-{scope}{kind}")
        if value is not None and str(value).strip().isdigit():
            found.append(int(value))
    return min(found) if found else None


class PacingPolicy(SansIOHTTPPolicy):
    """Waits for the request's slot in ARM's budget, then reads what Azure says is left.

    Stateless per request (SansIO), so one instance serves every pipeline of every SDK client.
    """

    def __init__(self, pacer: ArmPacer, arm_endpoint: str, sleep: Any = time.sleep) -> None:
        self.pacer = pacer
        self.arm_host = urlsplit(arm_endpoint).netloc.lower()
        self.sleep = sleep

    def on_request(self, request: PipelineRequest) -> None:
        http = request.http_request
        subscription = arm_subscription(http.url, self.arm_host)
        scope = subscription or service_of(http.url)
        resource = top_level_resource(http.url) if subscription is not None else None
        request.context["amlwire.scope"] = (scope, subscription is not None, resource)
        action = f"{http.method} {urlsplit(http.url).path}"
        wait = self.pacer.reserve(scope, http.method, action, metered=subscription is not None, resource=resource)
        while wait > 0:
            self.sleep(wait)
            wait = self.pacer.still_held(scope, http.method, action, resource)

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:
        scope, metered, resource = request.context.get("amlwire.scope", (None, False, None))
        if scope is None:
            return
        method, answer = request.http_request.method, response.http_response
        if metered:
            self.pacer.observe(scope, method, remaining_tokens(answer.headers, method))
        if answer.status_code == 429:
            provider = resource if metered and throttled_by_provider(answer.headers, method) else None
            self.pacer.hold(scope, method, retry_after_seconds(answer.headers), provider)
