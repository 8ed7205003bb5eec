"""AML workspaces, computes, environments and models (Microsoft.MachineLearningServices), and the storage
account behind a workspace (Microsoft.Storage)."""

from __future__ import annotations

from aiohttp import web

from amlwire_sandbox import ids
from amlwire_sandbox.http import RG, WS, Call, json_response, operation_headers, paged, started
from amlwire_sandbox.router import route, serve

STORAGE = RG + "/Microsoft.Storage/storageAccounts/{account}"
COMPUTE = WS + "/computes/{compute}"
ENVIRONMENT_VERSION = WS + "/environments/{environment}/versions/{version}"
DATASTORE = WS + "/datastores/{datastore}"
PRIVATE_ENDPOINT = RG + "/Microsoft.Network/privateEndpoints/{endpoint}"
MODEL = WS + "/models/{model}"
MODEL_VERSION = MODEL + "/versions/{version}"
ML = "Microsoft.MachineLearningServices/workspaces"


serve("storage.account", STORAGE, ids.STORAGE, "Microsoft.Storage/storageAccounts/read")
serve("ml.environment.version", ENVIRONMENT_VERSION, ids.ENVIRONMENT_VERSION, ML + "/environments/versions/read")
serve("ml.model.version", MODEL_VERSION, ids.MODEL_VERSION, ML + "/models/versions/read")
serve("ml.model", MODEL, ids.MODEL_CONTAINER, ML + "/models/read")
serve("ml.datastore", DATASTORE, ids.DATASTORE, ML + "/datastores/read")
serve("network.privateEndpoint", PRIVATE_ENDPOINT, ids.PRIVATE_ENDPOINT, "Microsoft.Network/privateEndpoints/read")


@route("GET", "ml.datastore.list", WS + "/datastores", ML + "/datastores/read")
def list_datastores(call: Call) -> web.Response:
    call.cloud.workspace(call.id(WS))
    found = [d.body for d in call.state.children(call.id(WS), ids.DATASTORE)]
    return json_response(paged(call, found, call.state.timing.page_size))


@route("POST", "ml.datastore.secrets", DATASTORE + "/listSecrets", ML + "/datastores/listsecrets/action")
def list_datastore_secrets(call: Call) -> web.Response:
    return json_response(call.cloud.datastore_secrets(call.id(DATASTORE)))


@route("GET", "ml.workspace", WS, ML + "/read")
def get_workspace(call: Call) -> web.Response:
    return json_response(call.cloud.workspace(call.id(WS)).body)


@route("GET", "ml.compute", COMPUTE, ML + "/computes/read")
def get_compute(call: Call) -> web.Response:
    call.cloud.workspace(call.id(WS))
    return json_response(call.state.require(call.id(COMPUTE), ids.COMPUTE).body)


@route("GET", "ml.compute.list", WS + "/computes", ML + "/computes/read")
def list_computes(call: Call) -> web.Response:
    return json_response({"value": [c.body for c in call.state.children(call.id(WS), ids.COMPUTE)]})


@route("PUT", "ml.compute", COMPUTE, ML + "/computes/write")
def put_compute(call: Call) -> web.Response:
    rid, body = call.id(COMPUTE), call.json()
    identities = list((body.get("identity") or {}).get("userAssignedIdentities") or {})
    call.cloud.authorize_linked(call.caller or "", ML + "/computes/write", rid, identities)
    existed = call.state.get(rid) is not None
    resource, operation = call.cloud.put_compute(rid, body)
    started(call, operation)  # rule: ml.compute-lro
    return json_response(resource.body, status=200 if existed else 201, headers=operation_headers(call, operation))


@route("DELETE", "ml.compute", COMPUTE, ML + "/computes/delete")
def delete_compute(call: Call) -> web.Response:
    call.cloud.workspace(call.id(WS))
    operation = call.cloud.delete_compute(call.id(COMPUTE), call.query.get("underlyingResourceAction"))
    if operation is None:  # rule: ml.compute-delete-missing
        return web.Response(status=204)
    started(call, operation)  # rule: ml.compute-lro
    return web.Response(status=202, headers=operation_headers(call, operation, location=True))


@route("PUT", "ml.environment.version", ENVIRONMENT_VERSION, ML + "/environments/versions/write")
def put_environment_version(call: Call) -> web.Response:
    rid = call.id(ENVIRONMENT_VERSION)
    existed = call.state.get(rid) is not None
    props = {**(call.json().get("properties") or {}), "provisioningState": "Succeeded"}
    resource = call.state.put(rid, ids.ENVIRONMENT_VERSION, {"properties": props})
    return json_response(resource.body, status=200 if existed else 201)


@route("PUT", "ml.model.version", MODEL_VERSION, ML + "/models/versions/write")
def put_model_version(call: Call) -> web.Response:
    existed = call.state.get(call.id(MODEL_VERSION)) is not None
    resource = call.cloud.put_model_version(call.id(WS), call.params["model"], call.params["version"], call.json())
    return json_response(resource.body, status=200 if existed else 201)


@route("GET", "ml.model.version.list", MODEL + "/versions", ML + "/models/versions/read")
def list_model_versions(call: Call) -> web.Response:
    container = call.id(MODEL).lower() + "/versions/"
    versions = [r for r in call.state.of_type(ids.MODEL_VERSION) if r.id.lower().startswith(container)]
    versions.sort(key=lambda r: r.created, reverse=True)
    return json_response({"value": [v.body for v in versions]})
