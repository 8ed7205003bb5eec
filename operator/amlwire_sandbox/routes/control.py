"""The control API (/_sandbox/, no authentication, loopback only): call log, faults, state, changes behind
everyone's back, job rules, the wiring judge."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from amlwire_sandbox import ids
from amlwire_sandbox.budget import ArmBudget
from amlwire_sandbox.http import Call, json_response
from amlwire_sandbox.router import ROUTER, route
from amlwire_sandbox.state import AUDIENCE, ArmError
from amlwire_sandbox.world import ArmLimits, Timing


@route("GET", "control.health", "/_sandbox/health", authenticated=False)
def health(call: Call) -> web.Response:
    return json_response({"status": "ok"})


@route("GET", "control.tokens", "/_sandbox/tokens", authenticated=False)
def issued_tokens(call: Call) -> web.Response:
    """Every access token issued so far (tests look for them where no secret may be)."""
    return json_response(list(call.state.issued_tokens))


@route("GET", "control.calls", "/_sandbox/calls", authenticated=False)
def calls(call: Call) -> web.Response:
    since = int(call.query.get("since", 0))
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
            for c in call.state.calls[since:]
            if not c.route.startswith("control.")
        ]
    )


@route("GET", "control.mark", "/_sandbox/mark", authenticated=False)
def mark(call: Call) -> web.Response:
    return json_response({"next": len(call.state.calls)})


@route("GET", "control.counts", "/_sandbox/counts", authenticated=False)
def counts(call: Call) -> web.Response:
    since = int(call.query.get("since", 0))
    return json_response({k: v for k, v in call.state.counts(since).items() if " control." not in k})


@route("POST", "control.faults", "/_sandbox/faults", authenticated=False)
def add_fault(call: Call) -> web.Response:
    spec = call.json()
    _check_fault(spec)
    return json_response({"id": call.state.add_fault(spec).id}, status=201)


def _check_fault(spec: dict[str, Any]) -> None:
    """A fault that could never fire is refused, saying why (docs: README, control API)."""
    if spec.get("count") is None and spec.get("probability") is None:
        raise ArmError(
            400,
            "InvalidFault",
            "a fault needs count (it fires on the next N matching calls) or probability (0-1, per matching call); "
            f"this one would never fire: {spec}",
        )
    probability = spec.get("probability")
    if probability is not None and not 0 < float(probability) <= 1:
        raise ArmError(400, "InvalidFault", f"probability must be above 0 and at most 1, got {probability}")
    routes = {r.name for r in ROUTER.routes}
    if spec.get("route", "*") not in {"*", *routes}:
        raise ArmError(
            400, "InvalidFault", f"no route named {spec.get('route')!r}; one of: * {' '.join(sorted(routes))}"
        )


@route("GET", "control.state", "/_sandbox/state", authenticated=False)
def snapshot(call: Call) -> web.Response:
    return json_response(call.state.snapshot())


@route("POST", "control.reset", "/_sandbox/reset", authenticated=False)
def reset(call: Call) -> web.Response:
    call.sandbox.reset()
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


@route("PATCH", "control.resource", "/_sandbox/resource", authenticated=False)
def patch_resource(call: Call) -> web.Response:
    """Change a resource behind everyone's back (JSON merge patch of its ARM body, or of `extra`)."""
    body = call.json()
    resource = call.state.require(call.query["id"], "resource")
    _merge_patch(resource.body, body.get("body", {}))
    _merge_patch(resource.extra, body.get("extra", {}))
    return json_response(resource.body)


@route("PUT", "control.resource", "/_sandbox/resource", authenticated=False)
def create_resource(call: Call) -> web.Response:
    body = call.json()
    resource = call.state.put(call.query["id"], call.query["type"], body.get("body", {}), **body.get("extra", {}))
    return json_response(resource.body, status=201)


@route("DELETE", "control.resource", "/_sandbox/resource", authenticated=False)
def delete_resource(call: Call) -> web.Response:
    return web.Response(status=200 if call.state.delete(call.query["id"]) else 404)


@route("PATCH", "control.timing", "/_sandbox/timing", authenticated=False)
def patch_timing(call: Call) -> web.Response:
    merged = _merge_patch(call.state.timing.model_dump(by_alias=True), call.json())
    call.state.timing = Timing.model_validate(merged)
    return json_response(call.state.timing.model_dump(by_alias=True))


