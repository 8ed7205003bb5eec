"""The sandbox's HTTP application: one middleware resolves the route, authenticates, injects faults, takes
the state's lock once around the handler, and records the call. The routes live in sandbox/routes/, one
module per Azure service."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from amlwire_sandbox import routes
from amlwire_sandbox.blobs import account_of
from amlwire_sandbox.http import Call, arm_error, json_response
from amlwire_sandbox.router import ROUTER
from amlwire_sandbox.sandbox import Sandbox
from amlwire_sandbox.state import ArmError

assert routes.__all__  # the routes register themselves on import


SANDBOX_KEY: web.AppKey[Sandbox] = web.AppKey("sandbox", Sandbox)
# Called with (method, route, status, JSON body) of every ARM answer: the test suite checks each body against
# the pinned SDKs' generated models (tests/contract.py).
RESPONSE_OBSERVERS: list[Callable[[str, str, int, bytes], None]] = []


def _bearer(request: web.Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ").strip()


def _caller_of(claims: dict[str, Any]) -> str:
    return str(claims.get("oid") or claims.get("sub") or "")


def _no_route(request: web.Request) -> web.Response:
    message = f"No route in the amlwire sandbox for {request.method} {request.path}"
    return json_response({"error": {"code": "NoRegisteredProviderFound", "message": message}}, status=404)


@web.middleware
async def dispatch(request: web.Request, handler: Any) -> web.StreamResponse:
    sandbox = request.app[SANDBOX_KEY]
    account = account_of(request.host)
    if account is not None:
        return await _blob_call(sandbox, request, account)
    resolved = ROUTER.resolve(request.method, request.path)
    if resolved is None:
        return _no_route(request)
    spec, params = resolved
    status, started = 500, sandbox.state.now()
    call = Call(sandbox, request, params)
    arm_headers: dict[str, str] = {}  # ARM reports its budget on every answer it lets through, errors too
    try:
        if spec.authenticated and not request.headers.get("Authorization", "").startswith("Bearer "):
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        if spec.authenticated:  # rule: entra.signed-tokens
            call.caller = _caller_of(sandbox.verified_claims(_bearer(request)))
        if spec.action and not call.caller:
            raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.")
        call.raw = await request.read() if request.can_read_body else b""
        with sandbox.state.lock:
            verdict = sandbox.state.budget.take(request.method, request.path, call.caller or "")
            if not verdict.allowed:
                retry = {"Retry-After": str(math.ceil(verdict.retry_after)), **verdict.headers}
                raise ArmError(429, "SubscriptionRequestsThrottled", verdict.message, retry)
            arm_headers = verdict.headers
            wait = sandbox.state.budget.take_identity(request.method, request.path)
            if wait is not None:
                raise ArmError(
                    429,
                    "TooManyRequests",
                    "Too many requests for this managed identity; retry after the interval in Retry-After.",
                    {"Retry-After": str(math.ceil(wait))},
                )
            fault = sandbox.state.draw_fault(request.method, spec.name) if spec.authenticated else None
            sandbox.cloud.settle()
            if spec.action:
                sandbox.cloud.authorize(call.caller or "", spec.action, request.path)
        if fault is not None:
            if fault.latency:
                call.fault_met = f"latency {fault.latency:g}s"
                await asyncio.sleep(fault.latency)
            if fault.status:
                call.fault_met = str(fault.status)
                headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after else {}
                raise ArmError(fault.status, fault.code, fault.message, headers)
            call.lro_failed = fault.lro_failed
        with sandbox.state.lock:
            response = spec.handler(call)
        if call.finish is not None:
            await asyncio.sleep(call.hold)
            with sandbox.state.lock:
                try:
                    response = call.finish()
                finally:
                    if call.release is not None:
                        call.release()
        status = response.status
        response.headers.update(verdict.headers)
        _observe(request.method, spec.name, response)
        return response
    except ArmError as error:
        status = error.status
        answer = arm_error(error)
        for name, value in arm_headers.items():
            answer.headers.setdefault(name, value)
        _observe(request.method, spec.name, answer)
        return answer
    except ConnectionResetError:  # the client went away mid-request (a SIGKILLed operator): nobody to answer
        status = 499
        return web.Response(status=499)
    finally:
        with sandbox.state.lock:
            sandbox.state.record(request.method, spec.name, request.path, status, call.caller, call.fault_met, started)


async def _blob_call(sandbox: Sandbox, request: web.Request, account: str) -> web.StreamResponse:
    """A request to a storage account's blob endpoint (the data plane: no ARM budget, no ARM authorisation)."""
    started, caller, audience = sandbox.state.now(), None, None
    if request.headers.get("Authorization", "").startswith("Bearer "):
        try:  # rule: entra.signed-tokens (Storage verifies Entra's signature too)
            claims = sandbox.verified_claims(_bearer(request))
            caller, audience = _caller_of(claims), claims.get("aud")
        except ArmError:
            caller = ""  # a bearer token that does not verify: refused like a missing one
    await request.read()
    with sandbox.state.lock:
        response = sandbox.blobs.answer(
            account, request.method, request.path, dict(request.query), request.headers, caller, audience
        )
        sandbox.state.record(request.method, "storage.blob", request.path, response.status, caller, None, started)
    if response.content_type == "application/xml" and isinstance(response.body, bytes):
        for observer in RESPONSE_OBSERVERS:
            observer(request.method, "storage.blob", response.status, response.body)
    return response


def _observe(method: str, route: str, response: web.StreamResponse) -> None:
    if not RESPONSE_OBSERVERS or not isinstance(response, web.Response) or response.content_type != "application/json":
        return
    body = response.body
    if isinstance(body, bytes):
        for observer in RESPONSE_OBSERVERS:
            observer(method, route, response.status, body)


def create_app(sandbox: Sandbox) -> web.Application:
    app = web.Application(middlewares=[dispatch], client_max_size=8 * 1024 * 1024)
    app[SANDBOX_KEY] = sandbox

    async def unreachable(request: web.Request) -> web.Response:  # the middleware answers every request
        raise web.HTTPNotFound()

    app.router.add_route("*", "/{tail:.*}", unreachable)
    return app
