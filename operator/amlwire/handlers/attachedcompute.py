"""kopf handlers for AttachedCompute: thin wiring from kopf to reconcile.attachedcompute."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from amlwire import metrics
from amlwire.api.attachedcompute import AttachedComputeSpec, AttachedComputeStatus
from amlwire.api.common import GROUP, VERSION
from amlwire.config import Settings
from amlwire.domain.access import role_guid
from amlwire.domain.conditions import first_visit
from amlwire.domain.errors import AzureError, KubeError
from amlwire.domain.federation import subject_of
from amlwire.handlers.status import invalid_spec, load_status, post, stall_invalid, write_status
from amlwire.main import Services
from amlwire.reconcile.attachedcompute import STEP_TYPES, Neighbours, Scope, cleanup, reconcile

PLURAL = "attachedcomputes"
KIND = "AttachedCompute"


def identity_users(name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[str, dict[str, Any]]:
    """Index: which AttachedComputes use which identity, and what each needs of it."""
    identity = str((spec.get("identity") or {}).get("resourceId", "")).lower()
    if not identity:
        return {}
    accounts = spec.get("serviceAccounts") or []
    grants = (spec.get("access") or {}).get("grants") or []
    return {
        identity: {
            "name": name,
            "issuer": (status or {}).get("oidcIssuer"),
            "subjects": [subject_of(a.get("namespace", ""), a.get("name", "")) for a in accounts],
            "grants": [(str(g.get("scope", "")).lower(), role_guid(str(g.get("role", "")))) for g in grants],
        }
    }


def neighbours(index: kopf.Index[str, dict[str, Any]], identity_id: str, own: str) -> Neighbours:
    others = [v for v in index.get(identity_id.lower(), []) if v["name"] != own]
    return Neighbours(
        federations=frozenset((o["issuer"], s) for o in others if o["issuer"] for s in o["subjects"]),
        grants=frozenset(tuple(g) for o in others for g in o["grants"]),  # type: ignore[misc]
    )


def _scope(
    name: str,
    body: kopf.Body,
    spec: AttachedComputeSpec,
    status: kopf.Status,
    services: Services,
    index: kopf.Index[str, dict[str, Any]],
) -> Scope:
    return Scope(
        name=name,
        generation=body.metadata.get("generation"),
        spec=spec,
        previous=load_status(AttachedComputeStatus, status),
        now=datetime.now(UTC),
        timings=services.timings,
        azure=services.azure,
        kube=services.kube,
        neighbours=neighbours(index, spec.identity.resource_id, name),
    )


def reconcile_attached_compute(
    name: str,
    uid: str,
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    identity_users: kopf.Index[str, dict[str, Any]],
    **_: Any,
) -> None:
    services: Services = memo.services
    try:
        parsed = AttachedComputeSpec.model_validate(dict(spec))
    except ValidationError as error:
        message = invalid_spec(error)
        stall_invalid(patch, status, AttachedComputeStatus, body.metadata.get("generation"), message)
        raise kopf.PermanentError(message) from error
    if not (status or {}).get("conditions"):
        generation = body.metadata.get("generation")
        patch.status["conditions"] = [c.wire() for c in first_visit(STEP_TYPES, generation, datetime.now(UTC))]
        patch.status["observedGeneration"] = generation
        raise kopf.TemporaryError("first visit: status set, reconciling now", delay=0)
    scope = _scope(name, body, parsed, status, services, identity_users)
    started = time.monotonic()
    with services.object_locks.hold(uid):
        result = reconcile(scope)
    metrics.record_reconcile(KIND, None, name, time.monotonic() - started, result.status.conditions)
    write_status(patch, status, result.status)
    post(body, result.events)
    if result.requeue_after is not None:
        ready = next(c for c in result.status.conditions if c.type == "Ready")
        raise kopf.TemporaryError(f"{ready.reason}: {ready.message}", delay=result.requeue_after)


def delete_attached_compute(
    name: str,
    uid: str,
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: kopf.Memo,
    identity_users: kopf.Index[str, dict[str, Any]],
    **_: Any,
) -> None:
    services: Services = memo.services
    try:
        parsed = AttachedComputeSpec.model_validate(dict(spec))
    except ValidationError:
        return  # nothing was ever created for a spec amlwire could not read
    scope = _scope(name, body, parsed, status, services, identity_users)
    try:
        with services.object_locks.hold(uid):
            result = cleanup(scope)
    except AzureError as error:
        delay = error.retry_after if error.retryable else services.timings.blocked_recheck
        kopf.event(
            body,
            type="Warning",
            reason=error.reason,
            message=f"deletion waits: {error.message}; to let go without cleaning up Azure, set "
            f"spec.deletionPolicy: Orphan"[:1024],
        )
        raise kopf.TemporaryError(error.message, delay=delay or services.timings.retry_delay) from error
    except KubeError as error:
        raise kopf.TemporaryError(str(error), delay=services.timings.retry_delay) from error
    post(body, result.events)
    if not result.finished:
        raise kopf.TemporaryError(result.message, delay=result.requeue_after)
    metrics.STATES.forget(KIND, None, name)


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    resource = (GROUP, VERSION, PLURAL)
    kopf.index(*resource, registry=registry, id="identity_users")(identity_users)
    for decorator in (
        kopf.on.resume(*resource, registry=registry),
        kopf.on.create(*resource, registry=registry),
        kopf.on.update(*resource, field="spec", registry=registry),
        kopf.timer(
            *resource, interval=settings.drift_interval, initial_delay=settings.drift_interval, registry=registry
        ),
    ):
        decorator(reconcile_attached_compute)
    kopf.on.delete(*resource, registry=registry)(delete_attached_compute)
