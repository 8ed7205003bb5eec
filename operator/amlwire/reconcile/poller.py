"""Following AML jobs without a task per job: one listing per workspace per interval feeds every job in it.

`JobWatch` holds what amlwire last heard from AML about its jobs and which jobs it follows (registered by the
AmlJob reconcile while a job runs). `JobPoller.tick()` lists each workspace that has followed jobs when its
interval is due, and hands every job whose AML status changed to `update` (which reconciles it and writes its
status). ARM calls grow with workspaces, not with jobs; the loop that calls `tick` lives with kopf.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from amlwire.domain.azure import WorkspaceRef
from amlwire.domain.errors import AzureError, KubeConflict, KubeError, KubeNotFound
from amlwire.domain.jobs import GONE, PASSING, TAG_COMPUTE, JobSnapshot
from amlwire.reconcile.ports import AzurePort

log = logging.getLogger("amlwire.jobs")
BACKOFF = 1.5  # the interval grows by this while nothing changes in a workspace
MAX_BACKOFF = 8.0  # up to this many times the base interval
# kopf writes a handler's status after the handler returns: for this long after a pass started following a job,
# an AmlJob that does not show it yet is waiting for that write (past it, the poller writes what it knows).
WRITE_GRACE = 60.0


class NotShownYet(Exception):
    """The AmlJob does not show the AML job followed yet: the pass that submitted it has not been written."""


@dataclass(frozen=True)
class FollowedJob:
    """An AmlJob whose AML job is running, and where."""

    namespace: str
    name: str
    uid: str
    aml_job_name: str
    workspace_id: str


class JobWatch:
    """What AML's listings said of the jobs amlwire follows, and what each AmlJob's status reflects already.

    A job is news while the two differ: the poller hands it to `update` again until the AmlJob's status has
    caught up (an update that failed half-way is tried again at the next listing).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._listed: dict[str, dict[str, JobSnapshot]] = {}
        self._applied: dict[str, dict[str, str]] = {}  # workspace -> AML job -> status the AmlJob shows
        self._followed: dict[str, dict[str, FollowedJob]] = {}
        self._since: dict[str, dict[str, float]] = {}  # workspace -> AML job -> when it was first followed

    def follow(self, job: FollowedJob, applied: JobSnapshot) -> None:
        """Follow a running job whose AmlJob status now shows `applied` (or will, once its pass is written)."""
        key = job.workspace_id.lower()
        with self._lock:
            self._followed.setdefault(key, {})[job.aml_job_name] = job
            self._applied.setdefault(key, {})[job.aml_job_name] = applied.status
            self._since.setdefault(key, {}).setdefault(job.aml_job_name, self._clock())

    def unfollow(self, workspace_id: str, aml_job_name: str) -> None:
        key = workspace_id.lower()
        with self._lock:
            for table in (self._followed, self._listed, self._applied, self._since):
                table.get(key, {}).pop(aml_job_name, None)

    def awaits_its_write(self, job: FollowedJob, shown: str | None) -> bool:
        """Whether an AmlJob showing AML job `shown` has yet to show the followed one: it was followed a moment
        ago, by a pass whose status kopf has not written yet. Writing the poller's news now would be overwritten
        by that pass's older status when it lands, and the poller would not write it again."""
        if shown == job.aml_job_name:
            return False
        with self._lock:
            since = self._since.get(job.workspace_id.lower(), {}).get(job.aml_job_name)
        return since is not None and self._clock() - since < WRITE_GRACE

    def follows(self, workspace_id: str, aml_job_name: str) -> bool:
        with self._lock:
            return aml_job_name in self._followed.get(workspace_id.lower(), {})

    def followed(self) -> dict[str, list[FollowedJob]]:
        with self._lock:
            return {ws: list(jobs.values()) for ws, jobs in self._followed.items() if jobs}

    def record(self, workspace_id: str, snapshots: dict[str, JobSnapshot]) -> set[str]:
        """Store what a listing said of the followed jobs; return those whose AmlJob does not show it yet (a
        status the job only passes through is not news)."""
        key = workspace_id.lower()
        with self._lock:
            followed = self._followed.get(key, {})
            listed = self._listed.setdefault(key, {})
            listed.update({n: s for n, s in snapshots.items() if n in followed})
            applied = self._applied.get(key, {})
            return {
                n for n, s in listed.items() if n in followed and applied.get(n) != s.status and s.status not in PASSING
            }

    def invalidate(self, workspace_id: str, aml_job_name: str) -> None:
        """The AmlJob's status may not show what was applied (its write failed): hand it over again."""
        with self._lock:
            self._applied.get(workspace_id.lower(), {}).pop(aml_job_name, None)

    def get(self, workspace_id: str, name: str) -> JobSnapshot | None:
        """The latest listing's word on a job."""
        with self._lock:
            return self._listed.get(workspace_id.lower(), {}).get(name)


