"""Status as it is written: only the top-level fields that changed, never the framework's own field."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from amlwire.api import reasons as r
from amlwire.api.common import ObjectStatus
from amlwire.domain.conditions import blocked, fold, summarize

FRAMEWORK_FIELD = "kopf"
M = TypeVar("M", bound=ObjectStatus)


def without_framework(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (raw or {}).items() if k != FRAMEWORK_FIELD}


def status_changes(current: Mapping[str, Any] | None, status: BaseModel) -> dict[str, Any]:
    """The merge patch of status: top-level fields that differ (None removes one); {} when nothing does."""
    have = without_framework(current)
    wanted = without_framework(status.model_dump(by_alias=True, exclude_none=True, mode="json"))
    changes: dict[str, Any] = {k: v for k, v in wanted.items() if have.get(k) != v}
    changes.update(dict.fromkeys(have.keys() - wanted.keys()))
    return changes


def load_status(model: type[M], raw: Mapping[str, Any] | None) -> M:
    """The previous status; a status the operator cannot read is treated as empty, never as a crash."""
    try:
        return model.model_validate(without_framework(raw))
    except ValidationError:
        return model()


def invalid_spec(error: ValidationError) -> str:
    """pydantic's errors as `spec.field: message` lines (the same rules as admission)."""
    parts = []
    for item in error.errors():
        where = "spec." + ".".join(str(p) for p in item["loc"]) if item["loc"] else "spec"
        parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def stalled_invalid(
    model: type[M], current: Mapping[str, Any] | None, generation: int | None, message: str, now: datetime
) -> M:
    """The status of a resource whose spec the operator cannot read: Stalled, naming the field (not retried)."""
    previous = load_status(model, current)
    summaries = summarize([blocked(r.READY, r.INVALID_SPEC, message)])
    previous.conditions = fold(previous.conditions, summaries, generation, now)
    previous.observed_generation = generation
    return previous
