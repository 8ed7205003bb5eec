"""AKS managed clusters, their cluster extensions, and the status of long-running operations."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from amlwire_sandbox import ids
from amlwire_sandbox.http import AKS, EXT, Call, json_response, operation_headers, started
from amlwire_sandbox.router import route, serve
from amlwire_sandbox.state import ArmError, Operation, iso, key, not_found

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
    """The operation a status URL names, where it stands, once the caller may read the resource it works on."""
    operation = call.state.operations.get(call.params["operation"])
    if operation is None or key(operation.resource_id) != key("/subscriptions/" + call.params["resource"]):
        raise not_found("operation", call.params["operation"])
    call.cloud.authorize(call.caller or "", f"{ids.arm_type(operation.resource_id)}/read", operation.resource_id)
    return operation, operation.status(call.state.now())


def status_word(kind: str, words: str) -> str:
    """What ARM says of an operation still running: the specs' examples use the action's own word (rule
    arm.operation-status-words); azure-core reads every word but Succeeded, Failed and Canceled as running."""
    if words == "inProgress":
        return "InProgress"
    if words == "other":
        return "Running"
    return "Deleting" if "Delete" in kind else "Updating" if "Update" in kind else "Creating"


@route("GET", "arm.operation", "/subscriptions/{resource*}/operationStatuses/{operation}")
def operation_status(call: Call) -> web.Response:
    operation, status = _operation(call)
    running = status == "InProgress"
    body: dict[str, Any] = {
        "id": f"{operation.resource_id}/operationStatuses/{operation.id}",
        "name": operation.id,
        # rule: arm.operation-status-words
        "status": status_word(operation.kind, call.state.world.rules.operation_status_words) if running else status,
        "startTime": iso(operation.started),
        **({} if running else {"endTime": iso(operation.done_at)}),
    }
    if status == "Failed" and operation.error:
        body["error"] = operation.error
    headers = operation_headers(call, operation) if running else {}
    return json_response(body, headers={k: v for k, v in headers.items() if k == "retry-after-ms"})


@route("GET", "arm.operation-result", "/subscriptions/{resource*}/operationResults/{operation}")
def operation_result(call: Call) -> web.Response:
    operation, status = _operation(call)
    if status == "InProgress":
        return web.Response(status=202, headers={"retry-after-ms": "50", "Location": str(call.request.url)})
    if status == "Failed":
        error = operation.error or {}
        raise ArmError(500, error.get("code", "OperationFailed"), error.get("message", "The operation failed."))
    return web.Response(status=204)


def _issuer(call: Call) -> str | None:
    """The world cluster an issuer URL belongs to must exist, or (rule aks.issuer-after-delete) the world says a
    deleted cluster's issuer goes on serving; else AKS answers 404."""
    issuer = f"{call.base_url}/oic/{call.params['issuer']}/"
    if call.state.world.rules.deleted_cluster_issuer == "served":  # rule: aks.issuer-after-delete
        return issuer
    clusters = call.state.of_type(ids.AKS)
    exists = any((c.properties.get("oidcIssuerProfile") or {}).get("issuerURL") == issuer for c in clusters)
    return issuer if exists else None


# rule: aks.issuer-discovery
@route("GET", "aks.oidc-discovery", "/oic/{issuer*}/.well-known/openid-configuration", authenticated=False)
def issuer_discovery(call: Call) -> web.Response:
    issuer = _issuer(call)
    if issuer is None:
        return web.Response(status=404, text="no such issuer")
    return json_response(
        {
            "issuer": issuer,
            "jwks_uri": f"{issuer}openid/v1/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }
    )


@route("GET", "aks.oidc-keys", "/oic/{issuer*}/openid/v1/jwks", authenticated=False)
def issuer_keys(call: Call) -> web.Response:
    issuer = _issuer(call)
    if issuer is None:
        return web.Response(status=404, text="no such issuer")
    return json_response({"keys": [call.sandbox.issuers.hold(issuer).jwk()]})