@dataclass
class JobPoller:
    """One listing per workspace per interval; the jobs whose status changed are handed to `update`."""

    azure: AzurePort
    watch: JobWatch
    update: Callable[[FollowedJob], None]
    interval: float  # the base interval, while something changes
    clock: Callable[[], float] = time.monotonic
    read_rate: float | None = None  # ARM reads per second following jobs may take (None: no limit)
    updates: Executor | None = None  # runs one listing's updates at once (None: one after another)
    _due: dict[str, float] = field(default_factory=dict, init=False)
    _interval: dict[str, float] = field(default_factory=dict, init=False)
    _reads: dict[str, int] = field(default_factory=dict, init=False)  # what each workspace's last poll read

    def tick(self) -> float:
        """Poll every workspace that is due; return the seconds until the next one is."""
        now = self.clock()
        followed = self.watch.followed()
        for workspace_id in list(self._due):
            if workspace_id not in followed:  # nothing left to follow there: start afresh next time
                self._due.pop(workspace_id)
                self._interval.pop(workspace_id, None)
                self._reads.pop(workspace_id, None)
        polled = []
        for workspace_id, jobs in followed.items():
            if self._due.get(workspace_id, now) > now:
                continue
            changed = self._poll(workspace_id, jobs)
            self._interval[workspace_id] = (
                self.interval
                if changed
                else min(self._interval.get(workspace_id, self.interval) * BACKOFF, self.interval * MAX_BACKOFF)
            )
            polled.append(workspace_id)
        for workspace_id in polled:  # once this round's listings are all counted
            self._due[workspace_id] = now + max(self._interval[workspace_id], self.budgeted_interval(workspace_id))
        upcoming = [due - self.clock() for due in self._due.values()]
        return max(0.05, min(upcoming)) if upcoming else self.interval

    def budgeted_interval(self, workspace_id: str) -> float:
        """The shortest interval that keeps this subscription's listings within the read rate."""
        if not self.read_rate:
            return 0.0
        subscription = WorkspaceRef.parse(workspace_id).subscription.lower()
        reads = sum(n for ws, n in self._reads.items() if WorkspaceRef.parse(ws).subscription.lower() == subscription)
        return reads / self.read_rate

    def _poll(self, workspace_id: str, jobs: list[FollowedJob]) -> int:
        workspace = WorkspaceRef.parse(workspace_id)
        try:
            result = self.azure.list_jobs(workspace, TAG_COMPUTE, {j.aml_job_name for j in jobs})
        except AzureError as error:
            log.warning("listing AML jobs in %s failed (%s); retrying next interval", workspace.name, error.message)
            return 0
        listing, reads = dict(result.jobs), result.reads
        for name in {j.aml_job_name for j in jobs} - listing.keys():  # archived, or gone: ask for it directly
            reads += 1
            try:
                listing[name] = self.azure.get_job(workspace, name) or JobSnapshot(name, GONE)
            except AzureError as error:
                log.warning("reading AML job %s failed (%s); retrying next interval", name, error.message)
        self._reads[workspace_id] = reads
        changed = self.watch.record(workspace_id, listing)
        due = [job for job in jobs if job.aml_job_name in changed]
        if self.updates is None or len(due) < 2:
            return sum(map(self._update, due))
        return sum(self.updates.map(self._update, due))

    def _update(self, job: FollowedJob) -> bool:
        """Whether the AmlJob now shows what AML said; if not, it is handed over again at the next listing."""
        try:
            self.update(job)
            return True
        except NotShownYet as why:
            self.watch.invalidate(job.workspace_id, job.aml_job_name)
            log.debug("%s; it is handed over again at the next listing", why)
            return False
        except (AzureError, KubeError, KubeConflict, KubeNotFound) as error:
            self.watch.invalidate(job.workspace_id, job.aml_job_name)
            log.warning("updating AmlJob %s/%s failed: %s", job.namespace, job.name, error)
            return False
