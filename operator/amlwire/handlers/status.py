"""The one way a reconcile result reaches Kubernetes from a handler: status patch, events, requeue."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from amlwire.api.common import ObjectStatus
from amlwire.domain.conditions import new_generation
from amlwire.reconcile.common import Event
from amlwire.reconcile.ports import KubePort, ObjectRef
from amlwire.reconcile.scope import Deletion
from amlwire.reconcile.services import Services
from amlwire.reconcile.status import invalid_spec, load_status, stalled_invalid, status_changes

# Update handlers follow the generation, not the spec: with the generation in kopf's diff base
# (handlers/operator.py GenerationDiffBase), every spec change, a reverted one included, is handled.
GENERATION = ("metadata", "generation")
SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=ObjectStatus)
Writer = Callable[[dict[str, Any]], None]  # a status patch sent now


def reference(body: Mapping[str, Any]) -> ObjectRef:
    meta = body.get("metadata") or {}
    return ObjectRef(
        str(body.get("apiVersion", "")),
        str(body.get("kind", "")),
        meta.get("name", ""),
        meta.get("uid", ""),
        meta.get("namespace"),
    )


def post(kube: KubePort, body: Mapping[str, Any], events: list[Event]) -> None:
    if events:
        kube.post_events(reference(body), events)


def write(
    send: Writer,
    kube: KubePort,
    body: Mapping[str, Any],
    current: Mapping[str, Any] | None,
    status: BaseModel,
    events: list[Event],
) -> None:
    """How every pass, kopf's or the job poller's, reaches Kubernetes: the status fields that changed, sent once
    (nothing when none did), then the events."""
    changes = status_changes(current, status)
    if changes:
        send(changes)
    post(kube, body, events)


def apply(
    patch: kopf.Patch,
    kube: KubePort,
    body: Mapping[str, Any],
    current: Mapping[str, Any] | None,
    status: BaseModel,
    events: list[Event],
    requeue_after: float | None = None,
    why: str = "",
) -> None:
    """Write what changed in status, post the events, and ask kopf to come back when the result says so."""
    write(patch.status.update, kube, body, current, status, events)
    if requeue_after is not None:
        raise kopf.TemporaryError(why or "reconciling", delay=requeue_after)


def start_pass(
    body: kopf.Body, patch: kopf.Patch, spec_model: type[SpecT], status_model: type[StatusT], write: Writer
) -> tuple[SpecT, StatusT]:
    """The spec and the previous status as their models (a spec that cannot be read: Stalled naming the field, a
    PermanentError, kopf waits for a change); a generation nobody has reconciled yet is said before the pass, so
    Ready never says True about it."""
    generation = body.metadata.get("generation")
    try:
        spec = spec_model.model_validate(dict(body.spec))
    except ValidationError as error:
        refuse_invalid(patch, body.status, status_model, generation, error)
    previous = load_status(status_model, body.status)
    marked = new_generation(previous.conditions, generation, previous.observed_generation, now())
    if marked is not None:
        write({"conditions": [c.wire() for c in marked]})
    return spec, previous


def finish_deletion(patch: kopf.Patch, kube: KubePort, body: kopf.Body, result: Deletion[Any]) -> None:
    """A deletion pass reaches Kubernetes like any other: while it waits, status says for what and kopf comes
    back (the finalizer stays); once finished, only its events."""
    if result.status is None:
        post(kube, body, result.events)
        return
    apply(patch, kube, body, body.status, result.status, result.events, result.requeue_after, result.message)


def refuse_invalid(
    patch: kopf.Patch,
    current: Mapping[str, Any] | None,
    model: type[ObjectStatus],
    generation: int | None,
    error: ValidationError,
) -> NoReturn:
    """A spec the operator cannot read: Stalled naming the field, and not retried until it changes."""
    message = invalid_spec(error)
    patch.status.update(status_changes(current, stalled_invalid(model, current, generation, message, now())))
    raise kopf.PermanentError(message) from error


def now() -> datetime:
    return datetime.now(UTC)


def pass_fields(services: Services, name: str, generation: int | None, spec: Any, previous: Any) -> dict[str, Any]:
    """What a reconcile pass of either kind starts from (reconcile/scope.py ObjectScope)."""
    fields = {"name": name, "generation": generation, "spec": spec, "previous": previous}
    return {**fields, "now": now(), "timings": services.timings, "azure": services.azure}
