"""One reconcile pass of one AmlJob: what it reads, what it has observed so far, what it produces."""

from __future__ import annotations

from dataclasses import dataclass

from amlwire.api.amljob import AmlJobSpec, AmlJobStatus
from amlwire.domain.azure import WorkspaceRef
from amlwire.domain.jobs import JobSnapshot
from amlwire.domain.view import ComputeView
from amlwire.reconcile.poller import FollowedJob, JobWatch
from amlwire.reconcile.scope import ObjectScope


@dataclass(kw_only=True)
class JobScope(ObjectScope[AmlJobSpec, AmlJobStatus]):
    namespace: str
    uid: str
    watch: JobWatch
    compute: ComputeView | None
    snapshot: JobSnapshot | None = None  # AML's word on the job, once this pass has it
    reverify: str | None = None  # an AttachedCompute to look at again now (its job could not reach storage)

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
