"""One step runner for both kinds: ordered steps with declared dependencies and one error guard.

A step owns one condition. It runs only when what it `needs` holds: a condition that is True, or a fact an
earlier step provides (see StepResult.provides); otherwise its condition says which link it waits for.
What an earlier step read (the cluster, the identity) reaches a step as a typed argument, declared as a Fact:
a step cannot use what it did not declare without the type checker saying so.
Classified errors a step raises become its condition (retrying, or blocked with the fix), never a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from amlwire.api import reasons as r
from amlwire.domain.conditions import Outcome, StepResult, blocked, retrying, waiting
from amlwire.domain.errors import AzureError, KubeConflict, KubeError, KubeForbidden, KubeNotFound
from amlwire.reconcile.common import Event, Timings

S = TypeVar("S")
A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True)
class Provided:
    """A fact a step provides before its own condition is True (StepResult.provides), e.g. "the extension is
    installed" while its settings are still being changed, and the condition that reports it."""

    name: str
    reported_by: str


Need = str | Provided  # a condition that must be True, or a fact an earlier step provides


@dataclass(frozen=True)
class Fact(Generic[S, A]):
    """Something a step reads and keeps in the scope for later steps, and the condition that is True once it has."""

    condition: str
    read: Callable[[S], A | None]

    def of(self, scope: S) -> A:
        value = self.read(scope)
        if value is None:  # the runner passes a fact only once its condition holds
            raise RuntimeError(f"{self.condition} is True but the step that sets it kept nothing")
        return value


@dataclass(frozen=True)
class Step(Generic[S]):
    condition: str
    body: Callable[..., StepResult]
    needs: tuple[str, ...] = ()
    facts: tuple[Fact[S, Any], ...] = ()
    reported_by: tuple[tuple[str, str], ...] = ()  # (provided fact, the condition that reports it)

    def waits_on(self, need: str) -> str:
        """The condition to name while `need` does not hold."""
        return dict(self.reported_by).get(need, need)

    @property
    def name(self) -> str:
        return self.body.__name__

    def run(self, scope: S) -> StepResult:
        return self.body(scope, *(fact.of(scope) for fact in self.facts))


@overload
def step(condition: str, *, needs: Iterable[Need] = ()) -> Callable[[Callable[[S], StepResult]], Step[S]]: ...
@overload
def step(
    condition: str, a: Fact[S, A], /, *, needs: Iterable[Need] = ()
) -> Callable[[Callable[[S, A], StepResult]], Step[S]]: ...
@overload
def step(
    condition: str, a: Fact[S, A], b: Fact[S, B], /, *, needs: Iterable[Need] = ()
) -> Callable[[Callable[[S, A, B], StepResult]], Step[S]]: ...
def step(condition: str, *facts: Fact[Any, Any], needs: Iterable[Need] = ()) -> Callable[..., Step[Any]]:
    """Declare a step: `@step(COMPUTE_READY, CLUSTER, IDENTITY, needs=(EXTENSION_INSTALLED,))` runs once the
    cluster and identity are read (their conditions True) and the extension is installed, and receives the
    cluster and the identity after the scope."""

    others = [need.name if isinstance(need, Provided) else need for need in needs]
    reported = tuple((need.name, need.reported_by) for need in needs if isinstance(need, Provided))

    def declare(body: Callable[..., StepResult]) -> Step[Any]:
        needed = tuple(dict.fromkeys([*(fact.condition for fact in facts), *others]))
        return Step(condition, body, needed, facts, reported)

    return declare


@dataclass(frozen=True)
class Classified:
    """What a classified error means for whatever was running: its reason and message, when to look again, and
    whether it passes by itself (transient) or someone must act."""

    reason: str
    message: str
    delay: float
    transient: bool


def classify(error: Exception, timings: Timings, events: list[Event]) -> Classified | None:
    """The one place errors become outcomes (a step's condition, a deletion's wait); None: not a classified error,
    a bug to surface."""
    if isinstance(error, AzureError):
        return azure_failure(error, timings, events)
    if isinstance(error, KubeConflict):
        return Classified(r.KUBERNETES_FIELD_CONFLICT, error.message, timings.blocked_recheck, transient=False)
    refused = {KubeNotFound: r.KUBERNETES_OBJECT_NOT_FOUND, KubeForbidden: r.KUBERNETES_PERMISSION_DENIED}
    for kind, reason in refused.items():
        if isinstance(error, kind):
            return Classified(reason, str(error), timings.blocked_recheck, transient=False)
    if isinstance(error, KubeError):
        return Classified(r.KUBERNETES_UNAVAILABLE, str(error), timings.retry_delay, transient=True)
    return None


def azure_failure(error: AzureError, timings: Timings, events: list[Event]) -> Classified:
    """Azure's errors, classified at the adapter: retried after Retry-After (capped, and said when capped), or
    blocked until someone acts."""
    if not error.retryable:
        return Classified(error.reason, error.message, timings.blocked_recheck, transient=False)
    delay = error.retry_after or timings.retry_delay
    if delay > timings.max_retry_delay:
        events.append(Event("Normal", error.reason, capped(error.message, delay, timings.max_retry_delay)))
    return Classified(error.reason, error.message, min(timings.max_retry_delay, delay), transient=True)


def guard(condition: str, run: Callable[[], StepResult], timings: Timings, events: list[Event]) -> StepResult:
    """Run one step; a classified error becomes its condition: retrying, or blocked with the fix."""
    try:
        return run()
    except (AzureError, KubeError) as error:
        failure = classify(error, timings, events)
        if failure is None:
            raise
        if failure.transient:
            return retrying(condition, failure.reason, failure.message, failure.delay)
        return blocked(condition, failure.reason, failure.message, failure.delay)


def capped(message: str, asked: float, cap: float) -> str:
    return f"{message}; Azure asked to wait {asked:.0f}s, capped at AMLWIRE_MAX_RETRY_DELAY ({cap:.0f}s)"


def run_steps(steps: Sequence[Step[S]], scope: S, timings: Timings, events: list[Event]) -> list[StepResult]:
    """Every step in order; a step whose needs do not hold waits, naming the first missing link."""
    results: list[StepResult] = []
    held: set[str] = set()
    for current in steps:
        missing = next((need for need in current.needs if need not in held), None)
        if missing is not None:
            result = waiting(current.condition, current.waits_on(missing))
        else:
            result = guard(current.condition, lambda s=current: s.run(scope), timings, events)  # type: ignore[misc]
        if result.ok:
            held.add(result.type)
        held |= result.provides
        results.append(result)
    return results


def earliest(results: Iterable[StepResult]) -> float | None:
    """The soonest requeue any unfinished step asks for."""
    delays = [s.requeue_after for s in results if s.outcome is not Outcome.DONE and s.requeue_after is not None]
    return max(0.05, min(delays)) if delays else None
