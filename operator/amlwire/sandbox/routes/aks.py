"""AKS managed clusters, their cluster extensions, and the status of long-running operations."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from amlwire.sandbox import ids
from amlwire.sandbox.http import AKS, EXT, Call, json_response, operation_headers, started
from amlwire.sandbox.router import route, serve
from amlwire.sandbox.state import ArmError, Operation, iso, not_found

EXTENSIONS = "Microsoft.KubernetesConfiguration/extensions"

serve("aks.cluster", AKS, ids.AKS, "Microsoft.ContainerService/managedClusters/read")
serve("ext.extension", EXT, ids.EXTENSION, EXTENSIONS + "/read")


def _write_extension(call: Call, patch: bool) -> web.Response:
    body, rid = call.json(), call.id(EXT)
    existed = call.state.get(rid) is not None
    resource, operation = call.cloud.put_extension(rid, body, patch)
    if operation is None:  # rule: ext.patch-unchanged
        return json_response(resource.body)
    started(call, operation)
    status = 202 if patch else (200 if existed else 201)  # rule: ext.lro
    return json_response(resource.body, status=status, headers=operation_headers(call, operation))


@route("PUT", "ext.extension", EXT, EXTENSIONS + "/write")
def put_extension(call: Call) -> web.Response:
    return _write_extension(call, patch=False)


@route("PATCH", "ext.extension", EXT, EXTENSIONS + "/write")
def patch_extension(call: Call) -> web.Response:
    return _write_extension(call, patch=True)


@route("DELETE", "ext.extension", EXT, EXTENSIONS + "/delete")
def delete_extension(call: Call) -> web.Response:
    rid = call.id(EXT)
    if call.state.get(rid) is None:
        return web.Response(status=204)
    operation = started(call, call.cloud.delete_extension(rid))
    return web.Response(status=202, headers=operation_headers(call, operation, location=True))


def _operation(call: Call) -> tuple[Operation, str]:
    """The operation a status URL names, and where it stands."""
    operation = call.state.operations.get(call.params["operation"])
    if operation is None:
        raise not_found("operation", call.params["operation"])
    return operation, operation.status(call.state.now())


@route("GET", "sandbox.operation", "/_sandbox/operations/{operation}")
def operation_status(call: Call) -> web.Response:
    operation, status = _operation(call)
    body: dict[str, Any] = {
        "id": operation.id,
        "name": operation.id,
        "status": status,
        "startTime": iso(operation.done_at),
    }
    if status == "Failed" and operation.error:
        body["error"] = operation.error
    headers = operation_headers(call, operation) if status == "InProgress" else {}
    return json_response(body, headers={k: v for k, v in headers.items() if k == "retry-after-ms"})


@route("GET", "sandbox.operation-result", "/_sandbox/operation-results/{operation}")
def operation_result(call: Call) -> web.Response:
    operation, status = _operation(call)
    if status == "InProgress":
        return web.Response(status=202, headers={"retry-after-ms": "50", "Location": str(call.request.url)})
    if status == "Failed":
        error = operation.error or {}
        raise ArmError(500, error.get("code", "OperationFailed"), error.get("message", "The operation failed."))
    return web.Response(status=204)
