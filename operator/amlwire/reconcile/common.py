"""Shared reconcile plumbing: timings from settings, keyed locks, events, and step error handling."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from amlwire.api.common import Condition
from amlwire.domain.conditions import Outcome, StepResult, blocked, retrying
from amlwire.domain.errors import AzureError, KubeConflict, KubeError, KubeForbidden, KubeNotFound

S = TypeVar("S")


@dataclass(frozen=True)
class Timings:
    """How long to wait, from the operator's settings (seconds)."""

    retry_delay: float = 15.0
    max_retry_delay: float = 300.0
    lro_poll_delay: float = 10.0
    blocked_recheck: float = 60.0
    federation_propagation: float = 60.0
    role_propagation: float = 600.0
    lro_timeout: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Any) -> Timings:
        return cls(
            retry_delay=settings.retry_delay,
            max_retry_delay=settings.max_retry_delay,
            lro_poll_delay=settings.lro_poll_delay,
            blocked_recheck=settings.blocked_recheck_delay,
            federation_propagation=settings.federation_propagation_seconds,
            role_propagation=settings.role_propagation_seconds,
        )


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the object: Normal on progress, Warning on failures."""

    type: str
    reason: str
    message: str


class KeyedLocks:
    """One lock per key (an object's uid, an identity's ID), created on first use."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks[key.lower()]
        with lock:
            yield


def guarded(
    condition: str, timings_of: Callable[[S], Timings]
) -> Callable[[Callable[[S], StepResult]], Callable[[S], StepResult]]:
    """Turn classified errors raised by a step into its condition: retrying, or blocked with the fix."""

    def wrap(step: Callable[[S], StepResult]) -> Callable[[S], StepResult]:
        def run(scope: S) -> StepResult:
            timings = timings_of(scope)
            try:
                return step(scope)
            except AzureError as error:
                if error.retryable:
                    delay = min(timings.max_retry_delay, error.retry_after or timings.retry_delay)
                    return retrying(condition, error.reason, error.message, delay)
                return blocked(condition, error.reason, error.message, timings.blocked_recheck)
            except KubeConflict as error:
                return blocked(condition, "KubernetesFieldConflict", error.message, timings.blocked_recheck)
            except KubeNotFound as error:
                return blocked(condition, "KubernetesObjectNotFound", str(error), timings.blocked_recheck)
            except KubeForbidden as error:
                return blocked(condition, "KubernetesPermissionDenied", str(error), timings.blocked_recheck)
            except KubeError as error:
                return retrying(condition, "KubernetesUnavailable", str(error), timings.retry_delay)

        run.__name__ = step.__name__
        return run

    return wrap


def transition_events(
    before: Iterable[Condition], after: Iterable[Condition], outcomes: dict[str, Outcome]
) -> list[Event]:
    """Events for step conditions whose status or reason changed."""
    previous = {c.type: (c.status, c.reason) for c in before}
    events = []
    for condition in after:
        if previous.get(condition.type) == (condition.status, condition.reason) or condition.type not in outcomes:
            continue
        outcome = outcomes[condition.type]
        if outcome in (Outcome.BLOCKED, Outcome.RETRYING):
            events.append(Event("Warning", condition.reason, f"{condition.type}: {condition.message}"))
        elif outcome in (Outcome.DONE, Outcome.PROGRESSING):
            events.append(Event("Normal", condition.reason, f"{condition.type}: {condition.message}"))
    return events


def seconds_until(moment: str, now: datetime) -> float:
    return (datetime.fromisoformat(moment.replace("Z", "+00:00")) - now).total_seconds()


def earliest(delays: Iterable[float | None]) -> float | None:
    present = [d for d in delays if d is not None]
    return max(0.05, min(present)) if present else None
