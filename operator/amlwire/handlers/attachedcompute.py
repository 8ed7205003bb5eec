"""kopf handlers for AttachedCompute: thin wiring from kopf to reconcile.attachedcompute."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import kopf
from pydantic import ValidationError

from amlwire import metrics
from amlwire.api.attachedcompute import AttachedComputeSpec, AttachedComputeStatus
from amlwire.api.common import GROUP, VERSION
from amlwire.config import Settings
from amlwire.domain.azure import name_of
from amlwire.domain.view import ComputeView, view_of
from amlwire.handlers.status import GENERATION, apply, finish_deletion, now, pass_fields, start_pass
from amlwire.reconcile.attachedcompute import Neighbours, Scope, cleanup, introduce, reconcile
from amlwire.reconcile.attachedcompute.scope import DETACH_UNDER_JOBS, RECONCILE_REQUESTED_AT
from amlwire.reconcile.services import Services
from amlwire.reconcile.status import load_status

PLURAL = "attachedcomputes"
KIND = "AttachedCompute"
INDEX = "computes"
HELD_AT_MOST = 10.0  # seconds a reconcile may keep kopf retrying it; longer waits go to the drift schedule


def index_computes(
    *, name: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> dict[str, ComputeView]:
    """Index: each AttachedCompute as a typed view, for jobs and for its neighbours and siblings. One being
    deleted is not in it: it owns nothing any more, and takes no new jobs."""
    if meta.get("deletionTimestamp"):
        return {}
    return {name: view_of(name, spec, status, str(meta.get("creationTimestamp") or ""))}


def views(index: kopf.Index[str, ComputeView]) -> list[ComputeView]:
    return [view for key in list(index) for view in index.get(key, [])]


def _scope(
    name: str, body: kopf.Body, spec: AttachedComputeSpec, previous: AttachedComputeStatus, kwargs: Any
) -> Scope:
    services: Services = kwargs["memo"].services
    annotations = body.metadata.annotations
    running = services.running.on(name)
    return Scope(
        **pass_fields(services, name, body.metadata.get("generation"), spec, previous),
        kube=services.kube,
        neighbours=Neighbours.among(views(kwargs[INDEX]), name, running),
        created=str(body.metadata.get("creationTimestamp") or ""),
        detach_under_jobs=annotations.get(DETACH_UNDER_JOBS) == "true",
        requested_at=annotations.get(RECONCILE_REQUESTED_AT),
    )


def reconcile_attached_compute(*, body: kopf.Body, patch: kopf.Patch, from_drift: bool = False, **kwargs: Any) -> None:
    services: Services = kwargs["memo"].services
    name, uid, status = str(body.metadata.name), str(body.metadata.uid), body.status
    write = partial(services.kube.patch_attached_compute_status, name)
    parsed, previous = start_pass(body, patch, AttachedComputeSpec, AttachedComputeStatus, write)
    scope = _scope(name, body, parsed, previous, kwargs)
    started = time.monotonic()
    with services.object_locks.hold(uid):
        result = introduce(scope) or reconcile(scope)
    metrics.record_reconcile(KIND, None, name, time.monotonic() - started, result.status.conditions)
    budget = result.status.credential_budget
    if budget is not None:
        metrics.STATES.record_budget(name_of(parsed.identity.resource_id), budget.used, budget.clusters_remaining)
    requeue = result.requeue_after
    if requeue is not None and (requeue > HELD_AT_MOST or from_drift):
        # kopf holds an object while one of its handlers waits to retry: no change, and no requested reconcile,
        # is handled meanwhile. A long wait (a link someone must fix, Azure throttling) is the drift timer's,
        # and so is the follow-up of a drift check (kopf retries the timer after the delay).
        services.drift.soon(uid, requeue)
        requeue = requeue if from_drift and requeue <= HELD_AT_MOST else None
    elif requeue is not None:
        services.drift.postpone(uid, requeue)  # kopf retries this handler itself: no drift check meanwhile
    apply(patch, services.kube, body, status, result.status, result.events, requeue, result.summary)


def check_drift(*, uid: str, **kwargs: Any) -> None:
    """The drift timer ticks often; each compute is reconciled when its own spread-out slot is due, and again
    as soon as a repair it made can be seen to take effect (kopf retries the timer after the requeue delay)."""
    services: Services = kwargs["memo"].services
    if services.drift.due(uid):
        reconcile_attached_compute(uid=uid, from_drift=True, **kwargs)


def delete_attached_compute(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
    services: Services = kwargs["memo"].services
    name, uid, status = str(body.metadata.name), str(body.metadata.uid), body.status
    try:
        parsed = AttachedComputeSpec.model_validate(dict(body.spec))
    except ValidationError:
        return  # nothing was ever created for a spec amlwire could not read
    with services.object_locks.hold(uid):
        result = cleanup(_scope(name, body, parsed, load_status(AttachedComputeStatus, status), kwargs))
    finish_deletion(patch, services.kube, body, result)
    metrics.STATES.forget(KIND, None, name)
    services.drift.forget(uid)
    for other in result.wake:  # what it was refused (the extension, an account) may be theirs now: at once
        services.kube.request_reconcile(other, now().strftime("%Y-%m-%dT%H:%M:%SZ"))


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    resource = (GROUP, VERSION, PLURAL)
    kopf.index(*resource, registry=registry, id=INDEX)(index_computes)
    for decorator in (
        kopf.on.resume(*resource, registry=registry),
        kopf.on.create(*resource, registry=registry),
        kopf.on.update(*resource, field=GENERATION, registry=registry),
        # what users (and failing jobs) ask for by annotation: reconcile now, or detach under running jobs
        kopf.on.update(
            *resource,
            field=("metadata", "annotations", RECONCILE_REQUESTED_AT),
            registry=registry,
            id="reconcile_requested",
        ),
        kopf.on.update(
            *resource, field=("metadata", "annotations", DETACH_UNDER_JOBS), registry=registry, id="detach_under_jobs"
        ),
    ):
        decorator(reconcile_attached_compute)
    tick = min(HELD_AT_MOST, settings.drift_interval / 4)  # the longest a scheduled recheck comes late
    kopf.timer(*resource, interval=tick, initial_delay=tick, registry=registry, id="drift")(check_drift)
    kopf.on.delete(*resource, registry=registry)(delete_attached_compute)
