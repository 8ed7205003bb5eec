"""The AmlJobs whose AML job runs, by the AttachedCompute they run on: what an AttachedCompute must not pull out
from under them (a detach, an identity switch). Seeded from one listing when the operator starts, before any
handler runs, then kept by every AmlJob event.

It is not a kopf index on purpose: kopf holds every object of an indexed kind at start-up until all of them are
indexed, and with a cap on the objects it handles at once that deadlocks once they outnumber the cap
(nolar/kopf#1243). Without an index on AmlJobs the cap bounds the operator's memory in a burst again.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from amlwire.domain.jobs import runs_in_aml


class RunningJobs:
    """namespace/name of each AmlJob whose AML job runs, by its spec.computeRef (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._compute_of: dict[str, str] = {}
        self._on: defaultdict[str, set[str]] = defaultdict(set)

    def seed(self, running: Iterable[tuple[str, str]]) -> None:
        """(namespace/name, compute) of every running job, as one listing found them."""
        for job, compute in running:
            self._set(job, compute)

    def observe(self, namespace: str, name: str, compute: str, status: Mapping[str, Any] | None) -> None:
        """An AmlJob as an event shows it."""
        job = f"{namespace}/{name}"
        if runs_in_aml(status):
            self._set(job, compute)
        else:
            self.forget(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        job = f"{namespace}/{name}"
        with self._lock:
            compute = self._compute_of.pop(job, None)
            if compute is not None:
                self._on[compute].discard(job)

    def on(self, compute: str) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._on.get(compute, ())))

    def _set(self, job: str, compute: str) -> None:
        with self._lock:
            before = self._compute_of.get(job)
            if before is not None and before != compute:
                self._on[before].discard(job)
            self._compute_of[job] = compute
            self._on[compute].add(job)
