"""The sandbox's HTTP application: ARM, Entra token exchange, AML data plane, and the control API."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from amlwire.sandbox import ids
from amlwire.sandbox.jobs import Jobs
from amlwire.sandbox.router import Router, route
from amlwire.sandbox.services import TERMINAL_JOB_STATES, Services
from amlwire.sandbox.state import AUDIENCE, ArmError, Operation, State, iso, not_found
from amlwire.sandbox.world import Timing, World

RG = "/subscriptions/{sub}/resourceGroups/{rg}/providers"
MSI = RG + "/Microsoft.ManagedIdentity/userAssignedIdentities/{identity}"
AKS = RG + "/Microsoft.ContainerService/managedClusters/{cluster}"
EXT = AKS + "/providers/Microsoft.KubernetesConfiguration/extensions/{extension}"
WS = RG + "/Microsoft.MachineLearningServices/workspaces/{workspace}"
HISTORY = "/history/v1.0" + WS

router = Router()


class Sandbox:
    """The application state shared by the handlers."""

    def __init__(self, world: World, base_url: str, seed: int = 0) -> None:
        self.world = world
        self.base_url = base_url
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self.state = State(self.world, self.base_url, self.seed)
        self.services = Services(self.state)
        self.jobs = Jobs(self.services)
        with self.state.lock:
            self.services.seed(self.world)


SANDBOX_KEY: web.AppKey[Sandbox] = web.AppKey("sandbox", Sandbox)
LRO_FAILED: web.RequestKey[bool] = web.RequestKey("lro_failed", bool)
FAULT_MET: web.RequestKey[str] = web.RequestKey("fault_met", str)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def arm_error(error: ArmError) -> web.Response:
    return json_response(error.body(), status=error.status, headers=error.headers)


def sandbox_of(request: web.Request) -> Sandbox:
    return request.app[SANDBOX_KEY]


def _caller(request: web.Request) -> str | None:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims.get("oid") or claims.get("sub") or "")
    except (IndexError, ValueError):
        return None


@web.middleware
async def dispatch(request: web.Request, handler: Any) -> web.StreamResponse:
    sandbox = sandbox_of(request)
    resolved = router.resolve(request.method, request.path)
    if resolved is None:
        return json_response(
            {
                "error": {
                    "code": "NoRegisteredProviderFound",
                    "message": f"No route in the amlwire sandbox for {request.method} {request.path}",
                }
            },
            status=404,
        )
    spec, params = resolved
    status, started = 500, sandbox.state.now()
    try:
        if spec.authenticated and not request.headers.get("Authorization", "").startswith("Bearer "):
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        with sandbox.state.lock:
            fault = sandbox.state.draw_fault(request.method, spec.name) if spec.authenticated else None
            sandbox.services.settle()
        if fault is not None:
            if fault.latency:
                request[FAULT_MET] = f"latency {fault.latency:g}s"
                await asyncio.sleep(fault.latency)
            if fault.status:
                request[FAULT_MET] = str(fault.status)
                headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after else {}
                raise ArmError(fault.status, fault.code, fault.message, headers)
            request[LRO_FAILED] = fault.lro_failed
        response = await spec.handler(request, params)
        status = response.status
        return response
    except ArmError as error:
        status = error.status
        return arm_error(error)
    except ConnectionResetError:  # the client went away mid-request (a SIGKILLed operator): nobody to answer
        status = 499
        return web.Response(status=499)
    finally:
        with sandbox.state.lock:
            sandbox.state.record(
                request.method, spec.name, request.path, status, _caller(request), request.get(FAULT_MET), started
            )


def create_app(sandbox: Sandbox) -> web.Application:
    app = web.Application(middlewares=[dispatch], client_max_size=8 * 1024 * 1024)
    app[SANDBOX_KEY] = sandbox

    async def unreachable(request: web.Request) -> web.Response:  # the middleware answers every request
        raise web.HTTPNotFound()

    app.router.add_route("*", "/{tail:.*}", unreachable)
    return app


async def body_of(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except json.JSONDecodeError as error:
        raise ArmError(400, "InvalidRequestContent", f"The request content was invalid: {error}") from error
    if not isinstance(data, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
    return data


def arm_id(template: str, params: dict[str, str]) -> str:
    return template.format(**params)


def operation_headers(sandbox: Sandbox, operation: Operation, location: bool = False) -> dict[str, str]:
    url = sandbox.state.operation_url(operation)
    wait_ms = str(int(min(1000, max(50, sandbox.state.timing.lro_seconds * 250))))
    headers = {"Azure-AsyncOperation": url, "retry-after-ms": wait_ms}
    if location:
        headers["Location"] = url.replace("/operations/", "/operation-results/")
    return headers


def _apply_lro_fault(request: web.Request, operation: Operation) -> None:
    if request.get(LRO_FAILED):
        request[FAULT_MET] = "lroFailed"
        operation.outcome = "Failed"
        operation.error = {"code": "InjectedOperationFailure", "message": "The operation failed (sandbox fault)."}


def paged(sandbox: Sandbox, request: web.Request, items: list[dict[str, Any]], size: int) -> dict[str, Any]:
    start = int(request.query.get("$skipToken") or 0)
    page = items[start : start + size]
    body: dict[str, Any] = {"value": page}
    if start + size < len(items):
        query = {**request.query, "$skipToken": str(start + size)}
        body["nextLink"] = f"{sandbox.base_url}{request.path}?{urlencode(query)}"
    return body


# -- managed identities ----------------------------------------------------------------------------
@route(router, "GET", "msi.identity", MSI)
async def get_identity(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        return json_response(sandbox.services.identity(arm_id(MSI, p)).body)


@route(router, "PUT", "msi.identity", MSI)
async def put_identity(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    rid = arm_id(MSI, p)
    with sandbox.state.lock:
        existing = sandbox.state.get(rid)
        props = (
            existing.properties
            if existing
            else {
                "tenantId": sandbox.world.defaults.tenant_id,
                "principalId": ids.stable_uuid(rid, "principal"),
                "clientId": ids.stable_uuid(rid, "client"),
            }
        )
        resource = sandbox.state.put(
            rid,
            ids.MSI,
            {"location": body.get("location", "eastus"), "tags": body.get("tags", {}), "properties": props},
        )
        return json_response(resource.body, status=200 if existing else 201)


@route(router, "GET", "msi.fic.list", MSI + "/federatedIdentityCredentials")
async def list_fics(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        fics = [f.body for f in sandbox.services.list_fics(arm_id(MSI, p))]
        return json_response(paged(sandbox, request, fics, sandbox.state.timing.page_size))


@route(router, "GET", "msi.fic", MSI + "/federatedIdentityCredentials/{fic}")
async def get_fic(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        sandbox.services.identity(arm_id(MSI, p))
        fic = sandbox.state.get(f"{arm_id(MSI, p)}/federatedIdentityCredentials/{p['fic']}")
        if fic is None:
            raise not_found(ids.FIC, p["fic"])
        return json_response(fic.body)


async def _hold_identity_for_write(sandbox: Sandbox, identity_id: str) -> None:
    """Entra refuses concurrent FIC writes under one identity: hold it for the write window, or 409."""
    with sandbox.state.lock:
        sandbox.services.identity(identity_id)
        now = time.monotonic()
        if sandbox.state.fic_writes_until.get(identity_id.lower(), 0.0) > now:
            raise ArmError(
                409,
                "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
                f"Too many Federated Identity Credentials are written concurrently for the managed "
                f"identity '{identity_id}'. Concurrent Federated Identity Credentials writes under "
                f"the same managed identity are not supported.",
            )
        window = sandbox.state.timing.fic_write_window_seconds
        sandbox.state.fic_writes_until[identity_id.lower()] = now + window
    await asyncio.sleep(window)


def _release_identity(sandbox: Sandbox, identity_id: str) -> None:
    with sandbox.state.lock:
        sandbox.state.fic_writes_until.pop(identity_id.lower(), None)


@route(router, "PUT", "msi.fic", MSI + "/federatedIdentityCredentials/{fic}")
async def put_fic(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body, identity_id = sandbox_of(request), await body_of(request), arm_id(MSI, p)
    with sandbox.state.lock:
        sandbox.services.validate_fic(identity_id, p["fic"], body)
    await _hold_identity_for_write(sandbox, identity_id)
    try:
        with sandbox.state.lock:
            resource, created = sandbox.services.put_fic(identity_id, p["fic"], body)
            return json_response(resource.body, status=201 if created else 200)
    finally:
        _release_identity(sandbox, identity_id)


@route(router, "DELETE", "msi.fic", MSI + "/federatedIdentityCredentials/{fic}")
async def delete_fic(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, identity_id = sandbox_of(request), arm_id(MSI, p)
    await _hold_identity_for_write(sandbox, identity_id)
    try:
        with sandbox.state.lock:
            removed = sandbox.state.delete(f"{identity_id}/federatedIdentityCredentials/{p['fic']}")
            return web.Response(status=200 if removed else 204)
    finally:
        _release_identity(sandbox, identity_id)


# -- AKS and cluster extensions --------------------------------------------------------------------
@route(router, "GET", "aks.cluster", AKS)
async def get_cluster(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        return json_response(sandbox.state.require(arm_id(AKS, p), ids.AKS).body)


@route(router, "GET", "ext.extension", EXT)
async def get_extension(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        return json_response(sandbox.state.require(arm_id(EXT, p), ids.EXTENSION).body)


async def _write_extension(request: web.Request, p: dict[str, str], patch: bool) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        existed = sandbox.state.get(arm_id(EXT, p)) is not None
        resource, operation = sandbox.services.put_extension(arm_id(EXT, p), body, patch)
        _apply_lro_fault(request, operation)
        status = 202 if patch else (200 if existed else 201)
        return json_response(resource.body, status=status, headers=operation_headers(sandbox, operation))


@route(router, "PUT", "ext.extension", EXT)
async def put_extension(request: web.Request, p: dict[str, str]) -> web.Response:
    return await _write_extension(request, p, patch=False)


@route(router, "PATCH", "ext.extension", EXT)
async def patch_extension(request: web.Request, p: dict[str, str]) -> web.Response:
    return await _write_extension(request, p, patch=True)


@route(router, "DELETE", "ext.extension", EXT)
async def delete_extension(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        if sandbox.state.get(arm_id(EXT, p)) is None:
            return web.Response(status=204)
        operation = sandbox.services.delete_extension(arm_id(EXT, p))
        _apply_lro_fault(request, operation)
        return web.Response(status=202, headers=operation_headers(sandbox, operation, location=True))


# -- long-running operation status -----------------------------------------------------------------
@route(router, "GET", "sandbox.operation", "/_sandbox/operations/{operation}")
async def operation_status(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        operation = sandbox.state.operations.get(p["operation"])
        if operation is None:
            raise not_found("operation", p["operation"])
        status = operation.status(sandbox.state.now())
        body: dict[str, Any] = {
            "id": p["operation"],
            "name": p["operation"],
            "status": status,
            "startTime": iso(operation.done_at),
        }
        if status == "Failed" and operation.error:
            body["error"] = operation.error
        headers = operation_headers(sandbox, operation) if status == "InProgress" else {}
        return json_response(body, headers={k: v for k, v in headers.items() if k == "retry-after-ms"})


@route(router, "GET", "sandbox.operation-result", "/_sandbox/operation-results/{operation}")
async def operation_result(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        operation = sandbox.state.operations.get(p["operation"])
        if operation is None:
            raise not_found("operation", p["operation"])
        status = operation.status(sandbox.state.now())
        if status == "InProgress":
            return web.Response(status=202, headers={"retry-after-ms": "50", "Location": str(request.url)})
        if status == "Failed":
            raise ArmError(
                500,
                (operation.error or {}).get("code", "OperationFailed"),
                (operation.error or {}).get("message", "The operation failed."),
            )
        return web.Response(status=204)


# -- role assignments ------------------------------------------------------------------------------
RA = "/{scope*}/providers/Microsoft.Authorization/roleAssignments"


def _scope(p: dict[str, str]) -> str:
    return "/" + p["scope"].strip("/")


@route(router, "GET", "authz.roleAssignment.list", RA)
async def list_role_assignments(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        found = sandbox.services.list_role_assignments(_scope(p), request.query.get("$filter"))
        return json_response(paged(sandbox, request, [r.body for r in found], sandbox.state.timing.page_size))


@route(router, "PUT", "authz.roleAssignment", RA + "/{assignment}")
async def put_role_assignment(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        resource, status = sandbox.services.put_role_assignment(_scope(p), p["assignment"], body)
        return json_response(resource.body, status=status)


@route(router, "GET", "authz.roleAssignment", RA + "/{assignment}")
async def get_role_assignment(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        found = sandbox.state.get(f"{_scope(p)}/providers/{ids.ROLE_ASSIGNMENT}/{p['assignment']}")
        if found is None:
            raise ArmError(404, "RoleAssignmentNotFound", f"The role assignment '{p['assignment']}' is not found.")
        return json_response(found.body)


@route(router, "DELETE", "authz.roleAssignment", RA + "/{assignment}")
async def delete_role_assignment(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        removed = sandbox.state.delete(f"{_scope(p)}/providers/{ids.ROLE_ASSIGNMENT}/{p['assignment']}")
        return json_response(removed.body) if removed else web.Response(status=204)


# -- storage, registries, key vaults ---------------------------------------------------------------
@route(router, "GET", "storage.account", RG + "/Microsoft.Storage/storageAccounts/{account}")
async def get_storage(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        rid = arm_id(RG + "/Microsoft.Storage/storageAccounts/{account}", p)
        return json_response(sandbox.state.require(rid, ids.STORAGE).body)


# -- AML workspace, computes, environments, models -------------------------------------------------
@route(router, "GET", "ml.workspace", WS)
async def get_workspace(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        return json_response(sandbox.services.workspace(arm_id(WS, p)).body)


@route(router, "GET", "ml.compute", WS + "/computes/{compute}")
async def get_compute(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        sandbox.services.workspace(arm_id(WS, p))
        return json_response(sandbox.state.require(arm_id(WS + "/computes/{compute}", p), ids.COMPUTE).body)


@route(router, "GET", "ml.compute.list", WS + "/computes")
async def list_computes(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        computes = sandbox.state.children(arm_id(WS, p), ids.COMPUTE)
        return json_response({"value": [c.body for c in computes]})


@route(router, "PUT", "ml.compute", WS + "/computes/{compute}")
async def put_compute(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        existed = sandbox.state.get(arm_id(WS + "/computes/{compute}", p)) is not None
        resource, operation = sandbox.services.put_compute(arm_id(WS + "/computes/{compute}", p), body)
        _apply_lro_fault(request, operation)
        return json_response(
            resource.body, status=200 if existed else 201, headers=operation_headers(sandbox, operation)
        )


@route(router, "DELETE", "ml.compute", WS + "/computes/{compute}")
async def delete_compute(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        operation = sandbox.services.delete_compute(
            arm_id(WS + "/computes/{compute}", p), request.query.get("underlyingResourceAction")
        )
        _apply_lro_fault(request, operation)
        return web.Response(status=202, headers=operation_headers(sandbox, operation, location=True))


@route(router, "PUT", "ml.environment.version", WS + "/environments/{environment}/versions/{version}")
async def put_environment_version(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        rid = arm_id(WS + "/environments/{environment}/versions/{version}", p)
        existed = sandbox.state.get(rid) is not None
        props = {**(body.get("properties") or {}), "provisioningState": "Succeeded"}
        resource = sandbox.state.put(rid, ids.ENVIRONMENT_VERSION, {"properties": props})
        return json_response(resource.body, status=200 if existed else 201)


@route(router, "GET", "ml.environment.version", WS + "/environments/{environment}/versions/{version}")
async def get_environment_version(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        rid = arm_id(WS + "/environments/{environment}/versions/{version}", p)
        return json_response(sandbox.state.require(rid, ids.ENVIRONMENT_VERSION).body)


@route(router, "GET", "ml.model.version", WS + "/models/{model}/versions/{version}")
async def get_model_version(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        return json_response(
            sandbox.state.require(arm_id(WS + "/models/{model}/versions/{version}", p), ids.MODEL_VERSION).body
        )


@route(router, "PUT", "ml.model.version", WS + "/models/{model}/versions/{version}")
async def put_model_version(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        existed = sandbox.state.get(arm_id(WS + "/models/{model}/versions/{version}", p)) is not None
        resource = sandbox.services.put_model_version(arm_id(WS, p), p["model"], p["version"], body)
        return json_response(resource.body, status=200 if existed else 201)


@route(router, "GET", "ml.model", WS + "/models/{model}")
async def get_model(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        return json_response(sandbox.state.require(arm_id(WS + "/models/{model}", p), ids.MODEL_CONTAINER).body)


@route(router, "GET", "ml.model.version.list", WS + "/models/{model}/versions")
async def list_model_versions(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        versions = sandbox.state.children(arm_id(WS + "/models/{model}", p) + "/versions", ids.MODEL_VERSION)
        container = arm_id(WS + "/models/{model}", p)
        versions = [
            r
            for r in sandbox.state.of_type(ids.MODEL_VERSION)
            if r.id.lower().startswith(container.lower() + "/versions/")
        ]
        versions.sort(key=lambda r: r.created, reverse=True)
        return json_response({"value": [v.body for v in versions]})


# -- AML jobs --------------------------------------------------------------------------------------
JOB = WS + "/jobs/{job}"


@route(router, "PUT", "ml.job", JOB)
async def put_job(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        resource, created = sandbox.jobs.submit(arm_id(JOB, p), body)
        return json_response(sandbox.jobs.refresh(resource).body, status=201 if created else 200)


@route(router, "GET", "ml.job", JOB)
async def get_job(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        job = sandbox.state.get(arm_id(JOB, p))
        if job is None or job.type != ids.JOB:
            raise ArmError(404, "UserError", f"Job {p['job']} was not found in the workspace.")
        return json_response(sandbox.jobs.refresh(job).body)


@route(router, "GET", "ml.job.list", WS + "/jobs")
async def list_jobs(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        jobs = [j.body for j in sandbox.jobs.list(arm_id(WS, p), request.query.get("tag"))]
        return json_response(paged(sandbox, request, jobs, sandbox.state.timing.page_size))


@route(router, "POST", "ml.job.cancel", JOB + "/cancel")
async def cancel_job(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        job = sandbox.state.require(arm_id(JOB, p), ids.JOB)
        sandbox.jobs.cancel(job)
        operation = sandbox.state.start_operation(job.id, "JobCancel", seconds=0)
        url = sandbox.state.operation_url(operation).replace("/operations/", "/operation-results/")
        return web.Response(status=202, headers={"Location": url, "retry-after-ms": "50"})


def _job_for_history(sandbox: Sandbox, p: dict[str, str]) -> Any:
    job = sandbox.state.get(arm_id(WS, p) + f"/jobs/{p['run']}")
    if job is None:
        raise ArmError(404, "UserError", f"Run {p['run']} was not found.")
    return job


@route(router, "GET", "history.run.details", HISTORY + "/runs/{run}/details")
async def run_details(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        return json_response(sandbox.jobs.run_details(_job_for_history(sandbox, p)))


@route(router, "GET", "history.run.details", HISTORY + "/experiments/{experiment}/runs/{run}/details")
async def run_details_by_experiment(request: web.Request, p: dict[str, str]) -> web.Response:
    return await run_details(request, p)


@route(router, "GET", "history.run", HISTORY + "/runs/{run}")
async def run(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        details = sandbox.jobs.run_details(_job_for_history(sandbox, p))
        return json_response({k: v for k, v in details.items() if k not in ("logFiles", "runDefinition")})


@route(router, "GET", "mlflow.run", "/mlflow/v1.0" + WS + "/api/2.0/mlflow/runs/get")
async def mlflow_run(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    run_id = request.query.get("run_id") or request.query.get("run_uuid") or ""
    with sandbox.state.lock:
        job = sandbox.state.get(arm_id(WS, p) + f"/jobs/{run_id}")
        if job is None:
            raise ArmError(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found.")
        sandbox.jobs.refresh(job)
        status = job.properties["status"]
        stamp = int(job.extra.get("ended", job.created) * 1000)
        metrics = [{"key": k, "value": v, "timestamp": stamp, "step": 0} for k, v in sandbox.jobs.metrics(job).items()]
        mlflow_status = {"Completed": "FINISHED", "Failed": "FAILED", "Canceled": "KILLED"}.get(status, "RUNNING")
        return json_response(
            {
                "run": {
                    "info": {
                        "run_id": run_id,
                        "run_uuid": run_id,
                        "status": mlflow_status,
                        "experiment_id": job.properties.get("experimentName"),
                    },
                    "data": {"metrics": metrics, "params": [], "tags": []},
                }
            }
        )


# -- discovery, cloud metadata, logs (no authentication) -----------------------------------------
@route(router, "GET", "ml.discovery", "/discovery/{location}", authenticated=False)
async def discovery(request: web.Request, p: dict[str, str]) -> web.Response:
    base = sandbox_of(request).base_url
    services = (
        "api",
        "catalog",
        "experimentation",
        "gallery",
        "history",
        "hyperdrive",
        "labeling",
        "modelmanagement",
        "pipelines",
    )
    return json_response(dict.fromkeys(services, base) | {"studio": "https://ml.azure.com"})


@route(router, "GET", "metadata.endpoints", "/metadata/endpoints", authenticated=False)
async def cloud_metadata(request: web.Request, p: dict[str, str]) -> web.Response:
    base = sandbox_of(request).base_url
    return json_response(
        [
            {
                "name": "AmlwireSandbox",
                "portal": "https://portal.azure.com",
                "resourceManager": base + "/",
                "authentication": {
                    "loginEndpoint": base + "/",
                    "audiences": [base + "/"],
                    "tenant": "common",
                    "identityProvider": "AAD",
                },
                "suffixes": {
                    "storage": "core.windows.net",
                    "keyVaultDns": ".vault.azure.net",
                    "acrLoginServer": "azurecr.io",
                },
            }
        ]
    )


@route(router, "GET", "sandbox.log", "/_sandbox/logs/{job}", authenticated=False)
async def job_log(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        job = next((j for j in sandbox.state.of_type(ids.JOB) if j.name == p["job"]), None)
        if job is None:
            raise not_found("job", p["job"])
        return web.Response(text=sandbox.jobs.log(job))


# -- Entra: workload identity token exchange -------------------------------------------------------
def _jwt_claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as error:
        raise ArmError(400, "invalid_client", "AADSTS50027: JWT token is invalid or malformed.") from error
    if not isinstance(claims, dict):
        raise ArmError(400, "invalid_client", "AADSTS50027: JWT token is invalid or malformed.")
    return claims


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def access_token(claims: dict[str, Any]) -> str:
    """A JWT-shaped (unsigned) access token, so callers and storage emulators can read its claims."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.sandbox"


