"""Conditions that explain themselves: step outcomes folded into metav1.Conditions and kstatus summaries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Literal, Protocol

from amlwire.api import reasons as r
from amlwire.api.common import Condition

READY, RECONCILING, STALLED = r.READY, r.RECONCILING, r.STALLED
SUMMARY_TYPES = r.SUMMARY_TYPES


class Outcome(Enum):
    """What a step's result means for the whole resource."""

    DONE = "done"  # the link is right
    PROGRESSING = "progressing"  # amlwire is fixing it, or Azure is propagating: it will resolve by itself
    WAITING = "waiting"  # an earlier link is not ready, so this one cannot be checked yet
    RETRYING = "retrying"  # a transient error: amlwire retries
    BLOCKED = "blocked"  # needs someone to act: the message says what to do


_STATUS = {
    Outcome.DONE: "True",
    Outcome.PROGRESSING: "False",
    Outcome.WAITING: "Unknown",
    Outcome.RETRYING: "Unknown",
    Outcome.BLOCKED: "False",
}


@dataclass(frozen=True)
class StepResult:
    """The outcome of one reconcile step, as one condition.

    `provides` names facts a later step may need even when this one is not done (e.g. "the extension is
    installed" while its settings are still being changed).
    """

    type: str
    outcome: Outcome
    reason: str
    message: str
    requeue_after: float | None = None
    provides: frozenset[str] = field(default_factory=frozenset)

    @property
    def status(self) -> str:
        return _STATUS[self.outcome]

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DONE


def done(type_: str, reason: str, message: str, provides: Iterable[str] = ()) -> StepResult:
    return StepResult(type_, Outcome.DONE, reason, message, provides=frozenset(provides))


def progressing(
    type_: str, reason: str, message: str, requeue_after: float | None, provides: Iterable[str] = ()
) -> StepResult:
    return StepResult(type_, Outcome.PROGRESSING, reason, message, requeue_after, frozenset(provides))


def blocked(
    type_: str, reason: str, message: str, requeue_after: float | None = None, provides: Iterable[str] = ()
) -> StepResult:
    return StepResult(type_, Outcome.BLOCKED, reason, message, requeue_after, frozenset(provides))


def retrying(type_: str, reason: str, message: str, requeue_after: float) -> StepResult:
    return StepResult(type_, Outcome.RETRYING, reason, message, requeue_after)


def waiting(type_: str, on: str) -> StepResult:
    return StepResult(type_, Outcome.WAITING, r.waiting_reason(on), f"Waiting for {on} to be True.")


@dataclass(frozen=True)
class Summary:
    """A condition with its status stated outright (kstatus summaries, first-visit conditions)."""

    type: str
    status: str
    reason: str
    message: str


class ConditionLike(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


NOT_STALLED = Summary(STALLED, "False", r.NOT_STALLED, "Nothing needs attention.")
State = Literal["ready", "reconciling", "stalled"]


def kstatus(state: State, reason: str, message: str, settled: tuple[str, str] | None = None) -> list[Summary]:
    """The kstatus triple (Ready, Reconciling, Stalled) for a resource in one of its three states.

    `settled` is Reconciling's (reason, message) once nothing is in progress (ready or stalled).
    """
    if state == "ready":
        return [
            Summary(READY, "True", reason, message),
            Summary(RECONCILING, "False", *(settled or (r.RECONCILED, "Nothing to do."))),
            NOT_STALLED,
        ]
    if state == "reconciling":
        return [Summary(READY, "False", reason, message), Summary(RECONCILING, "True", reason, message), NOT_STALLED]
    return [
        Summary(READY, "False", reason, message),
        Summary(RECONCILING, "False", *(settled or (r.STALLED_REASON, "Waiting for the fix named in Stalled."))),
        Summary(STALLED, "True", reason, message),
    ]


def summarize(steps: Sequence[StepResult]) -> list[Summary]:
    """kstatus summary conditions of step results (Flux, Argo CD and kubectl wait read these)."""
    blockers = [s for s in steps if s.outcome is Outcome.BLOCKED]
    pending = [s for s in steps if s.outcome in (Outcome.PROGRESSING, Outcome.RETRYING, Outcome.WAITING)]
    if not blockers and not pending:
        return kstatus("ready", r.READY_REASON, "All links are in place.")
    first = blockers[0] if blockers else _first_actionable(pending)
    explained = f"{first.type}: {first.message}"
    return kstatus("stalled" if blockers else "reconciling", first.reason, explained)


def _first_actionable(pending: Sequence[StepResult]) -> StepResult:
    """The step worth naming: the first that is not merely waiting for another."""
    return next((s for s in pending if s.outcome is not Outcome.WAITING), pending[0])


def fold(
    existing: Iterable[Condition],
    results: Iterable[ConditionLike],
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """New conditions from step results; lastTransitionTime moves only when a status changes.

    Conditions not named by `results` are kept as they are (e.g. when a step did not run this time).
    """
    by_type = {c.type: c for c in existing}
    order = list(by_type)
    for result in results:
        previous = by_type.get(result.type)
        transition = (
            previous.last_transition_time if previous is not None and previous.status == result.status else rfc3339(now)
        )
        by_type[result.type] = Condition(
            type=result.type,
            status=result.status,
            reason=result.reason,
            message=result.message,
            observed_generation=generation,
            last_transition_time=transition,
        )
        if result.type not in order:
            order.append(result.type)
    return [by_type[t] for t in order]


def first_visit(step_types: Sequence[str], generation: int | None, now: datetime) -> list[Condition]:
    """Conditions set on the first visit: every step Unknown, Reconciling True."""
    results: list[ConditionLike] = [
        Summary(t, "Unknown", r.NOT_YET_CHECKED, "amlwire has not checked this yet.") for t in step_types
    ]
    results += [
        Summary(READY, "Unknown", r.RECONCILING_REASON, "amlwire is reconciling this resource."),
        Summary(RECONCILING, "True", r.FIRST_VISIT, "amlwire is reconciling this resource for the first time."),
        NOT_STALLED,
    ]
    return fold([], results, generation, now)


def new_generation(
    existing: Sequence[Condition], generation: int | None, observed: int | None, now: datetime
) -> list[Condition] | None:
    """What status says the moment a new generation is seen, before it is reconciled: not Ready (the conditions
    describe the generation observed before), Reconciling. None when the generation is the observed one."""
    if not existing or generation is None or generation == observed:
        return None
    message = f"generation {generation} is being reconciled; the other conditions are from generation {observed}."
    return fold(
        existing,
        [Summary(READY, "Unknown", r.NEW_GENERATION, message), Summary(RECONCILING, "True", r.NEW_GENERATION, message)],
        generation,
        now,
    )


def condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
