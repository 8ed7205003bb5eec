"""What a reconcile pass of either kind has in common: the object's spec, its status before and after, events."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from amlwire.api.common import Condition
from amlwire.api.reasons import READY
from amlwire.reconcile.common import Event, Timings
from amlwire.reconcile.ports import AzurePort

SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=BaseModel)


@dataclass(kw_only=True)
class ObjectScope(Generic[SpecT, StatusT]):
    """What one reconcile pass of one object of either kind reads and produces: its spec, the status it had,
    the status it will have, and the events it posts."""

    name: str
    generation: int | None
    spec: SpecT
    previous: StatusT
    now: datetime
    timings: Timings
    azure: AzurePort
    status: StatusT = field(init=False)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = copy.deepcopy(self.previous)

    def note(self, reason: str, message: str) -> None:
        self.events.append(Event("Normal", reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.events.append(Event("Warning", reason, message))


@dataclass(frozen=True)
class PassResult(Generic[StatusT]):
    """What a reconcile pass produced: the status to write, the events to post, when to come back."""

    status: StatusT
    requeue_after: float | None
    events: list[Event]
    reverify: str | None = None  # an AttachedCompute to reconcile now (a job of it could not reach storage)

    @property
    def ready(self) -> bool:
        return any(c.type == READY and c.status == "True" for c in _conditions(self.status))

    @property
    def summary(self) -> str:
        ready = next((c for c in _conditions(self.status) if c.type == READY), None)
        return f"{ready.reason}: {ready.message}" if ready else ""


def _conditions(status: BaseModel) -> list[Condition]:
    return list(getattr(status, "conditions", []))
