"""The one way a reconcile result reaches Kubernetes from a handler: status patch, events, requeue."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

import kopf
from pydantic import BaseModel, ValidationError

from amlwire.api.common import ObjectStatus
from amlwire.reconcile.common import Event
from amlwire.reconcile.ports import KubePort, ObjectRef
from amlwire.reconcile.status import invalid_spec, stalled_invalid, status_changes

# Update handlers follow the generation, not the spec: with the generation in kopf's diff base
# (handlers/operator.py GenerationDiffBase), every spec change, a reverted one included, is handled.
GENERATION = ("metadata", "generation")


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
    patch.status.update(status_changes(current, status))
    post(kube, body, events)
    if requeue_after is not None:
        raise kopf.TemporaryError(why or "reconciling", delay=requeue_after)


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
