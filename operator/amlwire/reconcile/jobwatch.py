"""What amlwire last heard from AML about its jobs, per workspace, shared by the pollers and the handlers.

One listing per workspace per interval feeds every job in it: ARM calls grow with computes, not with jobs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from amlwire.domain.jobs import JobSnapshot


class JobWatch:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, dict[str, JobSnapshot]] = {}
        self._listed_at: dict[str, float] = {}
        self._pollers: Counter[str] = Counter()

    def attach(self, workspace_id: str) -> None:
        """A poller now covers this workspace."""
        with self._lock:
            self._pollers[workspace_id.lower()] += 1

    def detach(self, workspace_id: str) -> None:
        with self._lock:
            self._pollers[workspace_id.lower()] -= 1

    def polled(self, workspace_id: str) -> bool:
        with self._lock:
            return self._pollers[workspace_id.lower()] > 0

    def claim(self, workspace_id: str, interval: float) -> bool:
        """True for exactly one caller per workspace per interval: that caller lists the jobs."""
        key, now = workspace_id.lower(), time.monotonic()
        with self._lock:
            if now - self._listed_at.get(key, float("-inf")) < interval * 0.9:
                return False
            self._listed_at[key] = now
            return True

    def record(self, workspace_id: str, snapshots: dict[str, JobSnapshot]) -> dict[str, JobSnapshot]:
        """Store a listing; return the jobs whose status changed since the last one."""
        with self._lock:
            known = self._snapshots.setdefault(workspace_id.lower(), {})
            changed = {n: s for n, s in snapshots.items() if known.get(n) != s}
            known.update(snapshots)
            return changed

    def get(self, workspace_id: str, name: str) -> JobSnapshot | None:
        with self._lock:
            return self._snapshots.get(workspace_id.lower(), {}).get(name)

    def forget(self, workspace_id: str, name: str) -> None:
        with self._lock:
            self._snapshots.get(workspace_id.lower(), {}).pop(name, None)
