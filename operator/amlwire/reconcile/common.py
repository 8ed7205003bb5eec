"""Shared reconcile plumbing: timings from settings, keyed locks, events, condition transitions."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from amlwire.api.common import Condition
from amlwire.domain.conditions import Outcome
from amlwire.domain.operations import LRO_TIMEOUT


@dataclass(frozen=True)
class Timings:
    """How long to wait, from the operator's settings (seconds)."""

    retry_delay: float = 15.0
    max_retry_delay: float = 300.0
    lro_poll_delay: float = 10.0
    blocked_recheck: float = 60.0
    federation_propagation: float = 60.0
    role_propagation: float = 600.0
    lro_timeout: float = LRO_TIMEOUT

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


EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the object: Normal on progress, Warning on failures."""

    type: EventType
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


def transition_events(
    before: Iterable[Condition], after: Iterable[Condition], outcomes: Mapping[str, Outcome]
) -> list[Event]:
    """Events for step conditions whose status or reason changed (waiting for another link is no news)."""
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


class DriftSchedule:
    """When each AttachedCompute's next drift check is due: spread over the interval by uid, so that computes
    created (or resumed after a restart) together do not all read Azure in the same second."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._start = clock()
        self._due: dict[str, float] = {}
        self._lock = threading.Lock()

    def phase(self, uid: str) -> float:
        return int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * self.interval

    def due(self, uid: str) -> bool:
        """True (and the next check scheduled one interval on) when this object's check is due."""
        with self._lock:
            now = self.clock()
            if now < self._due.setdefault(uid, self._start + self.phase(uid)):
                return False
            self._due[uid] = now + self.interval
            return True

    def soon(self, uid: str, delay: float) -> None:
        """A check found work in progress (a repair Entra or Azure has not honoured yet): look again after
        `delay`, not a whole interval later."""
        with self._lock:
            self._due[uid] = min(self._due.get(uid, float("inf")), self.clock() + delay)

    def postpone(self, uid: str, delay: float) -> None:
        """kopf retries the object's handler after `delay`: no drift check before, or both would be at work."""
        with self._lock:
            now = self.clock()
            self._due[uid] = max(self._due.get(uid, self._start + self.phase(uid)), now + delay + 1.0)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._due.pop(uid, None)