def _token_error(code: str, description: str) -> web.Response:
    return json_response({"error": code, "error_description": description, "error_codes": [70021]}, status=400)


@route(router, "POST", "entra.token", "/{tenant}/oauth2/v2.0/token", authenticated=False)
async def token(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, form = sandbox_of(request), await request.post()
    client_id, assertion = str(form.get("client_id", "")), str(form.get("client_assertion", ""))
    scope = str(form.get("scope", ""))
    if not assertion:
        return _token_error(
            "invalid_request",
            "AADSTS900144: only client assertions (workload identity) are supported by the amlwire sandbox.",
        )
    claims = _jwt_claims(assertion)
    with sandbox.state.lock:
        identity = sandbox.services.identity_by_client_id(client_id)
        if identity is None:
            return _token_error(
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory.",
            )
        audiences: list[Any] = claims["aud"] if isinstance(claims.get("aud"), list) else [claims.get("aud")]
        fic = sandbox.services.matching_fic(identity.id, str(claims.get("iss")), str(claims.get("sub")))
        if fic is None or AUDIENCE not in audiences:
            return _token_error(
                "invalid_client",
                "AADSTS70021: No matching federated identity record found for "
                f"presented assertion. Assertion Issuer: '{claims.get('iss')}'. Assertion "
                f"Subject: '{claims.get('sub')}'. Assertion Audience: '{claims.get('aud')}'.",
            )
        if not sandbox.services.fic_effective(fic):
            return _token_error(
                "invalid_client",
                "AADSTS70021: No matching federated identity record found "
                "(the federated credential was created moments ago and is still propagating).",
            )
        now = int(time.time())
        token_claims = {
            "aud": scope.removesuffix("/.default"),
            "iss": f"{sandbox.base_url}/{p['tenant']}/",
            "iat": now,
            "exp": now + 3600,
            "oid": identity.properties["principalId"],
            "appid": client_id,
            "tid": p["tenant"],
            "xms_mirid": identity.id,
            "uti": f"canary{secrets.token_hex(12)}",  # unique per token: a leak test can find each one
        }
        issued = access_token(token_claims)
        sandbox.state.issued_tokens.append(issued)
    return json_response({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": issued})


@route(router, "GET", "entra.openid", "/{tenant}/v2.0/.well-known/openid-configuration", authenticated=False)
async def openid_configuration(request: web.Request, p: dict[str, str]) -> web.Response:
    base = sandbox_of(request).base_url
    return json_response(
        {
            "issuer": f"{base}/{p['tenant']}/v2.0",
            "token_endpoint": f"{base}/{p['tenant']}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/{p['tenant']}/oauth2/v2.0/authorize",
        }
    )


# -- control API -----------------------------------------------------------------------------------
@route(router, "GET", "control.health", "/_sandbox/health", authenticated=False)
async def health(request: web.Request, p: dict[str, str]) -> web.Response:
    return json_response({"status": "ok"})


@route(router, "GET", "control.tokens", "/_sandbox/tokens", authenticated=False)
async def issued_tokens(request: web.Request, p: dict[str, str]) -> web.Response:
    """Every access token issued so far (tests look for them where no secret may be)."""
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        return json_response(list(sandbox.state.issued_tokens))


@route(router, "GET", "control.calls", "/_sandbox/calls", authenticated=False)
async def calls(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, since = sandbox_of(request), int(request.query.get("since", 0))
    with sandbox.state.lock:
        return json_response(
            [
                {
                    "seq": c.seq,
                    "time": c.time,
                    "started": c.started,
                    "method": c.method,
                    "route": c.route,
                    "path": c.path,
                    "status": c.status,
                    "caller": c.caller,
                    "fault": c.fault,
                }
                for c in sandbox.state.calls[since:]
                if not c.route.startswith("control.")
            ]
        )


@route(router, "GET", "control.mark", "/_sandbox/mark", authenticated=False)
async def mark(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        return json_response({"next": len(sandbox.state.calls)})


@route(router, "GET", "control.counts", "/_sandbox/counts", authenticated=False)
async def counts(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, since = sandbox_of(request), int(request.query.get("since", 0))
    with sandbox.state.lock:
        return json_response({k: v for k, v in sandbox.state.counts(since).items() if " control." not in k})


@route(router, "POST", "control.faults", "/_sandbox/faults", authenticated=False)
async def add_fault(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        return json_response({"id": sandbox.state.add_fault(body).id}, status=201)


@route(router, "DELETE", "control.faults", "/_sandbox/faults", authenticated=False)
async def clear_faults(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        sandbox.state.faults.clear()
    return web.Response(status=204)


@route(router, "GET", "control.state", "/_sandbox/state", authenticated=False)
async def snapshot(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        sandbox.services.settle()
        return json_response(sandbox.state.snapshot())


@route(router, "POST", "control.reset", "/_sandbox/reset", authenticated=False)
async def reset(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    sandbox.reset()
    return web.Response(status=204)


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for name, value in patch.items():
        if value is None:
            target.pop(name, None)
        elif isinstance(value, dict) and isinstance(target.get(name), dict):
            _merge_patch(target[name], value)
        else:
            target[name] = value
    return target


@route(router, "PATCH", "control.resource", "/_sandbox/resource", authenticated=False)
async def patch_resource(request: web.Request, p: dict[str, str]) -> web.Response:
    """Change a resource behind everyone's back (JSON merge patch of its ARM body, or of `extra`)."""
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        resource = sandbox.state.require(request.query["id"], "resource")
        _merge_patch(resource.body, body.get("body", {}))
        _merge_patch(resource.extra, body.get("extra", {}))
        return json_response(resource.body)


@route(router, "PUT", "control.resource", "/_sandbox/resource", authenticated=False)
async def create_resource(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        resource = sandbox.state.put(
            request.query["id"], request.query["type"], body.get("body", {}), **body.get("extra", {})
        )
        return json_response(resource.body, status=201)


@route(router, "DELETE", "control.resource", "/_sandbox/resource", authenticated=False)
async def delete_resource(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        removed = sandbox.state.delete(request.query["id"])
    return web.Response(status=200 if removed else 404)


@route(router, "PATCH", "control.timing", "/_sandbox/timing", authenticated=False)
async def patch_timing(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        merged = _merge_patch(sandbox.state.timing.model_dump(by_alias=True), body)
        sandbox.state.timing = Timing.model_validate(merged)
        return json_response(sandbox.state.timing.model_dump(by_alias=True))


@route(router, "POST", "control.job-rules", "/_sandbox/job-rules", authenticated=False)
async def add_job_rule(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox, body = sandbox_of(request), await body_of(request)
    with sandbox.state.lock:
        sandbox.state.job_rules.append(body)
    return web.Response(status=204)


@route(router, "DELETE", "control.job-rules", "/_sandbox/job-rules", authenticated=False)
async def clear_job_rules(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        sandbox.state.job_rules.clear()
    return web.Response(status=204)


@route(router, "GET", "control.jobs", "/_sandbox/jobs", authenticated=False)
async def all_jobs(request: web.Request, p: dict[str, str]) -> web.Response:
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        jobs = [sandbox.jobs.refresh(j) for j in sandbox.state.of_type(ids.JOB)]
        return json_response(
            [
                {
                    "id": j.id,
                    "name": j.name,
                    "status": j.properties["status"],
                    "tags": j.properties.get("tags", {}),
                    "error": j.extra.get("error"),
                    "metrics": sandbox.jobs.metrics(j),
                }
                for j in jobs
            ]
        )


@route(router, "GET", "control.judge", "/_sandbox/judge", authenticated=False)
async def judge(request: web.Request, p: dict[str, str]) -> web.Response:
    """Why a job on this compute would fail to reach storage right now (None when it would not)."""
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        compute = sandbox.state.require(request.query["compute"], ids.COMPUTE)
        workspace = sandbox.state.require(compute.id.split("/computes/", 1)[0], ids.WORKSPACE)
        return json_response(
            {
                "sidecar": sandbox.services.storage_access_problem(compute, workspace, needs_write=True),
                "inContainer": sandbox.services.in_container_problem(compute, workspace),
            }
        )


def job_is_terminal(status: str) -> bool:
    return status in TERMINAL_JOB_STATES
