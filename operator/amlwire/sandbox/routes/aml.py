"""AML workspaces, computes, environments and models (Microsoft.MachineLearningServices), and the storage
account behind a workspace (Microsoft.Storage)."""

from __future__ import annotations

from aiohttp import web

from amlwire.sandbox import ids
from amlwire.sandbox.http import RG, WS, Call, json_response, operation_headers, started
from amlwire.sandbox.router import route, serve

STORAGE = RG + "/Microsoft.Storage/storageAccounts/{account}"
COMPUTE = WS + "/computes/{compute}"
ENVIRONMENT_VERSION = WS + "/environments/{environment}/versions/{version}"
MODEL = WS + "/models/{model}"
MODEL_VERSION = MODEL + "/versions/{version}"


serve("storage.account", STORAGE, ids.STORAGE)
serve("ml.environment.version", ENVIRONMENT_VERSION, ids.ENVIRONMENT_VERSION)
serve("ml.model.version", MODEL_VERSION, ids.MODEL_VERSION)
serve("ml.model", MODEL, ids.MODEL_CONTAINER)


@route("GET", "ml.workspace", WS)
def get_workspace(call: Call) -> web.Response:
    return json_response(call.cloud.workspace(call.id(WS)).body)


@route("GET", "ml.compute", COMPUTE)
def get_compute(call: Call) -> web.Response:
    call.cloud.workspace(call.id(WS))
    return json_response(call.state.require(call.id(COMPUTE), ids.COMPUTE).body)


@route("GET", "ml.compute.list", WS + "/computes")
def list_computes(call: Call) -> web.Response:
    return json_response({"value": [c.body for c in call.state.children(call.id(WS), ids.COMPUTE)]})


@route("PUT", "ml.compute", COMPUTE)
def put_compute(call: Call) -> web.Response:
    rid = call.id(COMPUTE)
    existed = call.state.get(rid) is not None
    resource, operation = call.cloud.put_compute(rid, call.json())
    started(call, operation)
    return json_response(resource.body, status=200 if existed else 201, headers=operation_headers(call, operation))


@route("DELETE", "ml.compute", COMPUTE)
def delete_compute(call: Call) -> web.Response:
    operation = call.cloud.delete_compute(call.id(COMPUTE), call.query.get("underlyingResourceAction"))
    started(call, operation)
    return web.Response(status=202, headers=operation_headers(call, operation, location=True))


@route("PUT", "ml.environment.version", ENVIRONMENT_VERSION)
def put_environment_version(call: Call) -> web.Response:
    rid = call.id(ENVIRONMENT_VERSION)
    existed = call.state.get(rid) is not None
    props = {**(call.json().get("properties") or {}), "provisioningState": "Succeeded"}
    resource = call.state.put(rid, ids.ENVIRONMENT_VERSION, {"properties": props})
    return json_response(resource.body, status=200 if existed else 201)


@route("PUT", "ml.model.version", MODEL_VERSION)
def put_model_version(call: Call) -> web.Response:
    existed = call.state.get(call.id(MODEL_VERSION)) is not None
    resource = call.cloud.put_model_version(call.id(WS), call.params["model"], call.params["version"], call.json())
    return json_response(resource.body, status=200 if existed else 201)


@route("GET", "ml.model.version.list", MODEL + "/versions")
def list_model_versions(call: Call) -> web.Response:
    container = call.id(MODEL).lower() + "/versions/"
    versions = [r for r in call.state.of_type(ids.MODEL_VERSION) if r.id.lower().startswith(container)]
    versions.sort(key=lambda r: r.created, reverse=True)
    return json_response({"value": [v.body for v in versions]})
