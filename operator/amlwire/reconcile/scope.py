"""What a reconcile pass of either kind has in common: the object's spec, its status before and after, events."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from amlwire.api import reasons as r
from amlwire.api.common import ObjectStatus
from amlwire.api.reasons import READY
from amlwire.domain.conditions import condition, fold, kstatus
from amlwire.reconcile.common import Event, Timings
from amlwire.reconcile.ports import AzurePort

SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=ObjectStatus)


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

    def deletion_waits(self, reason: str, message: str, delay: float, stuck: bool = False) -> Deletion[StatusT]:
        """Deletion cannot finish yet: status says what it waits for (Reconciling, or Stalled when someone must
        act, which is also said once as a Warning event), and kopf comes back after `delay`."""
        previous = condition(self.previous.conditions, r.STALLED)
        if stuck and not (previous and previous.status == "True" and previous.reason == reason):
            self.warn(reason, message)
        summaries = kstatus("stalled" if stuck else "reconciling", reason, message)
        self.status.conditions = fold(self.previous.conditions, summaries, self.generation, self.now)
        # deletion bumps the generation: observed, so a given-up operation is not taken for a spec changed to retry
        self.status.observed_generation = self.generation
        return Deletion(False, message, delay, self.events, self.status)

    def deleted(self, message: str, events: list[Event] | None = None, wake: tuple[str, ...] = ()) -> Deletion[StatusT]:
        """Deletion is over: the finalizer may go (no status: the object goes)."""
        return Deletion(True, message, None, self.events if events is None else events, None, wake)


@dataclass(frozen=True)
class Deletion(Generic[StatusT]):
    """How far a deletion pass got: finished (the finalizer may go), or what it waits for, when to look again,
    and the status that says so."""

    finished: bool
    message: str
    requeue_after: float | None
    events: list[Event]
    status: StatusT | None = None  # None once finished: the object goes
    wake: tuple[str, ...] = ()  # other objects to reconcile now: what they were refused may be theirs now


@dataclass(frozen=True)
class PassResult(Generic[StatusT]):
    """What a reconcile pass produced: the status to write, the events to post, when to come back."""

    status: StatusT
    requeue_after: float | None
    events: list[Event]
    reverify: str | None = None  # an AttachedCompute to reconcile now (a job of it could not reach storage)

    @property
    def ready(self) -> bool:
        return any(c.type == READY and c.status == "True" for c in self.status.conditions)

    @property
    def summary(self) -> str:
        ready = next((c for c in self.status.conditions if c.type == READY), None)
        return f"{ready.reason}: {ready.message}" if ready else ""
