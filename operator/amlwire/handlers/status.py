"""Writing status through kopf's patch: only what changed, never the framework's own field."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import BaseModel, ValidationError

from amlwire.domain.conditions import Summary, fold, summarize
from amlwire.domain.conditions import blocked as blocked_result
from amlwire.reconcile.common import Event

FRAMEWORK_FIELD = "kopf"


def write_status(patch: kopf.Patch, current: Mapping[str, Any] | None, status: BaseModel) -> bool:
    """Put into `patch.status` the top-level fields that differ; return whether anything did."""
    current = {k: v for k, v in (current or {}).items() if k != FRAMEWORK_FIELD}
    wanted = {
        k: v
        for k, v in status.model_dump(by_alias=True, exclude_none=True, mode="json").items()
        if k != FRAMEWORK_FIELD
    }
    changed = False
    for key, value in wanted.items():
        if current.get(key) != value:
            patch.status[key] = value
            changed = True
    for key in current.keys() - wanted.keys():
        patch.status[key] = None
        changed = True
    return changed


def post(body: Mapping[str, Any], events: list[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])


def invalid_spec(error: ValidationError) -> str:
    """pydantic's errors as `spec.field: message` lines (the same rules as admission)."""
    parts = []
    for item in error.errors():
        where = "spec." + ".".join(str(p) for p in item["loc"]) if item["loc"] else "spec"
        parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def stall_invalid(
    patch: kopf.Patch, current: Mapping[str, Any] | None, model: type[BaseModel], generation: int | None, message: str
) -> None:
    """Mark a resource the operator cannot parse as Stalled, naming the field (it is not retried)."""
    previous = (
        model.model_validate({k: v for k, v in (current or {}).items() if k != FRAMEWORK_FIELD}, strict=False)
        if current
        else model()
    )
    result = blocked_result("Ready", "InvalidSpec", message)
    summaries: list[Summary] = summarize([result])
    status = previous.model_copy(
        update={
            "conditions": fold(getattr(previous, "conditions", []), summaries, generation, datetime.now(UTC)),
            "observed_generation": generation,
        }
    )
    write_status(patch, current, status)


def load_status(model: type[BaseModel], raw: Mapping[str, Any] | None) -> Any:
    """The previous status; a status the operator cannot read is treated as empty, never as a crash."""
    try:
        return model.model_validate({k: v for k, v in (raw or {}).items() if k != FRAMEWORK_FIELD})
    except ValidationError:
        return model()
