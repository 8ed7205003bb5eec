"""What a route handler gets (one `Call`) and the shapes of ARM's answers (JSON, errors, paging, LROs)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from amlwire_sandbox.cloud import Cloud
from amlwire_sandbox.jobs import Jobs
from amlwire_sandbox.sandbox import Sandbox
from amlwire_sandbox.state import ArmError, Operation, State

RG = "/subscriptions/{sub}/resourceGroups/{rg}/providers"
MSI = RG + "/Microsoft.ManagedIdentity/userAssignedIdentities/{identity}"
AKS = RG + "/Microsoft.ContainerService/managedClusters/{cluster}"
EXT = AKS + "/providers/Microsoft.KubernetesConfiguration/extensions/{extension}"
WS = RG + "/Microsoft.MachineLearningServices/workspaces/{workspace}"
HISTORY = "/history/v1.0" + WS


@dataclass
class Call:
    """One request, as a handler sees it. Handlers run under the state's lock (taken by the application)."""

    sandbox: Sandbox
    request: web.Request
    params: dict[str, str]
    caller: str | None = None  # the object ID in the bearer token
    raw: bytes = b""
    lro_failed: bool = False  # an injected fault: the operation this call starts fails
    fault_met: str | None = None
    hold: float = 0.0  # seconds the request takes before it is carried out (waited outside the lock)
    finish: Callable[[], web.StreamResponse] | None = None  # carries it out, under the lock, after the hold
    release: Callable[[], None] | None = None  # runs last, under the lock, however `finish` ended

    @property
    def state(self) -> State:
        return self.sandbox.state

    @property
    def cloud(self) -> Cloud:
        return self.sandbox.cloud

    @property
    def jobs(self) -> Jobs:
        return self.sandbox.jobs

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query

    @property
    def base_url(self) -> str:
        return self.sandbox.base_url

    def later(
        self, seconds: float, finish: Callable[[], web.StreamResponse], release: Callable[[], None]
    ) -> web.StreamResponse:
        """Carry the request out after `seconds` (a write that takes time); the answer is `finish`'s."""
        self.hold, self.finish, self.release = seconds, finish, release
        return web.Response(status=202)  # never sent: the application answers with finish()

    def id(self, template: str) -> str:
        """The ARM ID of the addressed resource, from a path template and this call's parameters."""
        return template.format(**self.params)

    def json(self) -> dict[str, Any]:
        if not self.raw:
            return {}
        try:
            data = json.loads(self.raw)
        except json.JSONDecodeError as error:
            raise ArmError(400, "InvalidRequestContent", f"The request content was invalid: {error}") from error
        if not isinstance(data, dict):
            raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
        return data

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.raw.decode()))


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=dict(headers or {}))


def arm_error(error: ArmError) -> web.Response:  # rule: arm.error-shape
    return json_response(error.body(), status=error.status, headers=error.headers)


def paged(call: Call, items: Sequence[Any], size: int) -> dict[str, Any]:
    """One page of a list, with ARM's nextLink when there is more."""
    start = int(call.query.get("$skipToken") or 0)
    body: dict[str, Any] = {"value": items[start : start + size]}
    if start + size < len(items):
        query = {**call.query, "$skipToken": str(start + size)}
        body["nextLink"] = f"{call.base_url}{call.request.path}?{urlencode(query)}"
    return body


def operation_headers(call: Call, operation: Operation, location: bool = False) -> dict[str, str]:
    """How ARM points at a long-running operation (never `Retry-After: 0`: see the Azure REST contract)."""
    # rule: arm.lro
    url = call.state.operation_url(operation)
    wait_ms = str(int(min(1000, max(50, call.state.timing.lro_seconds * 250))))
    headers = {"Azure-AsyncOperation": url, "retry-after-ms": wait_ms}
    if location:
        headers["Location"] = call.state.operation_result_url(operation)
    return headers


def started(call: Call, operation: Operation) -> Operation:
    """An operation this call started; an injected lroFailed fault makes it fail."""
    if call.lro_failed:
        call.fault_met = "lroFailed"
        operation.outcome = "Failed"
        operation.error = {"code": "InjectedOperationFailure", "message": "The operation failed (sandbox fault)."}
    return operation