@route("PATCH", "control.arm-limits", "/_sandbox/arm-limits", authenticated=False)
def patch_arm_limits(call: Call) -> web.Response:
    """Change ARM's budget; the buckets start full."""
    merged = _merge_patch(call.state.budget.limits.model_dump(by_alias=True), call.json())
    call.state.budget = ArmBudget(ArmLimits.model_validate(merged))
    return json_response(call.state.budget.limits.model_dump(by_alias=True))


@route("POST", "control.job-rules", "/_sandbox/job-rules", authenticated=False)
def add_job_rule(call: Call) -> web.Response:
    call.state.job_rules.append(call.json())
    return web.Response(status=204)


def _clearing(collection: str) -> Callable[[Call], web.Response]:
    """DELETE on a list the tests fill (faults, job rules): empty it."""

    def clear(call: Call) -> web.Response:
        getattr(call.state, collection).clear()
        return web.Response(status=204)

    return clear


route("DELETE", "control.faults", "/_sandbox/faults", authenticated=False)(_clearing("faults"))
route("DELETE", "control.job-rules", "/_sandbox/job-rules", authenticated=False)(_clearing("job_rules"))


@route("GET", "control.jobs", "/_sandbox/jobs", authenticated=False)
def all_jobs(call: Call) -> web.Response:
    jobs = [call.jobs.refresh(j) for j in call.state.of_type(ids.JOB)]
    return json_response(
        [
            {
                "id": j.id,
                "name": j.name,
                "status": j.properties["status"],
                "tags": j.properties.get("tags", {}),
                "error": j.extra.get("error"),
                "metrics": call.jobs.metrics(j),
            }
            for j in jobs
        ]
    )


@route("GET", "control.judge", "/_sandbox/judge", authenticated=False)
def judge(call: Call) -> web.Response:
    """Why a job on this compute would fail to reach storage right now (None when it would not)."""
    compute = call.state.require(call.query["compute"], ids.COMPUTE)
    workspace = call.state.require(compute.id.split("/computes/", 1)[0], ids.WORKSPACE)
    return json_response(
        {
            "sidecar": call.cloud.storage_access_problem(compute, workspace, needs_write=True),
            "inContainer": call.cloud.in_container_problem(
                compute, workspace, f"{workspace.id}/models/{call.query.get('model', 'any')}/versions/1"
            ),
        }
    )


@route("GET", "control.exchanges", "/_sandbox/exchanges", authenticated=False)
def exchanges(call: Call) -> web.Response:
    """Each client assertion Entra accepted (issuer, subject, clientId, the signing key's kid, iat): never the
    assertion itself."""
    return json_response(list(call.state.exchanges))


@route("POST", "control.issuers", "/_sandbox/issuers", authenticated=False)
def register_issuer(call: Call) -> web.Response:
    """An OIDC issuer Entra may fetch keys from at its URL (a kube-apiserver on loopback), with the CA that
    signed its serving certificate: {issuer, caFile}."""
    body = call.json()
    call.sandbox.issuers.register(str(body["issuer"]), body.get("caFile"))
    return json_response({"issuer": body["issuer"]})


@route("POST", "control.service-account-token", "/_sandbox/service-account-token", authenticated=False)
def service_account_token(call: Call) -> web.Response:
    """A token a world AKS cluster's kubelet would project ({cluster, subject, audience?, expiresIn?,
    notBefore?}): signed with the key the sandbox holds as that cluster's OIDC issuer."""
    body = call.json()
    cluster = call.state.require(str(body["cluster"]), ids.AKS)
    issuer = str(cluster.extra["issuer_url"])
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": body["subject"],
        "aud": [body.get("audience", AUDIENCE)],
        "iat": now,
        "nbf": now + int(body.get("notBefore", 0)),
        "exp": now + int(body.get("expiresIn", 3600)),
    }
    return json_response({"token": call.sandbox.issuers.hold(issuer).sign(claims)})


@route("POST", "control.access-token", "/_sandbox/access-token", authenticated=False)
def mint_access_token(call: Call) -> web.Response:
    """An access token of this Entra for a principal ({oid, aud, expiresIn?}): what a signed-in user or a test
    acting as one presents."""
    body = call.json()
    now = int(time.time())
    expires = now + int(body.get("expiresIn", 3600))
    claims = {"oid": body["oid"], "aud": body.get("aud"), "iat": now, "nbf": now, "exp": expires}
    return json_response({"token": call.sandbox.access_token(claims)})
