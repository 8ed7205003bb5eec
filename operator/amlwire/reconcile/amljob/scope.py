"""One reconcile pass of one AmlJob: what it reads, what it has observed so far, what it produces."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime

from amlwire.api.amljob import AmlJobSpec, AmlJobStatus
from amlwire.domain.azure import WorkspaceRef
from amlwire.domain.jobs import JobSnapshot
from amlwire.domain.view import ComputeView
from amlwire.reconcile.common import Event, Timings
from amlwire.reconcile.poller import FollowedJob, JobWatch
from amlwire.reconcile.ports import AzurePort


@dataclass
class JobScope:
    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: AmlJobSpec
    previous: AmlJobStatus
    now: datetime
    timings: Timings
    azure: AzurePort
    watch: JobWatch
    compute: ComputeView | None
    status: AmlJobStatus = field(init=False)
    snapshot: JobSnapshot | None = None  # AML's word on the job, once this pass has it
    reverify: str | None = None  # an AttachedCompute to look at again now (its job could not reach storage)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = copy.deepcopy(self.previous)

    @property
    def workspace(self) -> WorkspaceRef | None:
        """The workspace the job runs in: recorded at submission, else the compute's."""
        if self.status.workspace:
            return WorkspaceRef.parse(self.status.workspace)
        return self.compute.workspace if self.compute else None

    def was(self, condition: str, reason: str) -> bool:
        """Whether the previous status had `condition` with `reason`."""
        return any(c.type == condition and c.reason == reason for c in self.previous.conditions)

    def followed(self, workspace: WorkspaceRef, aml_job_name: str) -> FollowedJob:
        return FollowedJob(self.namespace, self.name, self.uid, aml_job_name, workspace.id)

    def note(self, reason: str, message: str) -> None:
        self.events.append(Event("Normal", reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.events.append(Event("Warning", reason, message))
