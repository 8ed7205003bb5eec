"""Managed identities and their federated identity credentials (Microsoft.ManagedIdentity)."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from amlwire_sandbox import ids
from amlwire_sandbox.http import MSI, RG, Call, json_response, paged
from amlwire_sandbox.router import route
from amlwire_sandbox.state import ArmError, not_found

FIC = MSI + "/federatedIdentityCredentials/{fic}"
IDENTITIES = "Microsoft.ManagedIdentity/userAssignedIdentities"
FICS = IDENTITIES + "/federatedIdentityCredentials"


@route("GET", "msi.identity", MSI, IDENTITIES + "/read")
def get_identity(call: Call) -> web.Response:
    return json_response(call.cloud.identity(call.id(MSI)).body)


@route("PUT", "msi.identity", MSI, IDENTITIES + "/write")
def put_identity(call: Call) -> web.Response:
    body, rid = call.json(), call.id(MSI)
    existing = call.state.get(rid)
    props = (
        existing.properties
        if existing
        else {
            "tenantId": call.sandbox.world.defaults.tenant_id,
            "principalId": ids.stable_uuid(rid, "principal"),
            "clientId": ids.stable_uuid(rid, "client"),
        }
    )
    resource = call.state.put(
        rid, ids.MSI, {"location": body.get("location", "eastus"), "tags": body.get("tags", {}), "properties": props}
    )
    return json_response(resource.body, status=200 if existing else 201)


@route("GET", "msi.identity.list", RG + "/Microsoft.ManagedIdentity/userAssignedIdentities", IDENTITIES + "/read")
def list_identities(call: Call) -> web.Response:
    group = f"/subscriptions/{call.params['sub']}/resourceGroups/{call.params['rg']}".lower()
    found = [r.body for r in call.state.of_type(ids.MSI) if r.id.lower().startswith(group + "/")]
    return json_response(paged(call, found, call.state.timing.page_size))


@route("DELETE", "msi.identity", MSI, IDENTITIES + "/delete")
def delete_identity(call: Call) -> web.Response:
    rid = call.id(MSI)
    if call.state.get(rid) is None:
        return web.Response(status=204)
    for child in [k for k in call.state.resources if k.startswith(rid.lower() + "/")]:  # rule: msi.identity-delete
        call.state.resources.pop(child)
    call.state.delete(rid)
    return web.Response(status=200)


@route("GET", "msi.fic.list", MSI + "/federatedIdentityCredentials", FICS + "/read")
def list_fics(call: Call) -> web.Response:
    fics = [f.body for f in call.cloud.list_fics(call.id(MSI))]
    return json_response(paged(call, fics, call.state.timing.page_size))


@route("GET", "msi.fic", FIC, FICS + "/read")
def get_fic(call: Call) -> web.Response:
    call.cloud.identity(call.id(MSI))
    fic = call.state.get(call.id(FIC))
    if fic is None:
        raise not_found(ids.FIC, call.params["fic"])
    return json_response(fic.body)


def write_under_identity(call: Call, write: Callable[[], web.StreamResponse]) -> web.StreamResponse:
    """Entra refuses concurrent FIC writes under one identity (409, no Retry-After): a write holds its
    identity for the write window and is carried out at its end; another write meanwhile is refused."""
    identity_id = call.id(MSI)
    call.cloud.identity(identity_id)
    now, key = time.monotonic(), identity_id.lower()
    if call.state.fic_writes_until.get(key, 0.0) > now:  # rule: msi.fic-concurrent
        raise ArmError(
            409,
            "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
            f"Too many Federated Identity Credentials are written concurrently for the managed "
            f"identity '{identity_id}'. Concurrent Federated Identity Credentials writes under "
            f"the same managed identity are not supported.",
        )
    window = call.state.timing.fic_write_window_seconds
    call.state.fic_writes_until[key] = now + window

    def release() -> None:
        call.state.fic_writes_until.pop(key, None)

    return call.later(window, write, release)


@route("PUT", "msi.fic", FIC, FICS + "/write")
def put_fic(call: Call) -> web.StreamResponse:
    body, identity_id = call.json(), call.id(MSI)
    call.cloud.validate_fic(identity_id, call.params["fic"], body)

    def write() -> web.StreamResponse:
        resource, created = call.cloud.put_fic(identity_id, call.params["fic"], body)
        return json_response(resource.body, status=201 if created else 200)  # rule: msi.fic-sync

    return write_under_identity(call, write)


@route("DELETE", "msi.fic", FIC, FICS + "/delete")
def delete_fic(call: Call) -> web.StreamResponse:
    def delete() -> web.StreamResponse:
        return web.Response(status=200 if call.state.delete(call.id(FIC)) else 204)

    return write_under_identity(call, delete)
